/* SPDX-License-Identifier: MIT */
/*
 * Standby policies on small stories whose right answer is known, then one
 * at 1M pages against a brute-force model of "most recently dirtied".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "zd/mru.h"

static void set_of(struct zd_pageset *s, const uint64_t *pfns, size_t n)
{
	uint64_t *copy = malloc((n ? n : 1) * sizeof(*copy));

	memcpy(copy, pfns, n * sizeof(*copy));
	zd_pageset_clear(s);
	zd_pageset_from_pfns(s, copy, n);
	free(copy);
}

static bool has(const struct zd_pageset *s, uint64_t pfn)
{
	return zd_pageset_contains(s, pfn);
}

/* Epoch 1 dirties 10..19, epoch 2 dirties 20..24 and 10..11 again. */
static struct zd_mru *story(enum zd_mru_policy p)
{
	struct zd_mru *m = zd_mru_new(100, p);
	struct zd_pageset s = ZD_PAGESET_INIT;
	uint64_t e1[] = { 10, 11, 12, 13, 14, 15, 16, 17, 18, 19 };
	uint64_t e2[] = { 20, 21, 22, 23, 24, 10, 11 };

	set_of(&s, e1, 10);
	zd_mru_observe(m, 1, &s);
	set_of(&s, e2, 7);
	zd_mru_observe(m, 2, &s);
	zd_pageset_free(&s);
	return m;
}

static void test_mru(void **state)
{
	struct zd_mru *m = story(ZD_MRU_MRU);
	struct zd_pageset out = ZD_PAGESET_INIT;

	/* Budget 7: exactly the last epoch's pages. */
	zd_mru_predict(m, 7, &out);
	assert_int_equal(zd_pageset_count(&out), 7);
	for (uint64_t p = 20; p < 25; p++)
		assert_true(has(&out, p));
	assert_true(has(&out, 10) && has(&out, 11));
	/* Budget 3 within the last epoch: 10 and 11 were dirtied twice, so
	 * they win the tie; then the lowest pfn. */
	zd_mru_predict(m, 3, &out);
	assert_int_equal(zd_pageset_count(&out), 3);
	assert_true(has(&out, 10) && has(&out, 11) && has(&out, 20));
	/* Budget 9: the last epoch, then two of epoch 1's others (12, 13). */
	zd_mru_predict(m, 9, &out);
	assert_int_equal(zd_pageset_count(&out), 9);
	assert_true(has(&out, 12) && has(&out, 13) && !has(&out, 14));
	/* More than was ever dirtied: all 15, nothing invented. */
	zd_mru_predict(m, 50, &out);
	assert_int_equal(zd_pageset_count(&out), 15);
	zd_pageset_free(&out);
	zd_mru_free(m);
}

static void test_lru(void **state)
{
	struct zd_mru *m = story(ZD_MRU_LRU);
	struct zd_pageset out = ZD_PAGESET_INIT;

	/* Never-dirtied pages first, lowest pfn first. */
	zd_mru_predict(m, 5, &out);
	assert_int_equal(zd_pageset_count(&out), 5);
	for (uint64_t p = 0; p < 5; p++)
		assert_true(has(&out, p));
	/* 85 never-dirtied pages, then the oldest: epoch 1's 12..19. */
	zd_mru_predict(m, 90, &out);
	assert_int_equal(zd_pageset_count(&out), 90);
	assert_true(has(&out, 12) && has(&out, 16) && !has(&out, 17));
	assert_true(!has(&out, 10) && !has(&out, 20));
	zd_pageset_free(&out);
	zd_mru_free(m);
}

/* 50 and 60 dirtied in each of epochs 1..6, 70 once, in epoch 7. */
static struct zd_mru *often_then_once(enum zd_mru_policy p)
{
	struct zd_mru *m = zd_mru_new(100, p);
	struct zd_pageset s = ZD_PAGESET_INIT;
	uint64_t often[] = { 50, 60 }, once[] = { 70 };

	for (uint64_t e = 1; e <= 6; e++) {
		set_of(&s, often, 2);
		zd_mru_observe(m, e, &s);
	}
	set_of(&s, once, 1);
	zd_mru_observe(m, 7, &s);
	zd_pageset_free(&s);
	return m;
}

