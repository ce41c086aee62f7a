/* SPDX-License-Identifier: MIT */
/*
 * Page compression (lib/wire/pages.c, shadow.c) against a model: a primary
 * memory image changes a few words per written page each epoch; the pages
 * go through zd_wire_encode, the binary record codec (real bytes, CRC) and
 * zd_wire_decode against a receiver image, which must end equal to the
 * primary's. Also: the shadow budget evicts least recently sent pages and
 * a miss goes plain; damaged payloads are refused whole.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"
#include "wire/wire_int.h"
#include "testlib.h"

#define PS 4096u
#define NPAGES 2048u

struct model {
	uint8_t *prim, *recv;
};

/* Guest-like pages: zero runs, text, pointers, some noise. */
static void fill_page(uint8_t *p, uint64_t pfn)
{
	uint64_t *w = (uint64_t *)p;
	for (size_t i = 0; i < PS / 8; i++) {
		uint64_t r = rnd();
		switch ((pfn + i / 64) % 4) {
		case 0: w[i] = 0; break;
		case 1: w[i] = 0x20656874206e6f20ull + (i & 7); break;
		case 2: w[i] = 0xffff888000000000ull | (r & 0xffffff0); break;
		default: w[i] = r; break;
		}
	}
}

static void model_init(struct model *m)
{
	m->prim = zd_xmalloc((size_t)NPAGES * PS);
	m->recv = zd_xcalloc(NPAGES, PS);
	for (uint64_t pfn = 0; pfn < NPAGES; pfn++)
		fill_page(m->prim + pfn * PS, pfn);
}

static void model_free(struct model *m)
{
	free(m->prim);
	free(m->recv);
}

static const uint8_t *recv_base(void *arg, uint64_t pfn)
{
	struct model *m = arg;
	return pfn < NPAGES ? m->recv + pfn * PS : NULL;
}

/* A PAGES record of set, contents from the primary. */
static void make_pages(struct zd_record *r, struct model *m, const struct zd_pageset *set, uint64_t epoch)
{
	struct zd_pageset_iter it;
	uint64_t pfn, i = 0;

	zd_record_init(r, ZD_REC_PAGES);
	r->u.pages.epoch = epoch;
	zd_pageset_copy(&r->u.pages.set, set);
	r->u.pages.data_len = (uint32_t)(set->pages * PS);
	r->u.pages.data = zd_xmalloc(r->u.pages.data_len + 1);
	zd_pageset_iter_init(&it, set);
	while (zd_pageset_iter_next(&it, &pfn))
		memcpy(r->u.pages.data + PS * i++, m->prim + pfn * PS, PS);
}

/* Encode, carry as bytes through the record codec, decode, stage into the
 * receiver image. Returns the payload bytes carried. */
static size_t ship(struct zd_wire_enc *e, struct zd_wire_dec *d, struct model *m, struct zd_record *r)
{
	struct zd_record wire = *r, got;
	struct zd_rec_pages raw;
	char msg[256];
	uint8_t *buf;
	size_t len;

	assert_int_equal(zd_wire_encode(e, &r->u.pages, &wire.u.pages, msg, sizeof(msg)), 0);
	size_t carried = wire.u.pages.data_len;
	assert_int_equal(zd_encode_binary(&wire, PS, &buf, &len), 0);
	zd_record_init(&got, 0);
	assert_int_equal(zd_decode_binary(buf, len, NULL, &got, msg, sizeof(msg)), 0);
	free(buf);
	assert_int_equal(got.type, ZD_REC_PAGES);
	assert_int_equal(got.u.pages.enc, wire.u.pages.enc);
	if (zd_wire_decode(d, &got.u.pages, recv_base, m, &raw, msg, sizeof(msg)) < 0)
		fail_msg("decode: %s", msg);
	assert_int_equal(raw.enc, ZD_PENC_RAW);
	assert_int_equal(raw.data_len, got.u.pages.set.pages * PS);
	struct zd_pageset_iter it;
	uint64_t pfn, i = 0;
	zd_pageset_iter_init(&it, &got.u.pages.set);
	while (zd_pageset_iter_next(&it, &pfn))
		memcpy(m->recv + pfn * PS, raw.data + PS * i++, PS);
	zd_record_free(&got);
	return carried;
}

/* One epoch: dirty random pages (a hot window and some anywhere), change
 * a few words in each, ship in records of at most `per` pages. */
