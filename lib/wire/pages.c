/* SPDX-License-Identifier: MIT */
/*
 * Compressed PAGES payloads (zd-stream(5) "COMPRESSED PAGES"):
 *   zstd:  one zstd frame whose content is the pages * page_size raw bytes;
 *   delta: one zstd frame whose content is a bitmap of ceil(pages/8) bytes
 *          (bit i LSB first: page i is XORed with the receiver's copy of its
 *          pfn) followed by the pages, XORed where flagged.
 * The frame must declare its content size and carry zstd's content
 * checksum (XXH64), so a damaged payload — bitmap included — is refused
 * rather than applied; it must end the payload. Decoding goes to the
 * decoder's own buffer and is handed out only when whole and checked.
 *
 * Where the time goes (bench/README.md, the wire): a delta record is
 * prepared a chunk of pages at a time (XOR with the shadow and the shadow
 * updated in one pass, 32 bytes at a time with AVX2) and each chunk is
 * handed to zstd's streaming compressor while it is still in the cache,
 * rather than XORing 16 MiB into a scratch buffer and compressing that
 * from memory. The decoder does the same the other way: the frame is
 * decompressed a chunk at a time and each chunk XORed as it comes out.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <immintrin.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader: exported by the shared library too */
#include <zstd.h>

#include "zd/util.h"
#include "zd/wire.h"
#include "wire_int.h"

struct zd_wire_enc {
	struct zd_wire_opts o;
	ZSTD_CCtx *cctx;
	struct zd_shadow shadow;
	uint8_t *chunk;		/* CHUNK_BYTES of frame content being prepared */
	uint8_t **sh;		/* per page of the record: its shadow, NULL = miss */
	uint8_t *bitmap;
	uint8_t *out;		/* the frame */
	size_t out_cap;
	struct zd_wire_stats st;
};

struct zd_wire_dec {
	uint32_t page_size;
	ZSTD_DCtx *dctx;
	uint8_t *out;
	size_t out_cap;
	const uint8_t **base;	/* per page of the record: its base, NULL = plain */
	bool filled;		/* out holds the last record's pages */
};

/* Frame content prepared (encoder) or decoded (decoder) at a time: one
 * zstd block, small enough to stay in L2 between the two passes over it. */
#define CHUNK_BYTES (128u << 10)

static int fail(char *msg, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (msg && len) {
		va_start(ap, fmt);
		vsnprintf(msg, len, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static void grow(uint8_t **buf, size_t *cap, size_t want)
{
	if (*cap >= want)
		return;
	free(*buf);
	*buf = zd_xmalloc(want);
	*cap = want;
}

int zd_wire_enc_parse(const char *s, enum zd_page_enc *enc)
{
	if (!strcmp(s, "none") || !strcmp(s, "raw"))
		*enc = ZD_PENC_RAW;
	else if (!strcmp(s, "zstd"))
		*enc = ZD_PENC_ZSTD;
	else if (!strcmp(s, "delta"))
		*enc = ZD_PENC_DELTA;
	else
		return -1;
	return 0;
}

static bool page_size_ok(uint32_t ps)
{
	return ps >= 512 && ps <= (1u << 24) && !(ps & (ps - 1));
}

int zd_wire_enc_new(struct zd_wire_enc **ep, const struct zd_wire_opts *o, char *msg, size_t len)
{
	struct zd_wire_enc *e;

	*ep = NULL;
	if (o->enc > ZD_PENC_DELTA)
		return fail(msg, len, "unknown page encoding %d", (int)o->enc);
	if (!page_size_ok(o->page_size))
		return fail(msg, len, "page size %u is not a power of two in 512..16M", o->page_size);
	if (o->level < ZSTD_minCLevel() || o->level > ZSTD_maxCLevel())
		return fail(msg, len, "zstd level %d outside %d..%d", o->level, ZSTD_minCLevel(),
			    ZSTD_maxCLevel());
	e = zd_xcalloc(1, sizeof(*e));
	e->o = *o;
	if (o->enc != ZD_PENC_RAW) {
		e->cctx = ZSTD_createCCtx();
		if (!e->cctx) {
			free(e);
			return fail(msg, len, "zstd: cannot make a compression context");
		}
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_compressionLevel, o->level);
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_contentSizeFlag, 1);
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_checksumFlag, 1);
	}
	zd__shadow_init(&e->shadow, o->page_size, o->enc == ZD_PENC_DELTA ? o->cache_bytes : 0);
	if (e->shadow.slots) {
		e->sh = zd_xcalloc(ZD_PAGES_PER_RECORD, sizeof(*e->sh));
		e->bitmap = zd_xmalloc(ZD_PAGES_PER_RECORD / 8);
		e->chunk = zd_xmalloc(ZD_MAX((size_t)CHUNK_BYTES, (size_t)o->page_size));
	}
	*ep = e;
	return 0;
}

