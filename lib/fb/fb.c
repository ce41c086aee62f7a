/* SPDX-License-Identifier: MIT */
/*
 * The feedback channel, client side and the message framing both sides
 * share (zd/fb.h). One SOCK_SEQPACKET message is one struct zd_fb_msg plus
 * its payload, so a message is never split or merged by the kernel and
 * file descriptors ride on the message they belong to.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "zd/fb.h"
#include "zd/util.h"

#define FB_MAX_FDS 4
/* How long a client waits for zd-track's HELLO reply: a tracker that
 * accepted the connection answers at once, so this only bounds a wedge. */
#define FB_HELLO_TIMEOUT_S 30

int zd_fb_send(int fd, const struct zd_fb_msg *m, const void *payload,
	       const int *fds, int nfds)
{
	struct zd_fb_msg hdr = *m;
	struct iovec iov[2];
	struct msghdr mh;
	union {
		char buf[CMSG_SPACE(sizeof(int) * FB_MAX_FDS)];
		struct cmsghdr align;
	} cbuf;
	ssize_t r;

	if (nfds < 0 || nfds > FB_MAX_FDS || (m->len && !payload) ||
	    m->len > ZD_FB_MAX_MSG - sizeof(hdr)) {
		errno = EINVAL;
		return -1;
	}
	iov[0].iov_base = &hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)payload;
	iov[1].iov_len = m->len;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = m->len ? 2 : 1;
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	do
		r = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -1;
	if ((size_t)r != sizeof(hdr) + m->len) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

/* Close every descriptor a message carried: used when the caller did not
 * ask for them or the message was bad, so none leak. */
static void close_fds(const int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

int zd_fb_recv(int fd, struct zd_fb_msg *m, void *payload, size_t cap,
	       int *fds, int *nfds)
{
	struct iovec iov[2];
	struct msghdr mh;
	union {
		char buf[CMSG_SPACE(sizeof(int) * FB_MAX_FDS)];
		struct cmsghdr align;
	} cbuf;
	int got[FB_MAX_FDS];
	int ngot = 0;
	ssize_t r;

	if (nfds)
		*nfds = 0;
	memset(m, 0, sizeof(*m));
	iov[0].iov_base = m;
	iov[0].iov_len = sizeof(*m);
	iov[1].iov_base = payload;
	iov[1].iov_len = payload ? cap : 0;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	mh.msg_control = cbuf.buf;
	mh.msg_controllen = sizeof(cbuf.buf);
	do
		r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -1;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < n && ngot < FB_MAX_FDS; i++)
			memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	if (r == 0) {
		close_fds(got, ngot);
		m->op = 0;
		return 0;
	}
	if ((size_t)r < sizeof(*m) || (mh.msg_flags & MSG_CTRUNC)) {
		close_fds(got, ngot);
		errno = EPROTO;
		return -1;
	}
	if (fds && nfds) {
		memcpy(fds, got, sizeof(int) * ngot);
		*nfds = ngot;
	} else {
		close_fds(got, ngot);
	}
	/* A payload longer than cap was cut by the kernel (MSG_TRUNC): the
	 * caller sees m->len > return value and decides. */
	return (int)((size_t)r - sizeof(*m));
}

int zd_fb_connect(const char *path, enum zd_fb_role role)
{
	struct sockaddr_un sa;
	struct zd_fb_msg m = { .op = ZD_FB_HELLO, .a = role };
	struct timeval tv = { .tv_sec = FB_HELLO_TIMEOUT_S };
	struct timeval none = { 0 };
	int fd = -1, e;

	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path)) {
		errno = EINVAL;
		return -1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	if (zd_fb_send(fd, &m, NULL, NULL, 0) < 0)
		goto fail;
	/* The HELLO reply proves a tracker is on the other end; it is
	 * consumed here, so the caller's first recv is the answer to its own
	 * first request. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
		goto fail;
	int r = zd_fb_recv(fd, &m, NULL, 0, NULL, NULL);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			errno = ETIMEDOUT;
		goto fail;
	}
	if (m.op != ZD_FB_HELLO) {
		errno = m.op == ZD_FB_ERROR && m.a ? (int)m.a : ECONNREFUSED;
		goto fail;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none)) < 0)
		goto fail;
	return fd;
fail:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

size_t zd_fb_encode_set(const struct zd_pageset *s, uint8_t *buf, size_t cap)
{
	size_t n;

	if (cap < 4)
		return 0;
	/* The standby set is a hint: keep the lowest ranges that fit. */
	n = ZD_MIN(s->n, (cap - 4) / 16);
	zd_put_u32(buf, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		zd_put_u64(buf + 4 + 16 * i, s->r[i].first);
		zd_put_u64(buf + 4 + 16 * i + 8, s->r[i].count);
	}
	return 4 + 16 * n;
}

int zd_fb_decode_set(const uint8_t *buf, size_t len, struct zd_pageset *s)
{
	uint32_t n;

	zd_pageset_clear(s);
	if (len < 4)
		return -1;
	n = zd_get_u32(buf);
	if ((len - 4) / 16 < n || len != 4 + 16 * (size_t)n)
		return -1;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t first = zd_get_u64(buf + 4 + 16 * (size_t)i);
		uint64_t count = zd_get_u64(buf + 4 + 16 * (size_t)i + 8);

		if (count == 0 || first + count < first) {
			zd_pageset_clear(s);
			return -1;
		}
		zd_pageset_add_range(s, first, count);
	}
	return 0;
}
