/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for what zd-recv does with bytes from the wire before
 * anything is applied: zd_wire_decode of zstd/delta PAGES payloads, and
 * opening of sealed units (zd_auth_open, --key).
 *
 * Input: byte 0 picks the page encoding (1 zstd, 2 delta, else raw) and
 * byte 1 the page count (1..64) of a record over pfns 0,2,4,...; the rest
 * is the payload. Beyond "no crash, no leak, no overrun":
 *   - a decode that succeeds gives exactly pages*page_size bytes;
 *   - a failing decode leaves the output record untouched;
 *   - for every input that decodes, encoding the decoded pages again and
 *     decoding that gives the same pages (the codec's round trip);
 *   - the same bytes as a sealed frame (length, unit, tag) do not open,
 *     with either cipher, and do not advance the unit counter.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zd/stream.h"
#include "zd/wire.h"

#define PS 512u
#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                         \
		}                                                                        \
	} while (0)

static uint8_t base_mem[128 * PS];

static const uint8_t *base(void *arg, uint64_t pfn)
{
	(void)arg;
	return pfn < 128 ? base_mem + pfn * PS : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct zd_wire_dec *d;
	static struct zd_auth auth;
	char msg[256];

	if (!d) {
		for (size_t i = 0; i < sizeof(base_mem); i++)
			base_mem[i] = (uint8_t)(i * 131 + (i >> 9));
		if (zd_wire_dec_new(&d, PS, msg, sizeof(msg)) < 0)
			abort();
		struct zd_auth_key k;
		if (zd_auth_key_from_bytes(&k, "fuzz key", 8, msg, sizeof(msg)) < 0)
			abort();
		memcpy(auth.recv_key, k.k, sizeof(auth.recv_key));
	}
	if (size < 2)
		return 0;
	struct zd_rec_pages in, out, sentinel;
	memset(&in, 0, sizeof(in));
	in.enc = data[0] == 1 ? ZD_PENC_ZSTD : data[0] == 2 ? ZD_PENC_DELTA : ZD_PENC_RAW;
	unsigned n = 1 + data[1] % 64;
	zd_pageset_init(&in.set);
	for (unsigned i = 0; i < n; i++)
		zd_pageset_add(&in.set, 2 * i);
	in.data_len = (uint32_t)(size - 2);
	in.data = malloc(size - 2 + 1);	/* its own allocation: ASan sees overreads */
	memcpy(in.data, data + 2, size - 2);
	memset(&sentinel, 0x5a, sizeof(sentinel));
	out = sentinel;
	if (zd_wire_decode(d, &in, base, NULL, &out, msg, sizeof(msg)) == 0) {
		CHECK(out.enc == ZD_PENC_RAW);
		CHECK(out.data_len == n * PS);
		/* re-encode the pages (delta against the same base) and decode */
		uint8_t *pages = malloc(out.data_len);
		memcpy(pages, out.data, out.data_len);
		struct zd_wire_opts o = { .enc = in.enc == ZD_PENC_RAW ? ZD_PENC_ZSTD : in.enc,
					  .level = 1, .cache_bytes = 256 * PS, .page_size = PS };
		struct zd_wire_enc *e;
		CHECK(zd_wire_enc_new(&e, &o, msg, sizeof(msg)) == 0);
		if (o.enc == ZD_PENC_DELTA) {
			/* prime the shadows with the receiver's copies */
			struct zd_rec_pages prime = in, junk;
			prime.enc = ZD_PENC_RAW;
			prime.data_len = n * PS;
			prime.data = malloc(prime.data_len);
			for (unsigned i = 0; i < n; i++)
				memcpy(prime.data + i * PS, base_mem + 2 * i * PS, PS);
			CHECK(zd_wire_encode(e, &prime, &junk, msg, sizeof(msg)) == 0);
			free(prime.data);
		}
		struct zd_rec_pages raw = in, enc, back;
		raw.enc = ZD_PENC_RAW;
		raw.data = pages;
		raw.data_len = n * PS;
		CHECK(zd_wire_encode(e, &raw, &enc, msg, sizeof(msg)) == 0);
		CHECK(zd_wire_decode(d, &enc, base, NULL, &back, msg, sizeof(msg)) == 0);
		CHECK(back.data_len == n * PS && !memcmp(back.data, pages, n * PS));
		zd_wire_enc_free(e);
		free(pages);
	} else {
		CHECK(!memcmp(&out, &sentinel, sizeof(out)));
		CHECK(msg[0]);
	}
	/* as a sealed frame (clear length, unit, tag), with either cipher:
	 * nothing forged opens, and a refused one does not count */
	{
		uint8_t *frame = malloc(size);
		memcpy(frame, data, size);
		uint64_t seq = auth.recv_seq;
		auth.aes = data[1] & 1;
		int rc = zd_auth_open(&auth, frame, size, msg, sizeof(msg));
		CHECK(rc == -1 && auth.recv_seq == seq && msg[0]);
		free(frame);
	}
	zd_pageset_free(&in.set);
	free(in.data);
	return 0;
}
