/* SPDX-License-Identifier: MIT */
/*
 * The synth: target as a VM: the story of a few epochs — run, pause,
 * harvest, re-arm, read pages — checked against the generator's pure
 * functions and against an image the test keeps itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "target/synth.h"
#include "zd/target.h"
#include "zd/util.h"

#define SPEC "synth:pages=8192,dirty=300,hot=0.75,seed=7,write=4,pagesize=1024"

static void test_parse_defaults(void **state)
{
	struct zd_synth_params p;
	char msg[256];

	assert_int_equal(zd_synth_parse("pages=4096,dirty=1024", &p, msg, sizeof(msg)), 0);
	assert_int_equal(p.pages, 4096);
	assert_int_equal(p.dirty, 1024);
	assert_true(p.hot == 0.8);
	assert_int_equal(p.seed, 1);
	assert_int_equal(p.write, 8);
	assert_int_equal(p.hotset, 2048);
	assert_int_equal(p.page_size, 4096);
	/* hotset is capped to memory */
	assert_int_equal(zd_synth_parse("pages=100,dirty=80", &p, msg, sizeof(msg)), 0);
	assert_int_equal(p.hotset, 100);
}

static void expect_bad(const char *args, const char *needle)
{
	struct zd_synth_params p;
	char msg[256] = "";

	assert_int_equal(zd_synth_parse(args, &p, msg, sizeof(msg)), -1);
	if (!strstr(msg, needle))
		fail_msg("'%s': message '%s' lacks '%s'", args, msg, needle);
}

static void test_parse_errors(void **state)
{
	expect_bad("pages=10,dirty=1,colour=red", "unknown key 'colour'");
	expect_bad("dirty=1", "missing pages");
	expect_bad("pages=10", "missing dirty");
	expect_bad("pages=10,dirty=11", "more than pages");
	expect_bad("pages=10,dirty=1,hot=1.5", "hot=1.5");
	expect_bad("pages=10,dirty=1,hot=-0.1", "hot=-0.1");
	expect_bad("pages=10,dirty=1,hot=x", "hot=x");
	expect_bad("pages=0,dirty=0", "pages=0");
	expect_bad("pages=10x,dirty=1", "pages=10x");
	expect_bad("pages=10,dirty=1,pagesize=1000", "pagesize=1000");
	expect_bad("pages=10,dirty=1,seed", "not key=value");
	expect_bad("pages=10,dirty=1,write=0", "write=0");
	expect_bad("pages=10,dirty=1,protect_fail=-1", "protect_fail=-1");
}

/* Replayed pages need no guard; protect_fail= asks for the stand-in guard,
 * whose Nth protect fails and says which. */
static void test_protect_fail(void **state)
{
	struct zd_pageset set = ZD_PAGESET_INIT;
	struct zd_target *t;
	char msg[256];

	assert_int_equal(zd_target_open(&t, SPEC, msg, sizeof(msg)), 0);
	assert_true(t->replays_pages);
	zd_target_close(t);

	assert_int_equal(zd_target_open(&t, SPEC ",protect_fail=2", msg, sizeof(msg)), 0);
	assert_false(t->replays_pages);
	zd_pageset_add_range(&set, 3, 5);
	assert_int_equal(t->ops->protect(t, &set), 0);
	assert_int_equal(t->ops->protect(t, &set), -1);
	assert_string_equal(t->err, "protect 2 fails (protect_fail=2)");
	assert_int_equal(t->ops->protect(t, &set), 0);
	zd_target_close(t);
	zd_pageset_free(&set);
}

