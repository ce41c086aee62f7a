/* SPDX-License-Identifier: MIT */
/* Standby-set policies (zd/mru.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "zd/mru.h"
#include "zd/util.h"

struct zd_mru {
	uint64_t n;
	enum zd_mru_policy policy;
	uint32_t cur;			/* epochs observed; epoch index of the last */
	uint32_t *last;			/* index of the last epoch a page was dirtied, 0 = never */
	float *score;			/* decayed dirty count as of last[pfn] */
	uint32_t *stamp;		/* de-duplication across the history */
	uint32_t stamp_gen;
	struct zd_pageset hist[ZD_MRU_HISTORY];	/* dirty set of index i at i % HISTORY */
	double decay[ZD_MRU_HISTORY + 1];	/* decay^k */
	uint64_t *pick;			/* selected pfns, grows */
	size_t npick, cap;
};

static const char *const names[] = {
	[ZD_MRU_MRU] = "mru", [ZD_MRU_LRU] = "lru", [ZD_MRU_LFU] = "lfu", [ZD_MRU_NONE] = "none",
};
_Static_assert(ZD_ARRAY_SIZE(names) == ZD_MRU_POLICY_MAX, "a name per policy");

int zd_mru_policy_parse(const char *s, enum zd_mru_policy *p)
{
	for (int i = 0; i < ZD_MRU_POLICY_MAX; i++)
		if (!strcmp(s, names[i])) {
			*p = (enum zd_mru_policy)i;
			return 0;
		}
	return -1;
}

int zd_mru_budget_parse(const char *s, struct zd_mru_budget *b)
{
	size_t len = strlen(s);

	memset(b, 0, sizeof(*b));
	if (len > 1 && s[len - 1] == '%') {
		char num[64];
		double d;

		if (len - 1 >= sizeof(num))
			return -1;
		memcpy(num, s, len - 1);
		num[len - 1] = '\0';
		if (zd_parse_double(num, &d) < 0 || !(d > 0 && d <= 10000))
			return -1;
		b->percent = d;
		return 0;
	}
	return zd_parse_size(s, &b->pages);
}

uint64_t zd_mru_budget_pages(const struct zd_mru_budget *b, uint64_t last_dirty)
{
	if (b->percent > 0)
		return (uint64_t)llround(b->percent / 100.0 * (double)last_dirty);
	return b->pages;
}

struct zd_mru *zd_mru_new(uint64_t page_count, enum zd_mru_policy policy)
{
	struct zd_mru *m = zd_xcalloc(1, sizeof(*m));

	m->n = page_count;
	m->policy = policy;
	m->last = zd_xcalloc(page_count ? page_count : 1, sizeof(*m->last));
	m->score = zd_xcalloc(page_count ? page_count : 1, sizeof(*m->score));
	m->stamp = zd_xcalloc(page_count ? page_count : 1, sizeof(*m->stamp));
	for (int i = 0; i < ZD_MRU_HISTORY; i++)
		zd_pageset_init(&m->hist[i]);
	for (int k = 0; k <= ZD_MRU_HISTORY; k++)
		m->decay[k] = pow(0.5, k / ZD_MRU_HALF_LIFE);
	return m;
}

void zd_mru_free(struct zd_mru *m)
{
	if (!m)
		return;
	for (int i = 0; i < ZD_MRU_HISTORY; i++)
		zd_pageset_free(&m->hist[i]);
	free(m->last);
	free(m->score);
	free(m->stamp);
	free(m->pick);
	free(m);
}

/* A page's decayed frequency as of the last epoch observed. */
static double freq(const struct zd_mru *m, uint64_t pfn)
{
	uint32_t age = m->cur - m->last[pfn];

	if (!m->last[pfn])
		return 0;
	return m->score[pfn] * (age <= ZD_MRU_HISTORY ? m->decay[age]
				: pow(0.5, age / ZD_MRU_HALF_LIFE));
}

void zd_mru_observe(struct zd_mru *m, uint64_t epoch, const struct zd_pageset *dirty)
{
	struct zd_pageset_iter it;
	uint64_t pfn;

	(void)epoch;	/* only the order matters; epochs may skip numbers */
	m->cur++;
	zd_pageset_iter_init(&it, dirty);
	while (zd_pageset_iter_next(&it, &pfn)) {
		if (pfn >= m->n)
			continue;
		/* freq() decays to cur, the epoch being added. */
		m->score[pfn] = (float)(freq(m, pfn) + 1.0);
		m->last[pfn] = m->cur;
	}
	zd_pageset_copy(&m->hist[m->cur % ZD_MRU_HISTORY], dirty);
}

static void pick(struct zd_mru *m, uint64_t pfn)
{
	if (m->npick == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 1024;
		m->pick = zd_xrealloc(m->pick, m->cap * sizeof(*m->pick));
	}
	m->pick[m->npick++] = pfn;
}

