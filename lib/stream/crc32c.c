/* SPDX-License-Identifier: MIT */
/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * every zd-stream(5) record. ISA-L's crc32_iscsi is the same CRC without
 * the inversions at either end; it folds with PCLMULQDQ (AVX-512 where
 * present) and picks its code by CPU at run time: 50 GB/s here against 10
 * for a loop of the SSE4.2 crc32 instruction, which made the checksum a
 * sixth of zd-send's CPU time (bench/README.md, the wire).
 */
#include <limits.h>
#include <stdint.h>
#include <isa-l/crc.h>

#include "zd/stream.h"
#include "zd/util.h"

uint32_t zd_crc32c(uint32_t crc, const void *buf, size_t len)
{
	unsigned char *p = (unsigned char *)(uintptr_t)buf;	/* ISA-L only reads it */
	uint32_t c = ~crc;

	while (len) {	/* ISA-L takes an int length */
		int n = len > (size_t)INT_MAX ? INT_MAX & ~63 : (int)len;

		c = crc32_iscsi(p, n, c);
		p += n;
		len -= (size_t)n;
	}
	/* ISA-L's AVX-512 code returns with the upper vector halves dirty;
	 * left so, every SSE instruction after it pays for a merge (it made
	 * XXH3 in zd-recv four times slower). */
	zd_vzeroupper();
	return ~c;
}

/* The bytewise definition, for tests to hold the fast one against. */
uint32_t zd_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}
