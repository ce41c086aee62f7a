/* SPDX-License-Identifier: MIT */
/*
 * zd-stream(5) codec: random streams of every record type round-trip in
 * both encodings and across them; a valid stream cut at every byte, or
 * with any bit flipped, is rejected with the right error and a message
 * that names the place; each hostile input the man page lists is refused.
 * Streams go through real file descriptors: memfds and pipes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zd/stream.h"
#define TESTLIB_RNG_SEED 42
#include "testlib.h"

#define PAGE 512u
#define NPAGES 5000u

/* --- building random records --- */

static void random_set(struct zd_pageset *s, uint64_t max_pages)
{
	zd_pageset_clear(s);
	unsigned shape = rnd() % 4;
	uint64_t n = rnd() % (max_pages + 1);
	for (uint64_t i = 0; i < n; i++) {
		if (shape == 0)		/* dense runs: a bitmap wins */
			zd_pageset_add(s, (rnd() % 300) + 1000);
		else if (shape == 1)	/* long ranges */
			zd_pageset_add_range(s, rnd() % NPAGES, rnd() % 20 + 1);
		else
			zd_pageset_add(s, rnd() % NPAGES);
	}
	while (zd_pageset_end(s) > NPAGES) {	/* keep pfn < page_count */
		struct zd_pageset t = ZD_PAGESET_INIT;
		zd_pageset_take_front(&t, s, s->pages - 1);
		zd_pageset_swap(&t, s);
		zd_pageset_free(&t);
	}
}

static uint8_t *random_bytes(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
	return p;
}

static void random_str(char *dst, size_t max)
{
	static const char *alpha[] = { "a", "Z", "9", "-", "\"", "\\", "\n", "é", "☃", " " };
	size_t n = rnd() % (max / 3 + 1), len = 0;
	dst[0] = 0;
	for (size_t i = 0; i < n; i++) {
		const char *a = alpha[rnd() % 10];
		if (len + strlen(a) >= max)
			break;
		strcpy(dst + len, a);
		len += strlen(a);
	}
}

/* A stream: HEADER, epochs with every record type, an unknown binary
 * record, an unknown JSON record, END. Returns the count. */
static size_t random_stream(struct zd_record *recs, size_t max, unsigned epochs)
{
	size_t n = 0;
	char s[64];
	struct zd_record *r = &recs[n++];
	zd_record_init(r, ZD_REC_HEADER);
	r->u.header.major = ZD_STREAM_MAJOR;
	r->u.header.page_size = PAGE;
	r->u.header.page_count = NPAGES;
	r->u.header.mode = (uint8_t)(rnd() % ZD_MODE_MAX);
	r->u.header.interval_us = 25000;
	r->u.header.start_ns = rnd() >> 1;
	random_str(s, sizeof(s));
	r->u.header.target = strdup(s);
	r->u.header.control = strdup(rnd() % 2 ? "/run/zd/track.1234.sock" : "");
	uint64_t epoch = 0;
	for (unsigned e = 0; e < epochs && n + 12 < max; e++) {
		epoch += rnd() % 3 + 1;
		r = &recs[n++];
		zd_record_init(r, ZD_REC_CHECKPOINT);
		r->u.ckpt.epoch = epoch;
		r->u.ckpt.t0_ns = rnd();	/* > 2^63: a string in JSON */
		r->u.ckpt.t1_ns = rnd() >> 1;
		r->u.ckpt.resume_ns = rnd() >> 20;
		r->u.ckpt.pause_ns = rnd() % 100000;
		r->u.ckpt.flags = (uint32_t)rnd();

		r = &recs[n++];
		zd_record_init(r, ZD_REC_DIRTY);
		r->u.dirty.epoch = epoch;
		random_set(&r->u.dirty.set, 600);

		r = &recs[n++];
		zd_record_init(r, ZD_REC_STANDBY);
		r->u.dirty.epoch = epoch + 1;
		random_set(&r->u.dirty.set, 50);

		r = &recs[n++];
		zd_record_init(r, ZD_REC_PAGES);
		r->u.pages.epoch = epoch;
		r->u.pages.enc = (uint8_t)(rnd() % 3);
		r->u.pages.flags = (uint8_t)rnd();
		random_set(&r->u.pages.set, 8);
		r->u.pages.data_len = r->u.pages.enc == ZD_PENC_RAW
					      ? (uint32_t)(r->u.pages.set.pages * PAGE)
					      : (uint32_t)(rnd() % 700);
		r->u.pages.data = random_bytes(r->u.pages.data_len);

		r = &recs[n++];
		zd_record_init(r, ZD_REC_STATE);
		r->u.state.epoch = epoch;
		r->u.state.kind = (uint32_t)(rnd() % 4);
		r->u.state.len = (uint32_t)(rnd() % 300);
		r->u.state.data = random_bytes(r->u.state.len);

		r = &recs[n++];
		zd_record_init(r, ZD_REC_STAT);
		r->u.stat.epoch = epoch;
		random_str(r->u.stat.source, sizeof(r->u.stat.source));
		r->u.stat.n = (uint32_t)(rnd() % 5);
		for (uint32_t i = 0; i < r->u.stat.n; i++) {
			snprintf(r->u.stat.kv[i].key, sizeof(r->u.stat.kv[i].key), "k%u-%u", i,
				 (unsigned)(rnd() % 1000));
			static const double special[] = { 0.0, -0.0, 1e300, -2.5e-310, NAN, INFINITY,
							  -INFINITY, 0.1 };
			r->u.stat.kv[i].value = rnd() % 2 ? special[rnd() % 8]
							  : (double)(int64_t)rnd() / 3.0;
		}

		r = &recs[n++];
		zd_record_init(r, ZD_REC_COMMIT);
		r->u.commit.epoch = epoch;
		r->u.commit.pages = rnd() % 1000;
		r->u.commit.flags = ZD_COMMIT_HAS_MEMSUM;
		r->u.commit.memsum = rnd();

		r = &recs[n++];
		zd_record_init(r, ZD_REC_ACK);
		r->u.ack.epoch = epoch;
		r->u.ack.commit_wall_ns = rnd() >> 3;
		r->u.ack.latency_ns = rnd() % 1000000;
		r->u.ack.status = (uint32_t)(rnd() % 2);

		if (rnd() % 2) {
			r = &recs[n++];
			zd_record_init(r, (uint16_t)(ZD_REC_TYPE_MAX + rnd() % 100));
			r->u.unknown.type = r->type;
			r->u.unknown.flags = (uint16_t)rnd();
			r->u.unknown.len = (uint32_t)(rnd() % 40);
			r->u.unknown.data = random_bytes(r->u.unknown.len);
		}
		if (rnd() % 2) {
			r = &recs[n++];
			zd_record_init(r, ZD_REC_JSON);
			r->u.unknown.from_json = true;
			const char *t = "{\"type\":\"future\",\"x\":[1,2,{\"y\":\"z\"}],\"n\":-3.5}";
			r->u.unknown.data = (uint8_t *)strdup(t);
			r->u.unknown.len = (uint32_t)strlen(t);
		}
	}
	r = &recs[n++];
	zd_record_init(r, ZD_REC_END);
	r->u.end.epochs = epoch;
	r->u.end.status = (uint32_t)(rnd() % 3);
	return n;
}

static void free_stream(struct zd_record *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		zd_record_free(&recs[i]);
}

static bool same_double(double a, double b)
{
	if (isnan(a) || isnan(b))
		return isnan(a) && isnan(b);
	return memcmp(&a, &b, sizeof(a)) == 0;
}