void zd_wire_enc_free(struct zd_wire_enc *e)
{
	if (!e)
		return;
	ZSTD_freeCCtx(e->cctx);
	zd__shadow_free(&e->shadow);
	free(e->sh);
	free(e->bitmap);
	free(e->chunk);
	free(e->out);
	free(e);
}

void zd_wire_enc_reset(struct zd_wire_enc *e)
{
	zd__shadow_clear(&e->shadow);
}

const struct zd_wire_stats *zd_wire_enc_stats(const struct zd_wire_enc *e)
{
	return &e->st;
}

uint64_t zd_wire_enc_cached(const struct zd_wire_enc *e)
{
	return e->shadow.used;
}

/* dst = a ^ b, n a multiple of 64. */
__attribute__((target("avx2")))
static void xor_avx2(uint8_t *dst, const uint8_t *a, const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i += 64) {
		__m256i x0 = _mm256_loadu_si256((const __m256i *)(a + i));
		__m256i x1 = _mm256_loadu_si256((const __m256i *)(a + i + 32));
		__m256i y0 = _mm256_loadu_si256((const __m256i *)(b + i));
		__m256i y1 = _mm256_loadu_si256((const __m256i *)(b + i + 32));
		_mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(x0, y0));
		_mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(x1, y1));
	}
}

/* dst = page ^ sh, then sh = page: a delta and its shadow's update in one
 * pass over both pages. Only the cache lines that changed are stored into
 * the shadow: a guest's page changes a few words at a time, and a line
 * left clean is one not written back to memory, which is what this pass
 * waits for. */
__attribute__((target("avx2")))
static void xor_swap_avx2(uint8_t *dst, uint8_t *sh, const uint8_t *page, size_t n)
{
	for (size_t i = 0; i < n; i += 64) {
		__m256i p0 = _mm256_loadu_si256((const __m256i *)(page + i));
		__m256i p1 = _mm256_loadu_si256((const __m256i *)(page + i + 32));
		__m256i s0 = _mm256_loadu_si256((const __m256i *)(sh + i));
		__m256i s1 = _mm256_loadu_si256((const __m256i *)(sh + i + 32));
		__m256i x0 = _mm256_xor_si256(p0, s0), x1 = _mm256_xor_si256(p1, s1);

		_mm256_storeu_si256((__m256i *)(dst + i), x0);
		_mm256_storeu_si256((__m256i *)(dst + i + 32), x1);
		if (!_mm256_testz_si256(_mm256_or_si256(x0, x1), _mm256_or_si256(x0, x1))) {
			_mm256_storeu_si256((__m256i *)(sh + i), p0);
			_mm256_storeu_si256((__m256i *)(sh + i + 32), p1);
		}
	}
}

static void xor_scalar(uint8_t *dst, const uint8_t *a, const uint8_t *b, size_t n)
{
	/* memcpy keeps it alias- and alignment-safe */
	for (size_t i = 0; i < n; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		x ^= y;
		memcpy(dst + i, &x, 8);
	}
}

