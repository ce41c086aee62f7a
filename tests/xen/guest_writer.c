/* SPDX-License-Identifier: MIT */
/*
 * /init of the PVH guest that tests/xen/ protects: keep writing memory.
 * Sweeps a working set of WS pages, stamping each page with a sweep
 * counter, and naps briefly every few pages so dom0 gets the CPU too.
 * Says once on the console that it writes (the harness waits for that).
 * Static, no libc beyond what -static brings: the guest has nothing else.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WS (8u << 20)		/* 8 MiB, as in XEN-NOTES' xl remus runs */

int main(void)
{
	uint8_t *ws = malloc(WS);
	struct timespec nap = { 0, 200000 };
	uint64_t sweep = 0;

	if (!ws) {
		puts("zd-guest: no memory");
		for (;;)
			pause();
	}
	memset(ws, 0x5a, WS);
	puts("ZD-GUEST-WRITING");
	fflush(stdout);
	for (;;) {
		sweep++;
		for (size_t off = 0; off < WS; off += 4096) {
			memcpy(ws + off + (sweep % 64) * 8, &sweep, sizeof(sweep));
			if ((off / 4096) % 16 == 15)
				nanosleep(&nap, NULL);
		}
	}
}