static void test_epoch_pages(void **state)
{
	struct zd_synth_params p;
	char msg[256];
	uint64_t *a, *b;
	uint8_t *seen;

	assert_int_equal(zd_synth_parse("pages=100000,dirty=1000,hot=0.8,seed=3,drift=0", &p,
					msg, sizeof(msg)), 0);
	a = calloc(p.dirty, 8);
	b = calloc(p.dirty, 8);
	seen = calloc(p.pages, 1);
	for (uint64_t e = 1; e <= 5; e++) {
		uint64_t n = zd_synth_epoch_pages(&p, e, a);

		assert_int_equal(n, p.dirty);
		assert_int_equal(zd_synth_epoch_pages(&p, e, b), n);
		assert_memory_equal(a, b, n * 8);	/* deterministic */
		memset(seen, 0, p.pages);
		for (uint64_t i = 0; i < n; i++) {
			assert_true(a[i] < p.pages);
			assert_int_equal(seen[a[i]], 0);	/* distinct */
			seen[a[i]] = 1;
		}
		/* With drift 0 the hot window is one fixed stretch of 2*D
		 * pages; round(H*D) = 800 writes land in it, the 200 others
		 * anywhere (a few of them in it too). */
		uint64_t best = 0;
		for (uint64_t s = 0; s + p.hotset <= p.pages; s += 16) {
			uint64_t c = 0;
			for (uint64_t q = s; q < s + p.hotset; q++)
				c += seen[q];
			best = c > best ? c : best;
		}
		assert_true(best >= 780 && best <= 830);
	}
	/* Different epochs differ. */
	zd_synth_epoch_pages(&p, 1, a);
	zd_synth_epoch_pages(&p, 2, b);
	assert_true(memcmp(a, b, p.dirty * 8) != 0);
	free(a);
	free(b);
	free(seen);
}

static void test_page_contents(void **state)
{
	struct zd_synth_params p;
	char msg[256];
	uint8_t *x, *y, *z;
	size_t nw;
	unsigned diff = 0;

	assert_int_equal(zd_synth_parse("pages=64,dirty=8,write=8", &p, msg, sizeof(msg)), 0);
	nw = p.page_size / 8;
	x = malloc(p.page_size);
	y = malloc(p.page_size);
	z = calloc(1, p.page_size);
	zd_synth_page(&p, 5, 0, x);
	assert_memory_equal(x, z, p.page_size);	/* never written: zero */
	zd_synth_page(&p, 5, 3, x);
	zd_synth_page(&p, 5, 3, y);
	assert_memory_equal(x, y, p.page_size);	/* pure */
	zd_synth_page(&p, 5, 4, y);
	for (size_t i = 0; i < nw; i++)
		diff += memcmp(x + 8 * i, y + 8 * i, 8) != 0;
	/* Two versions of a page differ in a few words: delta-friendly. */
	assert_true(diff >= 1 && diff <= 16);
	zd_synth_page(&p, 6, 3, y);
	diff = 0;
	for (size_t i = 0; i < nw; i++)
		diff += memcmp(x + 8 * i, y + 8 * i, 8) != 0;
	assert_true(diff > nw / 2);	/* different pages differ */
	free(x);
	free(y);
	free(z);
}

/* The test's own copy of the VM's memory, kept from the generator. */
struct model {
	struct zd_synth_params p;
	uint32_t *last;
};

static uint64_t model_sum(const struct model *m)
{
	XXH3_state_t *st = XXH3_createState();
	uint8_t *pg = malloc(m->p.page_size);
	uint64_t h;

	XXH3_64bits_reset(st);
	for (uint64_t pfn = 0; pfn < m->p.pages; pfn++) {
		zd_synth_page(&m->p, pfn, m->last[pfn], pg);
		XXH3_64bits_update(st, pg, m->p.page_size);
	}
	h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	free(pg);
	return h;
}