static void assert_record_equal(const struct zd_record *a, const struct zd_record *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case ZD_REC_HEADER:
		assert_int_equal(a->u.header.page_size, b->u.header.page_size);
		assert_int_equal(a->u.header.page_count, b->u.header.page_count);
		assert_int_equal(a->u.header.mode, b->u.header.mode);
		assert_int_equal(a->u.header.interval_us, b->u.header.interval_us);
		assert_int_equal(a->u.header.start_ns, b->u.header.start_ns);
		assert_int_equal(b->u.header.major, ZD_STREAM_MAJOR);
		assert_string_equal(a->u.header.target, b->u.header.target);
		assert_string_equal(a->u.header.control, b->u.header.control);
		break;
	case ZD_REC_CHECKPOINT:
		assert_memory_equal(&a->u.ckpt, &b->u.ckpt, offsetof(struct zd_rec_checkpoint, flags));
		assert_int_equal(a->u.ckpt.flags, b->u.ckpt.flags);
		break;
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		assert_int_equal(a->u.dirty.epoch, b->u.dirty.epoch);
		assert_true(zd_pageset_equal(&a->u.dirty.set, &b->u.dirty.set));
		break;
	case ZD_REC_PAGES:
		assert_int_equal(a->u.pages.epoch, b->u.pages.epoch);
		assert_int_equal(a->u.pages.enc, b->u.pages.enc);
		assert_int_equal(a->u.pages.flags, b->u.pages.flags);
		assert_true(zd_pageset_equal(&a->u.pages.set, &b->u.pages.set));
		assert_int_equal(a->u.pages.data_len, b->u.pages.data_len);
		if (a->u.pages.data_len)
			assert_memory_equal(a->u.pages.data, b->u.pages.data, a->u.pages.data_len);
		break;
	case ZD_REC_STATE:
		assert_int_equal(a->u.state.epoch, b->u.state.epoch);
		assert_int_equal(a->u.state.kind, b->u.state.kind);
		assert_int_equal(a->u.state.len, b->u.state.len);
		if (a->u.state.len)
			assert_memory_equal(a->u.state.data, b->u.state.data, a->u.state.len);
		break;
	case ZD_REC_COMMIT:
		assert_int_equal(a->u.commit.epoch, b->u.commit.epoch);
		assert_int_equal(a->u.commit.pages, b->u.commit.pages);
		assert_int_equal(a->u.commit.flags, b->u.commit.flags);
		assert_int_equal(a->u.commit.memsum, b->u.commit.memsum);
		break;
	case ZD_REC_ACK:
		assert_int_equal(a->u.ack.epoch, b->u.ack.epoch);
		assert_int_equal(a->u.ack.commit_wall_ns, b->u.ack.commit_wall_ns);
		assert_int_equal(a->u.ack.latency_ns, b->u.ack.latency_ns);
		assert_int_equal(a->u.ack.status, b->u.ack.status);
		break;
	case ZD_REC_STAT:
		assert_int_equal(a->u.stat.epoch, b->u.stat.epoch);
		assert_string_equal(a->u.stat.source, b->u.stat.source);
		assert_int_equal(a->u.stat.n, b->u.stat.n);
		for (uint32_t i = 0; i < a->u.stat.n; i++) {
			assert_string_equal(a->u.stat.kv[i].key, b->u.stat.kv[i].key);
			assert_true(same_double(a->u.stat.kv[i].value, b->u.stat.kv[i].value));
		}
		break;
	case ZD_REC_END:
		assert_int_equal(a->u.end.epochs, b->u.end.epochs);
		assert_int_equal(a->u.end.status, b->u.end.status);
		break;
	default:
		assert_int_equal(a->u.unknown.from_json, b->u.unknown.from_json);
		if (!a->u.unknown.from_json)
			assert_int_equal(a->u.unknown.flags, b->u.unknown.flags);
		assert_int_equal(a->u.unknown.len, b->u.unknown.len);
		if (a->u.unknown.len)
			assert_memory_equal(a->u.unknown.data, b->u.unknown.data, a->u.unknown.len);
		break;
	}
}

/* --- fds --- */

