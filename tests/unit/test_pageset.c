/* SPDX-License-Identifier: MIT */
/*
 * Page sets against the obvious model: a bitmap of N pages. Random sets of
 * 1M pages with runs and scattered pages (the shapes a dirty log has), and
 * every operation compared bit for bit with the model.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "zd/pageset.h"
#include "testlib.h"

#define NPAGES (1u << 20)
#define NWORDS (NPAGES / 64)

static bool bit(const uint64_t *m, uint64_t i) { return m[i / 64] >> (i % 64) & 1; }

/* A random model: some long runs, many single pages, density d/1000. */
static void random_model(uint64_t *m, unsigned density)
{
	memset(m, 0, NWORDS * 8);
	uint64_t n = (uint64_t)NPAGES * density / 1000 / 8;
	for (uint64_t k = 0; k < n; k++) {
		uint64_t first = rnd() % NPAGES, len = rnd() % 4 == 0 ? rnd() % 64 + 1 : 1;
		for (uint64_t i = first; i < first + len && i < NPAGES; i++)
			m[i / 64] |= 1ull << (i % 64);
	}
}

/* Build the set another way: one page at a time in random order (each
 * insert is a memmove, so only for sparse sets), or from shuffled pfns. */
static void set_from_model_slow(struct zd_pageset *s, const uint64_t *m, bool one_by_one)
{
	uint64_t *pfns = malloc(NPAGES * sizeof(*pfns));
	size_t n = 0;
	for (uint64_t i = 0; i < NPAGES; i++)
		if (bit(m, i))
			pfns[n++] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = rnd() % i;
		uint64_t t = pfns[i - 1];
		pfns[i - 1] = pfns[j];
		pfns[j] = t;
	}
	zd_pageset_clear(s);
	if (one_by_one) {
		for (size_t i = 0; i < n; i++)
			zd_pageset_add(s, pfns[i]);
	} else {
		zd_pageset_from_pfns(s, pfns, n);
	}
	free(pfns);
}

static void assert_canonical(const struct zd_pageset *s)
{
	uint64_t pages = 0;
	for (size_t i = 0; i < s->n; i++) {
		assert_true(s->r[i].count > 0);
		if (i)
			assert_true(s->r[i].first > s->r[i - 1].first + s->r[i - 1].count);
		pages += s->r[i].count;
	}
	assert_int_equal(pages, s->pages);
}

static void assert_matches(const struct zd_pageset *s, const uint64_t *m)
{
	assert_canonical(s);
	uint64_t *w = calloc(NWORDS, 8);
	zd_pageset_to_bitmap(s, w, NPAGES, 0);
	assert_memory_equal(w, m, NWORDS * 8);
	assert_true(zd_pageset_end(s) <= NPAGES);
	free(w);
}

static void test_ops_against_model(void **state)
{
	uint64_t *ma = malloc(NWORDS * 8), *mb = malloc(NWORDS * 8), *mx = malloc(NWORDS * 8);
	struct zd_pageset a = ZD_PAGESET_INIT, b = ZD_PAGESET_INIT, out = ZD_PAGESET_INIT,
			  slow = ZD_PAGESET_INIT;
	static const unsigned dens[][2] = { { 5, 5 }, { 50, 300 }, { 900, 100 }, { 0, 500 } };
	for (size_t t = 0; t < sizeof(dens) / sizeof(dens[0]); t++) {
		random_model(ma, dens[t][0]);
		random_model(mb, dens[t][1]);
		zd_pageset_from_bitmap(&a, ma, NPAGES, 0);
		zd_pageset_from_bitmap(&b, mb, NPAGES, 0);
		assert_matches(&a, ma);
		assert_matches(&b, mb);
		set_from_model_slow(&slow, ma, t == 0);
		assert_true(zd_pageset_equal(&slow, &a));

		uint64_t cnt = 0;
		for (size_t i = 0; i < NWORDS; i++) {
			mx[i] = ma[i] | mb[i];
		}
		zd_pageset_union(&out, &a, &b);
		assert_matches(&out, mx);

		for (size_t i = 0; i < NWORDS; i++) {
			mx[i] = ma[i] & mb[i];
			cnt += (uint64_t)__builtin_popcountll(mx[i]);
		}
		zd_pageset_intersect(&out, &a, &b);
		assert_matches(&out, mx);
		assert_int_equal(zd_pageset_intersect_count(&a, &b), cnt);
		assert_int_equal(out.pages, cnt);

		for (size_t i = 0; i < NWORDS; i++)
			mx[i] = ma[i] & ~mb[i];
		zd_pageset_subtract(&out, &a, &b);
		assert_matches(&out, mx);

		for (int k = 0; k < 2000; k++) {
			uint64_t p = rnd() % (NPAGES + 100);
			assert_int_equal(zd_pageset_contains(&a, p), p < NPAGES && bit(ma, p));
			/* a run of pages: inside when every one is (ranges are coalesced) */
			uint64_t n = 1 + rnd() % 40;
			bool all = true;
			for (uint64_t q = p; q < p + n; q++)
				all = all && q < NPAGES && bit(ma, q);
			assert_int_equal(zd_pageset_contains_range(&a, p, n), all);
		}
	}
	zd_pageset_free(&a);
	zd_pageset_free(&b);
	zd_pageset_free(&out);
	zd_pageset_free(&slow);
	free(ma);
	free(mb);
	free(mx);
}

