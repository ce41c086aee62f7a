/* SPDX-License-Identifier: MIT */
/*
 * The tracker's feedback server (fb/fbserver.h): one thread polls the
 * listening socket, a stop eventfd and every client.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fb/fbserver.h"
#include "zd/util.h"

#define MAX_CLIENTS 16

struct client {
	int fd;
	int role;		/* 0 until HELLO */
};

struct zd_fbserver {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd, evfd;
	uint32_t page_size;
	uint64_t page_count;
	struct zd_fbserver_ops ops;
	pthread_t thread;
	bool running;

	/* Shared with the tracker's thread, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct client cl[MAX_CLIENTS];
	int ncl;
	struct zd_pageset standby;
	uint64_t standby_epoch;
	uint64_t acked, drained;
	bool link_down;		/* zd-send is reconnecting to the backup */
	bool link_said_up;	/* zd-send said LINK 1: it has a backup that ACKs */
	bool resync;		/* zd-send asked for a FULL checkpoint */

	uint8_t *buf;		/* receive buffer, ZD_FB_MAX_MSG */
};

void zd_fbserver_default_path(char *buf, size_t len)
{
	const char *dir = getenv("XDG_RUNTIME_DIR");

	if (!dir || !*dir || access(dir, W_OK) != 0)
		dir = "/tmp";
	snprintf(buf, len, "%s/zd-track.%ld.sock", dir, (long)getpid());
}

static void reply(int fd, uint32_t op, uint64_t epoch, uint64_t a, uint64_t b,
		  const int *fds, int nfds)
{
	struct zd_fb_msg m = { .op = op, .epoch = epoch, .a = a, .b = b };

	/* A client that went away is noticed by poll; nothing to do here. */
	(void)zd_fb_send(fd, &m, NULL, fds, nfds);
}

/* Clients with this role now; under mu. */
static int count_role(struct zd_fbserver *s, int role)
{
	int n = 0;

	for (int i = 0; i < s->ncl; i++)
		n += s->cl[i].role == role;
	return n;
}

