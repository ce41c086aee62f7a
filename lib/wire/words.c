/* SPDX-License-Identifier: MIT */
/*
 * A delta page as the words that changed (zd-stream(5), COMPRESSED PAGES,
 * enc 2): a mask of P/64 bytes, bit j of byte L set when the 8-byte word
 * 8L + j differs from the receiver's copy, then the XOR of each such word
 * in order. A guest's page that changed a few words is 64 bytes of mask
 * and those words rather than 4 KiB of mostly zeros: zstd gets a
 * sixteenth of the input or less, and the receiver patches words instead
 * of XORing whole pages.
 */
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "wire_int.h"

/* The words of line (8 of them) that are set in m, appended at o. */
static uint8_t *put_words(uint8_t *o, const uint64_t *line, unsigned m)
{
	while (m) {
		unsigned b = (unsigned)__builtin_ctz(m);

		memcpy(o, &line[b], 8);
		o += 8;
		m &= m - 1;
	}
	return o;
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static size_t pack_avx2(uint8_t *out, uint8_t *sh, const uint8_t *page, size_t ps)
{
	uint8_t *mask = out, *o = out + ps / 64;
	const __m256i zero = _mm256_setzero_si256();

	for (size_t i = 0; i < ps; i += 64) {
		__m256i p0 = _mm256_loadu_si256((const __m256i *)(page + i));
		__m256i p1 = _mm256_loadu_si256((const __m256i *)(page + i + 32));
		__m256i s0 = _mm256_loadu_si256((const __m256i *)(sh + i));
		__m256i s1 = _mm256_loadu_si256((const __m256i *)(sh + i + 32));
		__m256i x0 = _mm256_xor_si256(p0, s0), x1 = _mm256_xor_si256(p1, s1);
		__m256i x = _mm256_or_si256(x0, x1);

		if (_mm256_testz_si256(x, x)) {
			mask[i / 64] = 0;
			continue;
		}
		/* only a changed line is stored: a clean one is not written
		 * back to memory, which is what this pass waits for */
		_mm256_storeu_si256((__m256i *)(sh + i), p0);
		_mm256_storeu_si256((__m256i *)(sh + i + 32), p1);
		unsigned z = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(x0, zero))) |
			     (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(x1, zero))) << 4;
		uint64_t line[8];

		_mm256_storeu_si256((__m256i *)line, x0);
		_mm256_storeu_si256((__m256i *)(line + 4), x1);
		mask[i / 64] = (uint8_t)~z;
		o = put_words(o, line, ~z & 0xff);
	}
	return (size_t)(o - out);
}

size_t zd__words_pack_scalar(uint8_t *out, uint8_t *sh, const uint8_t *page, size_t ps)
{
	uint8_t *mask = out, *o = out + ps / 64;

	for (size_t i = 0; i < ps; i += 64) {
		uint64_t line[8];
		unsigned m = 0;

		for (unsigned j = 0; j < 8; j++) {
			uint64_t a, b;

			memcpy(&a, page + i + 8 * j, 8);
			memcpy(&b, sh + i + 8 * j, 8);
			line[j] = a ^ b;
			m |= (unsigned)(line[j] != 0) << j;
		}
		mask[i / 64] = (uint8_t)m;
		if (m)
			memcpy(sh + i, page + i, 64);
		o = put_words(o, line, m);
	}
	return (size_t)(o - out);
}

#endif

size_t zd__words_pack(uint8_t *out, uint8_t *sh, const uint8_t *page, size_t ps)
{
#if defined(__x86_64__)
	if (__builtin_cpu_supports("avx2"))
		return pack_avx2(out, sh, page, ps);
#endif
	return zd__words_pack_scalar(out, sh, page, ps);
}

size_t zd__words_unpack(uint8_t *page, const uint8_t *base, const uint8_t *in, size_t len, size_t ps)
{
	size_t mb = ps / 64, words = 0;

	if (len < mb)
		return 0;
	for (size_t i = 0; i < mb; i += 8) {
		uint64_t m;

		memcpy(&m, in + i, 8);
		words += (size_t)__builtin_popcountll(m);
	}
	if ((len - mb) / 8 < words)
		return 0;
	memcpy(page, base, ps);
	const uint8_t *w = in + mb;

	for (size_t l = 0; l < mb; l++) {
		for (unsigned m = in[l]; m; m &= m - 1) {
			uint8_t *at = page + 64 * l + 8 * (unsigned)__builtin_ctz(m);
			uint64_t v, x;

			memcpy(&v, at, 8);
			memcpy(&x, w, 8);
			v ^= x;
			memcpy(at, &v, 8);
			w += 8;
		}
	}
	return mb + 8 * words;
}