static void test_bitmap_base_and_partial_words(void **state)
{
	struct zd_pageset s = ZD_PAGESET_INIT, t = ZD_PAGESET_INIT;
	uint64_t w[3] = { ~0ull, 0x8000000000000001ull, ~0ull };
	/* 130 bits: the last word is cut after bit 1 */
	zd_pageset_from_bitmap(&s, w, 130, 640);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.r[0].first, 640);
	assert_int_equal(s.r[0].count, 65);
	assert_int_equal(s.r[1].first, 640 + 127);
	assert_int_equal(s.r[1].count, 3);
	uint64_t back[3];
	zd_pageset_to_bitmap(&s, back, 130, 640);
	assert_int_equal(back[0], ~0ull);
	assert_int_equal(back[1], 0x8000000000000001ull);
	assert_int_equal(back[2], 3);
	/* a window that cuts ranges on both sides */
	zd_pageset_to_bitmap(&s, back, 64, 700);
	assert_int_equal(back[0], 0x1full);
	zd_pageset_from_bitmap(&t, back, 64, 700);
	assert_int_equal(t.pages, 5);
	zd_pageset_free(&s);
	zd_pageset_free(&t);
}

static void test_add_range_any_order(void **state)
{
	struct zd_pageset s = ZD_PAGESET_INIT;
	zd_pageset_add_range(&s, 100, 10);
	zd_pageset_add_range(&s, 10, 5);
	zd_pageset_add_range(&s, 50, 1);
	zd_pageset_add_range(&s, 15, 35);	/* joins 10..14, 15..49 and 50 */
	assert_int_equal(s.n, 2);
	assert_int_equal(s.r[0].first, 10);
	assert_int_equal(s.r[0].count, 41);
	zd_pageset_add_range(&s, 0, 200);	/* swallows everything */
	assert_int_equal(s.n, 1);
	assert_int_equal(s.pages, 200);
	zd_pageset_add_range(&s, 5, 0);
	assert_int_equal(s.pages, 200);
	zd_pageset_free(&s);
}

static void test_from_pfns_iter_take_front(void **state)
{
	uint64_t pfns[] = { 9, 3, 4, 5, 9, 100, 2, 101, 7 };
	struct zd_pageset s = ZD_PAGESET_INIT, f = ZD_PAGESET_INIT;
	zd_pageset_from_pfns(&s, pfns, sizeof(pfns) / sizeof(pfns[0]));
	assert_int_equal(s.pages, 8);
	assert_int_equal(s.n, 4);
	struct zd_pageset_iter it;
	uint64_t p, want[] = { 2, 3, 4, 5, 7, 9, 100, 101 }, k = 0;
	zd_pageset_iter_init(&it, &s);
	while (zd_pageset_iter_next(&it, &p))
		assert_int_equal(p, want[k++]);
	assert_int_equal(k, 8);

	zd_pageset_take_front(&f, &s, 3);
	assert_int_equal(f.pages, 3);
	assert_int_equal(f.r[0].first, 2);
	assert_int_equal(s.pages, 5);
	assert_int_equal(s.r[0].first, 5);
	zd_pageset_take_front(&f, &s, 100);
	assert_int_equal(f.pages, 5);
	assert_true(zd_pageset_empty(&s));
	assert_int_equal(zd_pageset_end(&s), 0);
	zd_pageset_free(&s);
	zd_pageset_free(&f);
}