/* Raise *mark (acked or drained) to epoch and wake zd_fbserver_wait. */
static void advance(struct zd_fbserver *s, uint64_t *mark, uint64_t epoch)
{
	pthread_mutex_lock(&s->mu);
	if (epoch > *mark)
		*mark = epoch;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void drop_client(struct zd_fbserver *s, int i)
{
	zd_debug("feedback: client role %d left", s->cl[i].role);
	close(s->cl[i].fd);
	s->cl[i] = s->cl[--s->ncl];
	/* A zd-send that joins later says LINK 1 itself, or never (zd-send -). */
	if (count_role(s, ZD_ROLE_SEND) == 0)
		s->link_said_up = false;
	pthread_cond_broadcast(&s->cv);
}

/* Handle one message of client i; returns -1 if the client must go. */
static int handle(struct zd_fbserver *s, int i)
{
	struct zd_fb_msg m;
	int fd = s->cl[i].fd;
	int r;

	r = zd_fb_recv(fd, &m, s->buf, ZD_FB_MAX_MSG, NULL, NULL);
	if (r <= 0 && m.op == 0)
		return -1;
	if (r < 0)
		return -1;
	if (m.len > (uint32_t)r) {
		reply(fd, ZD_FB_ERROR, m.epoch, EMSGSIZE, 0, NULL, 0);
		return 0;
	}
	switch (m.op) {
	case ZD_FB_HELLO:
		if (m.a < ZD_ROLE_MRU || m.a > ZD_ROLE_OTHER) {
			reply(fd, ZD_FB_ERROR, 0, EINVAL, 0, NULL, 0);
			return -1;
		}
		pthread_mutex_lock(&s->mu);
		s->cl[i].role = (int)m.a;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		zd_debug("feedback: client role %d connected", (int)m.a);
		reply(fd, ZD_FB_HELLO, 0, s->page_size, s->page_count, NULL, 0);
		return 0;
	case ZD_FB_STANDBY: {
		struct zd_pageset set = ZD_PAGESET_INIT;

		if (zd_fb_decode_set(s->buf, m.len, &set) < 0 ||
		    zd_pageset_end(&set) > s->page_count) {
			zd_pageset_free(&set);
			reply(fd, ZD_FB_ERROR, m.epoch, EINVAL, 0, NULL, 0);
			return 0;
		}
		pthread_mutex_lock(&s->mu);
		if (m.epoch >= s->standby_epoch) {
			zd_pageset_swap(&s->standby, &set);
			s->standby_epoch = m.epoch;
		}
		pthread_mutex_unlock(&s->mu);
		zd_pageset_free(&set);
		return 0;
	}
	case ZD_FB_DRAINED:
		advance(s, &s->drained, m.epoch);
		return 0;
	case ZD_FB_ACK: {
		bool fresh;

		pthread_mutex_lock(&s->mu);
		fresh = m.epoch > s->acked;
		pthread_mutex_unlock(&s->mu);
		/* Release output before the loop hears of the ACK: the commit
		 * is what the client of the VM is waiting for. */
		if (fresh && s->ops.ack)
			s->ops.ack(s->ops.ctx, m.epoch, m.a);
		advance(s, &s->acked, m.epoch);
		return 0;
	}
	case ZD_FB_LINK:
		pthread_mutex_lock(&s->mu);
		s->link_down = m.a == 0;
		if (m.a)
			s->link_said_up = true;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		zd_debug("feedback: backup link %s", m.a ? "up" : "down");
		return 0;
	case ZD_FB_RESYNC:
		pthread_mutex_lock(&s->mu);
		s->resync = true;
		pthread_mutex_unlock(&s->mu);
		zd_debug("feedback: resync asked for");
		return 0;
	case ZD_FB_MEMORY: {
		int fds[4];
		uint64_t base = 0;
		int n = s->ops.memory ? s->ops.memory(s->ops.ctx, fds, &base) : 0;

		if (n > 0)
			reply(fd, ZD_FB_MEMORY, 0, base, (uint64_t)n, fds, n);
		else
			reply(fd, ZD_FB_ERROR, 0, n == 0 ? ENOTSUP : EIO, 0, NULL, 0);
		/* The fds are the target's; it keeps them open. */
		return 0;
	}
	case ZD_FB_BYE:
		return -1;
	default:
		reply(fd, ZD_FB_ERROR, m.epoch, EOPNOTSUPP, 0, NULL, 0);
		return 0;
	}
}

static void accept_one(struct zd_fbserver *s)
{
	int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	pthread_mutex_lock(&s->mu);
	if (s->ncl == MAX_CLIENTS) {
		pthread_mutex_unlock(&s->mu);
		reply(fd, ZD_FB_ERROR, 0, EMFILE, 0, NULL, 0);
		close(fd);
		return;
	}
	s->cl[s->ncl].fd = fd;
	s->cl[s->ncl].role = 0;
	s->ncl++;
	pthread_mutex_unlock(&s->mu);
}

static void *serve(void *arg)
{
	struct zd_fbserver *s = arg;
	struct pollfd pfd[MAX_CLIENTS + 2];
	sigset_t all;

	/* Signals belong to the checkpoint loop, which turns them into END. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);

	for (;;) {
		int n = 0, ncl;

		pfd[n++] = (struct pollfd){ .fd = s->evfd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		pthread_mutex_lock(&s->mu);
		ncl = s->ncl;
		for (int i = 0; i < ncl; i++)
			pfd[n++] = (struct pollfd){ .fd = s->cl[i].fd, .events = POLLIN };
		pthread_mutex_unlock(&s->mu);

		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			zd_warn("feedback socket: poll");
			return NULL;
		}
		if (pfd[0].revents)
			return NULL;
		/* Clients first, from the back, so drop_client's move of the
		 * last entry never skips one. */
		for (int i = ncl - 1; i >= 0; i--) {
			if (!pfd[2 + i].revents)
				continue;
			if (handle(s, i) < 0) {
				pthread_mutex_lock(&s->mu);
				drop_client(s, i);
				pthread_mutex_unlock(&s->mu);
			}
		}
		if (pfd[1].revents & POLLIN)
			accept_one(s);
	}
}

/* Is something listening at path? A socket file whose owner died refuses
 * connections; that one may be replaced. */
static bool live_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	strcpy(sa.sun_path, path);
	live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return live;
}

struct zd_fbserver *zd_fbserver_start(const char *path, uint32_t page_size,
				      uint64_t page_count,
				      const struct zd_fbserver_ops *ops,
				      char *msg, size_t msglen)
{
	struct zd_fbserver *s = NULL;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int e;

	if (!path || !*path || strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(msg, msglen, "control socket path '%s': empty or too long (max %zu bytes)",
			 path ? path : "", sizeof(sa.sun_path) - 1);
		return NULL;
	}
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(msg, msglen, "control socket %s: exists and is not a socket", path);
			return NULL;
		}
		if (live_socket(path)) {
			snprintf(msg, msglen, "control socket %s: in use by another tracker", path);
			return NULL;
		}
		unlink(path);
	}

	s = zd_xcalloc(1, sizeof(*s));
	s->lfd = s->evfd = -1;
	strcpy(s->path, path);
	s->page_size = page_size;
	s->page_count = page_count;
	if (ops)
		s->ops = *ops;
	zd_pageset_init(&s->standby);
	pthread_mutex_init(&s->mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&s->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	s->buf = zd_xmalloc(ZD_FB_MAX_MSG);

	s->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s->lfd < 0)
		goto fail_errno;
	strcpy(sa.sun_path, path);
	if (bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail_errno;
	/* Only this user may steer the tracker or take guest memory. */
	if (chmod(path, 0600) < 0 || listen(s->lfd, MAX_CLIENTS) < 0)
		goto fail_unlink;
	s->evfd = eventfd(0, EFD_CLOEXEC);
	if (s->evfd < 0)
		goto fail_unlink;
	e = pthread_create(&s->thread, NULL, serve, s);
	if (e) {
		errno = e;
		goto fail_unlink;
	}
	s->running = true;
	return s;

fail_unlink:
	e = errno;
	unlink(path);
	errno = e;
fail_errno:
	snprintf(msg, msglen, "control socket %s: %s", path, strerror(errno));
	zd_fbserver_stop(s);
	return NULL;
}