static bool have_avx2(void)
{
	static int v = -1;	/* racing first callers store the same value */
	int c = __atomic_load_n(&v, __ATOMIC_RELAXED);

	if (c < 0) {
		c = __builtin_cpu_supports("avx2") ? 1 : 0;
		__atomic_store_n(&v, c, __ATOMIC_RELAXED);
	}
	return c;
}

/* Page sizes are powers of two >= 512: multiples of 64. */
static void xor_page(uint8_t *dst, const uint8_t *a, const uint8_t *b, size_t n)
{
	if (have_avx2())
		xor_avx2(dst, a, b, n);
	else
		xor_scalar(dst, a, b, n);
}

static void xor_swap(uint8_t *dst, uint8_t *sh, const uint8_t *page, size_t n)
{
	if (have_avx2()) {
		xor_swap_avx2(dst, sh, page, n);
	} else {
		xor_scalar(dst, page, sh, n);
		memcpy(sh, page, n);
	}
}

/* Pass 1: each page's shadow (marked most recent), the bitmap; nothing
 * is evicted yet, so the pointers hold through pass 2. Returns the hits. */
static size_t delta_lookup(struct zd_wire_enc *e, const struct zd_rec_pages *in, size_t nb)
{
	struct zd_pageset_iter it;
	uint64_t pfn;
	size_t i = 0, hits = 0;

	memset(e->bitmap, 0, nb);
	zd_pageset_iter_init(&it, &in->set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		e->sh[i] = zd__shadow_get(&e->shadow, pfn);
		if (e->sh[i]) {
			e->bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
			hits++;
		}
		i++;
	}
	return hits;
}

/* Last pass: the misses take shadow slots, evicting older shadows rather
 * than the record's own hits (whose shadows pass 2 already updated). */
static void delta_misses(struct zd_wire_enc *e, const struct zd_rec_pages *in, bool looked_up)
{
	size_t ps = e->o.page_size, i = 0;
	struct zd_pageset_iter it;
	uint64_t pfn;

	zd_pageset_iter_init(&it, &in->set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		if (!looked_up || !e->sh[i]) {
			uint8_t *sh = zd__shadow_put(&e->shadow, pfn);
			if (sh)
				memcpy(sh, in->data + i * ps, ps);
			e->st.miss_pages++;
		}
		i++;
	}
}

/* Hand n bytes of frame content to zstd; end: the frame's last. Returns 0,
 * 1 if the frame outgrew the output buffer (compression did not pay), or
 * -1 on a zstd error. */
static int feed(struct zd_wire_enc *e, ZSTD_outBuffer *ob, const void *src, size_t n, bool end,
		char *msg, size_t len)
{
	ZSTD_inBuffer ib = { src, n, 0 };
	ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;

	for (;;) {
		size_t r = ZSTD_compressStream2(e->cctx, ob, &ib, mode);
		if (ZSTD_isError(r))
			return fail(msg, len, "zstd: %s", ZSTD_getErrorName(r));
		if (ib.pos == ib.size && (!end || r == 0))
			return 0;
		if (ob->pos == ob->size)
			return 1;
	}
}

/* The delta frame: bitmap, then the pages a chunk at a time, each chunk
 * XORed (hits; their shadows updated on the way) or copied (misses) and
 * compressed while in the cache. Returns the frame's size, 0 if it would
 * not be smaller than raw, or -1. */
