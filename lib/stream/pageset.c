/* SPDX-License-Identifier: MIT */
/*
 * Page sets as sorted, disjoint, non-adjacent ranges. Every binary
 * operation is one merge over both range arrays, emitting through push(),
 * which is the only place that joins touching ranges — so canonical form
 * holds by construction and equality is a memcmp.
 */
#include <stdlib.h>
#include <string.h>

#include "zd/pageset.h"
#include "zd/util.h"

void zd_pageset_init(struct zd_pageset *s)
{
	*s = (struct zd_pageset)ZD_PAGESET_INIT;
}

void zd_pageset_free(struct zd_pageset *s)
{
	free(s->r);
	zd_pageset_init(s);
}

void zd_pageset_clear(struct zd_pageset *s)
{
	s->n = 0;
	s->pages = 0;
}

static void reserve(struct zd_pageset *s, size_t need)
{
	if (need <= s->cap)
		return;
	size_t cap = s->cap ? s->cap : 8;
	while (cap < need)
		cap *= 2;
	s->r = zd_xrealloc(s->r, cap * sizeof(*s->r));
	s->cap = cap;
}

int zd_pageset_copy(struct zd_pageset *dst, const struct zd_pageset *src)
{
	if (dst == src)
		return 0;
	reserve(dst, src->n);
	if (src->n)
		memcpy(dst->r, src->r, src->n * sizeof(*src->r));
	dst->n = src->n;
	dst->pages = src->pages;
	return 0;
}

void zd_pageset_swap(struct zd_pageset *a, struct zd_pageset *b)
{
	struct zd_pageset t = *a;
	*a = *b;
	*b = t;
}

/* Append a range that starts at or after the start of the last one. */
static inline void push(struct zd_pageset *s, uint64_t first, uint64_t count)
{
	if (s->n) {
		struct zd_range *l = &s->r[s->n - 1];
		uint64_t end = l->first + l->count;
		if (first <= end) {
			uint64_t nend = first + count;
			if (nend > end) {
				l->count += nend - end;
				s->pages += nend - end;
			}
			return;
		}
	}
	if (s->n == s->cap)
		reserve(s, s->n + 1);
	s->r[s->n++] = (struct zd_range){ first, count };
	s->pages += count;
}

/* First range whose end is >= pfn (the one that could hold or touch it). */
static size_t lower_end(const struct zd_pageset *s, uint64_t pfn)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->r[mid].first + s->r[mid].count < pfn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void zd_pageset_add_range(struct zd_pageset *s, uint64_t first, uint64_t count)
{
	if (count == 0)
		return;
	if (count > UINT64_MAX - first)
		count = UINT64_MAX - first;	/* pfns live below 2^64 */
	if (s->n == 0 || first >= s->r[s->n - 1].first) {
		push(s, first, count);
		return;
	}
	/* Out of order: merge with every range it overlaps or touches. */
	uint64_t end = first + count;
	size_t i = lower_end(s, first), j = i;
	while (j < s->n && s->r[j].first <= end) {
		uint64_t rend = s->r[j].first + s->r[j].count;
		if (s->r[j].first < first)
			first = s->r[j].first;
		if (rend > end)
			end = rend;
		s->pages -= s->r[j].count;
		j++;
	}
	if (j == i) {
		reserve(s, s->n + 1);
		memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(*s->r));
		s->n++;
	} else if (j > i + 1) {
		memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof(*s->r));
		s->n -= j - i - 1;
	}
	s->r[i] = (struct zd_range){ first, end - first };
	s->pages += end - first;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void zd_pageset_from_pfns(struct zd_pageset *s, uint64_t *pfns, size_t n)
{
	zd_pageset_clear(s);
	qsort(pfns, n, sizeof(*pfns), cmp_u64);
	for (size_t i = 0; i < n; i++)
		push(s, pfns[i], 1);
}

