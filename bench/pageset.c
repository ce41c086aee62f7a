/* SPDX-License-Identifier: MIT */
/*
 * bench/pageset: the page-set operations at 1M pages (a 4 GiB guest), on
 * the shapes zd meets: a sparse dirty set (1024 scattered pages), a busy
 * one (25% of pages in short runs), and the worst case for ranges (every
 * other page). Each figure is the best of several passes, in microseconds
 * of CPU time per operation.
 *
 *   bench/pageset [CSV]      writes CSV (default bench/results/pageset.csv)
 */
#include <err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zd/pageset.h"
#include "zd/util.h"
#define TESTLIB_RNG_SEED 0x853c49e6748fea9bull
#include "../tests/unit/testlib.h"

/* CPU time of this thread (user + system, so read(2) copies count): the
 * bench machines are shared, and wall time would measure the neighbours. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define NPAGES (1u << 20)
#define NWORDS (NPAGES / 64)

static void shape(uint64_t *m, const char *name)
{
	memset(m, 0, NWORDS * 8);
	if (strcmp(name, "sparse") == 0) {
		for (int i = 0; i < 1024; i++) {
			uint64_t p = rnd() % NPAGES;
			m[p / 64] |= 1ull << (p % 64);
		}
	} else if (strcmp(name, "busy") == 0) {
		while (1) {
			uint64_t set = 0;
			for (size_t i = 0; i < NWORDS; i++)
				set += (uint64_t)__builtin_popcountll(m[i]);
			if (set >= NPAGES / 4)
				break;
			for (int k = 0; k < 4096; k++) {
				uint64_t p = rnd() % NPAGES, len = rnd() % 16 + 1;
				for (uint64_t q = p; q < p + len && q < NPAGES; q++)
					m[q / 64] |= 1ull << (q % 64);
			}
		}
	} else {	/* alternate */
		for (size_t i = 0; i < NWORDS; i++)
			m[i] = 0x5555555555555555ull;
	}
}

typedef void (*op_fn)(struct zd_pageset *out, const struct zd_pageset *a,
		      const struct zd_pageset *b, uint64_t *bm);

static void op_union(struct zd_pageset *o, const struct zd_pageset *a, const struct zd_pageset *b,
		     uint64_t *bm) { zd_pageset_union(o, a, b); }
static void op_intersect(struct zd_pageset *o, const struct zd_pageset *a,
			 const struct zd_pageset *b, uint64_t *bm) { zd_pageset_intersect(o, a, b); }
static void op_subtract(struct zd_pageset *o, const struct zd_pageset *a,
			const struct zd_pageset *b, uint64_t *bm) { zd_pageset_subtract(o, a, b); }
static volatile uint64_t sink;
static void op_count(struct zd_pageset *o, const struct zd_pageset *a, const struct zd_pageset *b,
		     uint64_t *bm) { sink = zd_pageset_intersect_count(a, b); }
static void op_from_bitmap(struct zd_pageset *o, const struct zd_pageset *a,
			   const struct zd_pageset *b, uint64_t *bm)
{
	zd_pageset_from_bitmap(o, bm, NPAGES, 0);
}
static void op_to_bitmap(struct zd_pageset *o, const struct zd_pageset *a,
			 const struct zd_pageset *b, uint64_t *bm)
{
	zd_pageset_to_bitmap(a, bm, NPAGES, 0);
}
static void op_iterate(struct zd_pageset *o, const struct zd_pageset *a,
		       const struct zd_pageset *b, uint64_t *bm)
{
	struct zd_pageset_iter it;
	uint64_t p, s = 0;
	zd_pageset_iter_init(&it, a);
	while (zd_pageset_iter_next(&it, &p))
		s += p;
	sink = s;
}

static const struct {
	const char *name;
	op_fn fn;
} ops[] = {
	{ "union", op_union },		{ "intersect", op_intersect },
	{ "subtract", op_subtract },	{ "intersect_count", op_count },
	{ "from_bitmap", op_from_bitmap }, { "to_bitmap", op_to_bitmap },
	{ "iterate", op_iterate },
};

int main(int argc, char **argv)
{
	zd_set_progname("bench-pageset");
	const char *csv = argc > 1 ? argv[1] : "bench/results/pageset.csv";
	FILE *f = fopen(csv, "w");
	if (!f)
		err(1, "%s", csv);
	uint64_t *ma = zd_xmalloc(NWORDS * 8), *mb = zd_xmalloc(NWORDS * 8);
	struct zd_pageset a = ZD_PAGESET_INIT, b = ZD_PAGESET_INIT, out = ZD_PAGESET_INIT;
	static const char *shapes[] = { "sparse", "busy", "alternate" };
	char line[256];
	snprintf(line, sizeof(line), "shape,op,pages_a,ranges_a,ranges_b,us_per_op\n");
	fputs(line, f);
	fputs(line, stdout);
	for (size_t s = 0; s < ZD_ARRAY_SIZE(shapes); s++) {
		shape(ma, shapes[s]);
		shape(mb, strcmp(shapes[s], "alternate") ? shapes[s] : "busy");
		zd_pageset_from_bitmap(&a, ma, NPAGES, 0);
		zd_pageset_from_bitmap(&b, mb, NPAGES, 0);
		for (size_t o = 0; o < ZD_ARRAY_SIZE(ops); o++) {
			double best = 1e30;
			for (int pass = 0; pass < 5; pass++) {
				uint64_t t0 = cpu_ns(), n = 0;
				do {
					ops[o].fn(&out, &a, &b, ma);
					n++;
				} while (cpu_ns() - t0 < 50000000ull);
				double us = (double)(cpu_ns() - t0) / 1e3 / (double)n;
				if (us < best)
					best = us;
			}
			snprintf(line, sizeof(line), "%s,%s,%llu,%zu,%zu,%.2f\n", shapes[s], ops[o].name,
				 (unsigned long long)a.pages, a.n, b.n, best);
			fputs(line, f);
			fputs(line, stdout);
		}
	}
	if (fclose(f) != 0)
		err(1, "%s", csv);
	zd_pageset_free(&a);
	zd_pageset_free(&b);
	zd_pageset_free(&out);
	free(ma);
	free(mb);
	return 0;
}
