/* SPDX-License-Identifier: MIT */
/*
 * The JSON-lines encoding of zd-stream(5). Encoding is done by hand (fixed
 * key order, no tree to build for a 16 MiB base64 string); decoding uses
 * jansson. Integers above 2^63-1 do not fit jansson's json_int_t, so they
 * are written as decimal strings, and every integer field accepts either.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stream/codec.h"
#include "zd/util.h"

static const char *const json_names[ZD_REC_TYPE_MAX] = {
	[ZD_REC_HEADER] = "header",
	[ZD_REC_CHECKPOINT] = "checkpoint",
	[ZD_REC_DIRTY] = "dirty",
	[ZD_REC_STANDBY] = "standby",
	[ZD_REC_PAGES] = "pages",
	[ZD_REC_STATE] = "state",
	[ZD_REC_COMMIT] = "commit",
	[ZD_REC_ACK] = "ack",
	[ZD_REC_STAT] = "stat",
	[ZD_REC_END] = "end",
	[ZD_REC_DISK] = "disk",
};
_Static_assert(ZD_ARRAY_SIZE(json_names) == ZD_REC_TYPE_MAX, "json_names");

static const char *const penc_names[] = { "raw", "zstd", "delta" };
static const char *const denc_names[] = { "raw", "zstd" };
_Static_assert(ZD_ARRAY_SIZE(denc_names) == ZD_DENC_ZSTD + 1, "denc_names");
_Static_assert(ZD_ARRAY_SIZE(penc_names) == ZD_PENC_DELTA + 1, "penc_names");

/* --- encoding --- */

static void put_jstr(struct zd_buf *b, const char *s)
{
	zd_buf_u8(b, '"');
	for (const char *p = s ? s : ""; *p; p++) {
		unsigned char ch = (unsigned char)*p;
		if (ch == '"' || ch == '\\') {
			char e[2] = { '\\', (char)ch };
			zd_buf_put(b, e, 2);
		} else if (ch < 0x20) {
			zd_buf_printf(b, "\\u%04x", ch);
		} else {
			zd_buf_u8(b, ch);
		}
	}
	zd_buf_u8(b, '"');
}

static void put_key(struct zd_buf *b, const char *key)
{
	zd_buf_printf(b, ",\"%s\":", key);
}

static void put_uint(struct zd_buf *b, uint64_t v)
{
	if (v <= INT64_MAX)
		zd_buf_printf(b, "%" PRIu64, v);
	else
		zd_buf_printf(b, "\"%" PRIu64 "\"", v);
}

static void put_u64(struct zd_buf *b, const char *key, uint64_t v)
{
	put_key(b, key);
	put_uint(b, v);
}

static void put_double(struct zd_buf *b, double v)
{
	if (isnan(v)) {
		zd_buf_printf(b, "null");
		return;
	}
	if (isinf(v)) {
		zd_buf_printf(b, v > 0 ? "\"inf\"" : "\"-inf\"");
		return;
	}
	char tmp[40];
	snprintf(tmp, sizeof(tmp), "%.17g", v);
	zd_buf_printf(b, "%s%s", tmp, strpbrk(tmp, ".e") ? "" : ".0");
}

static void put_b64(struct zd_buf *b, const char *key, const uint8_t *data, size_t n)
{
	put_key(b, key);
	size_t m = zd_b64_len(n);
	zd_buf_reserve(b, m + 2);
	b->p[b->len++] = '"';
	zd_b64_encode((char *)b->p + b->len, data, n);
	b->len += m;
	b->p[b->len++] = '"';
}

static void put_set(struct zd_buf *b, const struct zd_pageset *s)
{
	put_u64(b, "pages", s->pages);
	put_key(b, "ranges");
	zd_buf_u8(b, '[');
	for (size_t i = 0; i < s->n; i++) {
		zd_buf_printf(b, "%s[", i ? "," : "");
		put_uint(b, s->r[i].first);
		zd_buf_u8(b, ',');
		put_uint(b, s->r[i].count);
		zd_buf_u8(b, ']');
	}
	zd_buf_u8(b, ']');
}