void zd_pageset_from_bitmap(struct zd_pageset *s, const uint64_t *words,
			    uint64_t nbits, uint64_t base)
{
	zd_pageset_clear(s);
	uint64_t nwords = nbits / 64 + (nbits % 64 != 0);
	for (uint64_t i = 0; i < nwords; i++) {
		uint64_t w = words[i];
		if (i == nwords - 1 && nbits % 64)
			w &= (1ull << (nbits % 64)) - 1;
		uint64_t bit = 0;
		while (w) {
			unsigned start = __builtin_ctzll(w);
			w >>= start;
			bit += start;
			/* run of ones: ~w is 0 only if the run reaches bit 63 */
			unsigned len = ~w ? (unsigned)__builtin_ctzll(~w) : 64 - (unsigned)bit;
			push(s, base + i * 64 + bit, len);
			bit += len;
			w = len >= 64 ? 0 : w >> len;
		}
	}
}

void zd_pageset_to_bitmap(const struct zd_pageset *s, uint64_t *words,
			  uint64_t nbits, uint64_t base)
{
	uint64_t nwords = nbits / 64 + (nbits % 64 != 0);
	memset(words, 0, nwords * sizeof(*words));
	size_t i = lower_end(s, base);
	for (; i < s->n; i++) {
		uint64_t a = s->r[i].first, b = a + s->r[i].count;
		if (a >= base + nbits)
			break;
		if (a < base)
			a = base;
		if (b > base + nbits)
			b = base + nbits;
		if (a >= b)
			continue;
		a -= base;
		b -= base;
		uint64_t wa = a / 64, wb = (b - 1) / 64;
		uint64_t ma = ~0ull << (a % 64);
		uint64_t mb = ~0ull >> (63 - (b - 1) % 64);
		if (wa == wb) {
			words[wa] |= ma & mb;
			continue;
		}
		words[wa] |= ma;
		for (uint64_t k = wa + 1; k < wb; k++)
			words[k] = ~0ull;
		words[wb] |= mb;
	}
}

bool zd_pageset_contains_range(const struct zd_pageset *s, uint64_t first, uint64_t count)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {	/* the first range ending past first */
		size_t mid = lo + (hi - lo) / 2;
		if (s->r[mid].first + s->r[mid].count <= first)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < s->n && s->r[lo].first <= first &&
	       first + count <= s->r[lo].first + s->r[lo].count;
}

bool zd_pageset_contains(const struct zd_pageset *s, uint64_t pfn)
{
	return zd_pageset_contains_range(s, pfn, 1);
}

uint64_t zd_pageset_end(const struct zd_pageset *s)
{
	return s->n ? s->r[s->n - 1].first + s->r[s->n - 1].count : 0;
}

bool zd_pageset_equal(const struct zd_pageset *a, const struct zd_pageset *b)
{
	return a->n == b->n && a->pages == b->pages &&
	       (a->n == 0 || memcmp(a->r, b->r, a->n * sizeof(*a->r)) == 0);
}

void zd_pageset_union(struct zd_pageset *out, const struct zd_pageset *a,
		      const struct zd_pageset *b)
{
	zd_pageset_clear(out);
	reserve(out, a->n + b->n);
	size_t i = 0, j = 0;
	while (i < a->n || j < b->n) {
		const struct zd_range *x;
		if (j == b->n || (i < a->n && a->r[i].first <= b->r[j].first))
			x = &a->r[i++];
		else
			x = &b->r[j++];
		push(out, x->first, x->count);
	}
}

/* The ranges a and b share, in order, pushed onto out unless it is NULL;
 * returns how many pages they cover. */
static uint64_t intersect(struct zd_pageset *out, const struct zd_pageset *a,
			  const struct zd_pageset *b)
{
	uint64_t n = 0;
	size_t i = 0, j = 0;
	while (i < a->n && j < b->n) {
		uint64_t a0 = a->r[i].first, a1 = a0 + a->r[i].count;
		uint64_t b0 = b->r[j].first, b1 = b0 + b->r[j].count;
		uint64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
		if (lo < hi) {
			if (out)
				push(out, lo, hi - lo);
			n += hi - lo;
		}
		if (a1 < b1)
			i++;
		else
			j++;
	}
	return n;
}

