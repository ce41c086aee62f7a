/* SPDX-License-Identifier: MIT */
/*
 * The binary encoding of zd-stream(5): a 12-byte record header
 * {u16 type, u16 flags, u32 length, u32 crc32c} and a body whose layout per
 * type is the table in man/zd-stream.5. The decoder trusts nothing: it
 * checks the length limit before it allocates, bounds every count by the
 * bytes left in the body, and refuses trailing bytes unless the stream's
 * minor version is newer than ours (room for appended fields).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "stream/codec.h"
#include "zd/util.h"

/* --- encoding --- */

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void put_varint(struct zd_buf *b, uint64_t v)
{
	uint8_t x[10];
	size_t n = 0;
	while (v >= 0x80) {
		x[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	x[n++] = (uint8_t)v;
	zd_buf_put(b, x, n);
}

static void put_str(struct zd_buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	zd_buf_u16(b, (uint16_t)n);
	zd_buf_put(b, s, n);
}

/* Ranges (varint gap from the previous end, varint count-1) or a bitmap
 * from a 64-aligned base, whichever is shorter; ties go to ranges. */
static void put_set(struct zd_buf *b, const struct zd_pageset *s)
{
	size_t rlen = 1 + varint_len(s->n);
	uint64_t prev = 0;
	for (size_t i = 0; i < s->n; i++) {
		rlen += varint_len(s->r[i].first - prev) + varint_len(s->r[i].count - 1);
		prev = s->r[i].first + s->r[i].count;
	}
	if (s->n) {
		uint64_t base = s->r[0].first & ~63ull;
		uint64_t nbits = zd_pageset_end(s) - base;
		uint64_t nwords = nbits / 64 + (nbits % 64 != 0);
		if (rlen > 17 && nwords <= (rlen - 17) / 8 && 17 + nwords * 8 < rlen) {
			zd_buf_u8(b, 1);
			zd_buf_u64(b, base);
			zd_buf_u64(b, nwords);
			zd_buf_reserve(b, nwords * 8);
			uint64_t *w = (uint64_t *)(void *)(b->p + b->len);
			if ((uintptr_t)w % 8 == 0 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) {
				zd_pageset_to_bitmap(s, w, nbits, base);
				b->len += nwords * 8;
			} else {
				uint64_t *tmp = zd_xmalloc(nwords * 8);
				zd_pageset_to_bitmap(s, tmp, nbits, base);
				for (uint64_t i = 0; i < nwords; i++)
					zd_buf_u64(b, tmp[i]);
				free(tmp);
			}
			return;
		}
	}
	zd_buf_u8(b, 0);
	put_varint(b, s->n);
	prev = 0;
	for (size_t i = 0; i < s->n; i++) {
		put_varint(b, s->r[i].first - prev);
		put_varint(b, s->r[i].count - 1);
		prev = s->r[i].first + s->r[i].count;
	}
}

static void put_body(struct zd_buf *b, const struct zd_record *r)
{
	switch (r->type) {
	case ZD_REC_HEADER: {
		const struct zd_rec_header *h = &r->u.header;
		zd_buf_u16(b, ZD_STREAM_MAJOR);
		zd_buf_u16(b, ZD_STREAM_MINOR);
		zd_buf_u32(b, h->page_size);
		zd_buf_u64(b, h->page_count);
		zd_buf_u8(b, h->mode);
		zd_buf_u32(b, h->interval_us);
		zd_buf_u64(b, h->start_ns);
		put_str(b, h->target);
		put_str(b, h->control);
		break;
	}
	case ZD_REC_CHECKPOINT: {
		const struct zd_rec_checkpoint *c = &r->u.ckpt;
		zd_buf_u64(b, c->epoch);
		zd_buf_u64(b, c->t0_ns);
		zd_buf_u64(b, c->t1_ns);
		zd_buf_u64(b, c->resume_ns);
		zd_buf_u64(b, c->pause_ns);
		zd_buf_u32(b, c->flags);
		break;
	}
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		zd_buf_u64(b, r->u.dirty.epoch);
		put_set(b, &r->u.dirty.set);
		break;
	case ZD_REC_PAGES: {
		const struct zd_rec_pages *p = &r->u.pages;
		zd_buf_u64(b, p->epoch);
		zd_buf_u8(b, p->enc);
		zd_buf_u8(b, p->flags);
		put_set(b, &p->set);
		zd_buf_u32(b, p->data_len);
		zd_buf_put(b, p->data, p->data_len);
		break;
	}
	case ZD_REC_STATE:
		zd_buf_u64(b, r->u.state.epoch);
		zd_buf_u32(b, r->u.state.kind);
		zd_buf_u32(b, r->u.state.len);
		zd_buf_put(b, r->u.state.data, r->u.state.len);
		break;
	case ZD_REC_COMMIT:
		zd_buf_u64(b, r->u.commit.epoch);
		zd_buf_u64(b, r->u.commit.pages);
		zd_buf_u32(b, r->u.commit.flags);
		zd_buf_u64(b, r->u.commit.memsum);
		if (r->u.commit.flags & ZD_COMMIT_HAS_DISKSUM)
			zd_buf_u64(b, r->u.commit.disksum);
		break;
	case ZD_REC_DISK: {
		const struct zd_rec_disk *d = &r->u.disk;
		zd_buf_u64(b, d->epoch);
		zd_buf_u64(b, d->disk_size);
		zd_buf_u64(b, d->offset);
		zd_buf_u32(b, d->len);
		zd_buf_u8(b, d->enc);
		zd_buf_u8(b, d->flags);
		zd_buf_u32(b, d->data_len);
		zd_buf_put(b, d->data, d->data_len);
		break;
	}
	case ZD_REC_ACK:
		zd_buf_u64(b, r->u.ack.epoch);
		zd_buf_u64(b, r->u.ack.commit_wall_ns);
		zd_buf_u64(b, r->u.ack.latency_ns);
		zd_buf_u32(b, r->u.ack.status);
		break;
	case ZD_REC_STAT: {
		const struct zd_rec_stat *s = &r->u.stat;
		zd_buf_u64(b, s->epoch);
		put_str(b, s->source);
		zd_buf_u16(b, (uint16_t)s->n);
		for (uint32_t i = 0; i < s->n; i++) {
			uint64_t bits;
			memcpy(&bits, &s->kv[i].value, 8);
			put_str(b, s->kv[i].key);
			zd_buf_u64(b, bits);
		}
		break;
	}
	case ZD_REC_END:
		zd_buf_u64(b, r->u.end.epochs);
		zd_buf_u32(b, r->u.end.status);
		break;
	default:
		zd_buf_put(b, r->u.unknown.data, r->u.unknown.len);
		break;
	}
}

/* Fill in the header of the record encoded from start: its body is what
 * follows the header in b, then tail_len bytes at tail that the caller
 * writes from where they are (a PAGES record's data). 0, or -1 EFBIG
 * (the record taken back out of b). */
static int seal(struct zd_buf *b, size_t start, uint16_t type, uint16_t flags, const void *tail,
		size_t tail_len)
{
	size_t here = b->len - start - ZD_RECHDR_LEN, blen = here + tail_len;

	if (blen > ZD_REC_MAX) {
		b->len = start;
		errno = EFBIG;
		return -1;
	}
	uint8_t *h = b->p + start;
	h[0] = (uint8_t)type;
	h[1] = (uint8_t)(type >> 8);
	h[2] = (uint8_t)flags;
	h[3] = (uint8_t)(flags >> 8);
	zd_put_u32(h + 4, (uint32_t)blen);
	uint32_t crc = zd_crc32c(zd_crc32c(0, h, 8), h + ZD_RECHDR_LEN, here);
	zd_put_u32(h + 8, tail_len ? zd_crc32c(crc, tail, tail_len) : crc);
	return 0;
}

int zd_enc_binary_buf(struct zd_buf *b, const struct zd_record *r, uint32_t page_size)
{
	if (zd_rec_check(r, page_size) < 0)
		return -1;
	uint16_t type = r->type, flags = 0;
	if (type >= ZD_REC_TYPE_MAX) {
		type = r->u.unknown.from_json ? ZD_REC_JSON : r->type;
		flags = r->u.unknown.from_json ? 0 : r->u.unknown.flags;
	}
	size_t start = b->len;
	zd_buf_reserve(b, ZD_RECHDR_LEN);
	b->len += ZD_RECHDR_LEN;
	put_body(b, r);
	return seal(b, start, type, flags, NULL, 0);
}

int zd_enc_binary_pages_head(struct zd_buf *b, const struct zd_record *r, uint32_t page_size)
{
	struct zd_record head = *r;

	if (r->type != ZD_REC_PAGES || zd_rec_check(r, page_size) < 0) {
		errno = EINVAL;
		return -1;
	}
	head.u.pages.data = NULL;
	head.u.pages.data_len = 0;
	size_t start = b->len;
	zd_buf_reserve(b, ZD_RECHDR_LEN);
	b->len += ZD_RECHDR_LEN;
	put_body(b, &head);
	/* put_body wrote data_len 0: the prefix ends with it */
	zd_put_u32(b->p + b->len - 4, r->u.pages.data_len);
	return seal(b, start, ZD_REC_PAGES, 0, r->u.pages.data, r->u.pages.data_len);
}

int zd_encode_binary(const struct zd_record *r, uint32_t page_size, uint8_t **out, size_t *len)
{
	struct zd_buf b = { 0 };
	if (zd_enc_binary_buf(&b, r, page_size) < 0) {
		free(b.p);
		return -1;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* --- decoding --- */

struct cur {
	const uint8_t *p, *start;
	size_t left;
	const char *bad;	/* the field that did not fit, NULL while fine */
	uint8_t *ext;		/* a PAGES record's data, read apart (zd_decode_binary_pages) */
	uint32_t ext_len;
};

static bool need(struct cur *c, size_t n, const char *what)
{
	if (c->bad)
		return false;
	if (c->left < n) {
		c->bad = what;
		return false;
	}
	return true;
}

/* The next n bytes, stepped past; NULL (c->bad set) if the body is shorter. */
static const uint8_t *take(struct cur *c, size_t n, const char *what)
{
	const uint8_t *p = c->p;

	if (!need(c, n, what))
		return NULL;
	c->p += n;
	c->left -= n;
	return p;
}

static uint8_t get_u8(struct cur *c, const char *what)
{
	const uint8_t *p = take(c, 1, what);

	return p ? *p : 0;
}

static uint16_t get_u16(struct cur *c, const char *what)
{
	const uint8_t *p = take(c, 2, what);

	return p ? zd_get_u16(p) : 0;
}

static uint32_t get_u32(struct cur *c, const char *what)
{
	const uint8_t *p = take(c, 4, what);

	return p ? zd_get_u32(p) : 0;
}

static uint64_t get_u64(struct cur *c, const char *what)
{
	const uint8_t *p = take(c, 8, what);

	return p ? zd_get_u64(p) : 0;
}

/* LEB128, at most 10 bytes, minimal (no redundant trailing zero groups),
 * so every set has exactly one encoding. */
static bool get_varint(struct cur *c, uint64_t *v, const char *what)
{
	uint64_t x = 0;
	for (unsigned i = 0; i < 10; i++) {
		const uint8_t *p = take(c, 1, what);
		if (!p)
			return false;
		uint8_t byte = *p;
		if (i == 9 && byte > 1)
			return false;
		x |= (uint64_t)(byte & 0x7f) << (7 * i);
		if (!(byte & 0x80)) {
			if (byte == 0 && i > 0)
				return false;
			*v = x;
			return true;
		}
	}
	return false;
}

#define FAIL(err, ...) zd_fail(msg, msglen, err, __VA_ARGS__)
#define SHORT(c) FAIL(ZD_RERR_MALFORMED, "body too short for %s (body byte %zu)", \
		      (c)->bad, (size_t)((c)->p - (c)->start))

/* A string field: u16 length and bytes, no NUL inside; max bytes allowed. */
static int get_str(struct cur *c, char *dst, size_t dstlen, char **alloc,
		   const char *what, char *msg, size_t msglen)
{
	uint16_t n = get_u16(c, what);
	const uint8_t *p = take(c, n, what);
	if (!p)
		return SHORT(c);
	if (memchr(p, 0, n))
		return FAIL(ZD_RERR_MALFORMED, "%s contains a NUL byte", what);
	if (!zd_utf8_ok(p, n))
		return FAIL(ZD_RERR_MALFORMED, "%s is not UTF-8", what);
	if (alloc) {
		*alloc = zd_xmalloc((size_t)n + 1);
		dst = *alloc;
	} else if (n >= dstlen) {
		return FAIL(ZD_RERR_MALFORMED, "%s is %u bytes, at most %zu allowed", what, n,
			    dstlen - 1);
	}
	memcpy(dst, p, n);
	dst[n] = 0;
	return 0;
}

static int check_set_range(const struct zd_pageset *s, const struct zd_rec_header *hdr,
			   char *msg, size_t msglen)
{
	if (hdr && zd_pageset_end(s) > hdr->page_count)
		return FAIL(ZD_RERR_RANGE, "pfn %" PRIu64 " beyond page_count %" PRIu64,
			    zd_pageset_end(s) - 1, hdr->page_count);
	return 0;
}

/* Runs of ones in a bitmap = ranges it decodes to; counted before any
 * allocation so a hostile bitmap cannot claim 128 bytes per byte. */
static uint64_t count_runs(const uint8_t *p, uint64_t nwords)
{
	uint64_t runs = 0, carry = 0;
	for (uint64_t i = 0; i < nwords; i++) {
		uint64_t w = zd_get_u64(p + 8 * i);
		runs += (uint64_t)__builtin_popcountll(w & ~(w << 1 | carry));
		carry = w >> 63;
	}
	return runs;
}

static int get_set(struct cur *c, struct zd_pageset *s, const struct zd_rec_header *hdr,
		   char *msg, size_t msglen)
{
	uint8_t kind = get_u8(c, "page set kind");
	if (c->bad)
		return SHORT(c);
	if (kind == 0) {
		uint64_t n;
		if (!get_varint(c, &n, "range count"))
			return c->bad ? SHORT(c) : FAIL(ZD_RERR_MALFORMED, "bad varint in range count");
		/* every range takes at least two bytes */
		if (n > c->left / 2)
			return FAIL(ZD_RERR_MALFORMED, "range count %" PRIu64 " exceeds the body",
				    n);
		if (n > ZD_SET_MAX_RANGES)
			return FAIL(ZD_RERR_RANGE, "%" PRIu64 " ranges, at most %u allowed", n,
				    ZD_SET_MAX_RANGES);
		zd_pageset_clear(s);
		if (n > s->cap) {
			s->r = zd_xrealloc(s->r, n * sizeof(*s->r));
			s->cap = n;
		}
		uint64_t prev = 0;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t gap, cnt;
			if (!get_varint(c, &gap, "range gap") || !get_varint(c, &cnt, "range count"))
				return c->bad ? SHORT(c) : FAIL(ZD_RERR_MALFORMED, "bad varint in range %" PRIu64, i);
			if (i > 0 && gap == 0)
				return FAIL(ZD_RERR_MALFORMED, "range %" PRIu64 " touches the previous one", i);
			if (gap > UINT64_MAX - prev || cnt >= UINT64_MAX - (prev + gap))
				return FAIL(ZD_RERR_RANGE, "range %" PRIu64 " goes past pfn 2^64", i);
			s->r[i].first = prev + gap;
			s->r[i].count = cnt + 1;
			prev = s->r[i].first + s->r[i].count;
			s->pages += cnt + 1;
			s->n = i + 1;
		}
	} else if (kind == 1) {
		uint64_t base = get_u64(c, "bitmap base");
		uint64_t nwords = get_u64(c, "bitmap word count");
		if (c->bad)
			return SHORT(c);
		if (base % 64)
			return FAIL(ZD_RERR_MALFORMED, "bitmap base %" PRIu64 " not a multiple of 64", base);
		if (nwords == 0 || nwords > c->left / 8)
			return FAIL(ZD_RERR_MALFORMED, "bitmap of %" PRIu64 " words does not fit the body", nwords);
		if (nwords > (UINT64_MAX - base) / 64)
			return FAIL(ZD_RERR_RANGE, "bitmap goes past pfn 2^64");
		if (zd_get_u64(c->p) == 0 || zd_get_u64(c->p + 8 * (nwords - 1)) == 0)
			return FAIL(ZD_RERR_MALFORMED, "bitmap has an empty first or last word");
		uint64_t runs = count_runs(c->p, nwords);
		if (runs > ZD_SET_MAX_RANGES)
			return FAIL(ZD_RERR_RANGE, "%" PRIu64 " ranges, at most %u allowed", runs,
				    ZD_SET_MAX_RANGES);
		if (runs > s->cap) {
			s->r = zd_xrealloc(s->r, runs * sizeof(*s->r));
			s->cap = runs;
		}
		if ((uintptr_t)c->p % 8 == 0 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) {
			zd_pageset_from_bitmap(s, (const uint64_t *)(const void *)c->p, nwords * 64, base);
		} else {
			uint64_t *tmp = zd_xmalloc(nwords * 8);
			for (uint64_t i = 0; i < nwords; i++)
				tmp[i] = zd_get_u64(c->p + 8 * i);
			zd_pageset_from_bitmap(s, tmp, nwords * 64, base);
			free(tmp);
		}
		c->p += nwords * 8;
		c->left -= nwords * 8;
	} else {
		return FAIL(ZD_RERR_MALFORMED, "unknown page set kind %u", kind);
	}
	return check_set_range(s, hdr, msg, msglen);
}

static int get_blob(struct cur *c, uint32_t n, uint8_t **data, const char *what,
		    char *msg, size_t msglen)
{
	if (n > c->left)
		return FAIL(ZD_RERR_MALFORMED, "%s of %u bytes overruns the body (%zu left)", what,
			    n, c->left);
	*data = n ? zd_xmalloc(n) : NULL;
	if (n)
		memcpy(*data, c->p, n);
	c->p += n;
	c->left -= n;
	return 0;
}

static int get_body(struct cur *c, struct zd_record *r, const struct zd_rec_header *hdr,
		    uint16_t *minor, char *msg, size_t msglen)
{
	int rc;
	switch (r->type) {
	case ZD_REC_HEADER: {
		struct zd_rec_header *h = &r->u.header;
		h->major = get_u16(c, "major");
		h->minor = get_u16(c, "minor");
		h->page_size = get_u32(c, "page_size");
		h->page_count = get_u64(c, "page_count");
		h->mode = get_u8(c, "mode");
		h->interval_us = get_u32(c, "interval_us");
		h->start_ns = get_u64(c, "start_ns");
		if (c->bad)
			return SHORT(c);
		*minor = h->minor;
		if (h->major != ZD_STREAM_MAJOR)
			return FAIL(ZD_RERR_VERSION, "unsupported major version %u (this reader knows %u)",
				    h->major, ZD_STREAM_MAJOR);
		if ((rc = get_str(c, NULL, 0, &h->target, "target", msg, msglen)) < 0 ||
		    (rc = get_str(c, NULL, 0, &h->control, "control", msg, msglen)) < 0)
			return rc;
		if (h->page_size < 512 || h->page_size > (1u << 20) ||
		    (h->page_size & (h->page_size - 1)))
			return FAIL(ZD_RERR_RANGE, "page_size %u is not a power of two in 512..1048576",
				    h->page_size);
		if (h->page_count == 0)
			return FAIL(ZD_RERR_RANGE, "page_count is 0");
		if (h->page_count > ZD_GUEST_MAX / h->page_size)
			return FAIL(ZD_RERR_RANGE, "%" PRIu64 " pages of %u bytes: over 1 PiB",
				    h->page_count, h->page_size);
		if (h->mode >= ZD_MODE_MAX)
			return FAIL(ZD_RERR_RANGE, "unknown mode %u", h->mode);
		return 0;
	}
	case ZD_REC_CHECKPOINT: {
		struct zd_rec_checkpoint *k = &r->u.ckpt;
		k->epoch = get_u64(c, "epoch");
		k->t0_ns = get_u64(c, "t0_ns");
		k->t1_ns = get_u64(c, "t1_ns");
		k->resume_ns = get_u64(c, "resume_ns");
		k->pause_ns = get_u64(c, "pause_ns");
		k->flags = get_u32(c, "flags");
		return c->bad ? SHORT(c) : 0;
	}
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		r->u.dirty.epoch = get_u64(c, "epoch");
		if (c->bad)
			return SHORT(c);
		return get_set(c, &r->u.dirty.set, hdr, msg, msglen);
	case ZD_REC_PAGES: {
		struct zd_rec_pages *p = &r->u.pages;
		p->epoch = get_u64(c, "epoch");
		p->enc = get_u8(c, "enc");
		p->flags = get_u8(c, "flags");
		if (c->bad)
			return SHORT(c);
		if (p->enc > ZD_PENC_DELTA)
			return FAIL(ZD_RERR_MALFORMED, "unknown page encoding %u", p->enc);
		if ((rc = get_set(c, &p->set, hdr, msg, msglen)) < 0)
			return rc;
		/* bounds what a consumer allocates to expand the data */
		if (p->set.pages > ZD_PAGES_PER_RECORD)
			return FAIL(ZD_RERR_RANGE, "%" PRIu64 " pages, at most %u per record",
				    p->set.pages, ZD_PAGES_PER_RECORD);
		p->data_len = get_u32(c, "data_len");
		if (c->bad)
			return SHORT(c);
		if (p->enc == ZD_PENC_RAW && hdr &&
		    (uint64_t)p->data_len != p->set.pages * hdr->page_size)
			return FAIL(ZD_RERR_MALFORMED,
				    "raw data is %u bytes, %" PRIu64 " pages of %u need %" PRIu64,
				    p->data_len, p->set.pages, hdr->page_size,
				    p->set.pages * hdr->page_size);
		if (c->ext) {	/* the data ends the body, in its own buffer */
			if (c->left || p->data_len != c->ext_len)
				return FAIL(ZD_RERR_MALFORMED, "data of %u bytes, the body has %u after its prefix",
					    p->data_len, c->ext_len);
			p->data = c->ext;
			c->ext = NULL;
			return 0;
		}
		return get_blob(c, p->data_len, &p->data, "data", msg, msglen);
	}
	case ZD_REC_STATE:
		r->u.state.epoch = get_u64(c, "epoch");
		r->u.state.kind = get_u32(c, "kind");
		r->u.state.len = get_u32(c, "len");
		if (c->bad)
			return SHORT(c);
		return get_blob(c, r->u.state.len, &r->u.state.data, "state", msg, msglen);
	case ZD_REC_COMMIT:
		r->u.commit.epoch = get_u64(c, "epoch");
		r->u.commit.pages = get_u64(c, "pages");
		r->u.commit.flags = get_u32(c, "flags");
		r->u.commit.memsum = get_u64(c, "memsum");
		if (r->u.commit.flags & ZD_COMMIT_HAS_DISKSUM)
			r->u.commit.disksum = get_u64(c, "disksum");
		return c->bad ? SHORT(c) : 0;
	case ZD_REC_DISK: {
		struct zd_rec_disk *d = &r->u.disk;
		d->epoch = get_u64(c, "epoch");
		d->disk_size = get_u64(c, "disk_size");
		d->offset = get_u64(c, "offset");
		d->len = get_u32(c, "len");
		d->enc = get_u8(c, "enc");
		d->flags = get_u8(c, "flags");
		d->data_len = get_u32(c, "data_len");
		if (c->bad)
			return SHORT(c);
		if ((rc = zd_disk_check(d, msg, msglen)) < 0)
			return rc;
		return get_blob(c, d->data_len, &d->data, "data", msg, msglen);
	}
	case ZD_REC_ACK:
		r->u.ack.epoch = get_u64(c, "epoch");
		r->u.ack.commit_wall_ns = get_u64(c, "commit_wall_ns");
		r->u.ack.latency_ns = get_u64(c, "latency_ns");
		r->u.ack.status = get_u32(c, "status");
		return c->bad ? SHORT(c) : 0;
	case ZD_REC_STAT: {
		struct zd_rec_stat *s = &r->u.stat;
		s->epoch = get_u64(c, "epoch");
		if (c->bad)
			return SHORT(c);
		if ((rc = get_str(c, s->source, sizeof(s->source), NULL, "source", msg, msglen)) < 0)
			return rc;
		uint16_t n = get_u16(c, "value count");
		if (c->bad)
			return SHORT(c);
		if (n > ZD_STAT_MAX_KV)
			return FAIL(ZD_RERR_MALFORMED, "%u values, at most %u allowed", n, ZD_STAT_MAX_KV);
		for (uint32_t i = 0; i < n; i++) {
			if ((rc = get_str(c, s->kv[i].key, sizeof(s->kv[i].key), NULL, "key", msg,
					  msglen)) < 0)
				return rc;
			uint64_t bits = get_u64(c, "value");
			if (c->bad)
				return SHORT(c);
			memcpy(&s->kv[i].value, &bits, 8);
			for (uint32_t j = 0; j < i; j++)
				if (strcmp(s->kv[j].key, s->kv[i].key) == 0)
					return FAIL(ZD_RERR_MALFORMED, "key \"%s\" appears twice",
						    s->kv[i].key);
			s->n = i + 1;
		}
		return 0;
	}
	case ZD_REC_END:
		r->u.end.epochs = get_u64(c, "epochs");
		r->u.end.status = get_u32(c, "status");
		return c->bad ? SHORT(c) : 0;
	default:
		return 0;	/* unknown: kept whole by the caller */
	}
}

/* After the CRC: type, then body (the prefix before ext when ext is set). */
static int decode_checked(const uint8_t *buf, const uint8_t *body, size_t blen, uint8_t *ext,
			  uint32_t ext_len, const struct zd_rec_header *hdr, struct zd_record *r,
			  char *msg, size_t msglen)
{
	uint16_t type = zd_get_u16(buf), flags = zd_get_u16(buf + 2);

	if (type == 0)
		return FAIL(ZD_RERR_MALFORMED, "record type 0 is reserved");
	r->type = type;
	if (type >= ZD_REC_TYPE_MAX) {
		/* Unknown: kept byte for byte. A JSON passthrough body must at
		 * least be one object, or it could not be written back as a line. */
		struct zd_rec_unknown *u = &r->u.unknown;
		u->type = type;
		u->flags = flags;
		u->len = (uint32_t)blen;
		u->from_json = type == ZD_REC_JSON;
		if (u->from_json && !zd_json_object_ok((const char *)body, blen)) {
			return FAIL(ZD_RERR_MALFORMED, "JSON passthrough body is not one object");
		}
		u->data = zd_xmalloc(blen ? blen : 1);
		memcpy(u->data, body, blen);
		return 0;
	}

	struct cur c = { body, body, blen, NULL, ext, ext_len };
	uint16_t minor = hdr ? hdr->minor : ZD_STREAM_MINOR;
	int rc = get_body(&c, r, hdr, &minor, msg, msglen);
	if (rc == 0 && c.ext)
		rc = FAIL(ZD_RERR_MALFORMED, "a %s record has no page data", zd_rec_type_name(type));
	if (rc == 0 && c.left && minor <= ZD_STREAM_MINOR)
		rc = FAIL(ZD_RERR_MALFORMED, "%zu trailing bytes in the body", c.left);
	free(c.ext);	/* not taken: the record failed */
	if (rc < 0) {
		zd_record_free(r);
		return rc;
	}
	return 0;
}

int zd_decode_binary(const uint8_t *buf, size_t len, const struct zd_rec_header *hdr,
		     struct zd_record *r, char *msg, size_t msglen)
{
	zd_record_init(r, 0);
	if (len < ZD_RECHDR_LEN)
		return FAIL(ZD_RERR_TRUNCATED, "record header truncated (%zu of %u bytes)", len,
			    ZD_RECHDR_LEN);
	uint32_t blen = zd_get_u32(buf + 4), crc = zd_get_u32(buf + 8);
	if (blen > ZD_REC_MAX)
		return FAIL(ZD_RERR_TOO_BIG, "length %u over the limit of %u", blen, ZD_REC_MAX);
	if (len - ZD_RECHDR_LEN < blen)
		return FAIL(ZD_RERR_TRUNCATED, "body truncated (%zu of %u bytes)",
			    len - ZD_RECHDR_LEN, blen);
	if (len - ZD_RECHDR_LEN > blen)
		return FAIL(ZD_RERR_MALFORMED, "%zu bytes after the record",
			    len - ZD_RECHDR_LEN - blen);
	uint32_t want = zd_crc32c(zd_crc32c(0, buf, 8), buf + ZD_RECHDR_LEN, blen);
	if (crc != want)
		return FAIL(ZD_RERR_CRC, "crc mismatch (stored 0x%08x, computed 0x%08x)", crc, want);
	return decode_checked(buf, buf + ZD_RECHDR_LEN, blen, NULL, 0, hdr, r, msg, msglen);
}

int zd_pages_prefix_len(const uint8_t *body, size_t avail, size_t *prefix_len, uint32_t *data_len)
{
	struct cur c = { body, body, avail, NULL, NULL, 0 };
	struct zd_pageset set = ZD_PAGESET_INIT;
	char msg[8];	/* the whole-record path says what is wrong */
	int rc;

	get_u64(&c, "epoch");
	get_u8(&c, "enc");
	get_u8(&c, "flags");
	rc = c.bad ? -1 : get_set(&c, &set, NULL, msg, sizeof(msg));
	zd_pageset_free(&set);
	*data_len = get_u32(&c, "data_len");
	if (rc < 0 || c.bad)
		return -1;
	*prefix_len = (size_t)(c.p - body);
	return 0;
}

int zd_decode_binary_pages(const uint8_t *buf, size_t prefix_len, uint8_t *data, uint32_t data_len,
			   uint32_t want, const struct zd_rec_header *hdr, struct zd_record *r,
			   char *msg, size_t msglen)
{
	uint32_t crc = zd_get_u32(buf + 8);

	zd_record_init(r, 0);
	if (crc != want) {
		free(data);
		return FAIL(ZD_RERR_CRC, "crc mismatch (stored 0x%08x, computed 0x%08x)", crc, want);
	}
	return decode_checked(buf, buf + ZD_RECHDR_LEN, prefix_len, data, data_len, hdr, r, msg, msglen);
}

int zd_decode_binary_pages_head(const uint8_t *buf, size_t prefix_len, uint32_t data_len,
				const struct zd_rec_header *hdr, struct zd_record *r, char *msg,
				size_t msglen)
{
	static uint8_t unread;	/* stands for the data, still in the input */
	const uint8_t *body = buf + ZD_RECHDR_LEN;
	struct cur c = { body, body, prefix_len, NULL, &unread, data_len };
	uint16_t minor = hdr ? hdr->minor : ZD_STREAM_MINOR;
	int rc;

	zd_record_init(r, 0);
	if (zd_get_u16(buf) != ZD_REC_PAGES)
		return FAIL(ZD_RERR_MALFORMED, "not a PAGES record");
	r->type = ZD_REC_PAGES;
	rc = get_body(&c, r, hdr, &minor, msg, msglen);
	r->u.pages.data = NULL;
	if (rc < 0) {
		zd_record_free(r);
		return rc;
	}
	return 0;
}
