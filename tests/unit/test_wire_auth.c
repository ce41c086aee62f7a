/* SPDX-License-Identifier: MIT */
/*
 * The keyed link (lib/wire/auth.c) over real sockets: the handshake
 * between two threads on a socketpair (same key, wrong key, a peer that
 * does not speak it or speaks an older version), sealed units that open
 * only once, in order and unchanged, with either cipher, no clear byte of
 * a unit on the wire, and the relays carrying a real zd-stream.
 *
 * A key costs an Argon2id run: the program makes its few keys once.
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
#include <sodium.h>

#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

/* made once in main(): "correct horse battery staple", the same with
 * "stapler", "relay key 0123456789" */
static struct zd_auth_key key_horse, key_stapler, key_relay;

static void make_key(struct zd_auth_key *k, const char *bytes)
{
	char msg[256];
	assert_int_equal(zd_auth_key_from_bytes(k, bytes, strlen(bytes), msg, sizeof(msg)), 0);
}

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

static void pair(struct side *c, struct side *s, const struct zd_auth_key *kc,
		 const struct zd_auth_key *ks)
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
	c->key = *kc;
	if (ks)
		s->key = *ks;
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
	pair(&c, &s, &key_horse, &key_horse);
	assert_int_equal(c.rc, 0);
	assert_int_equal(s.rc, 0);
	/* directions have their own keys, and each end's send is the other's recv */
	assert_memory_equal(c.a.send_key, s.a.recv_key, 32);
	assert_memory_equal(c.a.recv_key, s.a.send_key, 32);
	assert_memory_not_equal(c.a.send_key, c.a.recv_key, 32);
	/* AES-256-GCM exactly where this CPU has it */
	assert_int_equal(c.a.aes, crypto_aead_aes256gcm_is_available() != 0);
	assert_int_equal(s.a.aes, c.a.aes);
	close(c.fd);
	close(s.fd);
	/* a second connection gets other session keys (fresh nonces) */
	struct side c2, s2;
	pair(&c2, &s2, &key_horse, &key_horse);
	assert_memory_not_equal(c.a.send_key, c2.a.send_key, 32);
	close(c2.fd);
	close(s2.fd);
	/* one end without AES: both use XChaCha20-Poly1305, and the offers
	 * went into the keys */
	struct zd_auth_key slow = key_horse;
	slow.no_aes = true;
	pair(&c2, &s2, &key_horse, &slow);
	assert_int_equal(c2.rc, 0);
	assert_int_equal(s2.rc, 0);
	assert_false(c2.a.aes);
	assert_false(s2.a.aes);
	assert_string_equal(zd_auth_cipher(&c2.a), "xchacha20poly1305");
	assert_memory_equal(c2.a.send_key, s2.a.recv_key, 32);
	close(c2.fd);
	close(s2.fd);
}

static void test_wrong_key(void **state)
{
	(void)state;
	struct side c, s;
	pair(&c, &s, &key_horse, &key_stapler);
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
	pair(&c, &s, &key_horse, NULL);
	assert_int_equal(c.rc, ZD_EXIT_PEER);
	assert_non_null(strstr(c.msg, "no --key there?"));
	close(c.fd);

	/* a peer that answers with something else than the handshake */
	int sv[2];
	struct zd_auth a;
	char msg[256];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[1], ZD_STREAM_MAGIC "\1\0\0\0" "0123456789012345678901234567890123", 40), 40);
	assert_int_equal(zd_auth_handshake(&key_horse, ZD_AUTH_CLIENT, sv[0], sv[0], 5000, &a, msg, sizeof(msg)),
			 ZD_EXIT_PEER);
	assert_string_equal(msg, "peer does not speak the key handshake (no --key there?)");
	close(sv[0]);
	close(sv[1]);
	/* and one that says nothing: the timeout */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(zd_auth_handshake(&key_horse, ZD_AUTH_CLIENT, sv[0], sv[0], 100, &a, msg, sizeof(msg)),
			 ZD_EXIT_PEER);
	assert_non_null(strstr(msg, "in time"));
	close(sv[0]);
	close(sv[1]);
}

/* A peer of the first version (a MAC, no encryption): its hello is named,
 * and it gets no proof from us. */
static void test_old_hello(void **state)
{
	(void)state;
	int sv[2];
	struct zd_auth a;
	char msg[256];
	uint8_t buf[256];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(write(sv[1], "ZDAUTH1\n" "0123456789012345678901234567890123456789", 40), 40);
	assert_int_equal(zd_auth_handshake(&key_horse, ZD_AUTH_SERVER, sv[0], sv[0], 5000, &a, msg, sizeof(msg)),
			 ZD_EXIT_PEER);
	assert_string_equal(msg, "peer speaks key handshake version 1, this end 2 (update zd on both ends)");
	close(sv[0]);
	ssize_t n = read(sv[1], buf, sizeof(buf));
	assert_int_equal(n, 8 + 32 + 1);	/* our hello, nothing after it */
	assert_memory_equal(buf, "ZDAUTH2\n", 8);
	close(sv[1]);
}

