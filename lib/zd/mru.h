/* SPDX-License-Identifier: MIT */
/*
 * The standby-set policies of zd-mru (lib/mru/): from the pages dirtied
 * in past epochs, predict the pages the next epoch will dirty.
 *
 *   mru  most recently dirtied first (by the last epoch a page was
 *        dirtied; ties by decayed frequency, then lower pfn)
 *   lru  least recently dirtied first — never-dirtied pages, then the
 *        oldest: the opposite of locality, a deliberately poor baseline
 *   lfu  most frequently dirtied over a decaying window (half-life
 *        ZD_MRU_HALF_LIFE epochs)
 *   none the empty set
 *
 * State is two arrays indexed by pfn plus the dirty sets of the last
 * ZD_MRU_HISTORY epochs, so a prediction at 1M pages walks recent epochs
 * (bucketed by epoch) instead of sorting memory.
 */
#ifndef ZD_MRU_H
#define ZD_MRU_H

#include <stdbool.h>
#include <stdint.h>
#include "zd/pageset.h"

#define ZD_MRU_HISTORY 32	/* epochs of dirty sets kept */
#define ZD_MRU_HALF_LIFE 8.0	/* epochs for a page's frequency to halve */

enum zd_mru_policy { ZD_MRU_MRU = 0, ZD_MRU_LRU, ZD_MRU_LFU, ZD_MRU_NONE, ZD_MRU_POLICY_MAX };

int zd_mru_policy_parse(const char *s, enum zd_mru_policy *p);	/* 0 or -1 */

struct zd_mru;

struct zd_mru *zd_mru_new(uint64_t page_count, enum zd_mru_policy policy);
void zd_mru_free(struct zd_mru *m);
/* The pages dirtied in epoch (epochs increase; pfns < page_count). */
void zd_mru_observe(struct zd_mru *m, uint64_t epoch, const struct zd_pageset *dirty);
/* The standby set for the epoch after the last one observed: at most
 * budget pages. */
void zd_mru_predict(struct zd_mru *m, uint64_t budget, struct zd_pageset *out);

/* Budget: a page count, or a percentage of the last epoch's dirty count. */
struct zd_mru_budget {
	uint64_t pages;
	double percent;		/* used when > 0 */
};
#define ZD_MRU_DEFAULT_BUDGET "200%"
int zd_mru_budget_parse(const char *s, struct zd_mru_budget *b);	/* 0 or -1 */
uint64_t zd_mru_budget_pages(const struct zd_mru_budget *b, uint64_t last_dirty);

/* The zd-mru stage (lib/mru/stage.c): copy the stream from in_fd to
 * out_fd unchanged, and after each epoch add STAT "mru" (how the standby
 * set predicted for it did) and STANDBY for the next epoch, which also
 * goes to the tracker's feedback socket when the HEADER names one.
 * Returns the exit code; prints its own diagnostics. */
struct zd_mru_stage_opts {
	enum zd_mru_policy policy;
	struct zd_mru_budget budget;
	bool json;
	int in_fd, out_fd;
};
int zd_mru_stage_run(const struct zd_mru_stage_opts *o);

#endif