void zd_fbserver_stop(struct zd_fbserver *s)
{
	if (!s)
		return;
	if (s->running) {
		uint64_t one = 1;

		if (write(s->evfd, &one, sizeof(one)) != sizeof(one))
			zd_warn("feedback socket: stop");
		pthread_join(s->thread, NULL);
		unlink(s->path);
	}
	for (int i = 0; i < s->ncl; i++)
		close(s->cl[i].fd);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->evfd >= 0)
		close(s->evfd);
	zd_pageset_free(&s->standby);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s->buf);
	free(s);
}

const char *zd_fbserver_path(const struct zd_fbserver *s)
{
	return s->path;
}

int zd_fbserver_clients(struct zd_fbserver *s, enum zd_fb_role role)
{
	int n;

	pthread_mutex_lock(&s->mu);
	n = count_role(s, (int)role);
	pthread_mutex_unlock(&s->mu);
	return n;
}

uint64_t zd_fbserver_standby(struct zd_fbserver *s, struct zd_pageset *out)
{
	uint64_t e;

	pthread_mutex_lock(&s->mu);
	e = s->standby_epoch;
	if (zd_pageset_copy(out, &s->standby) < 0)
		e = 0;
	pthread_mutex_unlock(&s->mu);
	return e;
}

/* *mark (acked or drained), read under mu. */
static uint64_t mark_of(struct zd_fbserver *s, const uint64_t *mark)
{
	uint64_t e;

	pthread_mutex_lock(&s->mu);
	e = *mark;
	pthread_mutex_unlock(&s->mu);
	return e;
}

uint64_t zd_fbserver_acked(struct zd_fbserver *s)
{
	return mark_of(s, &s->acked);
}

uint64_t zd_fbserver_drained(struct zd_fbserver *s)
{
	return mark_of(s, &s->drained);
}

bool zd_fbserver_link_down(struct zd_fbserver *s)
{
	bool down;

	pthread_mutex_lock(&s->mu);
	down = s->link_down && count_role(s, ZD_ROLE_SEND) > 0;
	pthread_mutex_unlock(&s->mu);
	return down;
}

bool zd_fbserver_acks_expected(struct zd_fbserver *s)
{
	bool yes;

	pthread_mutex_lock(&s->mu);
	yes = s->link_said_up && !s->link_down && count_role(s, ZD_ROLE_SEND) > 0;
	pthread_mutex_unlock(&s->mu);
	return yes;
}

/* Whether a RESYNC is pending, and with take, no longer. */
static bool resync_flag(struct zd_fbserver *s, bool take)
{
	bool r;

	pthread_mutex_lock(&s->mu);
	r = s->resync;
	if (take)
		s->resync = false;
	pthread_mutex_unlock(&s->mu);
	return r;
}

bool zd_fbserver_take_resync(struct zd_fbserver *s)
{
	return resync_flag(s, true);
}

bool zd_fbserver_resync_asked(struct zd_fbserver *s)
{
	return resync_flag(s, false);
}

enum zd_fbwait zd_fbserver_wait(struct zd_fbserver *s, enum zd_fb_op op,
				enum zd_fb_role role, uint64_t epoch,
				uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
			       .tv_nsec = (long)(deadline_ns % 1000000000ull) };
	const uint64_t *mark = op == ZD_FB_ACK ? &s->acked : &s->drained;
	enum zd_fbwait rc;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (*mark >= epoch) {
			rc = ZD_FBWAIT_OK;
			break;
		}
		if (count_role(s, role) == 0) {
			rc = ZD_FBWAIT_GONE;
			break;
		}
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
			rc = *mark >= epoch ? ZD_FBWAIT_OK : ZD_FBWAIT_TIMEOUT;
			break;
		}
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}
