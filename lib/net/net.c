/* SPDX-License-Identifier: MIT */
/*
 * TCP and stdio connections for zd-send/zd-recv. See zd/net.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <signal.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "zd/net.h"
#include "zd/util.h"
#include "net_int.h"

int zd_net_split(const char *spec, char *host, size_t hostlen, char *port,
		 size_t portlen, char *msg, size_t msglen)
{
	const char *colon, *h = spec;
	size_t hl;

	if (!spec || !*spec) {
		snprintf(msg, msglen, "empty address (want HOST:PORT, :PORT or [V6]:PORT)");
		return -1;
	}
	if (*spec == '[') {
		const char *close = strchr(spec, ']');

		if (!close || close[1] != ':') {
			snprintf(msg, msglen, "%s: bad address (want [V6]:PORT)", spec);
			return -1;
		}
		h = spec + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon) {
			snprintf(msg, msglen, "%s: bad address (want HOST:PORT, :PORT or [V6]:PORT)", spec);
			return -1;
		}
		hl = (size_t)(colon - spec);
		/* An unbracketed IPv6 literal is ambiguous: refuse it. */
		if (memchr(spec, ':', hl)) {
			snprintf(msg, msglen, "%s: bad address (write IPv6 as [V6]:PORT)", spec);
			return -1;
		}
	}
	uint64_t p;

	if (zd_parse_u64(colon + 1, &p) < 0 || p > 65535) {
		snprintf(msg, msglen, "%s: bad port '%s' (want 0-65535)", spec, colon + 1);
		return -1;
	}
	if (hl >= hostlen || strlen(colon + 1) >= portlen) {
		snprintf(msg, msglen, "%s: address too long", spec);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	snprintf(port, portlen, "%s", colon + 1);
	return 0;
}

static int resolve(const char *spec, bool passive, struct addrinfo **res,
		   char *msg, size_t msglen)
{
	char host[256], port[16];
	struct addrinfo hints = { 0 };
	int r;

	if (zd_net_split(spec, host, sizeof(host), port, sizeof(port), msg, msglen) < 0)
		return -1;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	if (!*host && !passive) {
		snprintf(msg, msglen, "%s: no host to connect to", spec);
		return -1;
	}
	r = getaddrinfo(*host ? host : NULL, port, &hints, res);
	if (r) {
		snprintf(msg, msglen, "%s: %s", spec, gai_strerror(r));
		return -1;
	}
	return 0;
}

