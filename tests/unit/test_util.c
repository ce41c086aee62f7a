/* SPDX-License-Identifier: MIT */
/* The strict parsers every tool uses for its flags: garbage is refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "zd/util.h"

static void test_parse_u64(void **state)
{
	uint64_t v;

	assert_int_equal(zd_parse_u64("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(zd_parse_u64("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(zd_parse_u64("18446744073709551616", &v), -1);
	assert_int_equal(zd_parse_u64("-1", &v), -1);
	assert_int_equal(zd_parse_u64("12x", &v), -1);
	assert_int_equal(zd_parse_u64("", &v), -1);
	assert_int_equal(zd_parse_u64(" 1", &v), -1);
}

static void test_parse_size(void **state)
{
	uint64_t v;

	assert_int_equal(zd_parse_size("256M", &v), 0);
	assert_true(v == 256ull << 20);
	assert_int_equal(zd_parse_size("4G", &v), 0);
	assert_true(v == 4ull << 30);
	assert_int_equal(zd_parse_size("4096", &v), 0);
	assert_true(v == 4096);
	assert_int_equal(zd_parse_size("3T", &v), -1);
	assert_int_equal(zd_parse_size("M", &v), -1);
	assert_int_equal(zd_parse_size("99999999999999999999G", &v), -1);
	assert_int_equal(zd_parse_size("17179869184G", &v), -1);	/* overflows */
}

static void test_parse_duration(void **state)
{
	uint64_t v;

	assert_int_equal(zd_parse_duration_ns("25", &v), 0);
	assert_true(v == 25000000ull);
	assert_int_equal(zd_parse_duration_ns("25ms", &v), 0);
	assert_true(v == 25000000ull);
	assert_int_equal(zd_parse_duration_ns("100us", &v), 0);
	assert_true(v == 100000ull);
	assert_int_equal(zd_parse_duration_ns("2s", &v), 0);
	assert_true(v == 2000000000ull);
	assert_int_equal(zd_parse_duration_ns("2h", &v), -1);
	assert_int_equal(zd_parse_duration_ns("ms", &v), -1);
}

static void test_parse_double(void **state)
{
	double d;

	assert_int_equal(zd_parse_double("0.8", &d), 0);
	assert_true(d > 0.79 && d < 0.81);
	assert_int_equal(zd_parse_double("nan", &d), -1);
	assert_int_equal(zd_parse_double("1e999", &d), -1);
	assert_int_equal(zd_parse_double("0.8x", &d), -1);
}

static void test_full_io_over_pipe(void **state)
{
	int p[2];
	char out[8] = { 0 };

	assert_int_equal(pipe(p), 0);
	assert_int_equal(zd_write_full(p[1], "abcdef", 6), 0);
	close(p[1]);
	/* Asking for more than is there returns the short count, then 0 at EOF. */
	assert_int_equal(zd_read_full(p[0], out, 8), 6);
	assert_memory_equal(out, "abcdef", 6);
	assert_int_equal(zd_read_full(p[0], out, 8), 0);
	close(p[0]);
}

static void test_hash_distinguishes(void **state)
{
	char a[4096], b[4096];

	memset(a, 0, sizeof(a));
	memcpy(b, a, sizeof(b));
	assert_true(zd_hash64(a, sizeof(a)) == zd_hash64(b, sizeof(b)));
	b[4095] = 1;
	assert_true(zd_hash64(a, sizeof(a)) != zd_hash64(b, sizeof(b)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_double),
		cmocka_unit_test(test_full_io_over_pipe),
		cmocka_unit_test(test_hash_distinguishes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