static void epoch(struct zd_wire_enc *e, struct zd_wire_dec *d, struct model *m, uint64_t ep,
		  unsigned ndirty, unsigned per, size_t *raw, size_t *wire)
{
	struct zd_pageset set, part;
	struct zd_pageset_iter it;
	zd_pageset_init(&set);
	zd_pageset_init(&part);
	for (unsigned k = 0; k < ndirty; k++) {
		uint64_t pfn = k % 4 ? rnd() % 256 : rnd() % NPAGES;
		uint64_t *w = (uint64_t *)(m->prim + pfn * PS);
		for (int j = 0; j < 4; j++)
			w[rnd() % (PS / 8)] = rnd();
		zd_pageset_add(&set, pfn);
	}
	zd_pageset_iter_init(&it, &set);
	while (zd_pageset_iter_take(&it, &part, per)) {
		struct zd_record r;
		make_pages(&r, m, &part, ep);
		*raw += r.u.pages.data_len;
		*wire += ship(e, d, m, &r);
		zd_record_free(&r);
	}
	zd_pageset_free(&set);
	zd_pageset_free(&part);
}

static void round_trip(enum zd_page_enc enc, uint64_t cache, double min_ratio)
{
	struct zd_wire_opts o = { .enc = enc, .level = 1, .cache_bytes = cache, .page_size = PS };
	struct zd_wire_enc *e;
	struct zd_wire_dec *d;
	struct model m;
	char msg[256];
	size_t raw = 0, wire = 0, raw1 = 0, wire1 = 0;

	model_init(&m);
	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), 0);
	assert_int_equal(zd_wire_dec_new(&d, PS, msg, sizeof(msg)), 0);
	/* epoch 1 sends every page (the first full copy), then small epochs */
	struct zd_pageset all;
	zd_pageset_init(&all);
	zd_pageset_add_range(&all, 0, NPAGES);
	struct zd_pageset_iter it;
	struct zd_pageset part;
	zd_pageset_init(&part);
	zd_pageset_iter_init(&it, &all);
	while (zd_pageset_iter_take(&it, &part, 1000)) {
		struct zd_record r;
		make_pages(&r, &m, &part, 1);
		raw1 += r.u.pages.data_len;
		wire1 += ship(e, d, &m, &r);
		zd_record_free(&r);
	}
	for (uint64_t ep = 2; ep < 12; ep++)
		epoch(e, d, &m, ep, 300, 1 + (unsigned)(rnd() % 200), &raw, &wire);
	assert_memory_equal(m.prim, m.recv, (size_t)NPAGES * PS);
	const struct zd_wire_stats *st = zd_wire_enc_stats(e);
	assert_int_equal(st->raw_bytes, raw + raw1);
	assert_int_equal(st->wire_bytes, wire + wire1);
	if (enc == ZD_PENC_RAW)
		assert_int_equal(wire, raw);
	else
		assert_true((double)raw / (double)wire >= min_ratio);
	if (enc == ZD_PENC_DELTA && cache >= (uint64_t)NPAGES * PS)
		assert_true(st->delta_pages > 0);
	print_message("# %s cache %llu: first copy %.2fx, epochs %.2fx, %llu delta pages\n",
		      enc == ZD_PENC_RAW ? "none" : enc == ZD_PENC_ZSTD ? "zstd" : "delta",
		      (unsigned long long)cache, (double)raw1 / (double)wire1,
		      (double)raw / (double)wire, (unsigned long long)st->delta_pages);
	zd_pageset_free(&all);
	zd_pageset_free(&part);
	zd_wire_enc_free(e);
	zd_wire_dec_free(d);
	model_free(&m);
}

static void test_none(void **state) { (void)state; round_trip(ZD_PENC_RAW, 0, 1); }
static void test_zstd(void **state) { (void)state; round_trip(ZD_PENC_ZSTD, 0, 1.2); }
/* a few words changed per page: XOR is nearly all zero */
static void test_delta(void **state) { (void)state; round_trip(ZD_PENC_DELTA, 64u << 20, 20); }
/* a budget below the hot set: misses go plain, still correct */
static void test_delta_small_cache(void **state) { (void)state; round_trip(ZD_PENC_DELTA, 64 * PS, 1.2); }
static void test_delta_no_cache(void **state) { (void)state; round_trip(ZD_PENC_DELTA, 0, 1.2); }

/* Budget of 8 pages: after sending 16 pages, only the last 8 sent have a
 * shadow; sending pages 0..15 again XORs exactly the recent ones. */
