/* SPDX-License-Identifier: MIT */
/*
 * Link authentication (lib/wire/auth.c) over real sockets: the handshake
 * between two threads on a socketpair (same key, wrong key, a peer that
 * does not speak it), per-record MACs refusing changed, replayed and
 * reordered records, and the relays carrying a real zd-stream.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

struct side {
	struct zd_auth_key key;
	enum zd_auth_role role;
	int fd;
	struct zd_auth a;
	int rc;
	char msg[256];
	bool plain;		/* not a zd peer with a key: writes a stream preamble */
};

static void *run_side(void *arg)
{
	struct side *s = arg;
	if (s->plain) {
		/* a zd-recv without --key: it writes nothing first and, reading
		 * our hello as a stream, gives up and closes */
		char buf[64];
		(void)!read(s->fd, buf, sizeof(buf));
		close(s->fd);
		return NULL;
	}
	s->rc = zd_auth_handshake(&s->key, s->role, s->fd, s->fd, 5000, &s->a, s->msg, sizeof(s->msg));
	return NULL;
}

static void pair(struct side *c, struct side *s, const char *kc, const char *ks)
{
	int sv[2];
	pthread_t t;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(c, 0, sizeof(*c));
	memset(s, 0, sizeof(*s));
	c->role = ZD_AUTH_CLIENT;
	s->role = ZD_AUTH_SERVER;
	c->fd = sv[0];
	s->fd = sv[1];
	zd_auth_key_from_bytes(&c->key, kc, strlen(kc));
	if (ks)
		zd_auth_key_from_bytes(&s->key, ks, strlen(ks));
	else
		s->plain = true;
	assert_int_equal(pthread_create(&t, NULL, run_side, s), 0);
	run_side(c);
	pthread_join(t, NULL);
}

static void test_same_key(void **state)
{
	(void)state;
	struct side c, s;
	pair(&c, &s, "correct horse battery staple", "correct horse battery staple");
	assert_int_equal(c.rc, 0);
	assert_int_equal(s.rc, 0);
	/* directions have their own keys, and each end's send is the other's recv */
	assert_memory_equal(c.a.send_key, s.a.recv_key, 32);
	assert_memory_equal(c.a.recv_key, s.a.send_key, 32);
	assert_memory_not_equal(c.a.send_key, c.a.recv_key, 32);
	close(c.fd);
	close(s.fd);
	/* a second connection gets other session keys (fresh nonces) */
	struct side c2, s2;
	pair(&c2, &s2, "correct horse battery staple", "correct horse battery staple");
	assert_memory_not_equal(c.a.send_key, c2.a.send_key, 32);
	close(c2.fd);
	close(s2.fd);
}

static void test_wrong_key(void **state)
{
	(void)state;
	struct side c, s;
	pair(&c, &s, "correct horse battery staple", "correct horse battery stapler");
	assert_int_equal(c.rc, ZD_EXIT_PEER);
	assert_int_equal(s.rc, ZD_EXIT_PEER);
	assert_string_equal(c.msg, "peer does not know the key");
	assert_string_equal(s.msg, "peer does not know the key");
	close(c.fd);
	close(s.fd);
}

static void test_peer_without_key(void **state)
{
	(void)state;
	struct side c, s;
	pair(&c, &s, "correct horse battery staple", NULL);
	assert_int_equal(c.rc, ZD_EXIT_PEER);
	assert_non_null(strstr(c.msg, "no --key there?"));
	close(c.fd);

	/* a peer that answers with something else than the handshake */
	int sv[2];
	struct zd_auth a;
	struct zd_auth_key k;
	char msg[256];
	zd_auth_key_from_bytes(&k, "0123456789abcdef", 16);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[1], ZD_STREAM_MAGIC "\1\0\0\0" "0123456789012345678901234567890123", 40), 40);
	assert_int_equal(zd_auth_handshake(&k, ZD_AUTH_CLIENT, sv[0], sv[0], 5000, &a, msg, sizeof(msg)),
			 ZD_EXIT_PEER);
	assert_string_equal(msg, "peer does not speak the key handshake (no --key there?)");
	/* and one that says nothing: the timeout */
	char buf[64];
	(void)!read(sv[1], buf, sizeof(buf));
	assert_int_equal(zd_auth_handshake(&k, ZD_AUTH_CLIENT, sv[0], sv[0], 100, &a, msg, sizeof(msg)),
			 ZD_EXIT_PEER);
	assert_non_null(strstr(msg, "in time"));
	close(sv[0]);
	close(sv[1]);
}

