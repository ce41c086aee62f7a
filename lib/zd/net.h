/* SPDX-License-Identifier: MIT */
/*
 * The link between zd-send and zd-recv. A connection is a pair of file
 * descriptors: records go forward on wfd (zd-send) and ACK records come
 * back on rfd (zd-send reads them; zd-recv writes them on its wfd). Over TCP
 * both are the same socket; over stdio (`-`, `zd-recv --stdio`, and so ssh)
 * they are stdin/stdout. The framing is the zd-stream(5) binary encoding in
 * both directions, so nothing here knows about records.
 *
 * Addresses: "HOST:PORT", ":PORT" (every address, listen only), "[V6]:PORT",
 * "-" (standard input/output). A later transport (ssh:, a MAC'd link) is a
 * new kind of zd_conn filling the same two descriptors.
 */
#ifndef ZD_NET_H
#define ZD_NET_H

#include <stdbool.h>
#include <stddef.h>

struct zd_conn {
	int rfd;		/* reads from the peer; -1 if this side cannot read */
	int wfd;		/* writes to the peer */
	bool owned;		/* close the descriptors on zd_conn_close */
	char name[128];		/* "peer 127.0.0.1:7070", "stdin/stdout" */
};

/* Split an address into host ("" for ":PORT") and port. 0 or -1 with msg. */
int zd_net_split(const char *spec, char *host, size_t hostlen, char *port,
		 size_t portlen, char *msg, size_t msglen);

/* Listen on spec (SO_REUSEADDR). Returns the socket or -1 with msg. */
int zd_net_listen(const char *spec, char *msg, size_t msglen);
/* The bound address of a listening socket as "HOST:PORT" (for ":0"). */
void zd_net_local_name(int fd, char *out, size_t outlen);
/* Accept one peer. Returns 0, or -1 with msg. */
int zd_net_accept(int lfd, struct zd_conn *c, char *msg, size_t msglen);
/* Connect to spec ("-": stdout only, rfd = -1). Returns 0, or -1 with msg
 * ("127.0.0.1:7070: connect: Connection refused"). */
int zd_net_connect(const char *spec, struct zd_conn *c, char *msg, size_t msglen);
/* stdin/stdout as a connection (zd-recv --stdio). */
void zd_net_stdio(struct zd_conn *c);
/* Half-close the forward direction (TCP FIN) so the peer sees the end of the
 * stream while ACKs can still come back. */
void zd_conn_shutdown_write(struct zd_conn *c);
void zd_conn_close(struct zd_conn *c);
/* Make a read from the peer fail (EAGAIN) after ms of silence, 0 = never
 * (SO_RCVTIMEO): the heartbeat timeout. -1 with errno ENOTSOCK on stdio,
 * where ssh's keepalives are the only watch. */
int zd_conn_set_timeout(struct zd_conn *c, unsigned ms);

#endif