void zd_pageset_intersect(struct zd_pageset *out, const struct zd_pageset *a,
			  const struct zd_pageset *b)
{
	zd_pageset_clear(out);
	intersect(out, a, b);
}

uint64_t zd_pageset_intersect_count(const struct zd_pageset *a,
				    const struct zd_pageset *b)
{
	return intersect(NULL, a, b);
}

void zd_pageset_subtract(struct zd_pageset *out, const struct zd_pageset *a,
			 const struct zd_pageset *b)
{
	zd_pageset_clear(out);
	size_t j = 0;
	for (size_t i = 0; i < a->n; i++) {
		uint64_t cur = a->r[i].first, end = cur + a->r[i].count;
		while (j < b->n && b->r[j].first + b->r[j].count <= cur)
			j++;
		/* b ranges from j on may cut [cur, end); the last one that
		 * reaches past end stays for the next a range. */
		size_t k = j;
		while (cur < end && k < b->n && b->r[k].first < end) {
			uint64_t b0 = b->r[k].first, b1 = b0 + b->r[k].count;
			if (b0 > cur)
				push(out, cur, b0 - cur);
			if (b1 > cur)
				cur = b1;
			if (b1 <= end)
				k++;
			else
				break;
		}
		if (cur < end)
			push(out, cur, end - cur);
		j = k;
	}
}

void zd_pageset_iter_init(struct zd_pageset_iter *it, const struct zd_pageset *s)
{
	it->s = s;
	it->ri = 0;
	it->off = 0;
}

bool zd_pageset_iter_next(struct zd_pageset_iter *it, uint64_t *pfn)
{
	const struct zd_pageset *s = it->s;
	if (it->ri >= s->n)
		return false;
	*pfn = s->r[it->ri].first + it->off;
	if (++it->off == s->r[it->ri].count) {
		it->ri++;
		it->off = 0;
	}
	return true;
}

void zd_pageset_take_front(struct zd_pageset *out, struct zd_pageset *s, uint64_t max)
{
	zd_pageset_clear(out);
	size_t i = 0;
	while (i < s->n && out->pages < max) {
		uint64_t want = max - out->pages;
		struct zd_range *r = &s->r[i];
		if (r->count <= want) {
			push(out, r->first, r->count);
			i++;
		} else {
			push(out, r->first, want);
			r->first += want;
			r->count -= want;
		}
	}
	if (i) {
		memmove(s->r, s->r + i, (s->n - i) * sizeof(*s->r));
		s->n -= i;
	}
	s->pages -= out->pages;
}

bool zd_pageset_iter_take(struct zd_pageset_iter *it, struct zd_pageset *out, uint64_t max)
{
	const struct zd_pageset *s = it->s;
	zd_pageset_clear(out);
	while (it->ri < s->n && out->pages < max) {
		const struct zd_range *r = &s->r[it->ri];
		uint64_t left = r->count - it->off, want = max - out->pages;
		uint64_t take = left < want ? left : want;
		push(out, r->first + it->off, take);
		it->off += take;
		if (it->off == r->count) {
			it->ri++;
			it->off = 0;
		}
	}
	return out->pages > 0;
}

void zd_pageset_coalesce(struct zd_pageset *out, const struct zd_pageset *s, uint64_t gap)
{
	zd_pageset_clear(out);
	reserve(out, s->n);
	for (size_t i = 0; i < s->n; i++) {
		if (out->n) {
			struct zd_range *l = &out->r[out->n - 1];
			uint64_t end = l->first + l->count;
			if (s->r[i].first - end < gap) {
				uint64_t nend = s->r[i].first + s->r[i].count;
				out->pages += nend - end;
				l->count = nend - l->first;
				continue;
			}
		}
		push(out, s->r[i].first, s->r[i].count);
	}
}
