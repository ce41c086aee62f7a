/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the zd-stream(5) decoder. The input is read as a
 * whole stream through zd_reader (over a memfd, as a tool reads stdin) and
 * also handed to the one-record decoders. Beyond "no crash, no leak, no
 * overrun" it checks the codec's promises on everything the reader accepts:
 *   - the writer can encode it again, in both encodings;
 *   - decoding that encoding gives a record that encodes to the same bytes;
 *   - binary -> JSON -> binary gives the same bytes.
 * A broken promise aborts, which libFuzzer reports as a crash.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zd/stream.h"

static const char *cur_type = "-";	/* the record being checked, for the report */

#define CHECK(cond)                                                             \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "fuzz_decode: %s:%d: record %s: %s\n", __FILE__, \
				__LINE__, cur_type, #cond);                      \
			abort();                                                 \
		}                                                                \
	} while (0)

static bool has_nan(const struct zd_record *r)
{
	if (r->type != ZD_REC_STAT)
		return false;
	for (uint32_t i = 0; i < r->u.stat.n; i++)
		if (isnan(r->u.stat.kv[i].value))
			return true;	/* JSON has one NaN; payload bits are not kept */
	return false;
}

static void check_record(const struct zd_record *r, const struct zd_rec_header *hdr)
{
	uint32_t ps = hdr ? hdr->page_size : 0;
	uint8_t *b1, *b2;
	char *j1, *j2;
	size_t bl1, bl2, jl1, jl2;
	char msg[256];
	struct zd_record d;

	cur_type = zd_rec_type_name(r->type);
	CHECK(zd_encode_binary(r, ps, &b1, &bl1) == 0);
	CHECK(zd_decode_binary(b1, bl1, hdr, &d, msg, sizeof(msg)) == 0);
	CHECK(zd_encode_binary(&d, ps, &b2, &bl2) == 0);
	CHECK(bl1 == bl2 && memcmp(b1, b2, bl1) == 0);
	zd_record_free(&d);
	free(b2);

	CHECK(zd_encode_json(r, ps, &j1, &jl1) == 0);
	CHECK(zd_decode_json(j1, jl1, hdr, &d, msg, sizeof(msg)) == 0);
	CHECK(zd_encode_json(&d, ps, &j2, &jl2) == 0);
	CHECK(jl1 == jl2 && memcmp(j1, j2, jl1) == 0);
	if (!has_nan(r)) {
		CHECK(zd_encode_binary(&d, ps, &b2, &bl2) == 0);
		CHECK(bl1 == bl2 && memcmp(b1, b2, bl1) == 0);
		free(b2);
	}
	zd_record_free(&d);
	free(j1);
	free(j2);
	free(b1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char msg[256];
	struct zd_record r;

	/* one record, without and with a header's limits */
	static const struct zd_rec_header small = { .major = 1, .page_size = 4096, .page_count = 100 };
	if (zd_decode_binary(data, size, NULL, &r, msg, sizeof(msg)) == 0) {
		check_record(&r, NULL);
		zd_record_free(&r);
	}
	if (zd_decode_binary(data, size, &small, &r, msg, sizeof(msg)) == 0) {
		check_record(&r, &small);
		zd_record_free(&r);
	}
	if (zd_decode_json((const char *)data, size, &small, &r, msg, sizeof(msg)) == 0) {
		check_record(&r, &small);
		zd_record_free(&r);
	}

	/* the whole input as a stream */
	int fd = memfd_create("fuzz", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size || lseek(fd, 0, SEEK_SET) != 0) {
		close(fd);
		return 0;
	}
	struct zd_reader rd;
	zd_reader_init(&rd, fd, "fuzz");
	int rc;
	while ((rc = zd_reader_next(&rd, &r)) > 0) {
		check_record(&r, rd.have_header ? &rd.hdr : NULL);
		zd_record_free(&r);
	}
	/* errors are sticky and always explained */
	if (rc < 0) {
		CHECK(rd.err != ZD_RERR_NONE && rd.msg[0]);
		CHECK(strncmp(rd.msg, "fuzz: ", 6) == 0);
		CHECK(zd_reader_next(&rd, &r) == -1);
	}
	zd_reader_free(&rd);
	close(fd);
	return 0;
}