static void test_eviction(void **state)
{
	(void)state;
	struct zd_wire_opts o = { .enc = ZD_PENC_DELTA, .level = 1, .cache_bytes = 8 * PS, .page_size = PS };
	struct zd_wire_enc *e;
	struct zd_wire_dec *d;
	struct model m;
	char msg[256];

	model_init(&m);
	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), 0);
	assert_int_equal(zd_wire_dec_new(&d, PS, msg, sizeof(msg)), 0);
	for (uint64_t pfn = 0; pfn < 16; pfn++) {
		struct zd_pageset s;
		struct zd_record r;
		zd_pageset_init(&s);
		zd_pageset_add(&s, pfn);
		make_pages(&r, &m, &s, 1);
		ship(e, d, &m, &r);
		zd_record_free(&r);
		zd_pageset_free(&s);
	}
	const struct zd_wire_stats *st = zd_wire_enc_stats(e);
	assert_int_equal(zd_wire_enc_cached(e), 8);
	assert_int_equal(st->evictions, 8);
	assert_int_equal(st->miss_pages, 16);
	/* change a word in pages 0..15 and send them as one record */
	struct zd_pageset s;
	struct zd_record r, wire;
	zd_pageset_init(&s);
	zd_pageset_add_range(&s, 0, 16);
	for (uint64_t pfn = 0; pfn < 16; pfn++)
		m.prim[pfn * PS + 8 * pfn] ^= 0x5a;
	make_pages(&r, &m, &s, 2);
	wire = r;
	assert_int_equal(zd_wire_encode(e, &r.u.pages, &wire.u.pages, msg, sizeof(msg)), 0);
	assert_int_equal(wire.u.pages.enc, ZD_PENC_DELTA);
	assert_int_equal(st->delta_pages, 8);	/* 8..15 */
	assert_int_equal(st->miss_pages, 16 + 8);	/* 0..7 plain */
	struct zd_rec_pages raw;
	assert_int_equal(zd_wire_decode(d, &wire.u.pages, recv_base, &m, &raw, msg, sizeof(msg)), 0);
	assert_memory_equal(raw.data, r.u.pages.data, 16 * PS);
	/* a reset forgets every shadow: the next record is plain zstd */
	zd_wire_enc_reset(e);
	assert_int_equal(zd_wire_enc_cached(e), 0);
	assert_int_equal(zd_wire_encode(e, &r.u.pages, &wire.u.pages, msg, sizeof(msg)), 0);
	assert_int_equal(wire.u.pages.enc, ZD_PENC_ZSTD);
	zd_record_free(&r);
	zd_pageset_free(&s);
	zd_wire_enc_free(e);
	zd_wire_dec_free(d);
	model_free(&m);
}

/* Random pages do not compress: the record goes raw, and still updates
 * the shadows (the receiver gets the page either way). */
static void test_incompressible_goes_raw(void **state)
{
	(void)state;
	struct zd_wire_opts o = { .enc = ZD_PENC_DELTA, .level = 1, .cache_bytes = 1 << 20, .page_size = PS };
	struct zd_wire_enc *e;
	struct zd_record r;
	struct zd_rec_pages out;
	char msg[256];

	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), 0);
	zd_record_init(&r, ZD_REC_PAGES);
	zd_pageset_add_range(&r.u.pages.set, 10, 4);
	r.u.pages.data_len = 4 * PS;
	r.u.pages.data = zd_xmalloc(4 * PS);
	for (size_t i = 0; i < 4 * PS / 8; i++)
		((uint64_t *)r.u.pages.data)[i] = rnd();
	assert_int_equal(zd_wire_encode(e, &r.u.pages, &out, msg, sizeof(msg)), 0);
	assert_int_equal(out.enc, ZD_PENC_RAW);
	assert_ptr_equal(out.data, r.u.pages.data);
	assert_int_equal(zd_wire_enc_cached(e), 4);
	/* a record that is not raw, or not whole, is refused */
	r.u.pages.data_len--;
	assert_int_equal(zd_wire_encode(e, &r.u.pages, &out, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "data bytes for 4 pages"));
	zd_record_free(&r);
	zd_wire_enc_free(e);
}

/* Every damage to a payload — flipped bytes anywhere (bitmap included),
 * cut short, bytes added — is refused with a message, and out is left
 * as it was; a decode that succeeds gives exactly the original pages. */