int zd_enc_json_buf(struct zd_buf *b, const struct zd_record *r, uint32_t page_size)
{
	if (zd_rec_check(r, page_size) < 0)
		return -1;
	if (r->type >= ZD_REC_TYPE_MAX) {
		const struct zd_rec_unknown *u = &r->u.unknown;
		if (u->from_json) {
			zd_buf_put(b, u->data, u->len);
		} else {
			zd_buf_printf(b, "{\"type\":\"raw\",\"code\":%u,\"flags\":%u", r->type,
				      u->flags);
			put_b64(b, "data", u->data, u->len);
			zd_buf_u8(b, '}');
		}
		zd_buf_u8(b, '\n');
		return 0;
	}
	zd_buf_printf(b, "{\"type\":\"%s\"", json_names[r->type]);
	switch (r->type) {
	case ZD_REC_HEADER: {
		const struct zd_rec_header *h = &r->u.header;
		zd_buf_printf(b, ",\"version\":\"%u.%u\"", ZD_STREAM_MAJOR, ZD_STREAM_MINOR);
		put_u64(b, "page_size", h->page_size);
		put_u64(b, "page_count", h->page_count);
		zd_buf_printf(b, ",\"mode\":\"%s\"", zd_mode_name(h->mode));
		put_u64(b, "interval_us", h->interval_us);
		put_u64(b, "start_ns", h->start_ns);
		put_key(b, "target");
		put_jstr(b, h->target);
		put_key(b, "control");
		put_jstr(b, h->control);
		break;
	}
	case ZD_REC_CHECKPOINT: {
		const struct zd_rec_checkpoint *c = &r->u.ckpt;
		put_u64(b, "epoch", c->epoch);
		put_u64(b, "t0_ns", c->t0_ns);
		put_u64(b, "t1_ns", c->t1_ns);
		put_u64(b, "resume_ns", c->resume_ns);
		put_u64(b, "pause_ns", c->pause_ns);
		put_u64(b, "flags", c->flags);
		break;
	}
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		put_u64(b, "epoch", r->u.dirty.epoch);
		put_set(b, &r->u.dirty.set);
		break;
	case ZD_REC_PAGES: {
		const struct zd_rec_pages *p = &r->u.pages;
		put_u64(b, "epoch", p->epoch);
		zd_buf_printf(b, ",\"enc\":\"%s\"", penc_names[p->enc]);
		put_u64(b, "flags", p->flags);
		put_set(b, &p->set);
		put_b64(b, "data", p->data, p->data_len);
		break;
	}
	case ZD_REC_STATE:
		put_u64(b, "epoch", r->u.state.epoch);
		put_u64(b, "kind", r->u.state.kind);
		put_b64(b, "data", r->u.state.data, r->u.state.len);
		break;
	case ZD_REC_COMMIT:
		put_u64(b, "epoch", r->u.commit.epoch);
		put_u64(b, "pages", r->u.commit.pages);
		put_u64(b, "flags", r->u.commit.flags);
		zd_buf_printf(b, ",\"memsum\":\"0x%016" PRIx64 "\"", r->u.commit.memsum);
		if (r->u.commit.flags & ZD_COMMIT_HAS_DISKSUM)
			zd_buf_printf(b, ",\"disksum\":\"0x%016" PRIx64 "\"", r->u.commit.disksum);
		break;
	case ZD_REC_DISK: {
		const struct zd_rec_disk *d = &r->u.disk;
		put_u64(b, "epoch", d->epoch);
		put_u64(b, "disk_size", d->disk_size);
		put_u64(b, "offset", d->offset);
		put_u64(b, "len", d->len);
		zd_buf_printf(b, ",\"enc\":\"%s\"", denc_names[d->enc]);
		put_u64(b, "flags", d->flags);
		put_b64(b, "data", d->data, d->data_len);
		break;
	}
	case ZD_REC_ACK:
		put_u64(b, "epoch", r->u.ack.epoch);
		put_u64(b, "commit_wall_ns", r->u.ack.commit_wall_ns);
		put_u64(b, "latency_ns", r->u.ack.latency_ns);
		put_u64(b, "status", r->u.ack.status);
		break;
	case ZD_REC_STAT: {
		const struct zd_rec_stat *s = &r->u.stat;
		put_u64(b, "epoch", s->epoch);
		put_key(b, "source");
		put_jstr(b, s->source);
		put_key(b, "values");
		zd_buf_u8(b, '{');
		for (uint32_t i = 0; i < s->n; i++) {
			if (i)
				zd_buf_u8(b, ',');
			put_jstr(b, s->kv[i].key);
			zd_buf_u8(b, ':');
			put_double(b, s->kv[i].value);
		}
		zd_buf_u8(b, '}');
		break;
	}
	case ZD_REC_END:
		put_u64(b, "epochs", r->u.end.epochs);
		put_u64(b, "status", r->u.end.status);
		break;
	}
	zd_buf_printf(b, "}\n");
	return 0;
}