static ssize_t delta_frame(struct zd_wire_enc *e, const struct zd_rec_pages *in, size_t nb,
			   size_t hits, char *msg, size_t len)
{
	size_t ps = e->o.page_size, np = in->set.pages, raw = np * ps;
	size_t per = ZD_MAX((size_t)1, CHUNK_BYTES / ps);
	ZSTD_outBuffer ob = { e->out, ZD_MIN(e->out_cap, raw), 0 };
	bool full = false;
	int rc;

	ZSTD_CCtx_reset(e->cctx, ZSTD_reset_session_only);
	/* The literals of an XOR are the words that changed: noise that
	 * Huffman coding does not shrink (synth: the same ratio, zstd 30 %
	 * faster at level 1; the zd-vm guest: 0.5 % less ratio). A record
	 * of mostly plain pages keeps zstd's choice. */
	ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_literalCompressionMode,
			       hits * 2 >= np ? ZSTD_ps_disable : ZSTD_ps_auto);
	ZSTD_CCtx_setPledgedSrcSize(e->cctx, nb + raw);
	if ((rc = feed(e, &ob, e->bitmap, nb, false, msg, len)) < 0)
		return -1;
	full = rc;
	for (size_t i = 0; i < np; i += per) {
		size_t n = ZD_MIN(per, np - i);

		for (size_t k = 0; k < n; k++) {
			const uint8_t *page = in->data + (i + k) * ps;
			uint8_t *dst = e->chunk + k * ps;

			if (e->sh[i + k])
				xor_swap(dst, e->sh[i + k], page, ps);
			else
				memcpy(dst, page, ps);
		}
		/* past raw size the record goes raw: the shadows are still
		 * updated, the compressing stops */
		if (!full && (rc = feed(e, &ob, e->chunk, n * ps, i + n == np, msg, len)) < 0)
			return -1;
		full = full || rc;
	}
	return full || ob.pos >= raw ? 0 : (ssize_t)ob.pos;
}

int zd_wire_encode(struct zd_wire_enc *e, const struct zd_rec_pages *in,
		   struct zd_rec_pages *out, char *msg, size_t len)
{
	size_t ps = e->o.page_size, raw = (size_t)in->set.pages * ps, nb = 0, n, hits = 0;
	bool looked_up = false;

	if (in->enc != ZD_PENC_RAW)
		return fail(msg, len, "PAGES of epoch %llu: already encoded (enc %u)",
			    (unsigned long long)in->epoch, in->enc);
	if (in->data_len != raw || in->set.pages > ZD_PAGES_PER_RECORD)
		return fail(msg, len, "PAGES of epoch %llu: %u data bytes for %llu pages of %zu",
			    (unsigned long long)in->epoch, in->data_len,
			    (unsigned long long)in->set.pages, ps);
	*out = *in;
	e->st.records++;
	e->st.pages += in->set.pages;
	e->st.raw_bytes += raw;
	if (e->o.enc == ZD_PENC_RAW || raw == 0) {
		e->st.wire_bytes += raw;
		return 0;
	}
	size_t nb_max = (in->set.pages + 7) / 8, bound = ZSTD_compressBound(raw + nb_max);
	grow(&e->out, &e->out_cap, bound);
	if (e->o.enc == ZD_PENC_DELTA && e->shadow.slots) {
		looked_up = true;
		if ((hits = delta_lookup(e, in, nb_max)))
			nb = nb_max;
	}
	if (nb) {
		ssize_t fn = delta_frame(e, in, nb, hits, msg, len);
		if (fn < 0)
			return -1;
		n = fn ? (size_t)fn : raw;
	} else {
		/* no page has a shadow: plain zstd, straight from the record */
		ZSTD_CCtx_reset(e->cctx, ZSTD_reset_session_only);
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_literalCompressionMode, ZSTD_ps_auto);
		n = ZSTD_compress2(e->cctx, e->out, bound, in->data, raw);
		if (ZSTD_isError(n))
			return fail(msg, len, "zstd: %s", ZSTD_getErrorName(n));
	}
	if (e->o.enc == ZD_PENC_DELTA) {
		delta_misses(e, in, looked_up);
		e->st.evictions = e->shadow.evictions;
	}
	e->st.delta_pages += hits;
	if (n >= raw) {
		/* incompressible (random, encrypted memory): raw is cheaper to
		 * send and to apply; the shadows are updated all the same */
		e->st.raw_records++;
		e->st.wire_bytes += raw;
		return 0;
	}
	out->enc = nb ? ZD_PENC_DELTA : ZD_PENC_ZSTD;
	out->data = e->out;
	out->data_len = (uint32_t)n;
	e->st.wire_bytes += n;
	return 0;
}

