/* SPDX-License-Identifier: MIT */
/*
 * The transports around the wire: ssh: destinations split as the man page
 * says, and a keyed zd_conn pair (lib/net/link.c) carries a stream both
 * ways through its encrypting relays, reports a clean end as clean, a
 * changed byte as bad data, and puts no clear record on the wire.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

static void test_ssh_split(void **state)
{
	char uh[64], path[64], msg[256];

	(void)state;
	assert_int_equal(zd_net_ssh_split("ssh:host", uh, sizeof(uh), path, sizeof(path), msg, sizeof(msg)), 0);
	assert_string_equal(uh, "host");
	assert_string_equal(path, ZD_SSH_DEFAULT_PATH);
	assert_int_equal(zd_net_ssh_split("ssh:zd@host2:/var/lib/zd/vm1", uh, sizeof(uh), path, sizeof(path),
					  msg, sizeof(msg)), 0);
	assert_string_equal(uh, "zd@host2");
	assert_string_equal(path, "/var/lib/zd/vm1");
	assert_int_equal(zd_net_ssh_split("ssh:[::1]:r", uh, sizeof(uh), path, sizeof(path), msg, sizeof(msg)), 0);
	assert_string_equal(uh, "[::1]");
	assert_string_equal(path, "r");
	assert_int_equal(zd_net_ssh_split("ssh:[::1]", uh, sizeof(uh), path, sizeof(path), msg, sizeof(msg)), 0);
	assert_string_equal(uh, "[::1]");
	const char *bad[] = { "ssh:", "ssh::/x", "ssh:@h", "ssh:u@:p", "ssh:h:", "ssh:[::1", "ssh:[::1]x", "host:1" };
	for (size_t i = 0; i < ZD_ARRAY_SIZE(bad); i++)
		assert_int_equal(zd_net_ssh_split(bad[i], uh, sizeof(uh), path, sizeof(path), msg, sizeof(msg)), -1);
}

/* one Argon2id for the whole program */
static struct zd_auth_key the_key;

struct side {
	struct zd_conn c;
	struct zd_auth_key key;
	bool server;
	int rc;
	char msg[256];
};

static void *auth_side(void *arg)
{
	struct side *s = arg;

	s->rc = zd_conn_auth(&s->c, &s->key, s->server, 5000, s->msg, sizeof(s->msg));
	return NULL;
}

/* Two authenticated ends over a socketpair. */
static void pair(struct side *a, struct side *b)
{
	int sv[2];
	pthread_t t;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	memset(a, 0, sizeof(*a));
	memset(b, 0, sizeof(*b));
	a->key = the_key;
	b->key = the_key;
	a->c = (struct zd_conn){ .rfd = sv[0], .wfd = sv[0], .owned = true, .sock = true, .name = "a" };
	b->c = (struct zd_conn){ .rfd = sv[1], .wfd = sv[1], .owned = true, .sock = true, .name = "b" };
	b->server = true;
	assert_int_equal(pthread_create(&t, NULL, auth_side, b), 0);
	auth_side(a);
	pthread_join(t, NULL);
	assert_int_equal(a->rc, 0);
	assert_int_equal(b->rc, 0);
	assert_non_null(a->c.auth);
}

static void put_stream(int fd, uint64_t epochs)
{
	struct zd_writer w;
	struct zd_record r;

	zd_writer_init(&w, fd, ZD_ENC_BINARY);
	zd_record_init(&r, ZD_REC_HEADER);
	r.u.header.major = ZD_STREAM_MAJOR;
	r.u.header.page_size = 4096;
	r.u.header.page_count = 16;
	r.u.header.target = (char *)"synth:pages=16";
	r.u.header.control = (char *)"";
	assert_int_equal(zd_writer_put(&w, &r), 0);
	for (uint64_t e = 1; e <= epochs; e++) {
		zd_record_init(&r, ZD_REC_CHECKPOINT);
		r.u.ckpt.epoch = e;
		assert_int_equal(zd_writer_put(&w, &r), 0);
	}
	zd_record_init(&r, ZD_REC_END);
	r.u.end.epochs = epochs;
	assert_int_equal(zd_writer_put(&w, &r), 0);
	assert_int_equal(zd_writer_flush(&w), 0);
	zd_writer_free(&w);
}