int zd_encode_json(const struct zd_record *r, uint32_t page_size, char **out, size_t *len)
{
	struct zd_buf b = { 0 };
	if (zd_enc_json_buf(&b, r, page_size) < 0) {
		free(b.p);
		return -1;
	}
	zd_buf_u8(&b, 0);	/* a C string as well, for printing */
	*out = (char *)b.p;
	*len = b.len - 1;
	return 0;
}

/* --- decoding --- */

#define FAIL(err, ...) zd_fail(msg, msglen, err, __VA_ARGS__)

static int get_uint(json_t *v, uint64_t *out)
{
	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);
		if (i < 0)
			return -1;
		*out = (uint64_t)i;
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (*s < '0' || *s > '9')
			return -1;
		return zd_parse_u64(s, out);
	}
	return -1;
}

/* A required unsigned field no larger than max. */
static int field_u64(json_t *o, const char *key, uint64_t max, uint64_t *out,
		     char *msg, size_t msglen)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return FAIL(ZD_RERR_MALFORMED, "missing \"%s\"", key);
	if (get_uint(v, out) < 0 || *out > max)
		return FAIL(ZD_RERR_MALFORMED, "\"%s\" is not an integer in 0..%" PRIu64, key, max);
	return 0;
}

#define U64(o, key, lval, max)                                                 \
	do {                                                                    \
		uint64_t v_;                                                    \
		if ((rc = field_u64(o, key, max, &v_, msg, msglen)) < 0)        \
			return rc;                                              \
		lval = v_;                                                      \
	} while (0)

static int field_str(json_t *o, const char *key, const char **out, char *msg, size_t msglen)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return FAIL(ZD_RERR_MALFORMED, "missing \"%s\"", key);
	if (!json_is_string(v))
		return FAIL(ZD_RERR_MALFORMED, "\"%s\" is not a string", key);
	*out = json_string_value(v);
	return 0;
}

/* The "data" string of a big line, cut out before jansson sees the line. */
struct span {
	const char *p;
	size_t n;
};

static int field_b64(json_t *o, const char *key, const struct span *cut, uint8_t **data,
		     uint32_t *len, char *msg, size_t msglen)
{
	const char *s;
	int rc = field_str(o, key, &s, msg, msglen);
	if (rc < 0)
		return rc;
	size_t n = json_string_length(json_object_get(o, key));
	if (cut && cut->p) {
		s = cut->p;
		n = cut->n;
	}
	if (n / 4 * 3 > ZD_REC_MAX)
		return FAIL(ZD_RERR_TOO_BIG, "\"%s\" over the limit of %u bytes", key, ZD_REC_MAX);
	uint8_t *p = zd_xmalloc(n / 4 * 3 + 1);
	long got = zd_b64_decode(p, s, n);
	if (got < 0) {
		free(p);
		return FAIL(ZD_RERR_MALFORMED, "\"%s\" is not base64", key);
	}
	if (got == 0) {
		free(p);
		p = NULL;
	}
	*data = p;
	*len = (uint32_t)got;
	return 0;
}