struct cand {
	double f;
	uint64_t pfn;
};

static int by_freq(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;

	if (x->f != y->f)
		return x->f > y->f ? -1 : 1;
	return x->pfn < y->pfn ? -1 : x->pfn > y->pfn;
}

/* Take the best `want` of cands by frequency (all if they fit). */
static void pick_best(struct zd_mru *m, struct cand *c, size_t n, uint64_t want)
{
	if (n > want)
		qsort(c, n, sizeof(*c), by_freq);
	for (size_t i = 0; i < n && i < want; i++)
		pick(m, c[i].pfn);
}

/* mru: walk back epoch by epoch; the pages whose last dirty epoch is e
 * form bucket e. Whole buckets while they fit, the best of the last one
 * by frequency. */
static void predict_mru(struct zd_mru *m, uint64_t budget)
{
	struct cand *c = NULL;
	size_t cap = 0;

	for (uint32_t back = 0; back < ZD_MRU_HISTORY && back < m->cur && m->npick < budget; back++) {
		uint32_t e = m->cur - back;
		struct zd_pageset_iter it;
		uint64_t pfn;
		size_t n = 0;

		zd_pageset_iter_init(&it, &m->hist[e % ZD_MRU_HISTORY]);
		while (zd_pageset_iter_next(&it, &pfn)) {
			if (pfn >= m->n || m->last[pfn] != e)
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 1024;
				c = zd_xrealloc(c, cap * sizeof(*c));
			}
			c[n++] = (struct cand){ freq(m, pfn), pfn };
		}
		pick_best(m, c, n, budget - m->npick);
	}
	free(c);
}

/* lfu: every page dirtied within the history, by decayed frequency. */
static void predict_lfu(struct zd_mru *m, uint64_t budget)
{
	struct cand *c = NULL;
	size_t n = 0, cap = 0;

	if (++m->stamp_gen == 0) {
		memset(m->stamp, 0, m->n * sizeof(*m->stamp));
		m->stamp_gen = 1;
	}
	for (uint32_t back = 0; back < ZD_MRU_HISTORY && back < m->cur; back++) {
		struct zd_pageset_iter it;
		uint64_t pfn;

		zd_pageset_iter_init(&it, &m->hist[(m->cur - back) % ZD_MRU_HISTORY]);
		while (zd_pageset_iter_next(&it, &pfn)) {
			if (pfn >= m->n || m->stamp[pfn] == m->stamp_gen)
				continue;
			m->stamp[pfn] = m->stamp_gen;
			if (n == cap) {
				cap = cap ? 2 * cap : 1024;
				c = zd_xrealloc(c, cap * sizeof(*c));
			}
			c[n++] = (struct cand){ freq(m, pfn), pfn };
		}
	}
	pick_best(m, c, n, budget);
	free(c);
}

/* lru: oldest first. One pass counts pages per age class (never, older
 * than the history, then each epoch of the history), a second takes the
 * classes below the one the budget ends in and that one in pfn order. */
static uint32_t age_class(const struct zd_mru *m, uint64_t pfn)
{
	uint32_t l = m->last[pfn];
	uint32_t oldest = m->cur >= ZD_MRU_HISTORY ? m->cur - ZD_MRU_HISTORY + 1 : 1;

	if (l == 0)
		return 0;
	if (l < oldest)
		return 1;
	return 2 + (l - oldest);
}

static void predict_lru(struct zd_mru *m, uint64_t budget)
{
	uint64_t count[ZD_MRU_HISTORY + 2] = { 0 };
	uint64_t below = 0, quota;
	uint32_t cls;

	for (uint64_t pfn = 0; pfn < m->n; pfn++)
		count[age_class(m, pfn)]++;
	for (cls = 0; cls < ZD_MRU_HISTORY + 2 && below + count[cls] <= budget; cls++)
		below += count[cls];
	quota = budget - below;
	for (uint64_t pfn = 0; pfn < m->n && m->npick < budget; pfn++) {
		uint32_t a = age_class(m, pfn);

		if (a < cls)
			pick(m, pfn);
		else if (a == cls && quota) {
			pick(m, pfn);
			quota--;
		}
	}
}

void zd_mru_predict(struct zd_mru *m, uint64_t budget, struct zd_pageset *out)
{
	zd_pageset_clear(out);
	m->npick = 0;
	if (budget > m->n)
		budget = m->n;
	switch (m->policy) {
	case ZD_MRU_MRU:
		predict_mru(m, budget);
		break;
	case ZD_MRU_LFU:
		predict_lfu(m, budget);
		break;
	case ZD_MRU_LRU:
		predict_lru(m, budget);
		break;
	default:
		break;
	}
	if (m->npick)
		zd_pageset_from_pfns(out, m->pick, m->npick);
}
