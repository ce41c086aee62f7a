/* SPDX-License-Identifier: MIT */
/*
 * Records in memory: names, ownership, and the checks an encoder makes so
 * that nothing a reader would reject is ever written.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/codec.h"
#include "zd/util.h"

static const char *const type_names[ZD_REC_TYPE_MAX] = {
	[ZD_REC_HEADER] = "HEADER",
	[ZD_REC_CHECKPOINT] = "CHECKPOINT",
	[ZD_REC_DIRTY] = "DIRTY",
	[ZD_REC_STANDBY] = "STANDBY",
	[ZD_REC_PAGES] = "PAGES",
	[ZD_REC_STATE] = "STATE",
	[ZD_REC_COMMIT] = "COMMIT",
	[ZD_REC_ACK] = "ACK",
	[ZD_REC_STAT] = "STAT",
	[ZD_REC_END] = "END",
	[ZD_REC_DISK] = "DISK",
};
_Static_assert(ZD_ARRAY_SIZE(type_names) == ZD_REC_TYPE_MAX, "type_names");

const char *zd_rec_type_name(uint16_t type)
{
	if (type < ZD_REC_TYPE_MAX && type_names[type])
		return type_names[type];
	return "UNKNOWN";
}

static const char *const mode_names[ZD_MODE_MAX] = {
	[ZD_MODE_REMUS] = "remus",
	[ZD_MODE_BUFFERED] = "buffered",
	[ZD_MODE_ZDDSPT] = "zddspt",
};
_Static_assert(ZD_ARRAY_SIZE(mode_names) == ZD_MODE_MAX, "mode_names");

const char *zd_mode_name(enum zd_mode m)
{
	return (unsigned)m < ZD_MODE_MAX ? mode_names[m] : "unknown";
}

int zd_mode_parse(const char *s, enum zd_mode *m)
{
	for (int i = 0; i < ZD_MODE_MAX; i++) {
		if (strcmp(s, mode_names[i]) == 0) {
			*m = (enum zd_mode)i;
			return 0;
		}
	}
	return -1;
}

void zd_stat_put(struct zd_rec_stat *st, const char *key, double v)
{
	if (st->n >= ZD_STAT_MAX_KV)
		return;
	snprintf(st->kv[st->n].key, sizeof(st->kv[st->n].key), "%s", key);
	st->kv[st->n++].value = v;
}

void zd_record_init(struct zd_record *r, uint16_t type)
{
	memset(r, 0, sizeof(*r));
	r->type = type;
}

void zd_record_free(struct zd_record *r)
{
	switch (r->type) {
	case ZD_REC_HEADER:
		free(r->u.header.target);
		free(r->u.header.control);
		break;
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		zd_pageset_free(&r->u.dirty.set);
		break;
	case ZD_REC_PAGES:
		zd_pageset_free(&r->u.pages.set);
		free(r->u.pages.data);
		break;
	case ZD_REC_STATE:
		free(r->u.state.data);
		break;
	case ZD_REC_DISK:
		free(r->u.disk.data);
		break;
	case ZD_REC_CHECKPOINT:
	case ZD_REC_COMMIT:
	case ZD_REC_ACK:
	case ZD_REC_STAT:
	case ZD_REC_END:
		break;
	default:
		free(r->u.unknown.data);
		break;
	}
	memset(&r->u, 0, sizeof(r->u));
}

void zd_buf_reserve(struct zd_buf *b, size_t extra)
{
	if (b->cap - b->len >= extra)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap - b->len < extra)
		cap *= 2;
	b->p = zd_xrealloc(b->p, cap);
	b->cap = cap;
}

void zd_buf_printf(struct zd_buf *b, const char *fmt, ...)
{
	va_list ap;
	zd_buf_reserve(b, 64);	/* most formats fit; also makes b->p non-NULL */
	va_start(ap, fmt);
	int n = vsnprintf((char *)b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n >= b->cap - b->len) {
		zd_buf_reserve(b, (size_t)n + 1);
		va_start(ap, fmt);
		vsnprintf((char *)b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	if (n > 0)
		b->len += (size_t)n;
}

int zd_fail(char *msg, size_t msglen, enum zd_read_err err, const char *fmt, ...)
{
	if (msg && msglen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, msglen, fmt, ap);
		va_end(ap);
	}
	return -(int)err;
}

/* Strict UTF-8 (no overlongs, no surrogates): JSON can carry nothing else,
 * so a binary string must be UTF-8 to survive a change of encoding. */
