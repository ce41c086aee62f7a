/* SPDX-License-Identifier: MIT */
/*
 * bench/wire_key: what --key costs per byte, the cipher alone: one
 * zd_auth_seal and zd_auth_open a unit, in place, over units the size of a
 * small PAGES record (64 KiB) and of a full one (16 MiB), with each cipher
 * the handshake can pick (AES-256-GCM only where this CPU has it), and what
 * stretching a key file costs (Argon2id, once per process).
 *
 * GB/s of unit bytes per second of this thread's CPU time: the machine is
 * shared, wall time would measure the neighbours. Every byte on a keyed
 * link is sealed once (zd-send) and opened once (zd-recv), so on one host
 * the key costs 1/seal + 1/open CPU seconds per GB of wire bytes.
 *
 *   bench/wire_key [CSV]   (default bench/results/wire_key.csv)
 */
#include <err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>

#include "zd/util.h"
#include "zd/wire.h"

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "bench/results/wire_key.csv";
	const size_t sizes[] = { 64u << 10, 16u << 20 };
	const uint64_t total = 2ull << 30;	/* bytes sealed per row */
	struct zd_auth_key key;
	char msg[256];
	double load = 0;

	uint64_t t0 = cpu_ns();
	if (zd_auth_key_from_bytes(&key, "bench key 0123456789", 20, msg, sizeof(msg)) < 0)
		err(ZD_EXIT_FAIL, "%s", msg);
	double kdf_ms = (double)(cpu_ns() - t0) / 1e6;

	FILE *f = fopen(path, "w");
	if (!f)
		err(ZD_EXIT_FAIL, "%s: cannot write", path);
	FILE *la = fopen("/proc/loadavg", "r");
	if (la) {
		if (fscanf(la, "%lf", &load) != 1)
			load = 0;
		fclose(la);
	}
	fprintf(f, "what,unit_bytes,units,seal_gbps_cpu,open_gbps_cpu,cpu_s_per_gb,kdf_ms_cpu,loadavg\n");
	for (int aes = 1; aes >= 0; aes--) {
		if (aes && !crypto_aead_aes256gcm_is_available())
			continue;
		for (size_t s = 0; s < ZD_ARRAY_SIZE(sizes); s++) {
			size_t n = sizes[s], units = (size_t)(total / n);
			uint8_t *frame = zd_xmalloc(ZD_AUTH_LEN + n + ZD_AUTH_TAG);
			/* the two ends of one session: what one seals the other opens */
			struct zd_auth tx = { .aes = aes }, rx;
			randombytes_buf(tx.send_key, sizeof(tx.send_key));
			rx = tx;
			memcpy(rx.recv_key, tx.send_key, sizeof(rx.recv_key));
			memset(frame + ZD_AUTH_LEN, 0x5a, n);
			uint64_t seal = 0, open = 0;
			for (size_t u = 0; u < units; u++) {
				uint64_t a = cpu_ns();
				size_t fl = zd_auth_seal(&tx, frame, n);
				uint64_t b = cpu_ns();
				if (zd_auth_open(&rx, frame, fl, msg, sizeof(msg)) < 0)
					err(ZD_EXIT_FAIL, "unit %zu: %s", u, msg);
				seal += b - a;
				open += cpu_ns() - b;
			}
			free(frame);
			double sg = (double)units * (double)n / (double)seal;
			double og = (double)units * (double)n / (double)open;
			fprintf(f, "%s,%zu,%zu,%.3f,%.3f,%.3f,%.0f,%.2f\n", aes ? "aes256gcm" : "xchacha20poly1305",
				n, units, sg, og, 1 / sg + 1 / og, kdf_ms, load);
			fprintf(stderr, "bench-wire-key: %-17s %8zu-byte units: seal %.2f GB/s cpu, open %.2f GB/s cpu: %.2f cpu s per GB on the wire (key stretch %.0f ms cpu)\n",
				aes ? "aes256gcm" : "xchacha20poly1305", n, sg, og, 1 / sg + 1 / og, kdf_ms);
		}
	}
	fclose(f);
	return 0;
}
