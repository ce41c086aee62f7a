/* SPDX-License-Identifier: MIT */
/*
 * Private to lib/stream: a growable byte buffer the encoders append to
 * (the writer encodes straight into its own buffer, no copy), base64, and
 * the error helper of the decoders.
 */
#ifndef ZD_STREAM_CODEC_H
#define ZD_STREAM_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "zd/stream.h"
#include "zd/util.h"

struct zd_buf {
	uint8_t *p;
	size_t len, cap;
};

void zd_buf_reserve(struct zd_buf *b, size_t extra);
static inline void zd_buf_put(struct zd_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;		/* p may be NULL for an empty field */
	if (b->cap - b->len < n)
		zd_buf_reserve(b, n);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}
static inline void zd_buf_u8(struct zd_buf *b, uint8_t v) { zd_buf_put(b, &v, 1); }
static inline void zd_buf_u16(struct zd_buf *b, uint16_t v)
{
	uint8_t x[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	zd_buf_put(b, x, 2);
}
static inline void zd_buf_u32(struct zd_buf *b, uint32_t v)
{
	uint8_t x[4];

	zd_put_u32(x, v);
	zd_buf_put(b, x, 4);
}
static inline void zd_buf_u64(struct zd_buf *b, uint64_t v)
{
	uint8_t x[8];

	zd_put_u64(x, v);
	zd_buf_put(b, x, 8);
}
void zd_buf_printf(struct zd_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append one encoded record; 0 or -1 with errno (EINVAL: the record
 * cannot be encoded, e.g. a string too long or RAW data of the wrong size). */
int zd_enc_binary_buf(struct zd_buf *b, const struct zd_record *r, uint32_t page_size);
int zd_enc_json_buf(struct zd_buf *b, const struct zd_record *r, uint32_t page_size);

/* Is text one JSON object on one line (a passthrough record)? */
bool zd_json_object_ok(const char *text, size_t len);

bool zd_utf8_ok(const uint8_t *p, size_t n);

/* A DISK record's fields (not its data's contents): 0 or -(enum zd_read_err). */
int zd_disk_check(const struct zd_rec_disk *d, char *msg, size_t msglen);

/* Checks both encoders share. */
int zd_rec_check(const struct zd_record *r, uint32_t page_size);

size_t zd_b64_len(size_t n);
void zd_b64_encode(char *out, const uint8_t *in, size_t n);
/* Decode n chars; returns bytes written or -1 on bad input. out holds n/4*3. */
long zd_b64_decode(uint8_t *out, const char *in, size_t n);

/* Format msg and return -err: the decoders' one error exit. */
int zd_fail(char *msg, size_t msglen, enum zd_read_err err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Stream-level checks (HEADER first, epochs) shared by the reader and
 * the fuzzer's view of a stream. */
int zd_check_order(struct zd_reader *rd, const struct zd_record *r, char *msg, size_t msglen);

/* The reader's path for a big PAGES record, whose data is read straight
 * into a buffer of its own instead of through the reader's (one copy of
 * 16 MiB less a record). zd_pages_prefix_len finds where the data starts
 * in the first avail bytes of the body: 0 and the prefix's length and the
 * data's, or -1 (not there yet, or malformed: the whole-record path says
 * which). zd_decode_binary_pages is zd_decode_binary of the 12-byte header
 * and prefix at buf and the data apart, crc the CRC32C of all three as the
 * record's header has it (the caller's, computed piece by piece as the
 * data came in); the record takes data, or it is freed. */
int zd_pages_prefix_len(const uint8_t *body, size_t avail, size_t *prefix_len, uint32_t *data_len);
int zd_decode_binary_pages(const uint8_t *buf, size_t prefix_len, uint8_t *data, uint32_t data_len,
			   uint32_t crc, const struct zd_rec_header *hdr, struct zd_record *r,
			   char *msg, size_t msglen);
/* The same without the data (a passed record, zd_reader.pass_pages): the
 * header and prefix checked, the CRC not; data stays NULL. */
int zd_decode_binary_pages_head(const uint8_t *buf, size_t prefix_len, uint32_t data_len,
				const struct zd_rec_header *hdr, struct zd_record *r, char *msg,
				size_t msglen);
/* A RAW PAGES record's header and prefix, its CRC over the data too, but
 * not the data: the writer writes that from where it is. */
int zd_enc_binary_pages_head(struct zd_buf *b, const struct zd_record *r, uint32_t page_size);

#endif