static void test_corrupt_payload(void **state)
{
	(void)state;
	struct zd_wire_opts o = { .enc = ZD_PENC_DELTA, .level = 3, .cache_bytes = 1 << 20, .page_size = PS };
	struct zd_wire_enc *e;
	struct zd_wire_dec *d;
	struct model m;
	char msg[256];

	model_init(&m);
	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), 0);
	assert_int_equal(zd_wire_dec_new(&d, PS, msg, sizeof(msg)), 0);
	struct zd_pageset s;
	struct zd_record r;
	zd_pageset_init(&s);
	zd_pageset_add_range(&s, 100, 13);
	make_pages(&r, &m, &s, 1);
	ship(e, d, &m, &r);	/* shadows + receiver copies of 100..112 */
	zd_record_free(&r);
	for (int k = 0; k < 13; k += 2)
		m.prim[(100 + k) * PS + 64 * k] ^= 0xff;
	make_pages(&r, &m, &s, 2);
	struct zd_rec_pages enc, out, sentinel;
	assert_int_equal(zd_wire_encode(e, &r.u.pages, &enc, msg, sizeof(msg)), 0);
	assert_int_equal(enc.enc, ZD_PENC_DELTA);
	uint32_t n = enc.data_len;
	uint8_t *good = zd_xmalloc(n + 16), *bad = zd_xmalloc(n + 16);
	memcpy(good, enc.data, n);
	memset(&sentinel, 0xa5, sizeof(sentinel));
	int refused = 0, same = 0;
	for (uint32_t pos = 0; pos < n; pos++) {
		for (int bit = 0; bit < 8; bit += 3) {
			memcpy(bad, good, n);
			bad[pos] ^= (uint8_t)(1u << bit);
			struct zd_rec_pages in = enc;
			in.data = bad;
			out = sentinel;
			if (zd_wire_decode(d, &in, recv_base, &m, &out, msg, sizeof(msg)) < 0) {
				assert_memory_equal(&out, &sentinel, sizeof(out));
				assert_true(msg[0] != 0);
				refused++;
			} else {
				assert_memory_equal(out.data, r.u.pages.data, 13 * PS);
				same++;
			}
		}
	}
	print_message("# %d damaged payloads refused, %d decoded to the right pages\n", refused, same);
	assert_true(refused > same);
	/* cut short and grown */
	for (uint32_t cut = 0; cut < n; cut += 1 + cut / 4) {
		struct zd_rec_pages in = enc;
		in.data = good;
		in.data_len = cut;
		out = sentinel;
		assert_int_equal(zd_wire_decode(d, &in, recv_base, &m, &out, msg, sizeof(msg)), -1);
		assert_memory_equal(&out, &sentinel, sizeof(out));
	}
	memcpy(bad, good, n);
	memset(bad + n, 0, 16);
	struct zd_rec_pages in = enc;
	in.data = bad;
	in.data_len = n + 16;
	assert_int_equal(zd_wire_decode(d, &in, recv_base, &m, &out, msg, sizeof(msg)), -1);
	assert_string_equal(msg, "delta payload: 16 bytes after the zstd frame");
	/* the right payload against a set of another size */
	in.data = good;
	in.data_len = n;
	zd_pageset_init(&in.set);
	zd_pageset_add_range(&in.set, 100, 12);
	assert_int_equal(zd_wire_decode(d, &in, recv_base, &m, &out, msg, sizeof(msg)), -1);
	assert_true(strstr(msg, "frame holds") || strstr(msg, "bitmap flags pages beyond the 12"));
	zd_pageset_free(&in.set);
	/* no receiver copy for a delta page */
	in = enc;
	in.data = good;
	assert_int_equal(zd_wire_decode(d, &in, NULL, NULL, &out, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "no copy to XOR with"));
	/* and the undamaged one still decodes */
	assert_int_equal(zd_wire_decode(d, &in, recv_base, &m, &out, msg, sizeof(msg)), 0);
	assert_memory_equal(out.data, r.u.pages.data, 13 * PS);
	free(good);
	free(bad);
	zd_record_free(&r);
	zd_pageset_free(&s);
	zd_wire_enc_free(e);
	zd_wire_dec_free(d);
	model_free(&m);
}

/* A compressed record decodes to no more than a raw record can carry
 * (ZD_REC_MAX): 4096 pages of 64 KiB would be 256 MiB from a frame of a
 * few KB. Refused before the frame is looked at; 64 MiB still decode. */
