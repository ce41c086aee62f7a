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
#include <sys/types.h>

struct zd_conn {
	int rfd;		/* reads from the peer; -1 if this side cannot read */
	int wfd;		/* writes to the peer */
	bool owned;		/* close the descriptors on zd_conn_close */
	char name[128];		/* "peer 127.0.0.1:7070", "stdin/stdout" */
	bool sock;		/* the peer is a socket (TCP): timeouts and
				 * half-close work on it */
	pid_t child;		/* ssh: the ssh process, reaped by close; 0 if none */
	struct zd_conn_auth *auth;	/* --key: rfd/wfd are the sealing relays' ends */
};

/* Split an address into host ("" for ":PORT") and port. 0 or -1 with msg. */
int zd_net_split(const char *spec, char *host, size_t hostlen, char *port,
		 size_t portlen, char *msg, size_t msglen);

/* Listen on spec (SO_REUSEADDR). Returns the socket or -1 with msg. */
int zd_net_listen(const char *spec, char *msg, size_t msglen);
/* Does spec name loopback addresses only? 1 yes, 0 no (":PORT" is every
 * address), -1 with msg if it does not resolve. */
int zd_net_is_loopback(const char *spec, char *msg, size_t msglen);
/* The bound address of a listening socket as "HOST:PORT" (for ":0"). */
void zd_net_local_name(int fd, char *out, size_t outlen);
/* Write the bound port of a listening socket to path as digits and a
 * newline, atomically (a temporary file renamed over path): a reader sees
 * no file or the whole port. 0, or -1 with msg. */
int zd_net_write_port_file(int fd, const char *path, char *msg, size_t msglen);
/* Accept one peer. Returns 0, or -1 with msg. */
int zd_net_accept(int lfd, struct zd_conn *c, char *msg, size_t msglen);
/* Connect to spec ("-": stdout only, rfd = -1). Returns 0, or -1 with msg
 * ("127.0.0.1:7070: connect: Connection refused"). */
int zd_net_connect(const char *spec, struct zd_conn *c, char *msg, size_t msglen);
/* The same, giving up after timeout_ms (0: no bound of our own). */
int zd_net_connect_within(const char *spec, unsigned timeout_ms, struct zd_conn *c, char *msg, size_t msglen);
/* stdin/stdout as a connection (zd-recv --stdio). */
void zd_net_stdio(struct zd_conn *c);

/* "ssh:[USER@]HOST[:PATH]": run `zd-recv --stdio --replica PATH ARGS...`
 * on HOST over ssh, its stdin/stdout as the connection (lib/net/ssh.c).
 * The ssh command is $ZD_SSH (split on blanks, default "ssh"), the remote
 * program $ZD_REMOTE_RECV (default "zd-recv"), PATH defaults to
 * "zd-replica" (in the remote home). args: extra zd-recv arguments
 * (NULL-terminated, may be NULL). 0, or -1 with msg. */
#define ZD_SSH_PREFIX "ssh:"
#define ZD_SSH_DEFAULT_PATH "zd-replica"
int zd_net_ssh_split(const char *spec, char *userhost, size_t uhlen, char *path, size_t plen,
		     char *msg, size_t msglen);
int zd_net_ssh(const char *spec, const char *const *args, struct zd_conn *c, char *msg, size_t msglen);

/* Authenticate the connection with a pre-shared key (zd/wire.h): the
 * challenge-response handshake on the raw descriptors, then rfd/wfd are
 * replaced by the ends of two relay threads that encrypt and seal every
 * record going out and pass on only records that opened (lib/net/link.c).
 * key is a struct zd_auth_key. Returns 0, or an exit code with msg
 * (ZD_EXIT_PEER: the peer lacks the key or the handshake). */
struct zd_auth_key;
int zd_conn_auth(struct zd_conn *c, const struct zd_auth_key *key, bool server,
		 int timeout_ms, char *msg, size_t msglen);
/* After the read side ended (EOF between records): why the verifying relay
 * stopped. 0 if the peer ended cleanly, else ZD_EXIT_DATA (bad MAC,
 * malformed) or ZD_EXIT_PEER (cut short), msg saying which. 0 without
 * --key. */
int zd_conn_auth_status(struct zd_conn *c, char *msg, size_t msglen);
/* Half-close the forward direction (TCP FIN) so the peer sees the end of the
 * stream while ACKs can still come back. */
void zd_conn_shutdown_write(struct zd_conn *c);
/* Wake every thread blocked on the connection (they see it end) without
 * freeing anything: before joining them and zd_conn_close. */
void zd_conn_abort(struct zd_conn *c);
/* Close (ssh: wait for the ssh process; an authenticated link: stop the
 * relays). */
void zd_conn_close(struct zd_conn *c);
/* Make a read from the peer fail (EAGAIN) after ms of silence, 0 = never
 * (SO_RCVTIMEO): the heartbeat timeout. -1 with errno ENOTSOCK on stdio,
 * where ssh's keepalives are the only watch. */
int zd_conn_set_timeout(struct zd_conn *c, unsigned ms);

#endif
