/* SPDX-License-Identifier: MIT */
/*
 * The feedback socket over a real Unix socket: framing and page sets,
 * a memfd carried by SCM_RIGHTS, and the tracker's server thread — HELLO,
 * STANDBY, ACK (with the release callback), DRAINED, MEMORY, a client
 * leaving while the tracker waits, a stale socket file, a live one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "zd/fb.h"
#include "fb/fbserver.h"
#include "zd/util.h"

static void test_set_codec(void **state)
{
	struct zd_pageset s = ZD_PAGESET_INIT, back = ZD_PAGESET_INIT;
	uint8_t buf[4 + 16 * 3];
	size_t n;

	zd_pageset_add_range(&s, 5, 3);
	zd_pageset_add_range(&s, 100, 1);
	zd_pageset_add_range(&s, 1000, 50);
	zd_pageset_add_range(&s, 5000, 2);
	/* Only three ranges fit: the set is a hint, cut from the top. */
	n = zd_fb_encode_set(&s, buf, sizeof(buf));
	assert_int_equal(n, 4 + 16 * 3);
	assert_int_equal(zd_fb_decode_set(buf, n, &back), 0);
	assert_int_equal(back.n, 3);
	assert_int_equal(zd_pageset_count(&back), 54);
	/* Bad payloads: short, count that does not match, empty range. */
	assert_int_equal(zd_fb_decode_set(buf, 3, &back), -1);
	assert_int_equal(zd_fb_decode_set(buf, n - 1, &back), -1);
	buf[4 + 8] = 0;	/* first range's count = 0 */
	memset(buf + 4 + 8, 0, 8);
	assert_int_equal(zd_fb_decode_set(buf, n, &back), -1);
	assert_int_equal(zd_fb_encode_set(&s, buf, 2), 0);
	zd_pageset_free(&s);
	zd_pageset_free(&back);
}

static void test_fd_passing(void **state)
{
	int sv[2], fd, got[4], nfds;
	struct zd_fb_msg m = { .op = ZD_FB_MEMORY, .a = 0x1000, .b = 1, .len = 5 };
	struct zd_fb_msg r;
	char payload[16];
	char *p;

	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	fd = memfd_create("zd-test", 0);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	strcpy(p, "guest ram");
	assert_int_equal(zd_fb_send(sv[0], &m, "hello", &fd, 1), 0);
	assert_int_equal(zd_fb_recv(sv[1], &r, payload, sizeof(payload), got, &nfds), 5);
	assert_int_equal(r.op, ZD_FB_MEMORY);
	assert_int_equal(r.a, 0x1000);
	assert_memory_equal(payload, "hello", 5);
	assert_int_equal(nfds, 1);
	/* The received descriptor maps the same memory. */
	char *q = mmap(NULL, 4096, PROT_READ, MAP_SHARED, got[0], 0);
	assert_string_equal(q, "guest ram");
	munmap(q, 4096);
	munmap(p, 4096);
	close(got[0]);
	close(fd);
	/* Orderly close reads as op 0. */
	close(sv[0]);
	assert_int_equal(zd_fb_recv(sv[1], &r, NULL, 0, NULL, NULL), 0);
	assert_int_equal(r.op, 0);
	close(sv[1]);
	/* Too many fds is refused before anything is sent. */
	int five[5] = { 0 };
	assert_int_equal(zd_fb_send(-1, &m, "hello", five, 5), -1);
	assert_int_equal(errno, EINVAL);
}

struct cb {
	uint64_t acked, wall;
	int memfd;
};

static void on_ack(void *ctx, uint64_t epoch, uint64_t wall)
{
	struct cb *c = ctx;

	c->acked = epoch;
	c->wall = wall;
}

static int on_memory(void *ctx, int *fds, uint64_t *base)
{
	struct cb *c = ctx;

	if (c->memfd < 0)
		return 0;
	fds[0] = c->memfd;
	*base = 0x7f0000000000ull;
	return 1;
}

static void sock_path(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/zd-test-fb.%ld.sock", (long)getpid());
}