static int get_set(json_t *o, struct zd_pageset *s, const struct zd_rec_header *hdr,
		   char *msg, size_t msglen)
{
	int rc;
	uint64_t pages;
	U64(o, "pages", pages, UINT64_MAX);
	json_t *a = json_object_get(o, "ranges");
	if (!json_is_array(a))
		return FAIL(ZD_RERR_MALFORMED, "\"ranges\" missing or not an array");
	size_t n = json_array_size(a);
	if (n > ZD_SET_MAX_RANGES)
		return FAIL(ZD_RERR_RANGE, "%zu ranges, at most %u allowed", n, ZD_SET_MAX_RANGES);
	zd_pageset_clear(s);
	uint64_t prev = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(a, i);
		uint64_t first, count;
		if (!json_is_array(e) || json_array_size(e) != 2 ||
		    get_uint(json_array_get(e, 0), &first) < 0 ||
		    get_uint(json_array_get(e, 1), &count) < 0 || count == 0)
			return FAIL(ZD_RERR_MALFORMED, "range %zu is not [first, count>0]", i);
		if (i > 0 && first < prev)
			return FAIL(ZD_RERR_MALFORMED, "range %zu overlaps or precedes the previous one", i);
		if (count > UINT64_MAX - first)
			return FAIL(ZD_RERR_RANGE, "range %zu goes past pfn 2^64", i);
		zd_pageset_add_range(s, first, count);
		prev = first + count;
	}
	if (pages != s->pages)
		return FAIL(ZD_RERR_MALFORMED, "\"pages\" is %" PRIu64 " but the ranges hold %" PRIu64,
			    pages, s->pages);
	if (hdr && zd_pageset_end(s) > hdr->page_count)
		return FAIL(ZD_RERR_RANGE, "pfn %" PRIu64 " beyond page_count %" PRIu64,
			    zd_pageset_end(s) - 1, hdr->page_count);
	return 0;
}

/* "0x" and 1..16 hex digits. */
static int field_hex(json_t *o, const char *key, uint64_t *out, char *msg, size_t msglen)
{
	const char *sum;
	int rc;
	if ((rc = field_str(o, key, &sum, msg, msglen)) < 0)
		return rc;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(sum, &end, 16);
	if (strncmp(sum, "0x", 2) || errno || *end || end == sum + 2)
		return FAIL(ZD_RERR_MALFORMED, "\"%s\" is not a hex string \"0x…\"", key);
	*out = v;
	return 0;
}

static int lookup(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] && strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

