/* SPDX-License-Identifier: MIT */
/*
 * zd_writer: encodes records into one buffer and writes it out in big
 * chunks. Records that end a unit of work downstream is waiting for
 * (HEADER, COMMIT, ACK, END) flush at once, so a pipeline never stalls on
 * a half-full buffer even if a tool forgets to call zd_writer_flush.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/codec.h"
#include "zd/util.h"

#define FLUSH_AT (256u << 10)

void zd_writer_init(struct zd_writer *w, int fd, enum zd_encoding enc)
{
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->enc = enc;
}

void zd_writer_free(struct zd_writer *w)
{
	free(w->buf);
	w->buf = NULL;
	w->buf_len = w->buf_cap = 0;
}

int zd_writer_flush(struct zd_writer *w)
{
	if (w->err)
		return -1;
	if (w->buf_len == 0)
		return 0;
	if (zd_write_full(w->fd, w->buf, w->buf_len) < 0) {
		w->err = errno ? errno : EIO;
		return -1;
	}
	w->bytes += w->buf_len;
	w->buf_len = 0;
	return 0;
}

/* Page data is written from where it is, not copied into the buffer:
 * a record passed unread (splice) or RAW pages this big. */
#define DIRECT_AT (64u << 10)

static int put_passed(struct zd_writer *w, struct zd_reader *rd)
{
	if (w->enc != ZD_ENC_BINARY || zd_writer_flush(w) < 0) {
		w->err = w->err ? w->err : EINVAL;
		return -1;
	}
	int rc = zd_reader_pass_out(rd, w->fd, &w->bytes);
	if (rc == -1)
		w->err = errno ? errno : EIO;
	else if (rc == -2)
		w->err = EPROTO;	/* the input's: rd->msg says what */
	return rc ? -1 : 0;
}

static int put_pages_direct(struct zd_writer *w, const struct zd_record *r)
{
	struct zd_buf b = { w->buf, w->buf_len, w->buf_cap };
	int rc = zd_enc_binary_pages_head(&b, r, w->page_size);

	w->buf = b.p;
	w->buf_cap = b.cap;
	if (rc < 0) {
		w->err = errno;
		return -1;
	}
	w->buf_len = b.len;
	if (zd_writer_flush(w) < 0)
		return -1;
	if (zd_write_full(w->fd, r->u.pages.data, r->u.pages.data_len) < 0) {
		w->err = errno ? errno : EIO;
		return -1;
	}
	w->bytes += r->u.pages.data_len;
	return 0;
}

int zd_writer_put(struct zd_writer *w, const struct zd_record *r)
{
	if (w->err)
		return -1;
	if (r->type == ZD_REC_PAGES && r->u.pages.pass)
		return put_passed(w, r->u.pages.pass);
	if (r->type == ZD_REC_PAGES && w->enc == ZD_ENC_BINARY && w->preamble_done &&
	    r->u.pages.enc == ZD_PENC_RAW && r->u.pages.data_len >= DIRECT_AT)
		return put_pages_direct(w, r);
	struct zd_buf b = { w->buf, w->buf_len, w->buf_cap };
	size_t start = b.len;
	if (w->enc == ZD_ENC_BINARY && !w->preamble_done) {
		zd_buf_put(&b, ZD_STREAM_MAGIC, 4);
		zd_buf_u16(&b, ZD_STREAM_MAJOR);
		zd_buf_u16(&b, ZD_STREAM_MINOR);
	}
	uint32_t page_size = r->type == ZD_REC_HEADER ? r->u.header.page_size : w->page_size;
	int rc = w->enc == ZD_ENC_BINARY ? zd_enc_binary_buf(&b, r, page_size)
					 : zd_enc_json_buf(&b, r, page_size);
	if (rc == 0 && w->enc == ZD_ENC_JSON && b.len - start > ZD_JSON_LINE_MAX) {
		errno = EFBIG;
		rc = -1;
	}
	w->buf = b.p;
	w->buf_cap = b.cap;
	if (rc < 0) {
		w->buf_len = start;	/* nothing of a refused record is written */
		w->err = errno;
		return -1;
	}
	w->buf_len = b.len;
	if (w->enc == ZD_ENC_BINARY)
		w->preamble_done = true;
	if (r->type == ZD_REC_HEADER)
		w->page_size = r->u.header.page_size;
	switch (r->type) {
	case ZD_REC_HEADER:
	case ZD_REC_COMMIT:
	case ZD_REC_ACK:
	case ZD_REC_END:
		return zd_writer_flush(w);
	default:
		return w->buf_len >= FLUSH_AT ? zd_writer_flush(w) : 0;
	}
}

enum zd_encoding zd_output_encoding(int fd, bool json_flag)
{
	return json_flag || isatty(fd) ? ZD_ENC_JSON : ZD_ENC_BINARY;
}