/* Tags by hand: a changed byte, a replay, a reorder, a drop are refused. */
static void test_record_mac(void **state)
{
	(void)state;
	struct side c, s;
	uint8_t rec[3][64], tag[3][ZD_AUTH_TAG];
	char msg[256];

	pair(&c, &s, "k-0123456789abcdef", "k-0123456789abcdef");
	assert_int_equal(c.rc, 0);
	for (int i = 0; i < 3; i++) {
		memset(rec[i], 'a' + i, sizeof(rec[i]));
		zd_auth_mac(&c.a, rec[i], sizeof(rec[i]), tag[i]);
	}
	struct zd_auth saved = s.a;
	/* in order: good */
	for (int i = 0; i < 3; i++)
		assert_int_equal(zd_auth_verify(&s.a, rec[i], sizeof(rec[i]), tag[i], msg, sizeof(msg)), 0);
	/* tampered unit 1 */
	s.a = saved;
	assert_int_equal(zd_auth_verify(&s.a, rec[0], sizeof(rec[0]), tag[0], msg, sizeof(msg)), 0);
	rec[1][10] ^= 1;
	assert_int_equal(zd_auth_verify(&s.a, rec[1], sizeof(rec[1]), tag[1], msg, sizeof(msg)), -1);
	assert_string_equal(msg, "record 1: bad MAC");
	rec[1][10] ^= 1;
	/* the refused one did not count: the genuine one is still next */
	assert_int_equal(zd_auth_verify(&s.a, rec[1], sizeof(rec[1]), tag[1], msg, sizeof(msg)), 0);
	/* replayed unit 1 in place of unit 2 */
	assert_int_equal(zd_auth_verify(&s.a, rec[1], sizeof(rec[1]), tag[1], msg, sizeof(msg)), -1);
	assert_string_equal(msg, "record 2: bad MAC");
	/* reordered / dropped: unit 1 first */
	s.a = saved;
	assert_int_equal(zd_auth_verify(&s.a, rec[1], sizeof(rec[1]), tag[1], msg, sizeof(msg)), -1);
	assert_string_equal(msg, "preamble: bad MAC");
	/* reflected: our own tag sent back to us */
	uint8_t t2[ZD_AUTH_TAG];
	struct zd_auth cs = c.a;
	cs.send_seq = 0;
	zd_auth_mac(&cs, rec[0], sizeof(rec[0]), t2);
	cs.recv_seq = 0;
	assert_int_equal(zd_auth_verify(&cs, rec[0], sizeof(rec[0]), t2, msg, sizeof(msg)), -1);
	close(c.fd);
	close(s.fd);
}

/* A real stream through SIGN relay -> bytes -> VERIFY relay -> zd_reader;
 * damage = byte offset to flip in the carried bytes (0: none). */
#define NREC 6
static void make_stream(struct zd_record *r)
{
	zd_record_init(&r[0], ZD_REC_HEADER);
	r[0].u.header.major = 1;
	r[0].u.header.page_size = 4096;
	r[0].u.header.page_count = 64;
	r[0].u.header.target = zd_xstrdup("synth:pages=64");
	r[0].u.header.control = zd_xstrdup("");
	for (int i = 1; i < NREC - 1; i++) {
		zd_record_init(&r[i], ZD_REC_PAGES);
		r[i].u.pages.epoch = 1;
		zd_pageset_add_range(&r[i].u.pages.set, (uint64_t)i * 4, 2);
		r[i].u.pages.data_len = 2 * 4096;
		r[i].u.pages.data = zd_xmalloc(2 * 4096);
		memset(r[i].u.pages.data, i, 2 * 4096);
	}
	zd_record_init(&r[NREC - 1], ZD_REC_END);
	r[NREC - 1].u.end.epochs = 1;
}

struct pump {
	int in, out;
	size_t flip;	/* byte to flip, 0 none */
	size_t dup_from, dup_len;	/* replay these bytes once more at the end */
};

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	size_t cap = 1 << 20, len = 0;
	uint8_t *buf = zd_xmalloc(cap);
	ssize_t n;
	while ((n = read(p->in, buf + len, cap - len)) > 0)
		len += (size_t)n;
	if (p->flip && p->flip < len)
		buf[p->flip] ^= 0x40;
	if (p->dup_len) {
		/* drop the tail after dup_from and send that unit again twice */
		memcpy(buf + p->dup_from + p->dup_len, buf + p->dup_from, p->dup_len);
		len = p->dup_from + 2 * p->dup_len;
	}
	zd_write_full(p->out, buf, len);
	close(p->out);
	free(buf);
	return NULL;
}