static int get_body(json_t *o, struct zd_record *r, const struct zd_rec_header *hdr,
		    const struct span *cut, char *msg, size_t msglen)
{
	int rc;
	switch (r->type) {
	case ZD_REC_HEADER: {
		struct zd_rec_header *h = &r->u.header;
		const char *ver, *mode, *target, *control;
		unsigned maj, min;
		int end = 0;
		if ((rc = field_str(o, "version", &ver, msg, msglen)) < 0)
			return rc;
		if (sscanf(ver, "%u.%u%n", &maj, &min, &end) != 2 || ver[end] || maj > 65535 ||
		    min > 65535)
			return FAIL(ZD_RERR_MALFORMED, "\"version\" is not \"MAJOR.MINOR\"");
		if (maj != ZD_STREAM_MAJOR)
			return FAIL(ZD_RERR_VERSION, "unsupported major version %u (this reader knows %u)",
				    maj, ZD_STREAM_MAJOR);
		h->major = (uint16_t)maj;
		h->minor = (uint16_t)min;
		U64(o, "page_size", h->page_size, UINT32_MAX);
		U64(o, "page_count", h->page_count, UINT64_MAX);
		U64(o, "interval_us", h->interval_us, UINT32_MAX);
		U64(o, "start_ns", h->start_ns, UINT64_MAX);
		if ((rc = field_str(o, "mode", &mode, msg, msglen)) < 0 ||
		    (rc = field_str(o, "target", &target, msg, msglen)) < 0 ||
		    (rc = field_str(o, "control", &control, msg, msglen)) < 0)
			return rc;
		enum zd_mode m;
		if (zd_mode_parse(mode, &m) < 0)
			return FAIL(ZD_RERR_RANGE, "unknown mode \"%s\"", mode);
		h->mode = (uint8_t)m;
		if (strlen(target) > 65535 || strlen(control) > 65535)
			return FAIL(ZD_RERR_MALFORMED, "target or control longer than 65535 bytes");
		h->target = zd_xstrdup(target);
		h->control = zd_xstrdup(control);
		if (h->page_size < 512 || h->page_size > (1u << 20) ||
		    (h->page_size & (h->page_size - 1)))
			return FAIL(ZD_RERR_RANGE, "page_size %u is not a power of two in 512..1048576",
				    h->page_size);
		if (h->page_count == 0)
			return FAIL(ZD_RERR_RANGE, "page_count is 0");
		if (h->page_count > ZD_GUEST_MAX / h->page_size)
			return FAIL(ZD_RERR_RANGE, "%" PRIu64 " pages of %u bytes: over 1 PiB",
				    h->page_count, h->page_size);
		return 0;
	}
	case ZD_REC_CHECKPOINT: {
		struct zd_rec_checkpoint *c = &r->u.ckpt;
		U64(o, "epoch", c->epoch, UINT64_MAX);
		U64(o, "t0_ns", c->t0_ns, UINT64_MAX);
		U64(o, "t1_ns", c->t1_ns, UINT64_MAX);
		U64(o, "resume_ns", c->resume_ns, UINT64_MAX);
		U64(o, "pause_ns", c->pause_ns, UINT64_MAX);
		U64(o, "flags", c->flags, UINT32_MAX);
		return 0;
	}
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		U64(o, "epoch", r->u.dirty.epoch, UINT64_MAX);
		return get_set(o, &r->u.dirty.set, hdr, msg, msglen);
	case ZD_REC_PAGES: {
		struct zd_rec_pages *p = &r->u.pages;
		const char *enc;
		U64(o, "epoch", p->epoch, UINT64_MAX);
		U64(o, "flags", p->flags, UINT8_MAX);
		if ((rc = field_str(o, "enc", &enc, msg, msglen)) < 0)
			return rc;
		int e = lookup(penc_names, ZD_ARRAY_SIZE(penc_names), enc);
		if (e < 0)
			return FAIL(ZD_RERR_MALFORMED, "unknown page encoding \"%s\"", enc);
		p->enc = (uint8_t)e;
		if ((rc = get_set(o, &p->set, hdr, msg, msglen)) < 0)
			return rc;
		if (p->set.pages > ZD_PAGES_PER_RECORD)
			return FAIL(ZD_RERR_RANGE, "%" PRIu64 " pages, at most %u per record",
				    p->set.pages, ZD_PAGES_PER_RECORD);
		if ((rc = field_b64(o, "data", cut, &p->data, &p->data_len, msg, msglen)) < 0)
			return rc;
		if (p->enc == ZD_PENC_RAW && hdr &&
		    (uint64_t)p->data_len != p->set.pages * hdr->page_size)
			return FAIL(ZD_RERR_MALFORMED,
				    "raw data is %u bytes, %" PRIu64 " pages of %u need %" PRIu64,
				    p->data_len, p->set.pages, hdr->page_size,
				    p->set.pages * hdr->page_size);
		return 0;
	}
	case ZD_REC_STATE:
		U64(o, "epoch", r->u.state.epoch, UINT64_MAX);
		U64(o, "kind", r->u.state.kind, UINT32_MAX);
		return field_b64(o, "data", cut, &r->u.state.data, &r->u.state.len, msg, msglen);
	case ZD_REC_COMMIT: {
		U64(o, "epoch", r->u.commit.epoch, UINT64_MAX);
		U64(o, "pages", r->u.commit.pages, UINT64_MAX);
		U64(o, "flags", r->u.commit.flags, UINT32_MAX);
		if ((rc = field_hex(o, "memsum", &r->u.commit.memsum, msg, msglen)) < 0)
			return rc;
		if (r->u.commit.flags & ZD_COMMIT_HAS_DISKSUM)
			return field_hex(o, "disksum", &r->u.commit.disksum, msg, msglen);
		return 0;
	}
	case ZD_REC_DISK: {
		struct zd_rec_disk *d = &r->u.disk;
		const char *enc;
		U64(o, "epoch", d->epoch, UINT64_MAX);
		U64(o, "disk_size", d->disk_size, UINT64_MAX);
		U64(o, "offset", d->offset, UINT64_MAX);
		U64(o, "len", d->len, UINT32_MAX);
		U64(o, "flags", d->flags, UINT8_MAX);
		if ((rc = field_str(o, "enc", &enc, msg, msglen)) < 0)
			return rc;
		int e = lookup(denc_names, ZD_ARRAY_SIZE(denc_names), enc);
		if (e < 0)
			return FAIL(ZD_RERR_MALFORMED, "unknown disk encoding \"%s\"", enc);
		d->enc = (uint8_t)e;
		if ((rc = field_b64(o, "data", cut, &d->data, &d->data_len, msg, msglen)) < 0)
			return rc;
		return zd_disk_check(d, msg, msglen);
	}
	case ZD_REC_ACK:
		U64(o, "epoch", r->u.ack.epoch, UINT64_MAX);
		U64(o, "commit_wall_ns", r->u.ack.commit_wall_ns, UINT64_MAX);
		U64(o, "latency_ns", r->u.ack.latency_ns, UINT64_MAX);
		U64(o, "status", r->u.ack.status, UINT32_MAX);
		return 0;
	case ZD_REC_STAT: {
		struct zd_rec_stat *s = &r->u.stat;
		const char *src;
		U64(o, "epoch", s->epoch, UINT64_MAX);
		if ((rc = field_str(o, "source", &src, msg, msglen)) < 0)
			return rc;
		if (strlen(src) >= sizeof(s->source))
			return FAIL(ZD_RERR_MALFORMED, "\"source\" longer than %zu bytes",
				    sizeof(s->source) - 1);
		strcpy(s->source, src);
		json_t *vals = json_object_get(o, "values");
		if (!json_is_object(vals))
			return FAIL(ZD_RERR_MALFORMED, "\"values\" missing or not an object");
		if (json_object_size(vals) > ZD_STAT_MAX_KV)
			return FAIL(ZD_RERR_MALFORMED, "%zu values, at most %u allowed",
				    json_object_size(vals), ZD_STAT_MAX_KV);
		const char *key;
		json_t *v;
		json_object_foreach(vals, key, v) {
			struct zd_stat_kv *kv = &s->kv[s->n];
			if (strlen(key) >= sizeof(kv->key))
				return FAIL(ZD_RERR_MALFORMED, "key \"%.40s\" longer than %zu bytes",
					    key, sizeof(kv->key) - 1);
			strcpy(kv->key, key);
			if (json_is_number(v))
				kv->value = json_number_value(v);
			else if (json_is_null(v))
				kv->value = NAN;
			else if (json_is_string(v) && strcmp(json_string_value(v), "inf") == 0)
				kv->value = INFINITY;
			else if (json_is_string(v) && strcmp(json_string_value(v), "-inf") == 0)
				kv->value = -INFINITY;
			else
				return FAIL(ZD_RERR_MALFORMED, "value of \"%s\" is not a number", key);
			s->n++;
		}
		return 0;
	}
	case ZD_REC_END:
		U64(o, "epochs", r->u.end.epochs, UINT64_MAX);
		U64(o, "status", r->u.end.status, UINT32_MAX);
		return 0;
	default: {
		/* "raw": a binary record of a type we do not know, kept whole. */
		struct zd_rec_unknown *u = &r->u.unknown;
		uint64_t code;
		if ((rc = field_u64(o, "code", 0xfffe, &code, msg, msglen)) < 0)
			return rc;
		if (code < ZD_REC_TYPE_MAX)
			return FAIL(ZD_RERR_MALFORMED, "raw record code %" PRIu64 " is a known type", code);
		U64(o, "flags", u->flags, UINT16_MAX);
		r->type = u->type = (uint16_t)code;
		return field_b64(o, "data", cut, &u->data, &u->len, msg, msglen);
	}
	}
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

#define CUT_MIN 4096

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (is_space(*p) || *p == '\n'))
		p++;
	return p;
}

