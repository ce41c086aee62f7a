/* SPDX-License-Identifier: MIT */
/* Inside lib/wire: the sender's shadow cache of pages sent, and delta
 * pages as their changed words. */
#ifndef ZD_WIRE_INT_H
#define ZD_WIRE_INT_H

#include <stddef.h>
#include <stdint.h>

/* pfn -> the page contents last sent, at most `slots` pages, the least
 * recently sent evicted first. Open addressing (linear probing, backward
 * shift deletion) over a power-of-two table at most half full; an
 * intrusive doubly linked LRU list of slot numbers. */
struct zd_shadow {
	uint32_t page_size;
	uint32_t slots, used;
	uint8_t *pages;		/* slots * page_size, mmap'd */
	size_t bytes;
	uint64_t *pfn;		/* per slot */
	uint32_t *prev, *next;	/* LRU list, head = most recent */
	uint32_t head, tail;
	uint32_t *table;	/* slot + 1, 0 = empty */
	uint64_t mask;
	uint64_t evictions;
};

#define ZD_SHADOW_NONE UINT32_MAX

/* 0, or -1 with errno when the cache cannot be mapped (c is left empty
 * but for bytes, what it wanted). */
int zd__shadow_init(struct zd_shadow *c, uint32_t page_size, uint64_t budget);
void zd__shadow_free(struct zd_shadow *c);
void zd__shadow_clear(struct zd_shadow *c);
/* The shadow of pfn (marked most recent), or NULL. */
uint8_t *zd__shadow_get(struct zd_shadow *c, uint64_t pfn);
/* A slot for pfn, evicting the least recent if full; NULL if the budget
 * holds no page. The caller fills it. */
uint8_t *zd__shadow_put(struct zd_shadow *c, uint64_t pfn);

/* A delta page as its changed words (words.c): the mask and words of
 * page against its shadow sh written at out (at most P/64 + P bytes), sh
 * updated to page; returns the bytes written. Unpack: page = base with
 * the words at in applied; returns the bytes used, 0 if len is short. */
size_t zd__words_pack(uint8_t *out, uint8_t *sh, const uint8_t *page, size_t ps);
size_t zd__words_unpack(uint8_t *page, const uint8_t *base, const uint8_t *in, size_t len, size_t ps);
/* zd__words_pack's path for CPUs without AVX2 (tests hold the two together). */
size_t zd__words_pack_scalar(uint8_t *out, uint8_t *sh, const uint8_t *page, size_t ps);

#endif