/* Units by hand, with each cipher: they open in order and unchanged only. */
static void seal_open(bool no_aes)
{
	struct side c, s;
	struct zd_auth_key k = key_horse;
	enum { U = 64, F = ZD_AUTH_LEN + U + ZD_AUTH_TAG };
	uint8_t fr[3][F], t[F];
	char msg[256];

	k.no_aes = no_aes;
	pair(&c, &s, &k, &key_horse);
	assert_int_equal(c.rc, 0);
	assert_int_equal(c.a.aes, !no_aes && crypto_aead_aes256gcm_is_available());
	for (int i = 0; i < 3; i++) {
		memset(fr[i] + ZD_AUTH_LEN, 'a' + i, U);
		assert_int_equal(zd_auth_seal(&c.a, fr[i], U), F);
		/* on the wire: the clear length, then no clear byte of the unit */
		uint8_t clear[4];
		memset(clear, 'a' + i, sizeof(clear));
		assert_int_equal(fr[i][0], U);
		for (int j = ZD_AUTH_LEN; j + 4 <= F; j++)
			assert_true(memcmp(fr[i] + j, clear, sizeof(clear)) != 0);
	}
	assert_memory_not_equal(fr[0] + ZD_AUTH_LEN, fr[1] + ZD_AUTH_LEN, U);
	struct zd_auth saved = s.a;
#define OPEN(i) (memcpy(t, fr[i], F), zd_auth_open(&s.a, t, F, msg, sizeof(msg)))
	/* in order: good, and the clear units come back */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(OPEN(i), 0);
		for (int j = 0; j < U; j++)
			assert_int_equal(t[ZD_AUTH_LEN + j], 'a' + i);
	}
	/* a changed byte of unit 1: of its ciphertext, its tag, its length */
	size_t at[] = { ZD_AUTH_LEN + 10, F - 1, 0 };
	for (size_t k2 = 0; k2 < ZD_ARRAY_SIZE(at); k2++) {
		s.a = saved;
		assert_int_equal(OPEN(0), 0);
		fr[1][at[k2]] ^= 1;
		assert_int_equal(OPEN(1), -1);
		assert_string_equal(msg, "record 1: bad MAC");
		fr[1][at[k2]] ^= 1;
		/* the refused one did not count: the genuine one is still next */
		assert_int_equal(OPEN(1), 0);
	}
	/* replayed unit 1 in place of unit 2 */
	assert_int_equal(OPEN(1), -1);
	assert_string_equal(msg, "record 2: bad MAC");
	/* reordered / dropped: unit 1 first, unit 2 after 0 */
	s.a = saved;
	assert_int_equal(OPEN(1), -1);
	assert_string_equal(msg, "preamble: bad MAC");
	assert_int_equal(OPEN(0), 0);
	assert_int_equal(OPEN(2), -1);
	assert_string_equal(msg, "record 1: bad MAC");
	/* a short frame */
	memcpy(t, fr[1], F);
	assert_int_equal(zd_auth_open(&s.a, t, F - 1, msg, sizeof(msg)), -1);
	/* reflected: our own unit sent back to us */
	struct zd_auth cs = c.a;
	cs.recv_seq = 0;
	memcpy(t, fr[0], F);
	assert_int_equal(zd_auth_open(&cs, t, F, msg, sizeof(msg)), -1);
	/* another session of the same key (fresh nonces) opens nothing */
	struct side c2, s2;
	pair(&c2, &s2, &k, &key_horse);
	memcpy(t, fr[0], F);
	assert_int_equal(zd_auth_open(&s2.a, t, F, msg, sizeof(msg)), -1);
	assert_string_equal(msg, "preamble: bad MAC");
#undef OPEN
	close(c2.fd);
	close(s2.fd);
	close(c.fd);
	close(s.fd);
}

static void test_seal_open(void **state)
{
	(void)state;
	seal_open(false);
	seal_open(true);
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
	size_t cut_from, cut_len;	/* drop these bytes */
	uint8_t *seen;			/* the bytes carried, for the caller to free */
	size_t seen_len;
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
	if (p->cut_len) {
		memmove(buf + p->cut_from, buf + p->cut_from + p->cut_len, len - p->cut_from - p->cut_len);
		len -= p->cut_len;
	}
	zd_write_full(p->out, buf, len);
	close(p->out);
	p->seen = buf;
	p->seen_len = len;
	return NULL;
}