static void test_target_rounds(void **state)
{
	struct zd_target *t, *att;
	struct zd_pageset dirty = ZD_PAGESET_INIT, want = ZD_PAGESET_INIT;
	struct zd_rec_header hdr = { 0 };
	struct model m;
	char msg[256];
	uint64_t *list, sum;
	uint8_t *buf, *buf2, *pg;

	assert_int_equal(zd_target_open(&t, SPEC, msg, sizeof(msg)), 0);
	assert_int_equal(zd_synth_parse(strchr(SPEC, ':') + 1, &m.p, msg, sizeof(msg)), 0);
	assert_int_equal(t->page_size, 1024);
	assert_int_equal(t->page_count, 8192);
	m.last = calloc(m.p.pages, sizeof(*m.last));
	list = calloc(m.p.dirty, 8);
	buf = malloc(m.p.dirty * m.p.page_size);
	buf2 = malloc(m.p.dirty * m.p.page_size);
	pg = malloc(m.p.page_size);

	/* Memory starts zero: an empty replica matches epoch 0. */
	assert_int_equal(t->ops->memsum(t, &sum), 0);
	assert_true(sum == model_sum(&m));

	hdr.page_size = t->page_size;
	hdr.page_count = t->page_count;
	hdr.target = (char *)SPEC;
	assert_int_equal(zd_target_attach(&att, &hdr, msg, sizeof(msg)), 0);

	for (uint64_t e = 1; e <= 4; e++) {
		uint64_t n = zd_synth_epoch_pages(&m.p, e, list);

		assert_int_equal(t->ops->run_until(t, 0), 0);
		assert_int_equal(t->ops->pause(t, e), 0);
		assert_int_equal(t->ops->harvest(t, &dirty), 0);
		zd_pageset_from_pfns(&want, list, n);
		assert_true(zd_pageset_equal(&dirty, &want));
		for (uint64_t i = 0; i < n; i++)
			m.last[list[i]] = (uint32_t)e;

		/* Tracker and attached stage read the same contents, which
		 * are the generator's. */
		assert_int_equal(t->ops->read_pages(t, e, &dirty, buf), 0);
		assert_int_equal(att->ops->read_pages(att, e, &dirty, buf2), 0);
		assert_memory_equal(buf, buf2, n * m.p.page_size);
		struct zd_pageset_iter it;
		uint64_t pfn, i = 0;
		zd_pageset_iter_init(&it, &dirty);
		while (zd_pageset_iter_next(&it, &pfn)) {
			zd_synth_page(&m.p, pfn, e, pg);
			assert_memory_equal(buf + i++ * m.p.page_size, pg, m.p.page_size);
		}
		assert_int_equal(t->ops->memsum(t, &sum), 0);
		assert_true(sum == model_sum(&m));

		/* Re-arming half leaves the other half dirty. */
		struct zd_pageset half = ZD_PAGESET_INIT, rest = ZD_PAGESET_INIT;
		zd_pageset_copy(&rest, &dirty);
		zd_pageset_take_front(&half, &rest, n / 2);
		assert_int_equal(t->ops->rearm(t, &half), 0);
		assert_int_equal(t->ops->harvest(t, &dirty), 0);
		assert_true(zd_pageset_equal(&dirty, &rest));
		assert_int_equal(t->ops->rearm(t, NULL), 0);
		assert_int_equal(t->ops->harvest(t, &dirty), 0);
		assert_true(zd_pageset_empty(&dirty));
		zd_pageset_free(&half);
		zd_pageset_free(&rest);
		assert_int_equal(t->ops->resume(t), 0);
	}
	/* Pausing out of turn is refused with a reason. */
	assert_int_equal(t->ops->pause(t, 9), -1);
	assert_non_null(strstr(t->err, "epoch"));

	zd_target_close(att);
	zd_target_close(t);
	zd_pageset_free(&dirty);
	zd_pageset_free(&want);
	free(m.last);
	free(list);
	free(buf);
	free(buf2);
	free(pg);
}

/* The first deadline of an epoch sees the early writes only (zddspt T0). */
static void test_early_writes(void **state)
{
	struct zd_target *t;
	struct zd_pageset d = ZD_PAGESET_INIT;
	char msg[256];

	assert_int_equal(zd_target_open(&t, "synth:pages=4096,dirty=100", msg, sizeof(msg)), 0);
	assert_int_equal(t->ops->run_until(t, 0), 0);
	assert_int_equal(t->ops->harvest(t, &d), 0);
	assert_int_equal(zd_pageset_count(&d), 80);
	assert_int_equal(t->ops->run_until(t, 0), 0);
	assert_int_equal(t->ops->harvest(t, &d), 0);
	assert_int_equal(zd_pageset_count(&d), 100);
	zd_pageset_free(&d);
	zd_target_close(t);
}

static void test_registry(void **state)
{
	struct zd_target *t = (void *)1;
	char msg[256];

	assert_int_equal(zd_target_open(&t, "floppy:a", msg, sizeof(msg)), -1);
	assert_null(t);
	assert_non_null(strstr(msg, "unknown target scheme 'floppy'"));
	assert_non_null(strstr(msg, "synth"));
	assert_int_equal(zd_target_open(&t, "synth:pages=1", msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "missing dirty"));
	assert_int_equal(zd_target_open(&t, "trace:/nonexistent/x", msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "No such file"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_defaults),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_protect_fail),
		cmocka_unit_test(test_epoch_pages),
		cmocka_unit_test(test_page_contents),
		cmocka_unit_test(test_target_rounds),
		cmocka_unit_test(test_early_writes),
		cmocka_unit_test(test_registry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