static int memfd_with(const void *p, size_t n)
{
	int fd = memfd_create("zd-test", 0);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static size_t fd_slurp(int fd, uint8_t **out)
{
	off_t n = lseek(fd, 0, SEEK_END);
	assert_true(n >= 0);
	*out = malloc((size_t)n + 1);
	assert_int_equal(pread(fd, *out, (size_t)n, 0), n);
	return (size_t)n;
}

static size_t write_stream(const struct zd_record *recs, size_t n, enum zd_encoding enc,
			   uint8_t **out)
{
	int fd = memfd_create("zd-out", 0);
	struct zd_writer w;
	zd_writer_init(&w, fd, enc);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(zd_writer_put(&w, &recs[i]), 0);
	assert_int_equal(zd_writer_flush(&w), 0);
	assert_int_equal(w.bytes, (uint64_t)lseek(fd, 0, SEEK_CUR));
	zd_writer_free(&w);
	size_t len = fd_slurp(fd, out);
	close(fd);
	return len;
}

/* Read every record of an fd; returns the count, -1 on error (rd->msg). */
static long read_all(int fd, struct zd_reader *rd, struct zd_record *out, size_t max)
{
	zd_reader_init(rd, fd, "test");
	size_t n = 0;
	for (;;) {
		struct zd_record r;
		int rc = zd_reader_next(rd, &r);
		if (rc <= 0)
			return rc < 0 ? -1 : (long)n;
		if (out && n < max)
			out[n] = r;
		else
			zd_record_free(&r);
		n++;
	}
}

/* Read a byte buffer as a stream: 1 ok, or -err; msg copied out. */
static int read_buf(const uint8_t *p, size_t n, char *msg, size_t msglen)
{
	int fd = memfd_with(p, n);
	struct zd_reader rd;
	long got = read_all(fd, &rd, NULL, 0);
	if (msg)
		snprintf(msg, msglen, "%s", rd.msg);
	int rc = got < 0 ? -(int)rd.err : 1;
	zd_reader_free(&rd);
	close(fd);
	return rc;
}

/* --- tests --- */

static void test_crc32c_vectors(void **state)
{
	assert_int_equal(zd_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(zd_crc32c_sw(0, "123456789", 9), 0xE3069283u);
	uint8_t buf[32];
	memset(buf, 0, 32);	/* RFC 3720 B.4 */
	assert_int_equal(zd_crc32c(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, 32);
	assert_int_equal(zd_crc32c(0, buf, 32), 0x62A8AB43u);
	for (int i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	assert_int_equal(zd_crc32c(0, buf, 32), 0x46DD794Eu);
	assert_int_equal(zd_crc32c_sw(0, buf, 32), 0x46DD794Eu);
	/* both paths agree on every length and alignment, and chain */
	uint8_t *r = random_bytes(1000);
	for (size_t off = 0; off < 9; off++)
		for (size_t len = 0; len + off <= 1000; len += 37) {
			uint32_t c = zd_crc32c(0, r + off, len);
			assert_int_equal(c, zd_crc32c_sw(0, r + off, len));
			size_t half = len / 3;
			assert_int_equal(c, zd_crc32c(zd_crc32c(0, r + off, half), r + off + half,
						      len - half));
		}
	free(r);
}

static void roundtrip(enum zd_encoding enc)
{
	static struct zd_record recs[400], back[400];
	for (int round = 0; round < 8; round++) {
		size_t n = random_stream(recs, 400, 25);
		uint8_t *bytes;
		size_t len = write_stream(recs, n, enc, &bytes);
		if (enc == ZD_ENC_BINARY)
			assert_memory_equal(bytes, ZD_STREAM_MAGIC "\x01\x00\x00\x00", 8);
		else
			assert_int_equal(bytes[0], '{');
		int fd = memfd_with(bytes, len);
		struct zd_reader rd;
		long got = read_all(fd, &rd, back, 400);
		if (got < 0)
			fail_msg("read back: %s", rd.msg);
		assert_int_equal(got, n);
		assert_int_equal(rd.enc, enc);
		assert_int_equal(rd.nrec, n);
		for (size_t i = 0; i < n; i++)
			assert_record_equal(&recs[i], &back[i]);
		free_stream(back, n);
		free_stream(recs, n);
		zd_reader_free(&rd);
		close(fd);
		free(bytes);
	}
}

static void test_roundtrip_binary(void **state) { roundtrip(ZD_ENC_BINARY); }
static void test_roundtrip_json(void **state) { roundtrip(ZD_ENC_JSON); }

/* Re-encode every record of a stream in another encoding. */
static size_t transcode(const uint8_t *in, size_t n, enum zd_encoding enc, uint8_t **out)
{
	static struct zd_record recs[400];
	int fd = memfd_with(in, n);
	struct zd_reader rd;
	long got = read_all(fd, &rd, recs, 400);
	if (got < 0)
		fail_msg("transcode: %s", rd.msg);
	assert_true(got <= 400);
	size_t len = write_stream(recs, (size_t)got, enc, out);
	free_stream(recs, (size_t)got);
	zd_reader_free(&rd);
	close(fd);
	return len;
}

static void test_binary_json_binary_identical(void **state)
{
	static struct zd_record recs[400];
	for (int round = 0; round < 8; round++) {
		size_t n = random_stream(recs, 400, 20);
		uint8_t *bin, *json, *bin2, *json2;
		size_t blen = write_stream(recs, n, ZD_ENC_BINARY, &bin);
		size_t jlen = transcode(bin, blen, ZD_ENC_JSON, &json);
		size_t blen2 = transcode(json, jlen, ZD_ENC_BINARY, &bin2);
		size_t jlen2 = transcode(bin2, blen2, ZD_ENC_JSON, &json2);
		assert_int_equal(blen, blen2);
		assert_memory_equal(bin, bin2, blen);
		assert_int_equal(jlen, jlen2);
		assert_memory_equal(json, json2, jlen);
		free_stream(recs, n);
		free(bin);
		free(json);
		free(bin2);
		free(json2);
	}
}

/* A small stream and the offsets where its records end. */
static size_t small_stream(enum zd_encoding enc, uint8_t **out, size_t *ends, size_t *nends)
{
	static struct zd_record recs[64];
	rnd_seed(7);	/* the same few-KiB stream every run */
	size_t n = random_stream(recs, 64, 2);
	size_t len = write_stream(recs, n, enc, out);
	size_t off = enc == ZD_ENC_BINARY ? ZD_PREAMBLE_LEN : 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t *p;
		size_t l;
		if (enc == ZD_ENC_BINARY)
			assert_int_equal(zd_encode_binary(&recs[i], PAGE, &p, &l), 0);
		else
			assert_int_equal(zd_encode_json(&recs[i], PAGE, (char **)&p, &l), 0);
		assert_memory_equal(*out + off, p, l);	/* writer == one-shot encoder */
		off += l;
		ends[i] = off;
		free(p);
	}
	assert_int_equal(off, len);
	print_message("# %s stream of %zu records, %zu bytes\n",
		      enc == ZD_ENC_BINARY ? "binary" : "JSON", n, len);
	*nends = n;
	free_stream(recs, n);
	return len;
}

static void truncate_everywhere(enum zd_encoding enc)
{
	uint8_t *s;
	size_t ends[64], nends;
	size_t len = small_stream(enc, &s, ends, &nends);
	size_t next_end = 0;
	char msg[256];
	for (size_t cut = 0; cut <= len; cut++) {
		while (next_end < nends && ends[next_end] < cut)
			next_end++;
		bool boundary = next_end < nends && ends[next_end] == cut;
		int rc = read_buf(s, cut, msg, sizeof(msg));
		if (boundary) {
			if (rc != 1)
				fail_msg("cut at record end %zu: %s", cut, msg);
		} else {
			if (rc != -ZD_RERR_TRUNCATED)
				fail_msg("cut at %zu of %zu: rc %d: %s", cut, len, rc, msg);
			assert_non_null(strstr(msg, "test: "));
			char at[64];
			if (cut > (enc == ZD_ENC_BINARY ? ZD_PREAMBLE_LEN : 0)) {
				snprintf(at, sizeof(at), "stream ends at byte %zu", cut);
				if (!strstr(msg, at))
					fail_msg("cut at %zu: %s", cut, msg);
			}
		}
	}
	free(s);
}

static void test_truncate_binary_every_byte(void **state) { truncate_everywhere(ZD_ENC_BINARY); }
static void test_truncate_json_every_byte(void **state) { truncate_everywhere(ZD_ENC_JSON); }

static void test_flip_every_bit(void **state)
{
	uint8_t *s;
	size_t ends[64], nends;
	size_t len = small_stream(ZD_ENC_BINARY, &s, ends, &nends);
	/* the first 3000 bytes: HEADER and the first epoch */
	size_t limit = len < 3000 ? len : 3000;
	char msg[256];
	size_t rec_start = ZD_PREAMBLE_LEN, ri = 0;
	for (size_t byte = ZD_PREAMBLE_LEN; byte < limit; byte++) {
		while (byte >= ends[ri]) {
			rec_start = ends[ri];
			ri++;
		}
		size_t in_rec = byte - rec_start;
		/* all 8 bits of the first 200 bytes, then one bit per byte */
		for (int b = byte < 200 ? 0 : (int)(byte % 8); b < (byte < 200 ? 8 : (int)(byte % 8) + 1); b++) {
			s[byte] ^= (uint8_t)(1u << b);
			int rc = read_buf(s, len, msg, sizeof(msg));
			s[byte] ^= (uint8_t)(1u << b);
			if (in_rec >= 4 && in_rec < 8) {
				/* the length: the CRC or the framing notices */
				if (rc != -ZD_RERR_CRC && rc != -ZD_RERR_TRUNCATED && rc != -ZD_RERR_TOO_BIG)
					fail_msg("length bit at %zu: rc %d %s", byte, rc, msg);
			} else if (rc != -ZD_RERR_CRC) {
				fail_msg("bit %d of byte %zu: rc %d %s", b, byte, rc, msg);
			} else {
				char at[64];
				snprintf(at, sizeof(at), "test: byte %zu: record %zu (", rec_start, ri + 1);
				if (!strstr(msg, at) || !strstr(msg, "crc mismatch"))
					fail_msg("message '%s' lacks '%s'", msg, at);
			}
		}
	}
	free(s);
}

/* Assemble a binary record with a correct CRC. */
static size_t mkrec(uint8_t *out, uint16_t type, const void *body, uint32_t len)
{
	out[0] = (uint8_t)type;
	out[1] = (uint8_t)(type >> 8);
	out[2] = out[3] = 0;
	for (int i = 0; i < 4; i++)
		out[4 + i] = (uint8_t)(len >> (8 * i));
	memcpy(out + 12, body, len);
	uint32_t crc = zd_crc32c(zd_crc32c(0, out, 8), out + 12, len);
	for (int i = 0; i < 4; i++)
		out[8 + i] = (uint8_t)(crc >> (8 * i));
	return 12 + len;
}

/* Encode a HEADER (and maybe more) to bytes. */
static size_t header_bytes(uint8_t *out, uint64_t page_count)
{
	struct zd_record r;
	zd_record_init(&r, ZD_REC_HEADER);
	r.u.header.page_size = 4096;
	r.u.header.page_count = page_count;
	r.u.header.target = "synth:pages=16";
	r.u.header.control = "";
	uint8_t *p;
	size_t l;
	assert_int_equal(zd_encode_binary(&r, 4096, &p, &l), 0);
	memcpy(out, ZD_STREAM_MAGIC "\x01\x00\x00\x00", 8);
	memcpy(out + 8, p, l);
	free(p);
	return 8 + l;
}

static size_t append(uint8_t *out, const struct zd_record *r)
{
	uint8_t *p;
	size_t l;
	assert_int_equal(zd_encode_binary(r, 4096, &p, &l), 0);
	memcpy(out, p, l);
	free(p);
	return l;
}

static void expect(const uint8_t *s, size_t n, enum zd_read_err err, const char *want)
{
	char msg[256];
	int rc = read_buf(s, n, msg, sizeof(msg));
	if (rc != (err == ZD_RERR_NONE ? 1 : -(int)err) || !strstr(msg, want))
		fail_msg("want err %d '%s', got rc %d '%s'", err, want, rc, msg);
}

static void test_bad_magic_and_version(void **state)
{
	uint8_t s[256];
	size_t n = header_bytes(s, 16);
	s[1] = 'X';
	expect(s, n, ZD_RERR_MAGIC, "test: byte 0: bad magic");
	expect((const uint8_t *)"hello\n", 6, ZD_RERR_MAGIC, "bad magic");
	expect((const uint8_t *)"", 0, ZD_RERR_TRUNCATED, "empty stream");
	s[1] = 'Z';
	s[4] = 2;	/* major 2 in the preamble */
	expect(s, n, ZD_RERR_VERSION, "unsupported major version 2");
	s[4] = 1;
	s[6] = 7;	/* minor 7: fine */
	expect(s, n, ZD_RERR_NONE, "");
	const char *j = "{\"type\":\"header\",\"version\":\"2.0\",\"page_size\":4096,"
			"\"page_count\":1,\"mode\":\"remus\",\"interval_us\":1,\"start_ns\":1,"
			"\"target\":\"\",\"control\":\"\"}\n";
	expect((const uint8_t *)j, strlen(j), ZD_RERR_VERSION,
	       "test: line 1: record 1 (HEADER): unsupported major version 2");
}

static void test_length_over_limit(void **state)
{
	uint8_t s[256];
	size_t n = header_bytes(s, 16);
	uint8_t *h = s + n;
	memset(h, 0, 12);
	h[0] = ZD_REC_STATE;
	uint32_t len = ZD_REC_MAX + 1;
	for (int i = 0; i < 4; i++)
		h[4 + i] = (uint8_t)(len >> (8 * i));
	char want[80];
	snprintf(want, sizeof(want), "byte %zu: record 2 (STATE): length %u over the limit", n, len);
	expect(s, n + 12, ZD_RERR_TOO_BIG, want);
}

static void test_pfn_beyond_page_count(void **state)
{
	uint8_t s[4096];
	size_t n = header_bytes(s, 16);
	struct zd_record r;
	zd_record_init(&r, ZD_REC_CHECKPOINT);
	r.u.ckpt.epoch = 1;
	n += append(s + n, &r);
	size_t at = n;
	zd_record_init(&r, ZD_REC_DIRTY);
	r.u.dirty.epoch = 1;
	zd_pageset_add(&r.u.dirty.set, 16);
	n += append(s + n, &r);
	char want[80];
	snprintf(want, sizeof(want), "byte %zu: record 3 (DIRTY): pfn 16 beyond page_count 16", at);
	expect(s, n, ZD_RERR_RANGE, want);
	/* a dense set goes as a bitmap: the same check applies */
	zd_pageset_clear(&r.u.dirty.set);
	for (int i = 0; i <= 32; i += 2)
		zd_pageset_add(&r.u.dirty.set, (uint64_t)i);
	n = at + append(s + at, &r);
	assert_int_equal(s[at + 12 + 8], 1);	/* kind 1 = bitmap */
	expect(s, n, ZD_RERR_RANGE, "pfn 32 beyond page_count 16");
	zd_record_free(&r);
}

static void test_order_rules(void **state)
{
	uint8_t s[4096];
	struct zd_record r;
	size_t n, at;
	char want[120];

	/* record before HEADER */
	memcpy(s, ZD_STREAM_MAGIC "\x01\x00\x00\x00", 8);
	zd_record_init(&r, ZD_REC_CHECKPOINT);
	r.u.ckpt.epoch = 1;
	n = 8 + append(s + 8, &r);
	expect(s, n, ZD_RERR_ORDER, "test: byte 8: record 1 (CHECKPOINT): record before HEADER");

	/* epochs must increase */
	n = header_bytes(s, 16);
	r.u.ckpt.epoch = 5;
	n += append(s + n, &r);
	at = n;
	r.u.ckpt.epoch = 5;
	n += append(s + n, &r);
	snprintf(want, sizeof(want), "byte %zu: record 3 (CHECKPOINT): epoch 5 after epoch 5", at);
	expect(s, n, ZD_RERR_ORDER, want);

	/* DIRTY ahead of its checkpoint, COMMIT of another epoch */
	n = at;
	zd_record_init(&r, ZD_REC_DIRTY);
	r.u.dirty.epoch = 6;
	n += append(s + n, &r);
	expect(s, n, ZD_RERR_ORDER, "record 3 (DIRTY): epoch 6 ahead of the current checkpoint 5");
	/* an ACK ahead of the checkpoint, too; before the first one, of any
	 * epoch (a resumed stream: an epoch committed over the lost link) */
	n = at;
	zd_record_init(&r, ZD_REC_ACK);
	r.u.ack.epoch = 6;
	n += append(s + n, &r);
	expect(s, n, ZD_RERR_ORDER, "record 3 (ACK): epoch 6 ahead of the current checkpoint 5");
	uint8_t early[512];
	size_t en = header_bytes(early, 16);
	en += append(early + en, &r);
	assert_int_equal(read_buf(early, en, NULL, 0), 1);
	n = at;
	zd_record_init(&r, ZD_REC_COMMIT);
	r.u.commit.epoch = 4;
	n += append(s + n, &r);
	expect(s, n, ZD_RERR_ORDER, "record 3 (COMMIT): COMMIT of epoch 4");

	/* a second HEADER */
	uint8_t tmp[256];
	size_t tn = header_bytes(tmp, 16);
	n = header_bytes(s, 16);
	memcpy(s + n, tmp + 8, tn - 8);
	n += tn - 8;
	expect(s, n, ZD_RERR_ORDER, "record 2 (HEADER): second HEADER");

	/* JSON: the same rule, named by line */
	const char *j = "{\"type\":\"end\",\"epochs\":0,\"status\":0}\n";
	expect((const uint8_t *)j, strlen(j), ZD_RERR_ORDER,
	       "test: line 1: record 1 (END): record before HEADER");
}

static void test_malformed_bodies(void **state)
{
	uint8_t s[4096], body[128];
	size_t n0 = header_bytes(s, 16), n;
	char want[120];

	/* END with a trailing byte: the body must end where its layout does */
	memset(body, 0, sizeof(body));
	n = n0 + mkrec(s + n0, ZD_REC_END, body, 13);
	snprintf(want, sizeof(want), "byte %zu: record 2 (END): 1 trailing bytes", n0);
	expect(s, n, ZD_RERR_MALFORMED, want);
	/* ... unless the stream's minor version is newer */
	n = header_bytes(s, 16);
	s[6] = 1;		/* preamble minor 1 */
	s[8 + 12 + 2] = 1;	/* HEADER minor 1 too */
	{
		/* recompute the HEADER's CRC after the edit */
		uint8_t *h = s + 8;
		uint32_t blen = h[4] | h[5] << 8 | h[6] << 16 | (uint32_t)h[7] << 24;
		uint32_t crc = zd_crc32c(zd_crc32c(0, h, 8), h + 12, blen);
		for (int i = 0; i < 4; i++)
			h[8 + i] = (uint8_t)(crc >> (8 * i));
	}
	n += mkrec(s + n, ZD_REC_END, body, 13);
	expect(s, n, ZD_RERR_NONE, "");
	s[6] = 0;

	/* END too short */
	n0 = header_bytes(s, 16);
	n = n0 + mkrec(s + n0, ZD_REC_END, body, 11);
	expect(s, n, ZD_RERR_MALFORMED, "record 2 (END): body too short for status");

	/* a range count larger than the body can hold */
	memset(body, 0, sizeof(body));
	body[8] = 0;		/* kind ranges */
	body[9] = 100;		/* 100 ranges in 1 byte */
	n = n0 + mkrec(s + n0, ZD_REC_STANDBY, body, 10);
	expect(s, n, ZD_RERR_MALFORMED, "range count 100 exceeds the body");

	/* an unknown page-set kind */
	body[8] = 7;
	n = n0 + mkrec(s + n0, ZD_REC_STANDBY, body, 10);
	expect(s, n, ZD_RERR_MALFORMED, "unknown page set kind 7");

	/* a bitmap whose word count overruns the body */
	memset(body, 0, sizeof(body));
	body[8] = 1;
	body[17] = 0xff;	/* nwords = 255 */
	n = n0 + mkrec(s + n0, ZD_REC_STANDBY, body, 40);
	expect(s, n, ZD_RERR_MALFORMED, "does not fit the body");

	/* RAW PAGES whose data is not pages * page_size */
	struct zd_record r;
	zd_record_init(&r, ZD_REC_PAGES);
	zd_pageset_add(&r.u.pages.set, 3);
	r.u.pages.data_len = 100;
	r.u.pages.data = body;
	uint8_t *p;
	size_t l;
	assert_int_equal(zd_encode_binary(&r, 4096, &p, &l), -1);	/* the writer refuses */
	assert_int_equal(zd_encode_binary(&r, 0, &p, &l), 0);	/* unless it knows no page size */
	memcpy(s + n0, p, l);
	free(p);
	expect(s, n0 + l, ZD_RERR_MALFORMED, "raw data is 100 bytes, 1 pages of 4096 need 4096");
	zd_pageset_free(&r.u.pages.set);

	/* PAGES of more pages than one record may carry, however small the
	 * data claims to be */
	zd_record_init(&r, ZD_REC_PAGES);
	r.u.pages.enc = ZD_PENC_ZSTD;
	zd_pageset_add_range(&r.u.pages.set, 0, ZD_PAGES_PER_RECORD + 1);
	assert_int_equal(zd_encode_binary(&r, 0, &p, &l), -1);	/* the writer refuses */
	uint8_t big[] = { 0, 0, 0, 0, 0, 0, 0, 0, ZD_PENC_ZSTD, 0, /* set */ 0, 1, 0,
			  0x80, 0x20, /* count-1 = 4096 */ 0, 0, 0, 0 };
	n0 = header_bytes(s, 1u << 20);
	n = n0 + mkrec(s + n0, ZD_REC_PAGES, big, sizeof(big));
	expect(s, n, ZD_RERR_RANGE, "record 2 (PAGES): 4097 pages, at most 4096 per record");
	zd_pageset_free(&r.u.pages.set);

	/* a guest bigger than 1 PiB */
	n = header_bytes(s, 1ull << 38);	/* 2^38 pages of 4 KiB */
	{
		uint8_t *hh = s + 8;
		hh[12 + 4] = 0;
		hh[12 + 5] = 0x20;	/* page_size 8192: 2^51 bytes */
		uint32_t bl = hh[4] | hh[5] << 8;
		uint32_t cr = zd_crc32c(zd_crc32c(0, hh, 8), hh + 12, bl);
		for (int i = 0; i < 4; i++)
			hh[8 + i] = (uint8_t)(cr >> (8 * i));
	}
	expect(s, n, ZD_RERR_RANGE, "record 1 (HEADER): 274877906944 pages of 8192 bytes: over 1 PiB");
	n = header_bytes(s, 1ull << 38);
	expect(s, n, ZD_RERR_NONE, "");	/* exactly 1 PiB is fine */

	/* a bad page size in the HEADER */
	n = header_bytes(s, 16);
	s[8 + 12 + 4] = 0x01;	/* page_size 4097 */
	uint8_t *h = s + 8;
	uint32_t blen = h[4] | h[5] << 8;
	uint32_t crc = zd_crc32c(zd_crc32c(0, h, 8), h + 12, blen);
	for (int i = 0; i < 4; i++)
		h[8 + i] = (uint8_t)(crc >> (8 * i));
	expect(s, n, ZD_RERR_RANGE, "page_size 4097 is not a power of two");

	/* type 0 is reserved */
	n0 = header_bytes(s, 16);
	n = n0 + mkrec(s + n0, 0, body, 0);
	expect(s, n, ZD_RERR_MALFORMED, "type 0 is reserved");
}

static void test_invalid_json(void **state)
{
	const char *j =
		"{\"type\":\"header\",\"version\":\"1.0\",\"page_size\":4096,\"page_count\":16,"
		"\"mode\":\"zddspt\",\"interval_us\":25000,\"start_ns\":1,\"target\":\"t\",\"control\":\"\"}\n"
		"\n"
		"{\"type\":\"checkpoint\",\"epoch\":1,\"t0_ns\":0,\"t1_ns\":0,\"resume_ns\":0,\"pause_ns\":0,\"flags\":0}\n"
		"{\"type\":\"dirty\",\"epoch\":1,\"pages\":2,\"ranges\":[[1,2]]}\n"
		"{\"type\":\"dirty\",\"epoch\":1,\"pages\":2,\"ranges\":[[1,2]],}\n";
	expect((const uint8_t *)j, strlen(j), ZD_RERR_MALFORMED, "test: line 5: record 4: invalid JSON");

	char buf[1024], msg[256];
	struct zd_record r0;
	size_t head = (size_t)(strstr(j, "{\"type\":\"dirty\"") - j);
	const char *bad[][2] = {
		{ "{\"type\":\"dirty\",\"epoch\":1,\"pages\":3,\"ranges\":[[1,2]]}\n",
		  "line 4: record 3 (DIRTY): \"pages\" is 3 but the ranges hold 2" },
		{ "{\"type\":\"dirty\",\"epoch\":1,\"pages\":2,\"ranges\":[[15,2]]}\n",
		  "pfn 16 beyond page_count 16" },
		{ "{\"type\":\"dirty\",\"epoch\":1,\"pages\":2,\"ranges\":[[5,1],[1,1]]}\n",
		  "range 1 overlaps or precedes" },
		{ "{\"type\":\"dirty\",\"epoch\":-1,\"pages\":1,\"ranges\":[[5,1]]}\n",
		  "\"epoch\" is not an integer" },
		{ "{\"type\":\"pages\",\"epoch\":1,\"enc\":\"raw\",\"flags\":0,\"pages\":1,\"ranges\":[[5,1]],\"data\":\"AAA=\"}\n",
		  "raw data is 2 bytes" },
		{ "{\"type\":\"pages\",\"epoch\":1,\"enc\":\"raw\",\"flags\":0,\"pages\":0,\"ranges\":[],\"data\":\"A@==\"}\n",
		  "\"data\" is not base64" },
		{ "{\"type\":\"commit\",\"epoch\":1,\"pages\":0,\"flags\":0,\"memsum\":\"12\"}\n",
		  "\"memsum\" is not a hex string" },
		{ "{\"type\":\"raw\",\"code\":3,\"flags\":0,\"data\":\"\"}\n", "raw record code 3 is a known type" },
		{ "[1,2]\n", "not a JSON object" },
		{ "{\"epoch\":1}\n", "\"type\" missing" },
		{ "{\"type\":\"ack\",\"epoch\":1,\"epoch\":2}\n", "invalid JSON" },
		{ "{\"type\":\"dirty\",\"epoch\":1,\"pages\":1,\"ranges\":[[5,1]]}", "truncated" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(buf, j, head);
		strcpy(buf + head, bad[i][0]);
		expect((const uint8_t *)buf, strlen(buf), i == 11 ? ZD_RERR_TRUNCATED
							 : i == 1 ? ZD_RERR_RANGE
							 : ZD_RERR_MALFORMED,
		       bad[i][1]);
	}
	/* one record is one line */
	assert_int_equal(zd_decode_json("{\"type\":\"x\"}\n \n", 15, NULL, &r0, msg, sizeof(msg)),
			 -ZD_RERR_MALFORMED);
	assert_non_null(strstr(msg, "line break at column 13"));

	/* whitespace lines and CRLF are fine; an unknown type is kept */
	memcpy(buf, j, head);
	strcpy(buf + head, "  {\"type\":\"future\",\"a\":1}  \r\n\r\n");
	int fd = memfd_with(buf, strlen(buf));
	struct zd_reader rd;
	struct zd_record recs[8];
	long got = read_all(fd, &rd, recs, 8);
	if (got < 0)
		fail_msg("%s", rd.msg);
	assert_int_equal(got, 3);	/* HEADER, CHECKPOINT, the unknown one */
	assert_int_equal(recs[2].type, ZD_REC_JSON);
	assert_true(recs[2].u.unknown.from_json);
	assert_string_equal((char *)recs[2].u.unknown.data, "{\"type\":\"future\",\"a\":1}");
	free_stream(recs, 3);
	zd_reader_free(&rd);
	close(fd);
}

/* Lines over a few KiB take the path that cuts "data" out before jansson
 * parses the rest: it must agree with the plain path on every shape. */
static void test_json_big_lines(void **state)
{
	const struct zd_rec_header hdr = { .major = 1, .page_size = 4096, .page_count = 16 };
	size_t b64n = 4096 / 3 * 4 + 4;	/* base64 of 4096 bytes: 5464 chars */
	char *data = malloc(b64n + 1);
	memset(data, 'A', b64n);
	strcpy(data + b64n - 4, "AA==");	/* 4096 zero bytes */
	char *line = malloc(b64n + 1024), msg[256];
	struct zd_record r;

	/* keys in another order, "data" text inside another string first */
	snprintf(line, b64n + 1024,
		 "{\"data\":\"%s\",\"note\":\"\\\"data\\\":\\\"x\",\"ranges\":[[2,1]],\"type\":\"pages\","
		 "\"pages\":1,\"flags\":1,\"enc\":\"raw\",\"epoch\":3}", data);
	/* (the "note" key is unknown and ignored) */
	assert_int_equal(zd_decode_json(line, strlen(line), &hdr, &r, msg, sizeof(msg)), 0);
	assert_int_equal(r.type, ZD_REC_PAGES);
	assert_int_equal(r.u.pages.data_len, 4096);
	assert_int_equal(r.u.pages.epoch, 3);
	zd_record_free(&r);

	snprintf(line, b64n + 1024,
		 "{\"type\":\"pages\",\"note\":\"\\\"data\\\":\\\"x\",\"epoch\":3,\"enc\":\"raw\",\"flags\":0,"
		 "\"pages\":1,\"ranges\":[[2,1]],\"data\":\"%s\"}", data);
	assert_int_equal(zd_decode_json(line, strlen(line), &hdr, &r, msg, sizeof(msg)), 0);
	assert_int_equal(r.u.pages.data_len, 4096);
	zd_record_free(&r);

	/* a duplicate "data" key is still a duplicate */
	snprintf(line, b64n + 1024,
		 "{\"type\":\"state\",\"epoch\":0,\"kind\":1,\"data\":\"%s\",\"data\":\"AA==\"}", data);
	assert_int_equal(zd_decode_json(line, strlen(line), &hdr, &r, msg, sizeof(msg)),
			 -ZD_RERR_MALFORMED);
	assert_non_null(strstr(msg, "invalid JSON"));

	/* an escape inside data: not base64 either way */
	data[100] = '\\';
	data[101] = 'n';
	snprintf(line, b64n + 1024, "{\"type\":\"state\",\"epoch\":0,\"kind\":1,\"data\":\"%s\"}", data);
	assert_int_equal(zd_decode_json(line, strlen(line), &hdr, &r, msg, sizeof(msg)),
			 -ZD_RERR_MALFORMED);
	assert_non_null(strstr(msg, "not base64"));

	/* an unknown type keeps its line only if all of it is JSON */
	data[100] = 1;		/* a raw control character inside a string */
	snprintf(line, b64n + 1024, "{\"type\":\"later\",\"data\":\"%s\"}", data);
	assert_int_equal(zd_decode_json(line, strlen(line), &hdr, &r, msg, sizeof(msg)),
			 -ZD_RERR_MALFORMED);
	data[100] = 'B';
	data[101] = 'B';
	snprintf(line, b64n + 1024, "{\"type\":\"later\",\"data\":\"%s\"}", data);
	assert_int_equal(zd_decode_json(line, strlen(line), &hdr, &r, msg, sizeof(msg)), 0);
	assert_int_equal(r.type, ZD_REC_JSON);
	assert_int_equal(r.u.unknown.len, strlen(line));
	zd_record_free(&r);
	free(line);
	free(data);
}

static void test_unknown_records_survive(void **state)
{
	/* binary unknown → JSON "raw" → binary: the same bytes */
	uint8_t s[256];
	size_t n = header_bytes(s, 16);
	size_t at = n;
	uint8_t body[5] = { 1, 2, 3, 4, 5 };
	n += mkrec(s + n, 0x1234, body, 5);
	s[at + 2] = 0x5a;	/* flags survive too */
	uint32_t crc = zd_crc32c(zd_crc32c(0, s + at, 8), s + at + 12, 5);
	for (int i = 0; i < 4; i++)
		s[at + 8 + i] = (uint8_t)(crc >> (8 * i));
	uint8_t *json, *bin;
	size_t jlen = transcode(s, n, ZD_ENC_JSON, &json);
	const char *want = "{\"type\":\"raw\",\"code\":4660,\"flags\":90,\"data\":\"AQIDBAU=\"}\n";
	assert_non_null(memmem(json, jlen, want, strlen(want)));
	size_t blen = transcode(json, jlen, ZD_ENC_BINARY, &bin);
	assert_int_equal(blen, n);
	assert_memory_equal(bin, s, n);
	free(json);
	free(bin);
}

/* Write len bytes into a pipe from a child, in pieces of 1..maxk bytes,
 * and read them back as n records equal to recs. */
static void trickle_and_read(const uint8_t *bytes, size_t len, size_t maxk,
			     const struct zd_record *recs, struct zd_record *back, size_t n)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		for (size_t off = 0; off < len;) {
			size_t k = 1 + rnd() % maxk;
			if (k > len - off)
				k = len - off;
			if (write(p[1], bytes + off, k) != (ssize_t)k)
				_exit(1);
			off += k;
		}
		_exit(0);
	}
	close(p[1]);
	struct zd_reader rd;
	long got = read_all(p[0], &rd, back, n);
	if (got < 0)
		fail_msg("%s", rd.msg);
	assert_int_equal(got, n);
	for (size_t i = 0; i < n; i++)
		assert_record_equal(&recs[i], &back[i]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	zd_reader_free(&rd);
	close(p[0]);
}

static void pipe_small_writes(enum zd_encoding enc)
{
	/* a writer that trickles bytes: the reader must reassemble */
	static struct zd_record recs[200], back[200];
	size_t n = random_stream(recs, 200, 10);
	uint8_t *bytes;
	size_t len = write_stream(recs, n, enc, &bytes);

	trickle_and_read(bytes, len, 700, recs, back, n);
	free_stream(recs, n);
	free_stream(back, n);
	free(bytes);
}

/* PAGES records over a MiB are read past the reader's buffer, their data
 * straight into its own (reader.c, next_pages_direct): whole through a
 * trickling pipe, refused with the byte where the stream ends when cut,
 * refused by CRC when a byte of the data or of the prefix is changed. */
static size_t big_pages_stream(struct zd_record *recs, uint8_t **out)
{
	size_t n = 0;
	struct zd_record *r = &recs[n++];

	zd_record_init(r, ZD_REC_HEADER);
	r->u.header.major = ZD_STREAM_MAJOR;
	r->u.header.page_size = PAGE;
	r->u.header.page_count = NPAGES;
	r->u.header.target = strdup("synth:");
	r->u.header.control = strdup("");
	r = &recs[n++];
	zd_record_init(r, ZD_REC_CHECKPOINT);
	r->u.ckpt.epoch = 1;
	for (int k = 0; k < 3; k++) {
		r = &recs[n++];
		zd_record_init(r, ZD_REC_PAGES);
		r->u.pages.epoch = 1;
		if (k == 1) {	/* compressed: the data is not pages * PAGE */
			r->u.pages.enc = ZD_PENC_ZSTD;
			zd_pageset_add_range(&r->u.pages.set, 7, 3);
			r->u.pages.data_len = 1536u << 10;
		} else {	/* ranges, then one page in two (a bitmap) */
			for (uint64_t pfn = 0; pfn < (k ? NPAGES : 4000); pfn += k ? 2 : 1)
				if (k || pfn % 97)
					zd_pageset_add(&r->u.pages.set, pfn);
			r->u.pages.data_len = (uint32_t)(r->u.pages.set.pages * PAGE);
		}
		r->u.pages.data = random_bytes(r->u.pages.data_len);
	}
	return write_stream(recs, n, ZD_ENC_BINARY, out) ? n : 0;
}

static void test_big_pages_direct(void **state)
{
	struct zd_record recs[5], back[5];
	uint8_t *bytes;
	size_t n = big_pages_stream(recs, &bytes);
	size_t len = ZD_PREAMBLE_LEN;
	char msg[256];

	for (size_t i = 0; i < n; i++) {
		uint8_t *b;
		size_t l;
		assert_int_equal(zd_encode_binary(&recs[i], PAGE, &b, &l), 0);
		free(b);
		len += l;
	}
	assert_true(recs[2].u.pages.data_len >= (1u << 20));
	trickle_and_read(bytes, len, 200000, recs, back, n);
	free_stream(back, n);

	/* cut: inside the data of each big record, and just after its prefix */
	size_t start = ZD_PREAMBLE_LEN;
	for (size_t i = 0; i < n; i++) {
		uint8_t *b;
		size_t l;
		assert_int_equal(zd_encode_binary(&recs[i], PAGE, &b, &l), 0);
		free(b);
		if (recs[i].type == ZD_REC_PAGES) {
			size_t cuts[] = { start + l - 1, start + l / 2, start + l - recs[i].u.pages.data_len + 1 };
			for (size_t c = 0; c < 3; c++) {
				char at[64];
				assert_int_equal(read_buf(bytes, cuts[c], msg, sizeof(msg)), -ZD_RERR_TRUNCATED);
				snprintf(at, sizeof(at), "stream ends at byte %zu", cuts[c]);
				if (!strstr(msg, at) || !strstr(msg, "(PAGES)"))
					fail_msg("cut at %zu: %s", cuts[c], msg);
			}
			/* a changed byte in the data, then in the data length */
			size_t flips[] = { start + l - recs[i].u.pages.data_len / 3, start + l - recs[i].u.pages.data_len - 2 };
			for (size_t f = 0; f < 2; f++) {
				bytes[flips[f]] ^= 0x10;
				int rc = read_buf(bytes, len, msg, sizeof(msg));
				if (rc != -ZD_RERR_CRC)
					fail_msg("byte %zu changed: rc %d: %s", flips[f], rc, msg);
				bytes[flips[f]] ^= 0x10;
			}
		}
		start += l;
	}
	assert_int_equal(start, len);
	assert_int_equal(read_buf(bytes, len, msg, sizeof(msg)), 1);
	free_stream(recs, n);
	free(bytes);
}

/* A stage that passes PAGES unread (zd_reader.pass_pages, as zd-mru and
 * zd-swap do): the bytes out are the bytes in, whether splice(2) moves
 * them (pipe in, pipe or file out) or read and write do (file to file);
 * a record the stage drops is skipped whole; input cut inside a passed
 * record is the reader's error, named, not the writer's. */

/* fork a child that writes bytes[0..len) to a pipe; returns the read end */
static int pipe_from(const uint8_t *bytes, size_t len, pid_t *pid)
{
	int p[2];

	assert_int_equal(pipe(p), 0);
	*pid = fork();
	assert_true(*pid >= 0);
	if (*pid == 0) {
		close(p[0]);
		_exit(write(p[1], bytes, len) == (ssize_t)len ? 0 : 1);
	}
	close(p[1]);
	return p[0];
}

/* reader (pass_pages) → writer; returns records passed unread, or -1 */
static long pass_through(int in, int out, struct zd_reader *rd, struct zd_writer *w, bool drop_first_passed)
{
	struct zd_record r;
	long passed = 0;
	int rc;

	zd_reader_init(rd, in, "stdin");
	rd->pass_pages = true;
	zd_writer_init(w, out, ZD_ENC_BINARY);
	while ((rc = zd_reader_next(rd, &r)) > 0) {
		bool pass = r.type == ZD_REC_PAGES && r.u.pages.pass;

		if (pass)
			assert_null(r.u.pages.data);
		passed += pass;
		if (!(pass && drop_first_passed && passed == 1) && zd_writer_put(w, &r) < 0) {
			zd_record_free(&r);
			return -1;
		}
		zd_record_free(&r);
	}
	if (rc < 0 || zd_writer_flush(w) < 0)
		return -1;
	return passed;
}

static void test_pass_pages(void **state)
{
	struct zd_record recs[5], back[5];
	uint8_t *bytes, *out;
	size_t n = big_pages_stream(recs, &bytes);
	size_t len = 0;
	struct zd_reader rd;
	struct zd_writer w;
	pid_t pid, pid2;
	int st;

	/* the writer puts big RAW pages from where they are: the same bytes */
	for (size_t i = 0; i < n; i++) {
		uint8_t *b;
		size_t l;
		assert_int_equal(zd_encode_binary(&recs[i], PAGE, &b, &l), 0);
		assert_memory_equal(bytes + ZD_PREAMBLE_LEN + len, b, l);
		free(b);
		len += l;
	}
	len += ZD_PREAMBLE_LEN;

	/* pipe in, file out (splice), then file in, file out (read, write) */
	for (int file_in = 0; file_in < 2; file_in++) {
		int in = file_in ? memfd_with(bytes, len) : pipe_from(bytes, len, &pid);
		int mem = memfd_create("zd-out", 0);

		assert_int_equal(pass_through(in, mem, &rd, &w, false), 3);
		assert_int_equal(w.bytes, len);
		assert_int_equal(fd_slurp(mem, &out), len);
		assert_memory_equal(out, bytes, len);
		free(out);
		zd_reader_free(&rd);
		zd_writer_free(&w);
		close(mem);
		close(in);
		if (!file_in)
			assert_int_equal(waitpid(pid, &st, 0), pid);
	}

	/* pipe in, pipe out (splice), read back by a reader: the records */
	int in = pipe_from(bytes, len, &pid), p[2];
	assert_int_equal(pipe(p), 0);
	pid2 = fork();
	assert_true(pid2 >= 0);
	if (pid2 == 0) {
		close(p[0]);
		_exit(pass_through(in, p[1], &rd, &w, false) == 3 ? 0 : 1);
	}
	close(p[1]);
	close(in);
	assert_int_equal(read_all(p[0], &rd, back, n), (long)n);
	for (size_t i = 0; i < n; i++)
		assert_record_equal(&recs[i], &back[i]);
	free_stream(back, n);
	zd_reader_free(&rd);
	close(p[0]);
	assert_int_equal(waitpid(pid2, &st, 0), pid2);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);

	/* the first passed record dropped: the rest come through whole */
	in = pipe_from(bytes, len, &pid);
	int mem = memfd_create("zd-out", 0);
	assert_int_equal(pass_through(in, mem, &rd, &w, true), 3);
	size_t got = fd_slurp(mem, &out);
	zd_reader_free(&rd);
	zd_writer_free(&w);
	close(mem);
	close(in);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	mem = memfd_with(out, got);
	assert_int_equal(read_all(mem, &rd, back, n), (long)n - 1);
	assert_record_equal(&recs[1], &back[1]);
	assert_record_equal(&recs[3], &back[2]);
	assert_record_equal(&recs[4], &back[3]);
	free_stream(back, n - 1);
	zd_reader_free(&rd);
	close(mem);
	free(out);

	/* a byte of the last record's data changed: read and written (file
	 * to file), the stage finds it; spliced (pipe to file), the stage
	 * after it does, the CRC having come along */
	bytes[len - 5000] ^= 0x40;
	for (int file_in = 1; file_in >= 0; file_in--) {
		in = file_in ? memfd_with(bytes, len) : pipe_from(bytes, len, &pid);
		mem = memfd_create("zd-out", 0);
		long rc = pass_through(in, mem, &rd, &w, false);
		if (file_in) {
			assert_int_equal(rc, -1);
			assert_int_equal(rd.err, ZD_RERR_CRC);
			if (!strstr(rd.msg, "(PAGES): crc mismatch"))
				fail_msg("%s", rd.msg);
		} else {
			assert_int_equal(rc, 3);
		}
		zd_reader_free(&rd);
		zd_writer_free(&w);
		got = fd_slurp(mem, &out);
		close(mem);
		close(in);
		if (!file_in)
			assert_int_equal(waitpid(pid, &st, 0), pid);
		mem = memfd_with(out, got);
		assert_int_equal(read_all(mem, &rd, NULL, 0), -1);
		assert_int_equal(rd.err, ZD_RERR_CRC);
		zd_reader_free(&rd);
		close(mem);
		free(out);
	}
	bytes[len - 5000] ^= 0x40;

	/* cut inside the last record's data: the reader says where */
	in = pipe_from(bytes, len - 1000, &pid);
	mem = memfd_create("zd-out", 0);
	assert_int_equal(pass_through(in, mem, &rd, &w, false), -1);
	assert_int_equal(w.err, EPROTO);
	assert_int_equal(rd.err, ZD_RERR_TRUNCATED);
	if (!strstr(rd.msg, "stdin: byte ") || !strstr(rd.msg, "(PAGES): truncated") ||
	    !strstr(rd.msg, "1000 bytes short"))
		fail_msg("%s", rd.msg);
	zd_reader_free(&rd);
	zd_writer_free(&w);
	close(mem);
	close(in);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	free_stream(recs, n);
	free(bytes);
}

static void test_pipe_small_writes_binary(void **state) { pipe_small_writes(ZD_ENC_BINARY); }
static void test_pipe_small_writes_json(void **state) { pipe_small_writes(ZD_ENC_JSON); }

/* The EXAMPLES of man/zd-stream.5 are what the encoder writes: the page
 * is normative, so it may not drift from the code. */
static void example_records(struct zd_record *r, size_t *n)
{
	static uint8_t zstd[6] = { 0x28, 0xb5, 0x2f, 0xfd, 0, 0 };
	*n = 0;
	zd_record_init(&r[*n], ZD_REC_HEADER);
	r[*n].u.header.page_size = 4096;
	r[*n].u.header.page_count = 256;
	r[*n].u.header.mode = ZD_MODE_ZDDSPT;
	r[*n].u.header.interval_us = 25000;
	r[*n].u.header.start_ns = 1764072000000000000ull;
	r[*n].u.header.target = "synth:pages=256";
	r[*n].u.header.control = "";
	(*n)++;
	zd_record_init(&r[*n], ZD_REC_CHECKPOINT);
	r[*n].u.ckpt = (struct zd_rec_checkpoint){ 1, 0, 5000000, 5040000, 40000, ZD_CKPT_PAGES_INLINE };
	(*n)++;
	zd_record_init(&r[*n], ZD_REC_DIRTY);
	r[*n].u.dirty.epoch = 1;
	zd_pageset_add_range(&r[*n].u.dirty.set, 3, 2);
	zd_pageset_add(&r[*n].u.dirty.set, 10);
	(*n)++;
	zd_record_init(&r[*n], ZD_REC_PAGES);
	r[*n].u.pages.epoch = 1;
	r[*n].u.pages.enc = ZD_PENC_ZSTD;
	zd_pageset_copy(&r[*n].u.pages.set, &r[*n - 1].u.dirty.set);
	r[*n].u.pages.data_len = sizeof(zstd);
	r[*n].u.pages.data = zstd;
	(*n)++;
	zd_record_init(&r[*n], ZD_REC_COMMIT);
	r[*n].u.commit.epoch = 1;
	r[*n].u.commit.pages = 3;
	(*n)++;
	zd_record_init(&r[*n], ZD_REC_END);
	r[*n].u.end.epochs = 1;
	(*n)++;
}

static void test_man_page_examples(void **state)
{
	char path[4096];
	const char *top = getenv("ZD_TOP");
	snprintf(path, sizeof(path), "%s/man/zd-stream.5", top ? top : ".");
	FILE *f = fopen(path, "r");
	if (!f) {
		print_message("# %s not found\n", path);
		skip();
	}
	uint8_t hex[4096];
	size_t nhex = 0;
	char json[8192] = "", line[1024];
	bool in_examples = false, folded = false;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, ".SH", 3) == 0)
			in_examples = strstr(line, "EXAMPLES") != NULL;
		if (!in_examples)
			continue;
		unsigned off;
		int pos = -1;
		if (sscanf(line, "%8x: %n", &off, &pos) == 1 && pos == 10) {
			assert_int_equal(off, nhex);
			/* 8 groups of 4 hex digits at most, then the text column */
			const char *p = line + pos;
			for (int g = 0; g < 8; g++) {
				unsigned a, b;
				if (sscanf(p, "%2x%2x", &a, &b) == 2) {
					hex[nhex++] = (uint8_t)a;
					hex[nhex++] = (uint8_t)b;
					p += 5;
				} else if (sscanf(p, "%2x ", &a) == 1 && p[2] == ' ') {
					hex[nhex++] = (uint8_t)a;
					break;
				} else {
					break;
				}
			}
		} else if (line[0] == '{' || folded) {
			size_t l = strlen(line);
			folded = l >= 3 && strcmp(line + l - 3, "\\e\n") == 0;
			if (folded)
				line[l - 3] = 0;	/* folded to fit the page */
			strcat(json, line);
		}
	}
	fclose(f);

	struct zd_record r[8];
	size_t n;
	example_records(r, &n);
	uint8_t *bin;
	size_t blen = write_stream(r, n, ZD_ENC_BINARY, &bin);
	assert_int_equal(nhex, blen);
	assert_memory_equal(hex, bin, blen);
	uint8_t *js;
	size_t jlen = write_stream(r, n, ZD_ENC_JSON, &js);
	assert_int_equal(strlen(json), jlen);
	assert_memory_equal(json, js, jlen);
	zd_pageset_free(&r[2].u.dirty.set);
	zd_pageset_free(&r[3].u.pages.set);
	free(bin);
	free(js);
}