bool zd_utf8_ok(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = p[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t len;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0) {
			len = 2; cp = c & 0x1f; min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			len = 3; cp = c & 0x0f; min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			len = 4; cp = c & 0x07; min = 0x10000;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

static bool str_ok(const char *s, size_t max)
{
	if (!s)
		return true;
	size_t n = strlen(s);
	return n <= max && zd_utf8_ok((const uint8_t *)s, n);
}

static bool set_ok(const struct zd_pageset *s)
{
	return s->n <= ZD_SET_MAX_RANGES;
}

/* What a writer must refuse: anything the reader of zd-stream(5) rejects
 * on its own (stream-order checks are the caller's business). */
int zd_rec_check(const struct zd_record *r, uint32_t page_size)
{
	bool ok = true;
	switch (r->type) {
	case ZD_REC_HEADER: {
		const struct zd_rec_header *h = &r->u.header;
		ok = h->page_size >= 512 && h->page_size <= (1u << 20) &&
		     (h->page_size & (h->page_size - 1)) == 0 && h->page_count > 0 &&
		     h->page_count <= ZD_GUEST_MAX / h->page_size &&
		     h->mode < ZD_MODE_MAX && str_ok(h->target, 65535) &&
		     str_ok(h->control, 65535);
		break;
	}
	case ZD_REC_DIRTY:
	case ZD_REC_STANDBY:
		ok = set_ok(&r->u.dirty.set);
		break;
	case ZD_REC_PAGES: {
		const struct zd_rec_pages *p = &r->u.pages;
		ok = set_ok(&p->set) && p->set.pages <= ZD_PAGES_PER_RECORD &&
		     p->enc <= ZD_PENC_DELTA &&
		     (p->data_len == 0 || p->data) &&
		     p->data_len <= ZD_REC_MAX;
		if (ok && p->enc == ZD_PENC_RAW && page_size)
			ok = p->set.pages <= ZD_REC_MAX / page_size &&
			     p->data_len == p->set.pages * page_size;
		break;
	}
	case ZD_REC_STATE:
		ok = (r->u.state.len == 0 || r->u.state.data) && r->u.state.len <= ZD_REC_MAX;
		break;
	case ZD_REC_DISK: {
		const struct zd_rec_disk *d = &r->u.disk;
		ok = zd_disk_check(d, NULL, 0) == 0 && (d->data_len == 0 || d->data);
		break;
	}
	case ZD_REC_STAT: {
		const struct zd_rec_stat *s = &r->u.stat;
		ok = s->n <= ZD_STAT_MAX_KV && memchr(s->source, 0, sizeof(s->source)) &&
		     str_ok(s->source, sizeof(s->source) - 1);
		for (uint32_t i = 0; ok && i < s->n; i++)
			ok = memchr(s->kv[i].key, 0, sizeof(s->kv[i].key)) != NULL &&
			     str_ok(s->kv[i].key, sizeof(s->kv[i].key) - 1);
		for (uint32_t i = 0; ok && i < s->n; i++)
			for (uint32_t j = 0; ok && j < i; j++)
				ok = strcmp(s->kv[i].key, s->kv[j].key) != 0;
		break;
	}
	case ZD_REC_CHECKPOINT:
	case ZD_REC_COMMIT:
	case ZD_REC_ACK:
	case ZD_REC_END:
		break;
	default:
		ok = r->type >= ZD_REC_TYPE_MAX &&
		     (r->u.unknown.len == 0 || r->u.unknown.data) &&
		     r->u.unknown.len <= ZD_REC_MAX;
		if (ok && r->u.unknown.from_json)
			ok = zd_json_object_ok((const char *)r->u.unknown.data, r->u.unknown.len);
		else if (ok)
			ok = r->type != ZD_REC_JSON;	/* that code means JSON text */
		break;
	}
	if (!ok) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/* --- base64 (RFC 4648, with padding) --- */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t zd_b64_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

void zd_b64_encode(char *out, const uint8_t *in, size_t n)
{
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*out++ = b64[v >> 18];
		*out++ = b64[(v >> 12) & 63];
		*out++ = b64[(v >> 6) & 63];
		*out++ = b64[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		*out++ = b64[v >> 18];
		*out++ = b64[(v >> 12) & 63];
		*out++ = '=';
		*out++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*out++ = b64[v >> 18];
		*out++ = b64[(v >> 12) & 63];
		*out++ = b64[(v >> 6) & 63];
		*out++ = '=';
	}
}

/* Each base64 digit's value plus one: 0 is not a digit. Constant, so
 * that decoders on any thread share it without a first-use race. */
static const uint8_t unb64[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
	['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
	['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
	['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
	['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
	['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
	['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
	['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

long zd_b64_decode(uint8_t *out, const char *in, size_t n)
{
	if (n % 4)
		return -1;
	size_t pad = 0;
	if (n >= 4 && in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	uint8_t *o = out;
	for (size_t i = 0; i < n; i += 4) {
		bool last = i + 4 == n;
		int a = unb64[(uint8_t)in[i]] - 1, b = unb64[(uint8_t)in[i + 1]] - 1;
		int c = last && pad == 2 ? 0 : unb64[(uint8_t)in[i + 2]] - 1;
		int d = last && pad >= 1 ? 0 : unb64[(uint8_t)in[i + 3]] - 1;
		if ((a | b | c | d) < 0)
			return -1;
		uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		*o++ = (uint8_t)(v >> 16);
		if (last && pad == 2) {
			if (v & 0xffff)		/* non-canonical: stray bits */
				return -1;
			break;
		}
		*o++ = (uint8_t)(v >> 8);
		if (last && pad == 1) {
			if (v & 0xff)
				return -1;
			break;
		}
		*o++ = (uint8_t)v;
	}
	return (long)(o - out);
}