static void test_take_front_covers_set(void **state)
{
	uint64_t *m = malloc(NWORDS * 8);
	random_model(m, 30);
	struct zd_pageset s = ZD_PAGESET_INIT, part = ZD_PAGESET_INIT, all = ZD_PAGESET_INIT,
			  tmp = ZD_PAGESET_INIT;
	zd_pageset_from_bitmap(&s, m, NPAGES, 0);
	uint64_t total = s.pages;
	while (!zd_pageset_empty(&s)) {
		zd_pageset_take_front(&part, &s, 4096);
		assert_true(part.pages == 4096 || zd_pageset_empty(&s));
		assert_int_equal(zd_pageset_intersect_count(&part, &all), 0);
		zd_pageset_union(&tmp, &all, &part);
		zd_pageset_swap(&tmp, &all);
		assert_canonical(&s);
	}
	assert_int_equal(all.pages, total);
	assert_matches(&all, m);

	/* iter_take gives the same chunks and leaves the set alone */
	struct zd_pageset src = ZD_PAGESET_INIT, ref = ZD_PAGESET_INIT;
	zd_pageset_copy(&src, &all);
	zd_pageset_copy(&s, &all);
	struct zd_pageset_iter it;
	zd_pageset_iter_init(&it, &src);
	while (zd_pageset_iter_take(&it, &part, 4096)) {
		zd_pageset_take_front(&ref, &s, 4096);
		assert_true(zd_pageset_equal(&part, &ref));
		assert_canonical(&part);
	}
	assert_true(zd_pageset_empty(&s));
	assert_true(zd_pageset_empty(&part));
	assert_true(zd_pageset_equal(&src, &all));
	zd_pageset_free(&src);
	zd_pageset_free(&ref);
	zd_pageset_free(&s);
	zd_pageset_free(&part);
	zd_pageset_free(&all);
	zd_pageset_free(&tmp);
	free(m);
}

static void test_coalesce(void **state)
{
	struct zd_pageset s = ZD_PAGESET_INIT, c = ZD_PAGESET_INIT;
	zd_pageset_add_range(&s, 0, 2);		/* hole of 3 */
	zd_pageset_add_range(&s, 5, 1);		/* hole of 10 */
	zd_pageset_add_range(&s, 16, 4);
	zd_pageset_coalesce(&c, &s, 4);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.r[0].count, 6);
	assert_int_equal(c.pages, 10);
	zd_pageset_coalesce(&c, &s, 11);
	assert_int_equal(c.n, 1);
	assert_int_equal(c.pages, 20);
	zd_pageset_coalesce(&c, &s, 0);
	assert_true(zd_pageset_equal(&c, &s));
	zd_pageset_free(&s);
	zd_pageset_free(&c);
}

static void test_copy_swap_equal(void **state)
{
	struct zd_pageset a = ZD_PAGESET_INIT, b = ZD_PAGESET_INIT;
	zd_pageset_add_range(&a, 1000, 7);
	zd_pageset_copy(&b, &a);
	assert_true(zd_pageset_equal(&a, &b));
	zd_pageset_add(&b, 2000);
	assert_false(zd_pageset_equal(&a, &b));
	zd_pageset_swap(&a, &b);
	assert_int_equal(a.pages, 8);
	assert_int_equal(b.pages, 7);
	zd_pageset_clear(&a);
	assert_true(zd_pageset_empty(&a));
	zd_pageset_free(&a);
	zd_pageset_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ops_against_model),
		cmocka_unit_test(test_bitmap_base_and_partial_words),
		cmocka_unit_test(test_add_range_any_order),
		cmocka_unit_test(test_from_pfns_iter_take_front),
		cmocka_unit_test(test_take_front_covers_set),
		cmocka_unit_test(test_coalesce),
		cmocka_unit_test(test_copy_swap_equal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
