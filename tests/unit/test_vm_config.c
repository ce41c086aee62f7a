/* SPDX-License-Identifier: MIT */
/*
 * zd-vm's workload spec and configuration checks: what is accepted, what
 * is refused and what the message names. (The VM itself is tested on real
 * KVM in tests/e2e/kvm_vm.sh.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "zd/vm.h"

static void workload_full(void **state)
{
	struct zd_vm_workload wl;
	char msg[256] = "";

	(void)state;
	assert_int_equal(zd_vm_parse_workload("dirty=40000,hot=0.25,span=48M,hotset=1M,seed=7",
					      &wl, msg, sizeof(msg)), 0);
	assert_int_equal(wl.dirty_rate, 40000);
	assert_true(wl.hot > 0.249 && wl.hot < 0.251);
	assert_int_equal(wl.span_bytes, 48ull << 20);
	assert_int_equal(wl.hotset_bytes, 1ull << 20);
	assert_int_equal(wl.seed, 7);
}

static void workload_defaults(void **state)
{
	struct zd_vm_workload wl;
	char msg[256] = "";

	(void)state;
	assert_int_equal(zd_vm_parse_workload("dirty=10", &wl, msg, sizeof(msg)), 0);
	assert_int_equal(wl.dirty_rate, 10);
	assert_true(wl.hot > 0.79 && wl.hot < 0.81);
	assert_int_equal(wl.span_bytes, 0);
}

static void workload_bad(void **state)
{
	static const struct {
		const char *spec, *msg;
	} cases[] = {
		{ "dirty=abc", "dirty=abc: want pages per second" },
		{ "dirty=-1", "dirty=-1: want pages per second" },
		{ "hot=1.5", "hot=1.5: want a fraction" },
		{ "hot=-0.1", "hot=-0.1: want a fraction" },
		{ "span=1", "span=1: want a size of at least 4K" },
		{ "speed=3", "'speed': unknown key" },
		{ "dirty", "'dirty': want KEY=VALUE" },
		{ "dirty=10,,hot=0.5x", "hot=0.5x: want a fraction" },
	};
	struct zd_vm_workload wl;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char msg[256] = "";

		assert_int_equal(zd_vm_parse_workload(cases[i].spec, &wl, msg, sizeof(msg)), -1);
		if (!strstr(msg, cases[i].msg))
			fail_msg("%s: message '%s' lacks '%s'", cases[i].spec, msg, cases[i].msg);
	}
}

static void config_mem(void **state)
{
	struct zd_vm_config cfg = { .mem_bytes = 256ull << 20 };
	char msg[256];

	(void)state;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), 0);
	cfg.mem_bytes = 8ull << 20;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), 0);
	cfg.mem_bytes = 6ull << 20;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), -1);
	cfg.mem_bytes = (64ull << 20) + 4096;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "multiple of 2M"));
	cfg.mem_bytes = 64ull << 30;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), -1);
}

static void config_span(void **state)
{
	struct zd_vm_config cfg = { .mem_bytes = 16ull << 20 };
	char msg[256];

	(void)state;
	/* 16 MiB of RAM leaves 12 MiB above the guest's fixed 4 MiB. */
	cfg.wl.span_bytes = 12ull << 20;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), 0);
	cfg.wl.span_bytes = (12ull << 20) + 4096;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "larger than"));
	cfg.wl.span_bytes = 1ull << 20;
	cfg.wl.hotset_bytes = 2ull << 20;
	assert_int_equal(zd_vm_check_config(&cfg, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "hotset"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(workload_full),
		cmocka_unit_test(workload_defaults),
		cmocka_unit_test(workload_bad),
		cmocka_unit_test(config_mem),
		cmocka_unit_test(config_span),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
