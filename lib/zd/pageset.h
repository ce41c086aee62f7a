/* SPDX-License-Identifier: MIT */
/*
 * A set of guest page frame numbers, held as a sorted array of disjoint,
 * non-adjacent ranges. Dirty sets of a VM are mostly runs (a guest writes
 * neighbouring pages), so ranges stay small; every set operation is one
 * linear merge, which stays fast at 1M pages.
 *
 * On the wire (zd-stream(5)) a set is written as ranges or as a bitmap,
 * whichever is smaller; that choice lives in the codec, not here.
 */
#ifndef ZD_PAGESET_H
#define ZD_PAGESET_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct zd_range {
	uint64_t first;
	uint64_t count;
};

struct zd_pageset {
	struct zd_range *r;	/* sorted, disjoint, never adjacent */
	size_t n;		/* ranges in use */
	size_t cap;
	uint64_t pages;		/* total pages, kept up to date */
};

#define ZD_PAGESET_INIT { NULL, 0, 0, 0 }

void zd_pageset_init(struct zd_pageset *s);
void zd_pageset_free(struct zd_pageset *s);
void zd_pageset_clear(struct zd_pageset *s);
int zd_pageset_copy(struct zd_pageset *dst, const struct zd_pageset *src);
void zd_pageset_swap(struct zd_pageset *a, struct zd_pageset *b);

/* Add a range; cheap when ranges arrive in increasing order (append or
 * extend the last range), correct in any order. */
void zd_pageset_add_range(struct zd_pageset *s, uint64_t first, uint64_t count);
static inline void zd_pageset_add(struct zd_pageset *s, uint64_t pfn)
{
	zd_pageset_add_range(s, pfn, 1);
}
/* Build from an unsorted array of pfns (duplicates allowed); sorts it. */
void zd_pageset_from_pfns(struct zd_pageset *s, uint64_t *pfns, size_t n);
/* Build from / write to a little-endian bitmap of nbits bits, bit i = pfn
 * base + i (the layout of KVM_GET_DIRTY_LOG and Xen's log-dirty bitmap). */
void zd_pageset_from_bitmap(struct zd_pageset *s, const uint64_t *words,
			    uint64_t nbits, uint64_t base);
void zd_pageset_to_bitmap(const struct zd_pageset *s, uint64_t *words,
			  uint64_t nbits, uint64_t base);

bool zd_pageset_contains(const struct zd_pageset *s, uint64_t pfn);
/* Is [first, first + count) inside one range of s? */
bool zd_pageset_contains_range(const struct zd_pageset *s, uint64_t first, uint64_t count);
static inline uint64_t zd_pageset_count(const struct zd_pageset *s) { return s->pages; }
static inline bool zd_pageset_empty(const struct zd_pageset *s) { return s->pages == 0; }
/* One past the highest pfn in the set, 0 for an empty set. */
uint64_t zd_pageset_end(const struct zd_pageset *s);
bool zd_pageset_equal(const struct zd_pageset *a, const struct zd_pageset *b);

/* out = a op b; out may not alias a or b. */
void zd_pageset_union(struct zd_pageset *out, const struct zd_pageset *a,
		      const struct zd_pageset *b);
void zd_pageset_intersect(struct zd_pageset *out, const struct zd_pageset *a,
			  const struct zd_pageset *b);
void zd_pageset_subtract(struct zd_pageset *out, const struct zd_pageset *a,
			 const struct zd_pageset *b);
/* Count of a ∩ b without building it. */
uint64_t zd_pageset_intersect_count(const struct zd_pageset *a,
				    const struct zd_pageset *b);

/* Iterate every pfn: for (it = first; ok; next) style. */
struct zd_pageset_iter {
	const struct zd_pageset *s;
	size_t ri;
	uint64_t off;
};
void zd_pageset_iter_init(struct zd_pageset_iter *it, const struct zd_pageset *s);
bool zd_pageset_iter_next(struct zd_pageset_iter *it, uint64_t *pfn);

/* Split: take at most max pages from the front of s into out (for
 * splitting a big dirty set into PAGES records of bounded size). */
void zd_pageset_take_front(struct zd_pageset *out, struct zd_pageset *s, uint64_t max);
/* The same split without changing the set: out = the next at most max
 * pages from the iterator's position, which moves past them. O(taken),
 * where take_front moves the rest of the array each time. Returns false
 * (out empty) when the set is exhausted. */
bool zd_pageset_iter_take(struct zd_pageset_iter *it, struct zd_pageset *out, uint64_t max);

/* Coalesce: ranges closer than gap pages are merged (the gap pages are
 * added). Used to arm write-protection with few ioctl calls. */
void zd_pageset_coalesce(struct zd_pageset *out, const struct zd_pageset *s, uint64_t gap);

#endif