static void name_of(const struct sockaddr *sa, socklen_t len, char *out, size_t outlen)
{
	char h[NI_MAXHOST], p[NI_MAXSERV];

	if (getnameinfo(sa, len, h, sizeof(h), p, sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(out, outlen, "?");
		return;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(out, outlen, "[%s]:%s", h, p);
	else
		snprintf(out, outlen, "%s:%s", h, p);
}

int zd_net_listen(const char *spec, char *msg, size_t msglen)
{
	struct addrinfo *res = NULL, *ai;
	int fd = -1, one = 1, e = 0;

	if (resolve(spec, true, &res, msg, msglen) < 0)
		return -1;
	/* ":PORT" resolves to both families: IPv6 first, dual stack, so one
	 * socket takes both; IPv4 where the host has no IPv6. */
	for (int pass = 0; pass < 2 && fd < 0; pass++) {
		for (ai = res; ai; ai = ai->ai_next) {
			if ((ai->ai_family == AF_INET6) != (pass == 0))
				continue;
			fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
			if (fd < 0) {
				e = errno;
				continue;
			}
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (ai->ai_family == AF_INET6) {
				int off = 0;

				setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
			}
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
				break;
			e = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(msg, msglen, "%s: listen: %s", spec, strerror(e));
	return fd;
}

int zd_net_is_loopback(const char *spec, char *msg, size_t msglen)
{
	struct addrinfo *res = NULL, *ai;
	char host[256], port[16];
	int lo = 1;

	if (zd_net_split(spec, host, sizeof(host), port, sizeof(port), msg, msglen) < 0)
		return -1;
	/* ":PORT" is every address */
	if (!*host)
		return 0;
	if (resolve(spec, true, &res, msg, msglen) < 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)ai->ai_addr;

			lo &= (ntohl(a->sin_addr.s_addr) >> 24) == 127;
		} else if (ai->ai_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)ai->ai_addr;

			lo &= IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
			      (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127);
		} else {
			lo = 0;
		}
	}
	freeaddrinfo(res);
	return lo;
}

void zd_net_local_name(int fd, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		snprintf(out, outlen, "?");
	else
		name_of((struct sockaddr *)&ss, len, out, outlen);
}

int zd_net_write_port_file(int fd, const char *path, char *msg, size_t msglen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	unsigned port;
	char tmp[4096], line[16];
	int n, tfd;

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(msg, msglen, "--port-file: getsockname: %s", strerror(errno));
		return -1;
	}
	if (ss.ss_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	/* The temporary beside path (same file system: rename is atomic),
	 * named by the PID so that two writers do not share one. */
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
		snprintf(msg, msglen, "--port-file %s: name too long", path);
		return -1;
	}
	n = snprintf(line, sizeof(line), "%u\n", port);
	tfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (tfd < 0) {
		snprintf(msg, msglen, "--port-file %s: %s", tmp, strerror(errno));
		return -1;
	}
	int w = zd_write_full(tfd, line, (size_t)n);
	int e = errno;

	if (close(tfd) < 0 && w == 0)
		w = -1, e = errno;
	if (w < 0) {
		snprintf(msg, msglen, "--port-file %s: %s", tmp, strerror(e));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) < 0) {
		snprintf(msg, msglen, "--port-file %s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* Checkpoints are latency-bound: an ACK or the tail of an epoch must not
 * wait for Nagle. */
static void tune(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int zd_net_accept(int lfd, struct zd_conn *c, char *msg, size_t msglen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char peer[96];
	int fd;

	do
		fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		snprintf(msg, msglen, "accept: %s", strerror(errno));
		return -1;
	}
	tune(fd);
	name_of((struct sockaddr *)&ss, len, peer, sizeof(peer));
	memset(c, 0, sizeof(*c));
	c->rfd = c->wfd = fd;
	c->owned = true;
	c->sock = true;
	snprintf(c->name, sizeof(c->name), "peer %s", peer);
	return 0;
}

/* connect() that gives up after timeout_ms (0: the kernel's own, minutes
 * when SYNs go unanswered, as on a cut link). */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len, unsigned timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int r, flags, err = 0;
	socklen_t elen = sizeof(err);

	if (!timeout_ms) {
		do
			r = connect(fd, sa, len);
		while (r < 0 && errno == EINTR);
		return r;
	}
	flags = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	r = connect(fd, sa, len);
	if (r < 0 && errno == EINPROGRESS) {
		do
			r = poll(&p, 1, (int)timeout_ms);
		while (r < 0 && errno == EINTR);
		if (r == 0) {
			errno = ETIMEDOUT;
			r = -1;
		} else if (r > 0) {
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
			r = err ? -1 : 0;
			if (err)
				errno = err;
		}
	}
	if (r == 0)
		fcntl(fd, F_SETFL, flags);
	return r;
}

int zd_net_connect(const char *spec, struct zd_conn *c, char *msg, size_t msglen)
{
	return zd_net_connect_within(spec, 0, c, msg, msglen);
}

int zd_net_connect_within(const char *spec, unsigned timeout_ms, struct zd_conn *c, char *msg, size_t msglen)
{
	struct addrinfo *res = NULL, *ai;
	int fd = -1, e = 0;

	memset(c, 0, sizeof(*c));
	if (!strcmp(spec, "-")) {
		c->rfd = -1;
		c->wfd = STDOUT_FILENO;
		c->owned = false;
		snprintf(c->name, sizeof(c->name), "stdout");
		return 0;
	}
	if (resolve(spec, false, &res, msg, msglen) < 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			e = errno;
			continue;
		}
		if (connect_within(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(msg, msglen, "%s: connect: %s", spec, strerror(e));
		return -1;
	}
	tune(fd);
	c->rfd = c->wfd = fd;
	c->owned = true;
	c->sock = true;
	snprintf(c->name, sizeof(c->name), "peer %s", spec);
	return 0;
}

void zd_net_stdio(struct zd_conn *c)
{
	memset(c, 0, sizeof(*c));
	c->rfd = STDIN_FILENO;
	c->wfd = STDOUT_FILENO;
	c->owned = false;
	snprintf(c->name, sizeof(c->name), "stdin");
}

void zd_conn_shutdown_write(struct zd_conn *c)
{
	if (c->auth)
		zd__conn_auth_shutdown_write(c);
	else if (c->owned && c->sock)
		shutdown(c->wfd, SHUT_WR);
	else if (c->owned && c->child > 0 && c->wfd >= 0) {
		/* ssh: the end of its stdin is the end of the stream */
		close(c->wfd);
		c->wfd = -1;
	}
}

void zd_conn_abort(struct zd_conn *c)
{
	if (c->auth)
		zd__conn_auth_abort(c);
	else if (c->owned && c->sock && c->rfd >= 0)
		shutdown(c->rfd, SHUT_RDWR);
	else if (c->owned && c->child > 0)
		kill(c->child, SIGTERM);
}

void zd_conn_close(struct zd_conn *c)
{
	if (c->auth)
		zd__conn_auth_close(c);
	if (c->owned) {
		if (c->rfd >= 0)
			close(c->rfd);
		if (c->wfd >= 0 && c->wfd != c->rfd)
			close(c->wfd);
	}
	c->rfd = c->wfd = -1;
	c->owned = false;
	if (c->child > 0)
		zd__conn_reap(c);
}

int zd_conn_set_timeout(struct zd_conn *c, unsigned ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	if (c->rfd < 0) {
		errno = EBADF;
		return -1;
	}
	/* ssh and stdio: the watch is ssh's (ServerAliveInterval) */
	if (!c->sock) {
		errno = ENOTSOCK;
		return -1;
	}
	return setsockopt(c->rfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}