int zd_wire_dec_new(struct zd_wire_dec **dp, uint32_t page_size, char *msg, size_t len)
{
	struct zd_wire_dec *d;

	*dp = NULL;
	if (!page_size_ok(page_size))
		return fail(msg, len, "page size %u is not a power of two in 512..16M", page_size);
	d = zd_xcalloc(1, sizeof(*d));
	d->page_size = page_size;
	d->dctx = ZSTD_createDCtx();
	if (!d->dctx) {
		free(d);
		return fail(msg, len, "zstd: cannot make a decompression context");
	}
	/* Streamed decoding keeps a window: no frame of a record (at most
	 * 16 MiB of content, a bitmap and 4096 pages of 4 KiB) needs more
	 * than 32 MiB; a frame asking for more is refused, not allocated. */
	ZSTD_DCtx_setParameter(d->dctx, ZSTD_d_windowLogMax, 25);
	*dp = d;
	return 0;
}

void zd_wire_dec_free(struct zd_wire_dec *d)
{
	if (!d)
		return;
	ZSTD_freeDCtx(d->dctx);
	free(d->out);
	free(d->base);
	free(d);
}

int zd_wire_decode(struct zd_wire_dec *d, const struct zd_rec_pages *in,
		   zd_wire_base_fn base, void *arg, struct zd_rec_pages *out,
		   char *msg, size_t len)
{
	return zd_wire_decode_to(d, in, base, arg, NULL, NULL, out, msg, len);
}

uint8_t *zd_wire_dec_take(struct zd_wire_dec *d)
{
	uint8_t *b = d->out;

	if (!d->filled)
		return NULL;
	d->out = NULL;
	d->out_cap = 0;
	d->filled = false;
	return b;
}

static int sunk(char *msg, size_t len)
{
	if (msg && len)
		msg[0] = 0;
	return -1;
}

int zd_wire_decode_to(struct zd_wire_dec *d, const struct zd_rec_pages *in,
		      zd_wire_base_fn base, void *arg, zd_wire_sink_fn sink, void *sink_arg,
		      struct zd_rec_pages *out, char *msg, size_t len)
{
	size_t ps = d->page_size, npages = in->set.pages, nb = 0;
	size_t raw = npages * ps;
	const char *what = in->enc == ZD_PENC_DELTA ? "delta payload" : "zstd payload";

	d->filled = false;

