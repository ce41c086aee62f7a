/* SPDX-License-Identifier: MIT */
/*
 * /init of the PVH guest that tests/xen/ protects: keep writing memory.
 * Sweeps a working set of WS pages, stamping each page with a sweep
 * counter, and naps briefly every few pages so dom0 gets the CPU too.
 * Says once on the console that it writes (the harness waits for that).
 *
 * With ZD_PROGRESS=1 in its environment (the kernel passes an unknown
 * "NAME=VALUE" of its command line to init: bench/xen_dom0.sh sets
 * XEN_GUEST_EXTRA) it also says how far it got: once a second
 * "ZD-PROGRESS <realtime ms> <pages written>", and "ZD-GAP <ms>" for every
 * stretch of more than GAP_MS between two page writes (the guest was
 * stopped: a checkpoint's pause). CLOCK_REALTIME, not MONOTONIC: under
 * xl remus the guest is suspended, and its monotonic clock hides part of
 * each suspension.
 * Static, no libc beyond what -static brings: the guest has nothing else.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WS (8u << 20)		/* 8 MiB, as in our xl remus runs */
#define GAP_MS 10

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(void)
{
	uint8_t *ws = malloc(WS);
	struct timespec nap = { 0, 200000 };
	uint64_t sweep = 0, pages = 0;
	int64_t last, said;
	int progress = getenv("ZD_PROGRESS") && !strcmp(getenv("ZD_PROGRESS"), "1");

	if (!ws) {
		puts("zd-guest: no memory");
		for (;;)
			pause();
	}
	memset(ws, 0x5a, WS);
	puts("ZD-GUEST-WRITING");
	fflush(stdout);
	last = said = now_ms();
	for (;;) {
		sweep++;
		for (size_t off = 0; off < WS; off += 4096) {
			int64_t t;

			memcpy(ws + off + (sweep % 64) * 8, &sweep, sizeof(sweep));
			pages++;
			if ((off / 4096) % 16 == 15)
				nanosleep(&nap, NULL);
			if (!progress)
				continue;
			t = now_ms();
			if (t - last > GAP_MS)
				printf("ZD-GAP %lld\n", (long long)(t - last));
			last = t;
			if (t - said >= 1000) {
				printf("ZD-PROGRESS %lld %llu\n", (long long)t, (unsigned long long)pages);
				fflush(stdout);
				said = t;
			}
		}
	}
}
