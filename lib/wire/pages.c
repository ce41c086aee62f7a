/* SPDX-License-Identifier: MIT */
/*
 * Compressed PAGES payloads (zd-stream(5) "COMPRESSED PAGES"):
 *   zstd:  one zstd frame whose content is the pages * page_size raw bytes;
 *   delta: one zstd frame whose content is a bitmap of ceil(pages/8) bytes
 *          (bit i LSB first: page i is a delta against the receiver's copy
 *          of its pfn), then each page: a delta as its changed words
 *          (words.c: a mask of page_size/64 bytes and the XOR of each
 *          changed 8-byte word), any other as it is.
 * The frame must declare its content size and carry zstd's content
 * checksum (XXH64), so a damaged payload — bitmap included — is refused
 * rather than applied; it must end the payload. Decoding goes to the
 * decoder's own buffer and is handed out only when whole and checked.
 *
 * Where the time goes (bench/README.md, the wire): a delta record's
 * content is built in one pass over the pages and their shadows (XOR,
 * changed words out, shadow lines updated), a few words a page for a
 * guest, so zstd sees a sixteenth of the bytes or less; the decoder
 * copies each base page and patches its words, handing the pages to its
 * sink (zd-recv's journal) a chunk at a time while they are in the cache.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader: exported by the shared library too */
#include <zstd.h>

#include "zd/util.h"
#include "zd/wire.h"
#include "wire_int.h"

struct zd_wire_enc {
	struct zd_wire_opts o;
	ZSTD_CCtx *cctx;
	struct zd_shadow shadow;
	uint8_t *content;	/* a delta frame's content, before zstd */
	size_t content_cap;
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
	uint8_t *content;	/* a delta frame's content */
	size_t content_cap;
	const uint8_t **base;	/* per page of the record: its base, NULL = plain */
	bool filled;		/* out holds the last record's pages */
};

/* Decoded pages handed to the sink at a time: small enough to be in the
 * cache still when the sink (zd-recv's journal write and hash) reads them. */
#define CHUNK_BYTES (128u << 10)