static void test_record_max(void **state)
{
	(void)state;
	enum { BIG = 65536 };
	struct zd_wire_dec *d;
	struct zd_rec_pages in = { .epoch = 1, .enc = ZD_PENC_ZSTD }, out;
	uint8_t junk[64] = { 0 };
	char msg[256];
	size_t raw = (size_t)ZD_REC_MAX, cap = ZSTD_compressBound(raw);
	uint8_t *zeros = zd_xcalloc(1, raw), *frame = zd_xmalloc(cap);

	assert_int_equal(zd_wire_dec_new(&d, BIG, msg, sizeof(msg)), 0);
	zd_pageset_init(&in.set);
	zd_pageset_add_range(&in.set, 0, ZD_PAGES_PER_RECORD);
	in.data = junk;
	in.data_len = sizeof(junk);
	for (int e = ZD_PENC_ZSTD; e <= ZD_PENC_DELTA; e++) {
		in.enc = (uint8_t)e;
		assert_int_equal(zd_wire_decode(d, &in, NULL, NULL, &out, msg, sizeof(msg)), -1);
		assert_non_null(strstr(msg, "4096 pages of 65536 bytes, more than a record holds raw (67108864 bytes)"));
	}
	/* exactly at the limit: 1024 pages of 64 KiB */
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 1);
	ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
	size_t n = ZSTD_compress2(c, frame, cap, zeros, raw);
	assert_false(ZSTD_isError(n));
	zd_pageset_free(&in.set);
	zd_pageset_init(&in.set);
	zd_pageset_add_range(&in.set, 0, raw / BIG);
	in.enc = ZD_PENC_ZSTD;
	in.data = frame;
	in.data_len = (uint32_t)n;
	assert_int_equal(zd_wire_decode(d, &in, NULL, NULL, &out, msg, sizeof(msg)), 0);
	assert_int_equal(out.data_len, raw);
	ZSTD_freeCCtx(c);
	zd_pageset_free(&in.set);
	zd_wire_dec_free(d);
	free(zeros);
	free(frame);
}

static void test_bad_options(void **state)
{
	(void)state;
	struct zd_wire_opts o = { .enc = ZD_PENC_ZSTD, .level = 99, .page_size = PS };
	struct zd_wire_enc *e;
	char msg[256];

	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "zstd level 99"));
	o.level = 1;
	o.page_size = 3000;
	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), -1);
	enum zd_page_enc pe;
	assert_int_equal(zd_wire_enc_parse("delta", &pe), 0);
	assert_int_equal(pe, ZD_PENC_DELTA);
	assert_int_equal(zd_wire_enc_parse("none", &pe), 0);
	assert_int_equal(pe, ZD_PENC_RAW);
	assert_int_equal(zd_wire_enc_parse("lz4", &pe), -1);
}

/* The pipeline emits every record in order, PAGES encoded, on its thread. */
struct sink {
	struct zd_wire_dec *d;
	struct model *m;
	uint64_t n, last_epoch;
	int fail_at;
};

static int sink_emit(void *arg, const struct zd_record *r)
{
	struct sink *s = arg;
	struct zd_rec_pages raw;
	char msg[256];

	if (++s->n == (uint64_t)s->fail_at)
		return -1;
	if (r->type == ZD_REC_CHECKPOINT) {
		assert_true(r->u.ckpt.epoch == s->last_epoch + 1);
		s->last_epoch = r->u.ckpt.epoch;
		return 0;
	}
	assert_int_equal(r->type, ZD_REC_PAGES);
	assert_int_equal(r->u.pages.epoch, s->last_epoch);
	if (zd_wire_decode(s->d, &r->u.pages, recv_base, s->m, &raw, msg, sizeof(msg)) < 0)
		fail_msg("%s", msg);
	struct zd_pageset_iter it;
	uint64_t pfn, i = 0;
	zd_pageset_iter_init(&it, &r->u.pages.set);
	while (zd_pageset_iter_next(&it, &pfn))
		memcpy(s->m->recv + pfn * PS, raw.data + PS * i++, PS);
	return 0;
}

