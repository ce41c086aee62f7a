/* SPDX-License-Identifier: MIT */
/*
 * DISK records (zd-stream(5)): the checks every reader and writer makes on
 * the fields, and the data's one compressed form, a zstd frame like a zstd
 * PAGES record's (content size declared, content checksum, nothing after).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_getFrameHeader */
#include <zstd.h>

#include "stream/codec.h"
#include "zd/util.h"

#define FAIL(err, ...) zd_fail(msg, msglen, err, __VA_ARGS__)

/* Where the write lies is checked here, before anything is allocated or
 * written: a receiver may trust offset + len <= disk_size afterwards. */
int zd_disk_check(const struct zd_rec_disk *d, char *msg, size_t msglen)
{
	if (d->enc > ZD_DENC_ZSTD)
		return FAIL(ZD_RERR_MALFORMED, "unknown disk encoding %u", d->enc);
	if (d->disk_size == 0 || d->disk_size > ZD_DISK_MAX)
		return FAIL(ZD_RERR_RANGE, "disk size %" PRIu64 " outside 1..2^44", d->disk_size);
	if (d->len == 0 || d->len > ZD_DISK_PER_RECORD)
		return FAIL(ZD_RERR_RANGE, "disk write of %u bytes, 1..%u allowed", d->len,
			    ZD_DISK_PER_RECORD);
	if (d->offset > UINT64_MAX - d->len)
		return FAIL(ZD_RERR_RANGE, "disk write at %" PRIu64 " of %u bytes overflows", d->offset,
			    d->len);
	if (d->offset + d->len > d->disk_size)
		return FAIL(ZD_RERR_RANGE, "disk write at %" PRIu64 " of %u bytes past the disk's %" PRIu64,
			    d->offset, d->len, d->disk_size);
	if (d->enc == ZD_DENC_RAW && d->data_len != d->len)
		return FAIL(ZD_RERR_MALFORMED, "raw disk data is %u bytes, the write %u", d->data_len,
			    d->len);
	if (d->enc == ZD_DENC_ZSTD && (d->data_len == 0 || d->data_len > ZD_REC_MAX))
		return FAIL(ZD_RERR_MALFORMED, "zstd disk data of %u bytes", d->data_len);
	return 0;
}

void zd_disk_pack(struct zd_rec_disk *d, const uint8_t *raw, uint32_t len, int level)
{
	size_t cap = ZSTD_compressBound(len);
	uint8_t *z = zd_xmalloc(cap);
	ZSTD_CCtx *cc = level ? ZSTD_createCCtx() : NULL;
	size_t n = 0;

	d->len = len;
	if (cc) {
		ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
		ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 1);
		ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
		n = ZSTD_compress2(cc, z, cap, raw, len);
		ZSTD_freeCCtx(cc);
	}
	if (cc && !ZSTD_isError(n) && n < len) {
		d->enc = ZD_DENC_ZSTD;
		d->data_len = (uint32_t)n;
		d->data = zd_xrealloc(z, n);
		return;
	}
	free(z);
	d->enc = ZD_DENC_RAW;
	d->data_len = len;
	d->data = zd_xmalloc(len);
	memcpy(d->data, raw, len);
}

int zd_disk_expand(const struct zd_rec_disk *d, uint8_t **out, char *msg, size_t msglen)
{
	ZSTD_frameHeader fh;
	uint8_t *buf;
	size_t n;

	*out = NULL;
	if (zd_disk_check(d, msg, msglen) < 0)
		return -1;
	buf = zd_xmalloc(d->len);
	if (d->enc == ZD_DENC_RAW) {
		memcpy(buf, d->data, d->len);
		*out = buf;
		return 0;
	}
	if (ZSTD_getFrameHeader(&fh, d->data, d->data_len) != 0 ||
	    fh.frameContentSize != d->len || !fh.checksumFlag ||
	    ZSTD_findFrameCompressedSize(d->data, d->data_len) != d->data_len) {
		free(buf);
		zd_fail(msg, msglen, ZD_RERR_MALFORMED,
			"disk data is not one zstd frame of %u bytes with a checksum", d->len);
		return -1;
	}
	n = ZSTD_decompress(buf, d->len, d->data, d->data_len);
	if (ZSTD_isError(n) || n != d->len) {
		free(buf);
		zd_fail(msg, msglen, ZD_RERR_MALFORMED, "disk data: %s",
			ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short content");
		return -1;
	}
	*out = buf;
	return 0;
}