/* -1 with msg, and errno EINVAL: what the caller asked for is wrong. */
static int fail(char *msg, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	errno = EINVAL;
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
			snprintf(msg, len, "zstd: cannot make a compression context");
			errno = ENOMEM;
			return -1;
		}
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_compressionLevel, o->level);
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_contentSizeFlag, 1);
		ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_checksumFlag, 1);
	}
	if (zd__shadow_init(&e->shadow, o->page_size, o->enc == ZD_PENC_DELTA ? o->cache_bytes : 0) < 0) {
		int err = errno;

		snprintf(msg, len, "delta cache: cannot map %zu bytes: %s", e->shadow.bytes, strerror(err));
		ZSTD_freeCCtx(e->cctx);
		free(e);
		errno = err;
		return -1;
	}
	if (e->shadow.slots) {
		e->sh = zd_xcalloc(ZD_PAGES_PER_RECORD, sizeof(*e->sh));
		e->bitmap = zd_xmalloc(ZD_PAGES_PER_RECORD / 8);
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
	free(e->content);
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

/* The largest delta content: the bitmap, and every page a delta whose
 * every word changed (its mask and all its words). */
static size_t delta_content_max(size_t np, size_t ps)
{
	return (np + 7) / 8 + np * (ps / 64 + ps);
}

/* The delta frame: its content built whole (the hits as their changed
 * words, their shadows updated on the way; the misses as they are), then
 * compressed. Returns the frame's size, 0 if it would not be smaller than
 * raw, or -1. */
static ssize_t delta_frame(struct zd_wire_enc *e, const struct zd_rec_pages *in, size_t nb,
			   size_t hits, char *msg, size_t len)
{
	size_t ps = e->o.page_size, np = in->set.pages, raw = np * ps;
	uint8_t *c = e->content;

	memcpy(c, e->bitmap, nb);
	c += nb;
	for (size_t i = 0; i < np; i++) {
		const uint8_t *page = in->data + i * ps;

		if (e->sh[i]) {
			c += zd__words_pack(c, e->sh[i], page, ps);
		} else {
			memcpy(c, page, ps);
			c += ps;
		}
	}
	ZSTD_CCtx_reset(e->cctx, ZSTD_reset_session_only);
	/* The literals of a delta are mostly the words that changed: noise
	 * that Huffman coding does not shrink. A record of mostly plain
	 * pages keeps zstd's choice. */
	ZSTD_CCtx_setParameter(e->cctx, ZSTD_c_literalCompressionMode,
			       hits * 2 >= np ? ZSTD_ps_disable : ZSTD_ps_auto);
	size_t n = ZSTD_compress2(e->cctx, e->out, e->out_cap, e->content, (size_t)(c - e->content));
	if (ZSTD_isError(n))
		return fail(msg, len, "zstd: %s", ZSTD_getErrorName(n));
	return n >= raw ? 0 : (ssize_t)n;
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
	size_t nb_max = (in->set.pages + 7) / 8, bound = ZSTD_compressBound(raw);
	if (e->o.enc == ZD_PENC_DELTA && e->shadow.slots) {
		looked_up = true;
		if ((hits = delta_lookup(e, in, nb_max))) {
			size_t cmax = delta_content_max(in->set.pages, ps);

			nb = nb_max;
			grow(&e->content, &e->content_cap, cmax);
			bound = ZSTD_compressBound(cmax);
		}
	}
	grow(&e->out, &e->out_cap, bound);
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
	free(d->content);
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
	/* A sender compresses records it could send raw, so no frame decodes
	 * to more than a raw record's limit: with large pages, 4096 of them
	 * would otherwise be gigabytes from a frame of a few hundred bytes. */
	if (raw > ZD_REC_MAX)
		return fail(msg, len, "%s: %zu pages of %zu bytes, more than a record holds raw (%u bytes)",
			    what, npages, ps, ZD_REC_MAX);
	if (in->enc == ZD_PENC_DELTA)
		nb = (npages + 7) / 8;
	const uint8_t *frame = in->data;
	size_t flen = in->data_len, want = nb ? delta_content_max(npages, ps) : raw;
	ZSTD_frameHeader fh;
	size_t hr = ZSTD_getFrameHeader(&fh, frame, flen);
	if (ZSTD_isError(hr) || hr > 0 || fh.frameType != ZSTD_frame)
		return fail(msg, len, "%s: not a zstd frame", what);
	if (fh.frameContentSize == ZSTD_CONTENTSIZE_UNKNOWN)
		return fail(msg, len, "%s: zstd frame without a content size", what);
	if (nb ? fh.frameContentSize < nb || fh.frameContentSize > want : fh.frameContentSize != want)
		return fail(msg, len, "%s: frame holds %llu bytes, %s %zu", what,
			    (unsigned long long)fh.frameContentSize, nb ? "at most" : "want", want);
	if (!fh.checksumFlag)
		return fail(msg, len, "%s: zstd frame without a checksum", what);
	size_t fsz = ZSTD_findFrameCompressedSize(frame, flen);
	if (ZSTD_isError(fsz))
		return fail(msg, len, "%s: %s", what, ZSTD_getErrorName(fsz));
	if (fsz != flen)
		return fail(msg, len, "%s: %zu bytes after the zstd frame", what, flen - fsz);
	grow(&d->out, &d->out_cap, raw ? raw : 1);
	uint8_t *pages = d->out;
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
	/* The content whole (checked against its checksum), then every base
	 * of the record, then the pages: a delta one copied from its base and
	 * its words patched in, a plain one copied; handed to the sink a
	 * chunk at a time. An error part way leaves a half done output, but
	 * it is the decoder's until we return 0. */
	size_t clen = (size_t)fh.frameContentSize;
	grow(&d->content, &d->content_cap, clen);
	size_t n = ZSTD_decompressDCtx(d->dctx, d->content, clen, frame, flen);
	if (ZSTD_isError(n))
		return fail(msg, len, "%s: %s", what, ZSTD_getErrorName(n));
	if (n != clen)
		return fail(msg, len, "%s: frame gave %zu bytes, want %zu", what, n, clen);
	const uint8_t *bitmap = d->content, *c = d->content + nb;
	size_t left = clen - nb, per = ZD_MAX((size_t)1, CHUNK_BYTES / ps), from = 0;
	struct zd_pageset_iter it;
	uint64_t pfn;
	size_t i = 0;

	if (npages % 8 && bitmap[nb - 1] >> (npages % 8))
		return fail(msg, len, "%s: bitmap flags pages beyond the %zu of the record", what, npages);
	if (!d->base)
		d->base = zd_xmalloc(ZD_PAGES_PER_RECORD * sizeof(*d->base));
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
	for (i = 0; i < npages; i++) {
		size_t used = ps;

		if (d->base[i])
			used = zd__words_unpack(pages + i * ps, d->base[i], c, left, ps);
		else if (left >= ps)
			memcpy(pages + i * ps, c, ps);
		else
			used = 0;
		if (!used)
			return fail(msg, len, "%s: frame holds %zu bytes, page %zu goes past them", what, clen, i);
		c += used;
		left -= used;
		if ((i + 1) % per == 0 || i + 1 == npages) {
			if (sink && sink(sink_arg, pages + from * ps, (i + 1 - from) * ps))
				return sunk(msg, len);
			from = i + 1;
		}
	}
	if (left)
		return fail(msg, len, "%s: frame holds %zu bytes, %zu more than its %zu pages", what, clen,
			    left, npages);
whole:
	d->filled = true;
	*out = *in;
	out->enc = ZD_PENC_RAW;
	out->data = pages;
	out->data_len = (uint32_t)raw;
	return 0;
}