static void run_pipe(int fail_at)
{
	struct zd_wire_opts o = { .enc = ZD_PENC_DELTA, .level = 1, .cache_bytes = 64 << 20, .page_size = PS };
	struct zd_wire_enc *e;
	struct model m;
	struct sink s = { .m = &m, .fail_at = fail_at };
	char msg[256];
	static bool sent[NPAGES];

	memset(sent, 0, sizeof(sent));
	model_init(&m);
	assert_int_equal(zd_wire_enc_new(&e, &o, msg, sizeof(msg)), 0);
	assert_int_equal(zd_wire_dec_new(&s.d, PS, msg, sizeof(msg)), 0);
	struct zd_wire_pipe *p;
	assert_int_equal(zd_wire_pipe_new(&p, e, 3, sink_emit, &s, msg, sizeof(msg)), 0);
	int failed = 0;
	for (uint64_t ep = 1; ep <= 8; ep++) {
		struct zd_record c;
		zd_record_init(&c, ZD_REC_CHECKPOINT);
		c.u.ckpt.epoch = ep;
		failed |= zd_wire_pipe_put(p, &c) < 0;
		for (int k = 0; k < 5; k++) {
			struct zd_pageset set;
			struct zd_record r;
			zd_pageset_init(&set);
			for (int j = 0; j < 40; j++) {
				uint64_t pfn = rnd() % NPAGES;
				m.prim[pfn * PS + 8 * (rnd() % 512)] ^= 1;
				sent[pfn] = true;
				zd_pageset_add(&set, pfn);
			}
			make_pages(&r, &m, &set, ep);
			failed |= zd_wire_pipe_put(p, &r) < 0;
			zd_record_free(&r);	/* the pipeline has its copy */
			zd_pageset_free(&set);
		}
		if (!fail_at) {
			/* pages the receiver has now equal the primary's */
			assert_int_equal(zd_wire_pipe_flush(p), 0);
		}
	}
	int rc = zd_wire_pipe_finish(p, msg, sizeof(msg));
	if (fail_at) {
		assert_int_equal(rc, -1);
		assert_string_equal(msg, "emit failed on a PAGES record");
		assert_true(s.n >= (uint64_t)fail_at);
	} else {
		assert_int_equal(rc, 0);
		assert_int_equal(failed, 0);
		assert_int_equal(s.n, 8 * 6);
		assert_true(zd_wire_enc_stats(e)->delta_pages > 0);
		/* every page sent arrived as the primary has it */
		for (uint64_t pfn = 0; pfn < NPAGES; pfn++)
			if (sent[pfn])
				assert_memory_equal(m.recv + pfn * PS, m.prim + pfn * PS, PS);
	}
	zd_wire_enc_free(e);
	zd_wire_dec_free(s.d);
	model_free(&m);
}

static void test_pipe(void **state) { (void)state; run_pipe(0); }
static void test_pipe_emit_fails(void **state) { (void)state; run_pipe(9); }

/* A delta page as its changed words: the AVX2 and the plain path write
 * the same mask and words and leave the same shadow, and unpacking them
 * over the old page gives the new one; a short input is refused. Pages
 * with no change, one word, whole lines, every word. */
static void test_words(void **state)
{
	(void)state;
	enum { P = 4096 };
	static uint8_t old[P], page[P], sh1[P], sh2[P], o1[P + P / 64], o2[P + P / 64], back[P];

	for (int round = 0; round < 64; round++) {
		for (size_t i = 0; i < P; i++)
			old[i] = (uint8_t)rand();
		memcpy(page, old, P);
		int changes = round == 0 ? 0 : round == 63 ? P : round * 3;
		for (int k = 0; k < changes; k++)
			page[round == 63 ? (size_t)k : (size_t)rand() % P] ^= (uint8_t)(1 + rand() % 255);
		memcpy(sh1, old, P);
		memcpy(sh2, old, P);
		size_t n1 = zd__words_pack(o1, sh1, page, P), n2 = zd__words_pack_scalar(o2, sh2, page, P);
		assert_int_equal(n1, n2);
		assert_memory_equal(o1, o2, n1);
		assert_memory_equal(sh1, page, P);
		assert_memory_equal(sh2, page, P);
		if (round == 0)
			assert_int_equal(n1, P / 64);
		if (round == 63)
			assert_int_equal(n1, P / 64 + P);
		assert_int_equal(zd__words_unpack(back, old, o1, n1, P), n1);
		assert_memory_equal(back, page, P);
		if (n1 > P / 64)
			assert_int_equal(zd__words_unpack(back, old, o1, n1 - 1, P), 0);
		assert_int_equal(zd__words_unpack(back, old, o1, P / 64 - 1, P), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_none),
		cmocka_unit_test(test_zstd),
		cmocka_unit_test(test_delta),
		cmocka_unit_test(test_delta_small_cache),
		cmocka_unit_test(test_delta_no_cache),
		cmocka_unit_test(test_eviction),
		cmocka_unit_test(test_incompressible_goes_raw),
		cmocka_unit_test(test_corrupt_payload),
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_record_max),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_pipe),
		cmocka_unit_test(test_pipe_emit_fails),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