static int relay_run(struct pump *pp, int *nread, char *msg, size_t len)
{
	struct side c, s;
	struct zd_record r[NREC];
	int a[2], b[2], wfd, rfd;
	struct zd_auth_relay *sr, *vr;
	pthread_t t;

	pair(&c, &s, &key_relay, &key_relay);
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

/* Frames on the wire: clear length, unit, tag. */
#define FRAME(n) (ZD_AUTH_LEN + (n) + ZD_AUTH_TAG)

static void test_relay_clean(void **state)
{
	(void)state;
	struct pump p = { 0 };
	char msg[256];
	int n;
	assert_int_equal(relay_run(&p, &n, msg, sizeof(msg)), 0);
	assert_int_equal(n, NREC);
	/* the pages were 2 * 4096 bytes of 1, 2, 3, 4: not a run of 16 of
	 * them on the wire, nor the stream's magic */
	assert_true(p.seen_len > 4 * 2 * 4096);
	for (int v = 1; v < NREC - 1; v++) {
		uint8_t run[16];
		memset(run, v, sizeof(run));
		assert_null(memmem(p.seen, p.seen_len, run, sizeof(run)));
	}
	assert_null(memmem(p.seen, p.seen_len, ZD_STREAM_MAGIC, 4));
	free(p.seen);
}

static void test_relay_tampered(void **state)
{
	(void)state;
	/* preamble, HEADER, then record 2 (PAGES): flip a byte of page data
	 * well inside record 2 */
	uint8_t *enc;
	size_t hlen, plen;
	struct zd_record r[NREC];
	make_stream(r);
	assert_int_equal(zd_encode_binary(&r[0], 4096, &enc, &hlen), 0);
	free(enc);
	assert_int_equal(zd_encode_binary(&r[1], 4096, &enc, &plen), 0);
	free(enc);
	size_t rec2 = FRAME(8) + FRAME(hlen);
	struct pump p = { .flip = rec2 + 100 };
	char msg[256];
	int n;
	assert_int_equal(relay_run(&p, &n, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_string_equal(msg, "record 2: bad MAC");
	assert_int_equal(n, 1);	/* only the HEADER was passed on */
	free(p.seen);

	/* its clear length changed: framed wrong, refused all the same */
	struct pump l = { .flip = rec2 + 1 };
	assert_int_equal(relay_run(&l, &n, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_non_null(strstr(msg, "record 2: bad MAC"));
	assert_int_equal(n, 1);
	free(l.seen);

	/* a replay: record 2 carried again where record 3 belongs */
	struct pump q = { .dup_from = rec2, .dup_len = FRAME(plen) };
	assert_int_equal(relay_run(&q, &n, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_string_equal(msg, "record 3: bad MAC");
	assert_int_equal(n, 2);
	free(q.seen);

	/* a drop: record 2 left out, record 3 comes where 2 belongs */
	struct pump d = { .cut_from = rec2, .cut_len = FRAME(plen) };
	assert_int_equal(relay_run(&d, &n, msg, sizeof(msg)), ZD_EXIT_DATA);
	assert_string_equal(msg, "record 2: bad MAC");
	assert_int_equal(n, 1);
	free(d.seen);
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
	assert_int_equal(zd_auth_key_from_bytes(&k2, "0123456789abcdefXYZ\n", 20, msg, sizeof(msg)), 0);
	assert_memory_equal(k1.k, k2.k, 32);
	/* Argon2id with the documented salt and limits: both ends of a link,
	 * of any build, must reach these bytes */
	static const uint8_t want[32] = {
		0xb9, 0xd9, 0xee, 0xce, 0x88, 0x56, 0xea, 0xba, 0x84, 0xec, 0xe8, 0x57, 0x29, 0x52, 0xba, 0xb5,
		0x86, 0xad, 0xdb, 0x82, 0x89, 0x3e, 0x74, 0x9a, 0xa7, 0x11, 0x67, 0xfe, 0xdf, 0xf6, 0xbb, 0x52,
	};
	assert_memory_equal(k1.k, want, 32);
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
	make_key(&key_horse, "correct horse battery staple");
	make_key(&key_stapler, "correct horse battery stapler");
	make_key(&key_relay, "relay key 0123456789");
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_key),
		cmocka_unit_test(test_wrong_key),
		cmocka_unit_test(test_peer_without_key),
		cmocka_unit_test(test_old_hello),
		cmocka_unit_test(test_seal_open),
		cmocka_unit_test(test_relay_clean),
		cmocka_unit_test(test_relay_tampered),
		cmocka_unit_test(test_key_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