/* p at '"': returns the char after the closing quote, NULL if none;
 * *esc tells whether the string holds escapes. */
static const char *skip_str(const char *p, const char *end, bool *esc)
{
	const char *from = ++p;
	for (;;) {
		const char *q = memchr(p, '"', (size_t)(end - p));
		if (!q)
			return NULL;
		size_t bs = 0;
		while (q - bs > from && q[-1 - (ptrdiff_t)bs] == '\\')
			bs++;
		if (bs % 2 == 0) {
			*esc = memchr(from, '\\', (size_t)(q - from)) != NULL;
			return q + 1;
		}
		p = q + 1;
	}
}

static const char *skip_value(const char *p, const char *end)
{
	bool esc;
	if (p < end && *p == '"')
		return skip_str(p, end, &esc);
	int depth = 0;
	while (p < end) {
		char c = *p;
		if (c == '"') {
			if (!(p = skip_str(p, end, &esc)))
				return NULL;
			continue;
		}
		if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return p;
			if (--depth == 0)
				return p + 1;
		} else if (depth == 0 && (c == ',' || is_space(c))) {
			return p;
		}
		p++;
	}
	return depth ? NULL : p;
}

/* Find the escape-free string value of the top-level "data" member; the
 * span is its contents. Anything unexpected: no cut, jansson decides. */
