/* SPDX-License-Identifier: MIT */
/* zd-track's page buffers: big enough for every round, and the whole-guest
 * size of epoch 1 not held for the rest of the run. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "track/track_int.h"

#define MIB ((size_t)1 << 20)

static void test_grows_to_need(void **state)
{
	uint8_t *buf = NULL;
	size_t cap = 0;

	assert_non_null(zd__track_buf(&buf, &cap, 256 * MIB));
	assert_true(cap >= 256 * MIB);
	memset(buf, 0xa5, 256 * MIB);	/* all of it is ours (ASan would say) */
	free(buf);
}

static void test_gives_back_after_a_small_round(void **state)
{
	uint8_t *buf = NULL;
	size_t cap = 0;

	zd__track_buf(&buf, &cap, 1024 * MIB);	/* epoch 1: the whole guest */
	assert_non_null(zd__track_buf(&buf, &cap, 4 * MIB));
	assert_true(cap >= 4 * MIB);
	assert_true(cap <= 16 * MIB);
	memset(buf, 0x5a, 4 * MIB);
	/* A bigger round after: twice its need kept, not the whole guest. */
	zd__track_buf(&buf, &cap, 1024 * MIB);
	assert_non_null(zd__track_buf(&buf, &cap, 40 * MIB));
	assert_true(cap >= 40 * MIB);
	assert_true(cap <= 80 * MIB);
	memset(buf, 0x5a, 40 * MIB);
	free(buf);
}

static void test_keeps_a_buffer_that_fits(void **state)
{
	uint8_t *buf = NULL;
	size_t cap = 0, cap0;

	/* Rounds of a few MiB, up and down, reuse one buffer: a new one costs
	 * a page fault per page inside zddspt's pre-copy window. (By its
	 * size: malloc may hand a new buffer the old one's address.) */
	zd__track_buf(&buf, &cap, 3 * MIB);
	cap0 = cap;
	zd__track_buf(&buf, &cap, 12 * MIB);
	assert_int_equal(cap, cap0);
	zd__track_buf(&buf, &cap, 1 * MIB);
	assert_int_equal(cap, cap0);
	/* Rounds that vary 5-fold above that keep theirs too. */
	zd__track_buf(&buf, &cap, 100 * MIB);
	cap0 = cap;
	for (int i = 0; i < 4; i++) {
		zd__track_buf(&buf, &cap, 20 * MIB);
		assert_int_equal(cap, cap0);
		zd__track_buf(&buf, &cap, 100 * MIB);
		assert_int_equal(cap, cap0);
	}
	free(buf);
}

static void test_empty_round_has_a_buffer(void **state)
{
	uint8_t *buf = NULL;
	size_t cap = 0;

	/* zddspt swaps its buffers: a round may start with none, and an empty
	 * pre-copy must not look like a failed allocation. */
	assert_non_null(zd__track_buf(&buf, &cap, 0));
	free(buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grows_to_need),
		cmocka_unit_test(test_gives_back_after_a_small_round),
		cmocka_unit_test(test_keeps_a_buffer_that_fits),
		cmocka_unit_test(test_empty_round_has_a_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
