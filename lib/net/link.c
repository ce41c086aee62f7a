/* SPDX-License-Identifier: MIT */
/*
 * A keyed connection (zd-send/zd-recv --key): the handshake of zd/wire.h
 * on the raw descriptors, then two relay threads between the stream and
 * the peer, so the zd-stream reader and writer above need not know:
 *
 *   writer -> sock[0] ~ SIGN relay -> net_wfd      records sealed (encrypted + tag)
 *   reader <- sock[0] ~ VERIFY relay <- net_rfd    only records that opened
 *
 * The relays' stream ends are sockets (socketpair), so SO_RCVTIMEO, the
 * heartbeat timeout, works on them as it did on the TCP socket.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/util.h"
#include "zd/wire.h"
#include "net_int.h"

struct zd_conn_auth {
	struct zd_auth a;	/* the relays' session keys and counters */
	int net_rfd, net_wfd;	/* the raw connection, owned as c->owned says */
	bool net_owned;
	struct zd_auth_relay *sign, *verify;
	int verify_code;	/* verify relay joined: its code */
	char verify_msg[256];
};

int zd_conn_auth(struct zd_conn *c, const struct zd_auth_key *key, bool server,
		 int timeout_ms, char *msg, size_t msglen)
{
	struct zd_conn_auth *ca;
	int rc, sfd = -1, vfd = -1;

	ca = zd_xcalloc(1, sizeof(*ca));
	rc = zd_auth_handshake(key, server ? ZD_AUTH_SERVER : ZD_AUTH_CLIENT, c->rfd, c->wfd,
			       timeout_ms, &ca->a, msg, msglen);
	if (rc) {
		free(ca);
		return rc;
	}
	ca->net_rfd = c->rfd;
	ca->net_wfd = c->wfd;
	ca->net_owned = c->owned;
	ca->verify_code = -1;
	if ((rc = zd_auth_relay_start(&ca->sign, &ca->a, ZD_AUTH_SIGN, c->wfd, &sfd, msg, msglen))) {
		free(ca);
		return rc;
	}
	if ((rc = zd_auth_relay_start(&ca->verify, &ca->a, ZD_AUTH_VERIFY, c->rfd, &vfd, msg, msglen))) {
		close(sfd);
		zd_auth_relay_join(ca->sign, NULL, 0);
		free(ca);
		return rc;
	}
	c->rfd = vfd;
	c->wfd = sfd;
	c->owned = true;	/* the relay ends are ours; net_owned the rest */
	c->auth = ca;
	return 0;
}

static void join_verify(struct zd_conn_auth *ca)
{
	if (!ca->verify)
		return;
	ca->verify_code = zd_auth_relay_join(ca->verify, ca->verify_msg, sizeof(ca->verify_msg));
	ca->verify = NULL;
}

int zd_conn_auth_status(struct zd_conn *c, char *msg, size_t msglen)
{
	struct zd_conn_auth *ca = c->auth;

	if (!ca)
		return 0;
	/* The reader saw the relay's end close: the thread is ending. */
	join_verify(ca);
	if (ca->verify_code > 0)
		snprintf(msg, msglen, "%s: %s", c->name, ca->verify_msg);
	return ca->verify_code > 0 ? ca->verify_code : 0;
}

void zd__conn_auth_shutdown_write(struct zd_conn *c)
{
	struct zd_conn_auth *ca = c->auth;

	if (!ca->sign)
		return;
	/* The relay sends what it has, sees the end, then we half-close. */
	if (c->wfd >= 0)
		close(c->wfd);
	c->wfd = -1;
	zd_auth_relay_join(ca->sign, NULL, 0);
	ca->sign = NULL;
	if (c->sock)
		shutdown(ca->net_wfd, SHUT_WR);
	else if (ca->net_owned && ca->net_wfd != ca->net_rfd) {
		close(ca->net_wfd);
		ca->net_wfd = -1;
	}
}

void zd__conn_auth_abort(struct zd_conn *c)
{
	struct zd_conn_auth *ca = c->auth;

	if (c->sock && ca->net_rfd >= 0)
		shutdown(ca->net_rfd, SHUT_RDWR);
	else if (c->child > 0)
		kill(c->child, SIGTERM);
	/* the relays see their ends go: the reader above gets EOF */
	if (c->rfd >= 0)
		shutdown(c->rfd, SHUT_RDWR);
	if (c->wfd >= 0)
		shutdown(c->wfd, SHUT_RDWR);
}

void zd__conn_auth_close(struct zd_conn *c)
{
	struct zd_conn_auth *ca = c->auth;

	if (c->wfd >= 0)
		close(c->wfd);
	if (c->rfd >= 0)
		close(c->rfd);
	c->rfd = c->wfd = -1;
	if (ca->sign) {
		zd_auth_relay_join(ca->sign, NULL, 0);
		ca->sign = NULL;
	}
	/* The verify relay may be blocked reading a peer that is still there:
	 * a socket is shut down under it, an ssh child is stopped. Standard
	 * input cannot be interrupted: that relay is left to the process's
	 * exit (zd-recv --stdio serves one stream). */
	if (ca->verify) {
		if (c->sock)
			shutdown(ca->net_rfd, SHUT_RDWR);
		else if (c->child > 0)
			kill(c->child, SIGTERM);
		if (c->sock || c->child > 0)
			join_verify(ca);
	}
	if (ca->net_owned) {
		if (ca->net_rfd >= 0)
			close(ca->net_rfd);
		if (ca->net_wfd >= 0 && ca->net_wfd != ca->net_rfd)
			close(ca->net_wfd);
	}
	if (!ca->verify)
		free(ca);
	/* else: the thread still uses ca->a; both go with the process */
	c->auth = NULL;
}