static bool find_data(const char *line, size_t len, struct span *out)
{
	const char *p = line, *end = line + len;
	bool esc;
	p = skip_ws(p, end);
	if (p == end || *p++ != '{')
		return false;
	for (;;) {
		p = skip_ws(p, end);
		if (p == end || *p != '"')
			return false;
		const char *k = p + 1;
		if (!(p = skip_str(p, end, &esc)))
			return false;
		bool is_data = p - 1 - k == 4 && memcmp(k, "data", 4) == 0;
		p = skip_ws(p, end);
		if (p == end || *p++ != ':')
			return false;
		p = skip_ws(p, end);
		const char *v = p;
		if (!(p = skip_value(p, end)) || p == v)
			return false;
		if (is_data) {
			if (*v != '"' || (skip_str(v, end, &esc), esc))
				return false;
			out->p = v + 1;
			out->n = (size_t)(p - 1 - out->p);
			return true;
		}
		p = skip_ws(p, end);
		if (p == end || *p++ != ',')
			return false;
	}
}

static bool has_type_string(json_t *o)
{
	return json_is_object(o) && json_is_string(json_object_get(o, "type"));
}

bool zd_json_object_ok(const char *text, size_t len)
{
	if (len == 0 || text[0] != '{' || memchr(text, '\n', len) || memchr(text, 0, len))
		return false;
	json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	/* its type must be one we do not know, or it would not read back as
	 * the same passthrough record */
	bool ok = has_type_string(o);
	if (ok) {
		const char *t = json_string_value(json_object_get(o, "type"));
		ok = lookup(json_names, ZD_REC_TYPE_MAX, t) < 0 && strcmp(t, "raw") != 0;
	}
	json_decref(o);
	return ok;
}

