/* SPDX-License-Identifier: MIT */
/* Client side of zd-vm's control socket: one request, one reply. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm/vmctl_client.h"

int zd_vmctl_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

int zd_vmctl_call(int fd, const struct zd_vmctl_req *req, struct zd_vmctl_rep *rep,
		  void *payload, size_t cap, int *fds, int *nfds)
{
	static char sink[ZD_VMCTL_MAX_MSG];
	struct iovec iov[2] = {
		{ .iov_base = rep, .iov_len = sizeof(*rep) },
		{ .iov_base = payload ? payload : sink, .iov_len = payload ? cap : sizeof(sink) },
	};
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	ssize_t n;

	if (nfds)
		*nfds = 0;
	if (send(fd, req, sizeof(*req), MSG_NOSIGNAL) != (ssize_t)sizeof(*req))
		return -1;
	do
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	if (n == 0) {
		errno = EPIPE;
		return -1;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		int k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int f;

			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (fds && nfds && *nfds < 4)
				fds[(*nfds)++] = f;
			else
				close(f);
		}
	}
	if (n < (ssize_t)sizeof(*rep) || (mh.msg_flags & MSG_TRUNC)) {
		errno = EBADMSG;
		return -1;
	}
	if (rep->len > n - (ssize_t)sizeof(*rep))
		rep->len = (uint32_t)(n - (ssize_t)sizeof(*rep));
	return 0;
}