static void test_auth_link(void **state)
{
	struct side a, b;
	struct zd_reader rd;
	struct zd_record r;
	char msg[256];
	int n, got = 0;

	(void)state;
	pair(&a, &b);
	put_stream(a.c.wfd, 5);
	zd_conn_shutdown_write(&a.c);
	zd_reader_init(&rd, b.c.rfd, "b");
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		got++;
		zd_record_free(&r);
	}
	assert_int_equal(n, 0);
	assert_int_equal(got, 7);	/* HEADER, 5 CHECKPOINT, END */
	assert_int_equal(zd_conn_auth_status(&b.c, msg, sizeof(msg)), 0);
	/* the way back works too */
	put_stream(b.c.wfd, 1);
	zd_conn_shutdown_write(&b.c);
	zd_reader_free(&rd);
	zd_reader_init(&rd, a.c.rfd, "a");
	got = 0;
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		got++;
		zd_record_free(&r);
	}
	assert_int_equal(got, 3);
	zd_reader_free(&rd);
	zd_conn_close(&a.c);
	zd_conn_close(&b.c);
}

/* A byte changed on the wire: the reader sees the stream end before the
 * record, and the link says why. */
static void test_auth_link_tampered(void **state)
{
	int sv[2], mid[2];
	struct zd_reader rd;
	struct zd_record r;
	char msg[256];
	uint8_t buf[4096];
	ssize_t k;
	int n, got = 0;

	(void)state;
	/* The client end is by hand: its signing relay writes into mid, the
	 * test flips a byte and passes the rest to the server's raw socket. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, mid), 0);
	struct zd_auth_key key = the_key;
	struct side srv = { .key = key, .server = true,
			    .c = { .rfd = sv[1], .wfd = sv[1], .owned = true, .sock = true, .name = "b" } };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, auth_side, &srv), 0);
	struct zd_auth cli;
	assert_int_equal(zd_auth_handshake(&key, ZD_AUTH_CLIENT, sv[0], sv[0], 5000, &cli, msg, sizeof(msg)), 0);
	pthread_join(t, NULL);
	assert_int_equal(srv.rc, 0);
	/* the stream, tagged by a signing relay into mid[1]... */
	struct zd_auth_relay *rl;
	int wfd;
	assert_int_equal(zd_auth_relay_start(&rl, &cli, ZD_AUTH_SIGN, mid[1], &wfd, msg, sizeof(msg)), 0);
	put_stream(wfd, 3);
	close(wfd);
	assert_int_equal(zd_auth_relay_join(rl, msg, sizeof(msg)), 0);
	close(mid[1]);
	/* ...read back, one byte of the third record's body flipped, to b */
	size_t total = 0;
	uint8_t all[8192];
	while ((k = read(mid[0], buf, sizeof(buf))) > 0) {
		memcpy(all + total, buf, (size_t)k);
		total += (size_t)k;
	}
	close(mid[0]);
	assert_true(total > 300);
	/* the records' magic and the HEADER's target string are not in the clear */
	assert_null(memmem(all, total, ZD_STREAM_MAGIC, 4));
	assert_null(memmem(all, total, "synth:pages=16", 14));
	all[total - 24] ^= 1;	/* inside END's body, before its tag */
	assert_int_equal(zd_write_full(sv[0], all, total), 0);
	shutdown(sv[0], SHUT_WR);
	zd_reader_init(&rd, srv.c.rfd, "b");
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		got++;
		zd_record_free(&r);
	}
	assert_int_equal(got, 4);	/* HEADER and 3 CHECKPOINT; END refused */
	assert_int_equal(zd_conn_auth_status(&srv.c, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_non_null(strstr(msg, "bad MAC"));
	zd_reader_free(&rd);
	zd_conn_close(&srv.c);
	close(sv[0]);
}

int main(void)
{
	char msg[256];
	if (zd_auth_key_from_bytes(&the_key, "a key of sixteen bytes or more", 30, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "%s\n", msg);
		return 1;
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ssh_split),
		cmocka_unit_test(test_auth_link),
		cmocka_unit_test(test_auth_link_tampered),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