int zd_decode_json(const char *line, size_t len, const struct zd_rec_header *hdr,
		   struct zd_record *r, char *msg, size_t msglen)
{
	zd_record_init(r, 0);
	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	/* jansson stops at a NUL; the line would not survive being copied */
	const char *nul = memchr(line, 0, len);
	if (nul)
		return FAIL(ZD_RERR_MALFORMED, "NUL byte at column %zu", (size_t)(nul - line) + 1);
	const char *lf = memchr(line, '\n', len);
	if (lf)
		return FAIL(ZD_RERR_MALFORMED, "line break at column %zu inside one record",
			    (size_t)(lf - line) + 1);
	/* jansson builds a 5 MiB base64 string at ~35 MB/s; a PAGES line is
	 * mostly that string. Parse the line with the string emptied instead,
	 * and decode the base64 in place. */
	struct span cut = { NULL, 0 };
	char *small = NULL;
	const char *text = line;
	size_t tlen = len;
	if (len >= CUT_MIN && find_data(line, len, &cut)) {
		size_t pre = (size_t)(cut.p - line), post = len - pre - cut.n;
		small = zd_xmalloc(pre + post);
		memcpy(small, line, pre);
		memcpy(small + pre, cut.p + cut.n, post);
		text = small;
		tlen = pre + post;
	}
	json_error_t jerr;
	json_t *o = json_loadb(text, tlen, JSON_REJECT_DUPLICATES, &jerr);
	free(small);
	if (!o)
		return FAIL(ZD_RERR_MALFORMED, "invalid JSON: %s (column %d)", jerr.text,
			    jerr.column);
	int rc = 0;
	if (!json_is_object(o)) {
		rc = FAIL(ZD_RERR_MALFORMED, "not a JSON object");
		goto out;
	}
	json_t *t = json_object_get(o, "type");
	if (!json_is_string(t)) {
		rc = FAIL(ZD_RERR_MALFORMED, "\"type\" missing or not a string");
		goto out;
	}
	const char *tname = json_string_value(t);
	int type = lookup(json_names, ZD_REC_TYPE_MAX, tname);
	if (type > 0) {
		r->type = (uint16_t)type;
	} else if (strcmp(tname, "raw") == 0) {
		r->type = ZD_REC_TYPE_MAX;	/* get_body sets the real code */
	} else {
		/* A type a newer zd wrote: keep the object text as it came,
		 * which must then be valid JSON in full, "data" included. */
		if (cut.p) {
			json_t *full = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
			if (!full) {
				rc = FAIL(ZD_RERR_MALFORMED, "invalid JSON: %s (column %d)", jerr.text,
					  jerr.column);
				goto out;
			}
			json_decref(full);
		}
		if (len > ZD_REC_MAX) {
			rc = FAIL(ZD_RERR_TOO_BIG, "object of %zu bytes over the limit of %u", len,
				  ZD_REC_MAX);
			goto out;
		}
		while (len && is_space(line[0])) {
			line++;
			len--;
		}
		while (len && is_space(line[len - 1]))
			len--;
		r->type = ZD_REC_JSON;
		r->u.unknown.from_json = true;
		r->u.unknown.len = (uint32_t)len;
		r->u.unknown.data = zd_xmalloc(len + 1);
		memcpy(r->u.unknown.data, line, len);
		r->u.unknown.data[len] = 0;
		goto out;
	}
	rc = get_body(o, r, hdr, &cut, msg, msglen);
	if (rc < 0)
		zd_record_free(r);	/* keeps r->type for the caller's message */
out:
	json_decref(o);
	return rc;
}
