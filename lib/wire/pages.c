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
 */
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
	uint8_t *scratch;	/* the pages as they go into the frame */
	size_t scratch_cap;
	uint8_t *out;		/* bitmap + frame */
	size_t out_cap;
	struct zd_wire_stats st;
};

struct zd_wire_dec {
	uint32_t page_size;
	ZSTD_DCtx *dctx;
	uint8_t *out;
	size_t out_cap;
};

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
	*ep = e;
	return 0;
}

void zd_wire_enc_free(struct zd_wire_enc *e)
{
	if (!e)
		return;
	ZSTD_freeCCtx(e->cctx);
	zd__shadow_free(&e->shadow);
	free(e->scratch);
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

static void xor_page(uint8_t *dst, const uint8_t *a, const uint8_t *b, size_t n)
{
	/* memcpy keeps it alias- and alignment-safe; compilers vectorise it */
	for (size_t i = 0; i < n; i += 8) {
		uint64_t x, y;
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		x ^= y;
		memcpy(dst + i, &x, 8);
	}
}

/* Build the frame content in scratch: bitmap, then pages; update shadows.
 * Two passes: hits first, then the misses take slots, so a record's misses
 * evict older shadows rather than the record's own hits. Returns the
 * bitmap length, or 0 when no page found a shadow (the record then goes
 * as plain zstd: the bitmap would say nothing). */
static size_t delta_prepare(struct zd_wire_enc *e, const struct zd_rec_pages *in)
{
	size_t ps = e->o.page_size, nb = (in->set.pages + 7) / 8, i = 0, hits = 0;
	uint8_t *bitmap = e->scratch;
	struct zd_pageset_iter it;
	uint64_t pfn;

	memset(bitmap, 0, nb);
	zd_pageset_iter_init(&it, &in->set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		const uint8_t *page = in->data + i * ps;
		uint8_t *dst = e->scratch + nb + i * ps;
		uint8_t *sh = zd__shadow_get(&e->shadow, pfn);

		if (sh) {
			xor_page(dst, page, sh, ps);
			memcpy(sh, page, ps);
			bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
			hits++;
		} else {
			memcpy(dst, page, ps);
		}
		i++;
	}
	i = 0;
	zd_pageset_iter_init(&it, &in->set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		if (!(bitmap[i / 8] >> (i % 8) & 1)) {
			uint8_t *sh = zd__shadow_put(&e->shadow, pfn);
			if (sh)
				memcpy(sh, in->data + i * ps, ps);
			e->st.miss_pages++;
		}
		i++;
	}
	e->st.delta_pages += hits;
	e->st.evictions = e->shadow.evictions;
	return hits ? nb : 0;
}

int zd_wire_encode(struct zd_wire_enc *e, const struct zd_rec_pages *in,
		   struct zd_rec_pages *out, char *msg, size_t len)
{
	size_t ps = e->o.page_size, raw = (size_t)in->set.pages * ps, nb = 0;
	const uint8_t *src = in->data;

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
	if (e->o.enc == ZD_PENC_DELTA) {
		grow(&e->scratch, &e->scratch_cap, nb_max + raw);
		nb = delta_prepare(e, in);
		if (nb)
			src = e->scratch;
	}
	size_t n = ZSTD_compress2(e->cctx, e->out, bound, src, nb + raw);
	if (ZSTD_isError(n))
		return fail(msg, len, "zstd: %s", ZSTD_getErrorName(n));
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
	*dp = d;
	return 0;
}

void zd_wire_dec_free(struct zd_wire_dec *d)
{
	if (!d)
		return;
	ZSTD_freeDCtx(d->dctx);
	free(d->out);
	free(d);
}

int zd_wire_decode(struct zd_wire_dec *d, const struct zd_rec_pages *in,
		   zd_wire_base_fn base, void *arg, struct zd_rec_pages *out,
		   char *msg, size_t len)
{
	size_t ps = d->page_size, npages = in->set.pages, nb = 0;
	size_t raw = npages * ps;
	const char *what = in->enc == ZD_PENC_DELTA ? "delta payload" : "zstd payload";

	if (npages > ZD_PAGES_PER_RECORD)
		return fail(msg, len, "%llu pages in one record (at most %u)",
			    (unsigned long long)npages, ZD_PAGES_PER_RECORD);
	if (in->enc == ZD_PENC_RAW) {
		if (in->data_len != raw)
			return fail(msg, len, "raw payload: %u bytes for %zu pages of %zu",
				    in->data_len, npages, ps);
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
	size_t n = ZSTD_decompressDCtx(d->dctx, d->out, want, frame, flen);
	if (ZSTD_isError(n))
		return fail(msg, len, "%s: %s", what, ZSTD_getErrorName(n));
	if (n != want)
		return fail(msg, len, "%s: frame gave %zu bytes, want %zu", what, n, want);
	uint8_t *pages = d->out + nb;
	if (nb) {
		const uint8_t *bitmap = d->out;
		struct zd_pageset_iter it;
		uint64_t pfn;
		size_t i = 0;

		if (npages % 8 && bitmap[nb - 1] >> (npages % 8))
			return fail(msg, len, "%s: bitmap flags pages beyond the %zu of the record",
				    what, npages);
		/* every base first, then XOR: an error leaves nothing half done
		 * (the output is the decoder's anyway until we return 0) */
		zd_pageset_iter_init(&it, &in->set);
		while (zd_pageset_iter_next(&it, &pfn)) {
			if (bitmap[i / 8] >> (i % 8) & 1) {
				const uint8_t *b = base ? base(arg, pfn) : NULL;
				if (!b)
					return fail(msg, len, "%s: page %zu (pfn %llu): no copy to XOR with",
						    what, i, (unsigned long long)pfn);
				xor_page(pages + i * ps, pages + i * ps, b, ps);
			}
			i++;
		}
	}
	*out = *in;
	out->enc = ZD_PENC_RAW;
	out->data = pages;
	out->data_len = (uint32_t)raw;
	return 0;
}
