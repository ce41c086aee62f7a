/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the unit tests (tests/unit/test_NAME.c) and the C
 * benchmarks (bench/NAME.c), which include this one file instead of each
 * pasting its own copy.
 *
 *   rnd()           the next number of a xorshift64 sequence
 *   rnd_seed(S)     restart the sequence from S (not 0)
 *
 * A fixed seed gives the same "random" cases on every run and every
 * machine, so a failure reproduces. Each file keeps its own seed, and with
 * it the cases it always had: define TESTLIB_RNG_SEED before including
 * this header.
 */
#ifndef ZD_TESTLIB_H
#define ZD_TESTLIB_H

#include <stdint.h>

#ifndef TESTLIB_RNG_SEED
#define TESTLIB_RNG_SEED 0x9e3779b97f4a7c15ull
#endif

/* One sequence per file (static): tests in other files do not move it. */
static uint64_t testlib_rng = TESTLIB_RNG_SEED;

/* Marsaglia's xorshift64 (13, 7, 17): cheap and good enough to pick pages
 * and lengths; not for anything secret. */
static inline uint64_t rnd(void)
{
	testlib_rng ^= testlib_rng << 13;
	testlib_rng ^= testlib_rng >> 7;
	testlib_rng ^= testlib_rng << 17;
	return testlib_rng;
}

static inline void rnd_seed(uint64_t seed)
{
	testlib_rng = seed;
}

#endif