static void test_writer_refuses_bad_records(void **state)
{
	int fd = memfd_create("w", 0);
	struct zd_writer w;
	zd_writer_init(&w, fd, ZD_ENC_BINARY);
	struct zd_record r;
	zd_record_init(&r, ZD_REC_HEADER);
	r.u.header.page_size = 3000;
	r.u.header.page_count = 1;
	assert_int_equal(zd_writer_put(&w, &r), -1);
	assert_int_equal(w.err, EINVAL);
	assert_int_equal(zd_writer_flush(&w), -1);
	assert_int_equal(lseek(fd, 0, SEEK_END), 0);	/* nothing half-written */
	zd_writer_free(&w);
	close(fd);
	assert_int_equal(zd_output_encoding(fd, true), ZD_ENC_JSON);
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(zd_output_encoding(p[1], false), ZD_ENC_BINARY);
	close(p[0]);
	close(p[1]);
	/* a terminal gets JSON */
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0) {
		int t = open(ptsname(m), O_RDWR | O_NOCTTY);
		assert_true(t >= 0);
		assert_int_equal(zd_output_encoding(t, false), ZD_ENC_JSON);
		close(t);
	}
	if (m >= 0)
		close(m);
}

static void test_names(void **state)
{
	assert_string_equal(zd_rec_type_name(ZD_REC_PAGES), "PAGES");
	assert_string_equal(zd_rec_type_name(999), "UNKNOWN");
	enum zd_mode m;
	assert_int_equal(zd_mode_parse("zddspt", &m), 0);
	assert_int_equal(m, ZD_MODE_ZDDSPT);
	assert_int_equal(zd_mode_parse("colo", &m), -1);
	assert_string_equal(zd_mode_name(ZD_MODE_BUFFERED), "buffered");
}