	if (npages > ZD_PAGES_PER_RECORD)
		return fail(msg, len, "%llu pages in one record (at most %u)",
			    (unsigned long long)npages, ZD_PAGES_PER_RECORD);
	if (in->enc == ZD_PENC_RAW) {
		if (in->data_len != raw)
			return fail(msg, len, "raw payload: %u bytes for %zu pages of %zu",
				    in->data_len, npages, ps);
		if (sink && raw && sink(sink_arg, in->data, raw))
			return sunk(msg, len);
		*out = *in;
		return 0;
	}
	if (in->enc != ZD_PENC_ZSTD && in->enc != ZD_PENC_DELTA)
		return fail(msg, len, "unknown page encoding %u", in->enc);
	if (in->enc == ZD_PENC_DELTA)
		nb = (npages + 7) / 8;
	const uint8_t *frame = in->data;
	size_t flen = in->data_len, want = nb + raw;
	ZSTD_frameHeader fh;
	size_t hr = ZSTD_getFrameHeader(&fh, frame, flen);
	if (ZSTD_isError(hr) || hr > 0 || fh.frameType != ZSTD_frame)
		return fail(msg, len, "%s: not a zstd frame", what);
	if (fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN)
		return fail(msg, len, "%s: zstd frame without a content size", what);
	if (fh.frameContentSize != want)
		return fail(msg, len, "%s: frame holds %llu bytes, want %zu", what,
			    (unsigned long long)fh.frameContentSize, want);
	if (!fh.checksumFlag)
		return fail(msg, len, "%s: zstd frame without a checksum", what);
	size_t fsz = ZSTD_findFrameCompressedSize(frame, flen);
	if (ZSTD_isError(fsz))
		return fail(msg, len, "%s: %s", what, ZSTD_getErrorName(fsz));
	if (fsz != flen)
		return fail(msg, len, "%s: %zu bytes after the zstd frame", what, flen - fsz);
	grow(&d->out, &d->out_cap, want ? want : 1);
	if (nb && !d->base)
		d->base = zd_xmalloc(ZD_PAGES_PER_RECORD * sizeof(*d->base));
	/* Decompressed a chunk at a time, each chunk's delta pages XORed
	 * with their bases while the chunk is in the cache. An error later
	 * (a missing base, the checksum at the frame's end) leaves a half
	 * done output, but it is the decoder's until we return 0. */
	uint8_t *pages = d->out + nb;
	if (!nb) {
		size_t n = ZSTD_decompressDCtx(d->dctx, d->out, want, frame, flen);
		if (ZSTD_isError(n))
			return fail(msg, len, "%s: %s", what, ZSTD_getErrorName(n));
		if (n != want)
			return fail(msg, len, "%s: frame gave %zu bytes, want %zu", what, n, want);
		if (sink && raw && sink(sink_arg, pages, raw))
			return sunk(msg, len);
		goto whole;
	}
	ZSTD_DCtx_reset(d->dctx, ZSTD_reset_session_only);
	ZSTD_inBuffer ib = { frame, flen, 0 };
	ZSTD_outBuffer ob = { d->out, 0, 0 };
	size_t done = 0, r = 1;	/* bytes of frame content XORed where flagged */
	while (ob.pos < want || r) {
		size_t in0 = ib.pos, out0 = ob.pos;

		ob.size = ZD_MIN(want, ob.pos + CHUNK_BYTES);
		r = ZSTD_decompressStream(d->dctx, &ob, &ib);
		if (ZSTD_isError(r))
			return fail(msg, len, "%s: %s", what, ZSTD_getErrorName(r));
		if (r && ib.pos == in0 && ob.pos == out0)
			return fail(msg, len, "%s: frame gave %zu bytes, want %zu", what, ob.pos, want);
		if (ob.pos < nb)
			continue;
		if (!done) {
			/* the bitmap is out: every base of the record first */
			const uint8_t *bitmap = d->out;
			struct zd_pageset_iter it;
			uint64_t pfn;
			size_t i = 0;

			if (npages % 8 && bitmap[nb - 1] >> (npages % 8))
				return fail(msg, len, "%s: bitmap flags pages beyond the %zu of the record",
					    what, npages);
			zd_pageset_iter_init(&it, &in->set);
			while (zd_pageset_iter_next(&it, &pfn)) {
				d->base[i] = NULL;
				if (bitmap[i / 8] >> (i % 8) & 1) {
					d->base[i] = base ? base(arg, pfn) : NULL;
					if (!d->base[i])
						return fail(msg, len, "%s: page %zu (pfn %llu): no copy to XOR with",
							    what, i, (unsigned long long)pfn);
				}
				i++;
			}
			done = nb;
		}
		/* whole pages out so far */
		size_t from = done;
		for (size_t i = (done - nb) / ps; nb + (i + 1) * ps <= ob.pos; i++) {
			if (d->base[i])
				xor_page(pages + i * ps, pages + i * ps, d->base[i], ps);
			done = nb + (i + 1) * ps;
		}
		if (sink && done > from && sink(sink_arg, d->out + from, done - from))
			return sunk(msg, len);
	}
	if (ib.pos != flen)
		return fail(msg, len, "%s: %zu bytes after the zstd frame", what, flen - ib.pos);
whole:
	d->filled = true;
	*out = *in;
	out->enc = ZD_PENC_RAW;
	out->data = pages;
	out->data_len = (uint32_t)raw;
	return 0;
}
