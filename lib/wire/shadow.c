/* SPDX-License-Identifier: MIT */
/*
 * The sender's shadow cache for delta compression: the contents of the
 * pages sent last, so the next send of a pfn can go as an XOR against what
 * the receiver holds. Bounded by --delta-cache; least recently sent out.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "zd/util.h"
#include "wire_int.h"

/* pfns cluster (hot windows, ranges): mix them before masking. */
static uint64_t slot_hash(uint64_t pfn)
{
	pfn ^= pfn >> 33;
	pfn *= 0xff51afd7ed558ccdull;
	pfn ^= pfn >> 33;
	return pfn;
}

int zd__shadow_init(struct zd_shadow *c, uint32_t page_size, uint64_t budget)
{
	uint64_t slots = page_size ? budget / page_size : 0;
	uint64_t tsize = 2;

	memset(c, 0, sizeof(*c));
	if (slots > UINT32_MAX / 4)
		slots = UINT32_MAX / 4;
	c->page_size = page_size;
	c->slots = (uint32_t)slots;
	c->head = c->tail = ZD_SHADOW_NONE;
	if (!slots)
		return 0;
	while (tsize < 2 * slots)
		tsize *= 2;
	c->mask = tsize - 1;
	/* pages are touched only as slots fill: a large budget costs
	 * address space, not memory, until it is used. Huge pages: a slot
	 * taken for the first time would otherwise cost a page fault per
	 * page sent, the dearest part of a miss in a VM. */
	c->bytes = (size_t)slots * page_size;
	c->pages = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c->pages == MAP_FAILED) {
		size_t bytes = c->bytes;

		memset(c, 0, sizeof(*c));
		c->bytes = bytes;
		return -1;
	}
	madvise(c->pages, c->bytes, MADV_HUGEPAGE);
	c->pfn = zd_xmalloc(slots * sizeof(*c->pfn));
	c->prev = zd_xmalloc(slots * sizeof(*c->prev));
	c->next = zd_xmalloc(slots * sizeof(*c->next));
	c->table = zd_xcalloc(tsize, sizeof(*c->table));
	return 0;
}

void zd__shadow_free(struct zd_shadow *c)
{
	if (c->pages)
		munmap(c->pages, c->bytes);
	free(c->pfn);
	free(c->prev);
	free(c->next);
	free(c->table);
	memset(c, 0, sizeof(*c));
}

void zd__shadow_clear(struct zd_shadow *c)
{
	if (c->table)
		memset(c->table, 0, (c->mask + 1) * sizeof(*c->table));
	c->used = 0;
	c->head = c->tail = ZD_SHADOW_NONE;
}

static uint64_t find(const struct zd_shadow *c, uint64_t pfn)
{
	uint64_t i = slot_hash(pfn) & c->mask;

	while (c->table[i] && c->pfn[c->table[i] - 1] != pfn)
		i = (i + 1) & c->mask;
	return i;
}

static void unlink_slot(struct zd_shadow *c, uint32_t s)
{
	if (c->prev[s] != ZD_SHADOW_NONE)
		c->next[c->prev[s]] = c->next[s];
	else
		c->head = c->next[s];
	if (c->next[s] != ZD_SHADOW_NONE)
		c->prev[c->next[s]] = c->prev[s];
	else
		c->tail = c->prev[s];
}

static void push_front(struct zd_shadow *c, uint32_t s)
{
	c->prev[s] = ZD_SHADOW_NONE;
	c->next[s] = c->head;
	if (c->head != ZD_SHADOW_NONE)
		c->prev[c->head] = s;
	c->head = s;
	if (c->tail == ZD_SHADOW_NONE)
		c->tail = s;
}

/* Backward shift: keeps every probe chain unbroken without tombstones. */
static void table_delete(struct zd_shadow *c, uint64_t i)
{
	uint64_t j = i;

	c->table[i] = 0;
	for (;;) {
		j = (j + 1) & c->mask;
		if (!c->table[j])
			return;
		uint64_t home = slot_hash(c->pfn[c->table[j] - 1]) & c->mask;
		/* can the entry at j move to the hole at i? only if its home
		 * is not cyclically in (i, j] */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (stays)
			continue;
		c->table[i] = c->table[j];
		c->table[j] = 0;
		i = j;
	}
}

uint8_t *zd__shadow_get(struct zd_shadow *c, uint64_t pfn)
{
	if (!c->used)
		return NULL;
	uint64_t i = find(c, pfn);
	if (!c->table[i])
		return NULL;
	uint32_t s = c->table[i] - 1;
	if (c->head != s) {
		unlink_slot(c, s);
		push_front(c, s);
	}
	return c->pages + (size_t)s * c->page_size;
}

uint8_t *zd__shadow_put(struct zd_shadow *c, uint64_t pfn)
{
	uint32_t s;

	if (!c->slots)
		return NULL;
	if (c->used < c->slots) {
		s = c->used++;
	} else {
		s = c->tail;
		unlink_slot(c, s);
		table_delete(c, find(c, c->pfn[s]));
		c->evictions++;
	}
	c->pfn[s] = pfn;
	c->table[find(c, pfn)] = s + 1;
	push_front(c, s);
	return c->pages + (size_t)s * c->page_size;
}