static int relay_run(struct pump *pp, int *nread, char *msg, size_t len)
{
	struct side c, s;
	struct zd_record r[NREC];
	int a[2], b[2], wfd, rfd;
	struct zd_auth_relay *sr, *vr;
	pthread_t t;

	pair(&c, &s, "relay key 0123456789", "relay key 0123456789");
	assert_int_equal(c.rc, 0);
	close(c.fd);
	close(s.fd);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
	assert_int_equal(zd_auth_relay_start(&sr, &c.a, ZD_AUTH_SIGN, a[0], &wfd, msg, len), 0);
	assert_int_equal(zd_auth_relay_start(&vr, &s.a, ZD_AUTH_VERIFY, b[1], &rfd, msg, len), 0);
	pp->in = a[1];
	pp->out = b[0];
	assert_int_equal(pthread_create(&t, NULL, pump_main, pp), 0);

	make_stream(r);
	struct zd_writer w;
	zd_writer_init(&w, wfd, ZD_ENC_BINARY);
	for (int i = 0; i < NREC; i++)
		assert_int_equal(zd_writer_put(&w, &r[i]), 0);
	assert_int_equal(zd_writer_flush(&w), 0);
	zd_writer_free(&w);
	close(wfd);
	assert_int_equal(zd_auth_relay_join(sr, msg, len), 0);
	shutdown(a[0], SHUT_WR);

	struct zd_reader rd;
	struct zd_record got;
	int n;
	*nread = 0;
	zd_reader_init(&rd, rfd, "peer");
	while ((n = zd_reader_next(&rd, (zd_record_init(&got, 0), &got))) > 0) {
		assert_int_equal(got.type, r[*nread].type);
		if (got.type == ZD_REC_PAGES)
			assert_memory_equal(got.u.pages.data, r[*nread].u.pages.data, 2 * 4096);
		zd_record_free(&got);
		(*nread)++;
	}
	zd_reader_free(&rd);
	close(rfd);
	pthread_join(t, NULL);
	int code = zd_auth_relay_join(vr, msg, len);
	close(a[0]);
	close(a[1]);
	close(b[1]);
	for (int i = 0; i < NREC; i++)
		zd_record_free(&r[i]);
	return code;
}

static void test_relay_clean(void **state)
{
	(void)state;
	struct pump p = { 0 };
	char msg[256];
	int n;
	assert_int_equal(relay_run(&p, &n, msg, sizeof(msg)), 0);
	assert_int_equal(n, NREC);
}

static void test_relay_tampered(void **state)
{
	(void)state;
	/* preamble 8 + tag 32, HEADER 12+body+32, then record 2 (PAGES):
	 * flip a byte of page data well inside record 2 */
	uint8_t *enc;
	size_t hlen;
	struct zd_record r[NREC];
	make_stream(r);
	assert_int_equal(zd_encode_binary(&r[0], 4096, &enc, &hlen), 0);
	free(enc);
	size_t rec2 = 8 + 32 + hlen + 32;
	struct pump p = { .flip = rec2 + 100 };
	char msg[256];
	int n;
	assert_int_equal(relay_run(&p, &n, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_string_equal(msg, "record 2: bad MAC");
	assert_int_equal(n, 1);	/* only the HEADER was passed on */

	/* a replay: record 2 carried again where record 3 belongs */
	size_t plen = 12 + 8 + 1 + 2 + 2 + 4 + 2 * 4096;	/* PAGES of one range */
	assert_int_equal(zd_encode_binary(&r[1], 4096, &enc, &plen), 0);
	free(enc);
	struct pump q = { .dup_from = rec2, .dup_len = plen + 32 };
	assert_int_equal(relay_run(&q, &n, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_string_equal(msg, "record 3: bad MAC");
	assert_int_equal(n, 2);
	for (int i = 0; i < NREC; i++)
		zd_record_free(&r[i]);
}

static void test_key_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/zd-test-key-XXXXXX", path[64], msg[256];
	struct zd_auth_key k1, k2;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/key", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "short", 5), 5);
	close(fd);
	assert_int_equal(zd_auth_key_load(&k1, path, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "5 bytes, a key needs at least 16"));
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "0123456789abcdefXYZ\n", 20), 20);
	close(fd);
	assert_int_equal(zd_auth_key_load(&k1, path, msg, sizeof(msg)), 0);
	zd_auth_key_from_bytes(&k2, "0123456789abcdefXYZ\n", 20);
	assert_memory_equal(k1.k, k2.k, 32);
	chmod(path, 0644);
	assert_int_equal(zd_auth_key_load(&k1, path, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "chmod 600"));
	unlink(path);
	assert_int_equal(zd_auth_key_load(&k1, path, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "No such file"));
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_key),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_peer_without_key),
		cmocka_unit_test(test_record_mac),
		cmocka_unit_test(test_relay_clean),
		cmocka_unit_test(test_relay_tampered),
		cmocka_unit_test(test_key_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