static void test_server(void **state)
{
	struct cb c = { .memfd = memfd_create("zd-test", 0) };
	struct zd_fbserver_ops ops = { .ctx = &c, .ack = on_ack, .memory = on_memory };
	struct zd_fbserver *srv;
	struct zd_pageset set = ZD_PAGESET_INIT, got = ZD_PAGESET_INIT;
	char path[108], msg[256];
	uint8_t payload[256];
	struct zd_fb_msg m;
	int cl, sw, fds[4], nfds;

	sock_path(path, sizeof(path));
	unlink(path);
	srv = zd_fbserver_start(path, 4096, 1000, &ops, msg, sizeof(msg));
	assert_non_null(srv);
	assert_string_equal(zd_fbserver_path(srv), path);

	/* A second tracker on the same path is refused. */
	assert_null(zd_fbserver_start(path, 4096, 1000, &ops, msg, sizeof(msg)));
	assert_non_null(strstr(msg, "in use"));

	cl = zd_fb_connect(path, ZD_ROLE_MRU);
	assert_true(cl >= 0);
	assert_int_equal(zd_fbserver_clients(srv, ZD_ROLE_MRU), 1);
	assert_int_equal(zd_fbserver_clients(srv, ZD_ROLE_SEND), 0);

	/* STANDBY: the newest set is kept. */
	assert_int_equal(zd_fbserver_standby(srv, &got), 0);
	zd_pageset_add_range(&set, 10, 20);
	m = (struct zd_fb_msg){ .op = ZD_FB_STANDBY, .epoch = 7 };
	m.len = (uint32_t)zd_fb_encode_set(&set, payload, sizeof(payload));
	assert_int_equal(zd_fb_send(cl, &m, payload, NULL, 0), 0);
	/* A pfn beyond the page count is answered with ERROR, not stored. */
	struct zd_pageset big = ZD_PAGESET_INIT;
	zd_pageset_add_range(&big, 990, 20);
	m.epoch = 8;
	m.len = (uint32_t)zd_fb_encode_set(&big, payload, sizeof(payload));
	assert_int_equal(zd_fb_send(cl, &m, payload, NULL, 0), 0);
	assert_true(zd_fb_recv(cl, &m, NULL, 0, NULL, NULL) >= 0);
	assert_int_equal(m.op, ZD_FB_ERROR);
	assert_int_equal(zd_fbserver_standby(srv, &got), 7);
	assert_true(zd_pageset_equal(&got, &set));

	/* MEMORY: the memfd comes back by SCM_RIGHTS. */
	m = (struct zd_fb_msg){ .op = ZD_FB_MEMORY };
	assert_int_equal(zd_fb_send(cl, &m, NULL, NULL, 0), 0);
	assert_true(zd_fb_recv(cl, &m, NULL, 0, fds, &nfds) >= 0);
	assert_int_equal(m.op, ZD_FB_MEMORY);
	assert_int_equal(nfds, 1);
	assert_int_equal(m.a, 0x7f0000000000ull);
	close(fds[0]);

	/* ACK from a zd-send: the release callback runs, a waiter wakes. */
	sw = zd_fb_connect(path, ZD_ROLE_SEND);
	assert_true(sw >= 0);
	m = (struct zd_fb_msg){ .op = ZD_FB_ACK, .epoch = 3, .a = 12345 };
	assert_int_equal(zd_fb_send(sw, &m, NULL, NULL, 0), 0);
	assert_int_equal(zd_fbserver_wait(srv, ZD_FB_ACK, ZD_ROLE_SEND, 3, zd_now_ns() + 5000000000ull),
			 ZD_FBWAIT_OK);
	assert_int_equal(c.acked, 3);
	assert_int_equal(c.wall, 12345);
	assert_int_equal(zd_fbserver_acked(srv), 3);
	/* Waiting for a later epoch times out … */
	assert_int_equal(zd_fbserver_wait(srv, ZD_FB_ACK, ZD_ROLE_SEND, 4, zd_now_ns() + 50000000ull),
			 ZD_FBWAIT_TIMEOUT);
	/* … and ends at once when the client leaves. */
	close(sw);
	assert_int_equal(zd_fbserver_wait(srv, ZD_FB_ACK, ZD_ROLE_SEND, 4, zd_now_ns() + 5000000000ull),
			 ZD_FBWAIT_GONE);

	/* DRAINED. */
	m = (struct zd_fb_msg){ .op = ZD_FB_DRAINED, .epoch = 9 };
	assert_int_equal(zd_fb_send(cl, &m, NULL, NULL, 0), 0);
	assert_int_equal(zd_fbserver_wait(srv, ZD_FB_DRAINED, ZD_ROLE_MRU, 9, zd_now_ns() + 5000000000ull),
			 ZD_FBWAIT_OK);
	assert_int_equal(zd_fbserver_drained(srv), 9);

	close(cl);
	zd_fbserver_stop(srv);
	assert_int_equal(access(path, F_OK), -1);	/* removed at stop */

	/* A socket file left by a dead tracker is replaced. */
	int dead = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, path);
	assert_int_equal(bind(dead, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(dead);
	srv = zd_fbserver_start(path, 4096, 1000, NULL, msg, sizeof(msg));
	assert_non_null(srv);
	/* No memory callback: MEMORY is answered with ERROR ENOTSUP. */
	cl = zd_fb_connect(path, ZD_ROLE_SWAP);
	assert_true(cl >= 0);
	m = (struct zd_fb_msg){ .op = ZD_FB_MEMORY };
	assert_int_equal(zd_fb_send(cl, &m, NULL, NULL, 0), 0);
	assert_true(zd_fb_recv(cl, &m, NULL, 0, fds, &nfds) >= 0);
	assert_int_equal(m.op, ZD_FB_ERROR);
	assert_int_equal(m.a, ENOTSUP);
	assert_int_equal(nfds, 0);
	close(cl);
	zd_fbserver_stop(srv);

	/* Not a socket: refused, the file left alone. */
	FILE *f = fopen(path, "w");
	fclose(f);
	assert_null(zd_fbserver_start(path, 4096, 1000, NULL, msg, sizeof(msg)));
	assert_non_null(strstr(msg, "not a socket"));
	unlink(path);
	/* Nobody listening: connect fails with errno. */
	assert_int_equal(zd_fb_connect(path, ZD_ROLE_MRU), -1);

	zd_pageset_free(&set);
	zd_pageset_free(&big);
	zd_pageset_free(&got);
	close(c.memfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_codec),
		cmocka_unit_test(test_fd_passing),
		cmocka_unit_test(test_server),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