static void test_lfu(void **state)
{
	struct zd_mru *m = often_then_once(ZD_MRU_LFU);
	struct zd_pageset out = ZD_PAGESET_INIT;

	zd_mru_predict(m, 2, &out);
	assert_true(has(&out, 50) && has(&out, 60) && !has(&out, 70));
	zd_mru_free(m);

	/* Same story, mru: recency wins. */
	m = often_then_once(ZD_MRU_MRU);
	zd_mru_predict(m, 2, &out);
	assert_true(has(&out, 70) && has(&out, 50) && !has(&out, 60));
	zd_pageset_free(&out);
	zd_mru_free(m);
}

static void test_none(void **state)
{
	struct zd_mru *m = story(ZD_MRU_NONE);
	struct zd_pageset out = ZD_PAGESET_INIT;

	zd_mru_predict(m, 100, &out);
	assert_true(zd_pageset_empty(&out));
	zd_pageset_free(&out);
	zd_mru_free(m);
}

static void test_budget_parse(void **state)
{
	struct zd_mru_budget b;
	enum zd_mru_policy p;

	assert_int_equal(zd_mru_budget_parse("25%", &b), 0);
	assert_int_equal(zd_mru_budget_pages(&b, 1000), 250);
	assert_int_equal(zd_mru_budget_parse("200%", &b), 0);
	assert_int_equal(zd_mru_budget_pages(&b, 1024), 2048);
	assert_int_equal(zd_mru_budget_parse("1024", &b), 0);
	assert_int_equal(zd_mru_budget_pages(&b, 7), 1024);
	assert_int_equal(zd_mru_budget_parse("1K", &b), 0);
	assert_int_equal(zd_mru_budget_pages(&b, 7), 1024);
	assert_int_equal(zd_mru_budget_parse("0%", &b), -1);
	assert_int_equal(zd_mru_budget_parse("%", &b), -1);
	assert_int_equal(zd_mru_budget_parse("-5", &b), -1);
	assert_int_equal(zd_mru_budget_parse("lots", &b), -1);
	assert_int_equal(zd_mru_budget_parse("12.5%%", &b), -1);
	assert_int_equal(zd_mru_policy_parse("lfu", &p), 0);
	assert_int_equal(p, ZD_MRU_LFU);
	assert_int_equal(zd_mru_policy_parse("MRU", &p), -1);
}

/* 1M pages, 200 epochs of scattered writes: mru's pick equals a brute
 * force ranking by (last epoch, frequency, pfn) for budgets that cut a
 * bucket in the middle. */
static void test_mru_large(void **state)
{
	const uint64_t n = 1u << 20;
	struct zd_mru *m = zd_mru_new(n, ZD_MRU_MRU);
	struct zd_pageset s = ZD_PAGESET_INIT, out = ZD_PAGESET_INIT;
	uint32_t *last = calloc(n, sizeof(*last));
	uint64_t *pf = malloc(3000 * sizeof(*pf)), rng = 42;

	for (uint32_t e = 1; e <= 200; e++) {
		for (int i = 0; i < 3000; i++) {
			rng = rng * 6364136223846793005ull + 1442695040888963407ull;
			/* half from a small hot area, half anywhere */
			pf[i] = i % 2 ? (rng >> 20) % 4096 : (rng >> 20) % n;
		}
		set_of(&s, pf, 3000);
		zd_mru_observe(m, e, &s);
		struct zd_pageset_iter it;
		uint64_t p;
		zd_pageset_iter_init(&it, &s);
		while (zd_pageset_iter_next(&it, &p))
			last[p] = e;
	}
	/* Pages last dirtied in epoch 200 must all be in a budget of their
	 * count; none of epoch 199's-only. */
	uint64_t in_last = zd_pageset_count(&s);
	zd_mru_predict(m, in_last, &out);
	assert_int_equal(zd_pageset_count(&out), in_last);
	assert_true(zd_pageset_equal(&out, &s));
	/* A bigger budget: everything from epoch 200 and the rest all from 199. */
	zd_mru_predict(m, in_last + 1000, &out);
	assert_int_equal(zd_pageset_count(&out), in_last + 1000);
	struct zd_pageset_iter it;
	uint64_t p;
	zd_pageset_iter_init(&it, &out);
	while (zd_pageset_iter_next(&it, &p))
		assert_true(last[p] >= 199);
	zd_pageset_free(&s);
	zd_pageset_free(&out);
	free(last);
	free(pf);
	zd_mru_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mru),
		cmocka_unit_test(test_lru),
		cmocka_unit_test(test_lfu),
		cmocka_unit_test(test_none),
		cmocka_unit_test(test_budget_parse),
		cmocka_unit_test(test_mru_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
