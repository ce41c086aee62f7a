/* SPDX-License-Identifier: MIT */
/*
 * zd-recv's listener: which connection becomes the session that feeds the
 * replica, and what happens to the others.
 *
 *   - An accepted connection waits in `pending` until it sends a byte;
 *     only then does it become the session (zd_recv_session). An idle one
 *     (a port scan, a monitoring check) costs a slot and holds nobody up.
 *     One that has not finished the key handshake and sent its HEADER
 *     hello_ms after it was accepted is cut off (recv.c's watchdog), so a
 *     slow sender delays the real primary by that much at most.
 *   - Once a session's HEADER bound the replica, every connection waiting
 *     or arriving is refused at once, with a line: one primary feeds a
 *     replica, and a second one is never queued behind it.
 *   - A connection that never bound the replica ends with a line and
 *     changes nothing; it does not end the serving, even with --once.
 * Whether the end of a session is the loss of the primary is recv.c's
 * to say (owns_replica), and the takeover's (failover.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/replica.h"
#include "zd/status.h"
#include "zd/util.h"

#define PENDING_MAX 16

struct pending {
	struct zd_conn conn;
	uint64_t accepted_ns;
};

struct listener {
	int lfd;
	unsigned hello_ms;
	struct pending p[PENDING_MAX];
	int n;
	/* While a session owns the replica: the refusing thread. */
	pthread_t refuser;
	bool refusing;
	int stop[2];
	char owner[128];
};

static void pending_drop(struct listener *l, int i, const char *why)
{
	zd_warnx("%s: %s", l->p[i].conn.name, why);
	zd_conn_close(&l->p[i].conn);
	l->p[i] = l->p[--l->n];
}

static void refuse(int lfd, const char *owner)
{
	struct zd_conn c;
	char msg[256];

	if (zd_net_accept(lfd, &c, msg, sizeof(msg)) < 0)
		return;
	zd_warnx("%s: refused: the replica is fed by %s", c.name, owner);
	zd_conn_close(&c);
}

static void *refuser_main(void *arg)
{
	struct listener *l = arg;
	struct pollfd p[2] = { { .fd = l->lfd, .events = POLLIN }, { .fd = l->stop[0], .events = POLLIN } };

	for (;;) {
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (p[0].revents & POLLIN)
			refuse(l->lfd, l->owner);
	}
	return NULL;
}

/* zd_recv_opts.on_bound: the session may own the replica from here on. */
static void session_bound(struct zd_replica *rep, const char *peer, void *arg)
{
	struct listener *l = arg;

	snprintf(l->owner, sizeof(l->owner), "%s", peer);
	while (l->n)
		pending_drop(l, l->n - 1, "refused: the replica is fed by another connection");
	if (pipe2(l->stop, O_CLOEXEC) < 0) {
		zd_warn("pipe");
		return;
	}
	if (pthread_create(&l->refuser, NULL, refuser_main, l)) {
		zd_warnx("cannot start the thread that refuses other connections");
		close(l->stop[0]);
		close(l->stop[1]);
		return;
	}
	l->refusing = true;
}

static void refuser_stop(struct listener *l)
{
	if (!l->refusing)
		return;
	if (write(l->stop[1], "x", 1) < 0)
		zd_warn("stopping the refusing thread");
	pthread_join(l->refuser, NULL);
	close(l->stop[0]);
	close(l->stop[1]);
	l->refusing = false;
}

/* Wait for a pending connection with something to say; accept and expire
 * meanwhile. Returns its index, or -1 with msg on a failed accept. */
static int next_ready(struct listener *l, char *msg, size_t msglen)
{
	char why[64];

	snprintf(why, sizeof(why), "no HEADER within %u ms: dropped", l->hello_ms);
	for (;;) {
		struct pollfd p[PENDING_MAX + 1];
		uint64_t now = zd_now_ns(), first = UINT64_MAX;
		int np = 0, timeout = -1;

		for (int i = 0; i < l->n; i++) {
			p[np++] = (struct pollfd){ .fd = l->p[i].conn.rfd, .events = POLLIN };
			first = ZD_MIN(first, l->p[i].accepted_ns + (uint64_t)l->hello_ms * 1000000u);
		}
		if (first != UINT64_MAX)
			timeout = first <= now ? 0 : (int)((first - now) / 1000000u) + 1;
		p[np++] = (struct pollfd){ .fd = l->lfd, .events = POLLIN };
		if (poll(p, (nfds_t)np, timeout) < 0) {
			if (errno == EINTR)
				continue;
			snprintf(msg, msglen, "poll: %s", strerror(errno));
			return -1;
		}
		for (int i = 0; i < l->n; i++)
			if (p[i].revents)
				return i;
		now = zd_now_ns();
		for (int i = l->n - 1; i >= 0; i--)
			if (now >= l->p[i].accepted_ns + (uint64_t)l->hello_ms * 1000000u)
				pending_drop(l, i, why);
		if (p[np - 1].revents & POLLIN) {
			struct pending *q = &l->p[l->n];

			if (zd_net_accept(l->lfd, &q->conn, msg, msglen) < 0) {
				if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
					continue;
				return -1;
			}
			zd_debug("%s connected", q->conn.name);
			q->accepted_ns = zd_now_ns();
			if (++l->n == PENDING_MAX)
				pending_drop(l, 0, "refused: too many connections waiting to send a HEADER");
		}
	}
}

int zd_recv_serve(struct zd_replica *rep, int lfd, const struct zd_recv_opts *opts, bool once,
		  const bool *stop, char *msg, size_t msglen)
{
	struct listener l = { .lfd = lfd, .hello_ms = opts->hello_ms ? opts->hello_ms : ZD_RECV_HELLO_MS };
	char ready[96];
	int rc = 0;

	struct zd_status *st = zd_status_open("zd-recv");

	zd_status_set(st, "role", json_string("backup"));
	zd_status_set(st, "replica", json_string(rep->dir));
	zd_status_set(st, "epoch", json_integer((json_int_t)rep->meta.epoch));
	zd_status_set(st, "peer", json_null());
	snprintf(ready, sizeof(ready), "listening; replica at epoch %" PRIu64, rep->meta.epoch);
	zd_notify_ready(ready);
	for (;;) {
		int i = next_ready(&l, msg, msglen);

		if (i < 0) {
			while (l.n)
				pending_drop(&l, l.n - 1, "closed: zd-recv stops");
			zd_status_close(st);
			return ZD_EXIT_FAIL;
		}
		struct pending q = l.p[i];
		struct zd_recv_opts so = *opts;

		l.p[i] = l.p[--l.n];
		so.hello_by_ns = q.accepted_ns + (uint64_t)l.hello_ms * 1000000u;
		so.hello_ms = l.hello_ms;
		so.on_bound = session_bound;
		so.bound_arg = &l;
		so.status = st;
		rc = zd_recv_session(rep, &q.conn, &so, msg, msglen);
		zd_status_set(st, "peer", json_null());
		refuser_stop(&l);
		zd_conn_close(&q.conn);
		if (!rep->run) {
			/* Never bound the replica: nothing to end the serving. */
			zd_warnx("%s", msg);
			rc = 0;
			continue;
		}
		if (rc || *stop)
			zd_warnx("%s", msg);
		if (once || *stop)
			break;
	}
	while (l.n)
		pending_drop(&l, l.n - 1, "closed: zd-recv stops");
	zd_status_close(st);
	msg[0] = '\0';
	return rc;
}