/* zd-stat's way out of a wait on a silent pipe: a signal handler sets the
 * reader's stop_flag, the wait ends (ZD_RERR_IO, EINTR); idle() runs
 * between timed waits meanwhile. */
static volatile sig_atomic_t alarm_flag;
static void on_alarm(int sig) { alarm_flag = 1; }
static int idle_calls, idle_wfd = -1;
/* 5 ms waits; after 2 s (a reader deaf to the flag) junk comes in, so the
 * read fails the checks below instead of waiting for ever */
static int count_idle(void *arg)
{
	static const uint8_t junk[12] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

	if (++idle_calls == 400 && write(idle_wfd, junk, sizeof(junk)) != (ssize_t)sizeof(junk))
		fail_msg("write: %s", strerror(errno));
	return 5;
}

static void test_stop_flag_and_idle(void **state)
{
	struct zd_record h, r;
	struct zd_writer w;
	struct zd_reader rd;
	struct sigaction sa = { .sa_handler = on_alarm }, old;
	struct itimerval it = { .it_value = { .tv_usec = 60000 } };
	int p[2];

	assert_int_equal(pipe(p), 0);
	zd_record_init(&h, ZD_REC_HEADER);
	h.u.header.page_size = 4096;
	h.u.header.page_count = 16;
	h.u.header.target = "synth:pages=16";
	h.u.header.control = "";
	zd_writer_init(&w, p[1], ZD_ENC_BINARY);
	assert_int_equal(zd_writer_put(&w, &h), 0);
	assert_int_equal(zd_writer_flush(&w), 0);

	sigemptyset(&sa.sa_mask);	/* no SA_RESTART: as zd-stat's, or not, the wait ends */
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	zd_reader_init(&rd, p[0], "pipe");
	alarm_flag = 0;
	rd.stop_flag = &alarm_flag;
	sigemptyset(&rd.stop_sigs);
	sigaddset(&rd.stop_sigs, SIGALRM);
	rd.idle = count_idle;
	idle_wfd = p[1];
	assert_int_equal(zd_reader_next(&rd, &r), 1);
	assert_int_equal(r.type, ZD_REC_HEADER);
	zd_record_free(&r);
	/* the write end stays open: the next read waits until the alarm */
	idle_calls = 0;
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	assert_int_equal(zd_reader_next(&rd, &r), -1);
	assert_int_equal(rd.err, ZD_RERR_IO);
	assert_non_null(strstr(rd.msg, strerror(EINTR)));
	assert_true(alarm_flag);
	assert_true(idle_calls >= 5);	/* 60 ms of 5 ms waits, give or take */
	zd_reader_free(&rd);

	/* flag already set: no wait at all, even with input to read */
	assert_int_equal(write(p[1], "x", 1), 1);
	zd_reader_init(&rd, p[0], "pipe");
	rd.stop_flag = &alarm_flag;
	sigemptyset(&rd.stop_sigs);
	assert_int_equal(zd_reader_next(&rd, &r), -1);
	assert_int_equal(rd.err, ZD_RERR_IO);
	zd_reader_free(&rd);

	sigaction(SIGALRM, &old, NULL);
	zd_writer_free(&w);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_big_pages_direct),
		cmocka_unit_test(test_pass_pages),
		cmocka_unit_test(test_roundtrip_binary),
		cmocka_unit_test(test_roundtrip_json),
		cmocka_unit_test(test_binary_json_binary_identical),
		cmocka_unit_test(test_truncate_binary_every_byte),
		cmocka_unit_test(test_truncate_json_every_byte),
		cmocka_unit_test(test_flip_every_bit),
		cmocka_unit_test(test_bad_magic_and_version),
		cmocka_unit_test(test_length_over_limit),
		cmocka_unit_test(test_pfn_beyond_page_count),
		cmocka_unit_test(test_order_rules),
		cmocka_unit_test(test_malformed_bodies),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_json_big_lines),
		cmocka_unit_test(test_unknown_records_survive),
		cmocka_unit_test(test_pipe_small_writes_binary),
		cmocka_unit_test(test_pipe_small_writes_json),
		cmocka_unit_test(test_stop_flag_and_idle),
		cmocka_unit_test(test_man_page_examples),
		cmocka_unit_test(test_writer_refuses_bad_records),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
