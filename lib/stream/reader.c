/* SPDX-License-Identifier: MIT */
/*
 * zd_reader: detects the encoding from the first byte, then hands one
 * record at a time (binary: header + body; JSON: one line) to the decoder
 * and checks the stream-level rules (HEADER first, epoch order). Every
 * failure is sticky and leaves one message naming the byte offset or line
 * and the record.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/codec.h"
#include "zd/util.h"

/* Free space wanted before a read(2); the buffer starts at twice this and
 * doubles only when a record needs more. */
#define READ_CHUNK (16u << 10)
/* A read(2) asks for what the record needs, or this much ahead: no more,
 * so the data of a big PAGES record is still unread when its header is
 * and can go straight into its own buffer (next_pages_direct). */
#define READ_AHEAD (64u << 10)
/* PAGES bodies from this size on take that path; their prefix (epoch,
 * page set, data length) is looked for in the first PREFIX_MAX bytes. */
#define DIRECT_MIN (1u << 20)
#define PREFIX_MAX (64u << 10)
#define DIRECT_PIECE (256u << 10)
/* With pass_pages, PAGES bodies from this size on are passed unread. */
#define PASS_MIN (64u << 10)

void zd_reader_init(struct zd_reader *rd, int fd, const char *name)
{
	memset(rd, 0, sizeof(*rd));
	rd->fd = fd;
	rd->name = name ? name : "input";
	rd->line = 1;
	rd->stop_fd = -1;
}

void zd_reader_free(struct zd_reader *rd)
{
	free(rd->buf);
	rd->buf = NULL;
	rd->buf_len = rd->buf_pos = rd->buf_cap = 0;
	free(rd->hdr.target);
	free(rd->hdr.control);
	rd->hdr.target = rd->hdr.control = NULL;
}

static int fail(struct zd_reader *rd, enum zd_read_err err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct zd_reader *rd, enum zd_read_err err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rd->msg, sizeof(rd->msg), fmt, ap);
	va_end(ap);
	rd->err = err;
	return -1;
}

static bool stopped(const struct zd_reader *rd)
{
	return rd->stop_flag && *rd->stop_flag;
}

/* Wait until fd is readable: -1 with ECANCELED once stop_fd is, with
 * EINTR once stop_flag is set; idle() between waits. */
static int rd_wait(struct zd_reader *rd)
{
	struct pollfd p[2] = { { .fd = rd->fd, .events = POLLIN }, { .fd = rd->stop_fd, .events = POLLIN } };
	nfds_t n = rd->stop_fd >= 0 ? 2 : 1;

	for (;;) {
		int ms = rd->idle ? rd->idle(rd->idle_arg) : -1, r, e;
		struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
		sigset_t old;

		if (rd->stop_flag) {
			pthread_sigmask(SIG_BLOCK, &rd->stop_sigs, &old);
			if (*rd->stop_flag) {
				pthread_sigmask(SIG_SETMASK, &old, NULL);
				errno = EINTR;
				return -1;
			}
		}
		r = ppoll(p, n, ms >= 0 ? &ts : NULL, rd->stop_flag ? &old : NULL);
		e = errno;
		if (rd->stop_flag)
			pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r < 0 && e == EINTR)
			continue;	/* the flag is looked at above */
		if (r < 0) {
			errno = e;
			return -1;
		}
		if (r == 0)
			continue;	/* idle's time ran out */
		if (n == 2 && p[1].revents) {
			errno = ECANCELED;
			return -1;
		}
		return 0;
	}
}

/* read(2), unless stop_fd becomes readable or stop_flag is set first.
 * EINTR from here means stopped (fill() retries any other). */
static ssize_t rd_read(struct zd_reader *rd, void *buf, size_t len)
{
	if ((rd->stop_fd >= 0 || rd->stop_flag || rd->idle) && rd_wait(rd) < 0)
		return -1;
	return read(rd->fd, buf, len);
}

/* Make want bytes available from buf_pos; returns how many are (fewer
 * only at EOF) or -1 on a read error. Never grows past want plus a chunk,
 * and want is bounded by the caller's length checks. */
static ssize_t fill(struct zd_reader *rd, size_t want)
{
	while (rd->buf_len - rd->buf_pos < want && !rd->eof) {
		if (rd->buf_pos && rd->buf_cap - rd->buf_len < READ_CHUNK) {
			memmove(rd->buf, rd->buf + rd->buf_pos, rd->buf_len - rd->buf_pos);
			rd->buf_len -= rd->buf_pos;
			rd->buf_pos = 0;
		}
		size_t need = ZD_MAX(want, (size_t)READ_CHUNK);
		if (rd->buf_cap - rd->buf_len < READ_CHUNK || rd->buf_cap < need) {
			size_t cap = rd->buf_cap ? rd->buf_cap : 2 * READ_CHUNK;
			while (cap < need + READ_CHUNK || cap - rd->buf_len < READ_CHUNK)
				cap *= 2;
			rd->buf = zd_xrealloc(rd->buf, cap);
			rd->buf_cap = cap;
		}
		size_t ask = ZD_MIN(rd->buf_cap - rd->buf_len,
				    ZD_MAX(want - (rd->buf_len - rd->buf_pos), (size_t)READ_AHEAD));
		ssize_t n = rd_read(rd, rd->buf + rd->buf_len, ask);
		if (n < 0) {
			if (errno == EINTR && !stopped(rd))
				continue;
			return -1;
		}
		if (n == 0)
			rd->eof = true;
		rd->buf_len += (size_t)n;
	}
	return (ssize_t)ZD_MIN(want, rd->buf_len - rd->buf_pos);
}

static int io_fail(struct zd_reader *rd)
{
	return fail(rd, ZD_RERR_IO, "%s: byte %" PRIu64 ": read failed: %s", rd->name,
		    rd->offset, strerror(errno));
}

static int detect(struct zd_reader *rd)
{
	ssize_t n = fill(rd, 1);
	if (n < 0)
		return io_fail(rd);
	if (n == 0)
		return fail(rd, ZD_RERR_TRUNCATED, "%s: byte 0: empty stream (no HEADER)", rd->name);
	if (rd->buf[rd->buf_pos] == 0x89) {
		n = fill(rd, ZD_PREAMBLE_LEN);
		if (n < 0)
			return io_fail(rd);
		if (n < ZD_PREAMBLE_LEN)
			return fail(rd, ZD_RERR_TRUNCATED,
				    "%s: byte %zd: truncated preamble (%zd of %u bytes)", rd->name,
				    n, n, ZD_PREAMBLE_LEN);
		const uint8_t *p = rd->buf + rd->buf_pos;
		if (memcmp(p, ZD_STREAM_MAGIC, 4) != 0)
			return fail(rd, ZD_RERR_MAGIC, "%s: byte 0: bad magic (not a zd-stream)",
				    rd->name);
		uint16_t major = zd_get_u16(p + 4), minor = zd_get_u16(p + 6);
		if (major != ZD_STREAM_MAJOR)
			return fail(rd, ZD_RERR_VERSION,
				    "%s: byte 4: unsupported major version %u (this reader knows %u)",
				    rd->name, major, ZD_STREAM_MAJOR);
		/* Until the HEADER arrives its minor is the preamble's. */
		rd->hdr.major = major;
		rd->hdr.minor = minor;
		rd->enc = ZD_ENC_BINARY;
		rd->buf_pos += ZD_PREAMBLE_LEN;
		rd->offset = ZD_PREAMBLE_LEN;
	} else {
		/* JSON: '{' after optional whitespace (blank lines are skipped
		 * by the line reader, so only look here). */
		size_t i = 0;
		for (;;) {
			n = fill(rd, i + 1);
			if (n < 0)
				return io_fail(rd);
			if ((size_t)n <= i)
				return fail(rd, ZD_RERR_TRUNCATED,
					    "%s: byte %zu: stream of blanks (no HEADER)", rd->name, i);
			uint8_t c = rd->buf[rd->buf_pos + i];
			if (c == '{')
				break;
			if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
				return fail(rd, ZD_RERR_MAGIC,
					    "%s: byte %zu: bad magic (not a zd-stream: byte 0x%02x)",
					    rd->name, i, c);
			if (i > 4096)
				return fail(rd, ZD_RERR_MAGIC,
					    "%s: byte %zu: bad magic (only whitespace)", rd->name, i);
			i++;
		}
		rd->enc = ZD_ENC_JSON;
		rd->hdr.major = ZD_STREAM_MAJOR;
		rd->hdr.minor = ZD_STREAM_MINOR;
	}
	rd->detected = true;
	return 0;
}

int zd_check_order(struct zd_reader *rd, const struct zd_record *r, char *msg, size_t msglen)
{
	uint64_t cur = rd->last_epoch, e;
	if (!rd->have_header) {
		if (r->type != ZD_REC_HEADER)
			return zd_fail(msg, msglen, ZD_RERR_ORDER, "record before HEADER");
		return 0;
	}
	switch (r->type) {
	case ZD_REC_HEADER:
		return zd_fail(msg, msglen, ZD_RERR_ORDER, "second HEADER");
	case ZD_REC_CHECKPOINT:
		if (r->u.ckpt.epoch <= cur)
			return zd_fail(msg, msglen, ZD_RERR_ORDER,
				       "epoch %" PRIu64 " after epoch %" PRIu64 " (epochs must increase)",
				       r->u.ckpt.epoch, cur);
		return 0;
	case ZD_REC_ACK:
		/* before the first CHECKPOINT, of any: on a resumed stream, an
		 * ACK the cut swallowed (zd-send relays it upstream, and it
		 * comes back down before the next CHECKPOINT) */
		if (cur && r->u.ack.epoch > cur)
			return zd_fail(msg, msglen, ZD_RERR_ORDER,
				       "epoch %" PRIu64 " ahead of the current checkpoint %" PRIu64,
				       r->u.ack.epoch, cur);
		return 0;
	case ZD_REC_DIRTY:
	case ZD_REC_STATE:
	case ZD_REC_DISK:
		e = r->type == ZD_REC_DIRTY ? r->u.dirty.epoch :
		    r->type == ZD_REC_STATE ? r->u.state.epoch : r->u.disk.epoch;
		if (e > cur)
			return zd_fail(msg, msglen, ZD_RERR_ORDER,
				       "epoch %" PRIu64 " ahead of the current checkpoint %" PRIu64, e, cur);
		return 0;
	case ZD_REC_STANDBY:
	case ZD_REC_PAGES:
		/* a standby set and pre-copied pages may belong to the epoch
		 * about to start; before the first CHECKPOINT, to any: a stream
		 * resumed after a reconnect starts where the backup stopped */
		e = r->type == ZD_REC_STANDBY ? r->u.dirty.epoch : r->u.pages.epoch;
		if (cur && e > cur + 1)
			return zd_fail(msg, msglen, ZD_RERR_ORDER,
				       "epoch %" PRIu64 " beyond the next checkpoint %" PRIu64, e, cur + 1);
		return 0;
	case ZD_REC_COMMIT:
		if (r->u.commit.epoch != cur)
			return zd_fail(msg, msglen, ZD_RERR_ORDER,
				       "COMMIT of epoch %" PRIu64 ", the current checkpoint is %" PRIu64,
				       r->u.commit.epoch, cur);
		return 0;
	default:
		return 0;
	}
}

/* After a record decoded: stream rules, then remember what they need. */
static int accept(struct zd_reader *rd, struct zd_record *r, const char *where)
{
	char what[200];
	int rc = zd_check_order(rd, r, what, sizeof(what));
	if (rc < 0) {
		fail(rd, (enum zd_read_err)-rc, "%s: record %" PRIu64 " (%s): %s", where,
		     rd->nrec + 1, zd_rec_type_name(r->type), what);
		zd_record_free(r);
		return -1;
	}
	if (r->type == ZD_REC_HEADER) {
		rd->hdr = r->u.header;
		rd->hdr.target = zd_xstrdup(r->u.header.target);
		rd->hdr.control = zd_xstrdup(r->u.header.control);
		rd->have_header = true;
	} else if (r->type == ZD_REC_CHECKPOINT) {
		rd->last_epoch = r->u.ckpt.epoch;
	}
	rd->nrec++;
	return 1;
}

static int end_of_input(struct zd_reader *rd, const char *where)
{
	if (!rd->have_header)
		return fail(rd, ZD_RERR_TRUNCATED, "%s: stream ends before its HEADER", where);
	return 0;
}

/* The next record's body is cut short: the stream ends at byte end. */
static int truncated_body(struct zd_reader *rd, const char *where, const char *tname, uint64_t end,
			  uint32_t blen)
{
	return fail(rd, ZD_RERR_TRUNCATED,
		    "%s: record %" PRIu64 " (%s): truncated: stream ends at byte %" PRIu64 " inside a %u-byte body",
		    where, rd->nrec + 1, tname, end, blen);
}

static bool passing(const struct zd_reader *rd)
{
	return rd->pass_pages && rd->stop_fd < 0 && !rd->stop_flag && !rd->idle;
}

/* next_pages_direct's way for a stage that passes PAGES on: the header
 * and prefix decoded, the data left where it is (in the buffer, have
 * bytes of it, and in fd) for zd_reader_pass_out. */
static int pass_pages(struct zd_reader *rd, struct zd_record *r, size_t plen, uint32_t dlen,
		      size_t have, const char *where)
{
	char what[200];
	int rc = zd_decode_binary_pages_head(rd->buf + rd->buf_pos, plen, dlen,
					     rd->have_header ? &rd->hdr : NULL, r, what, sizeof(what));

	if (rc < 0)
		return fail(rd, (enum zd_read_err)-rc, "%s: record %" PRIu64 " (PAGES): %s", where,
			    rd->nrec + 1, what);
	if (accept(rd, r, where) < 0)
		return -1;
	r->u.pages.pass = rd;
	rd->pass_open = true;
	rd->pass_head = ZD_RECHDR_LEN + plen + have;
	rd->pass_left = dlen - have;
	rd->offset += rd->pass_head + rd->pass_left;
	return 1;
}

/* Where a passed record was not written (dropped): its bytes are skipped. */
static int pass_skip(struct zd_reader *rd)
{
	uint8_t sink[64 << 10];
	uint64_t start = rd->offset - rd->pass_head - rd->pass_left;

	rd->pass_open = false;
	rd->buf_pos += rd->pass_head;
	while (rd->pass_left) {
		ssize_t n = read(rd->fd, sink, ZD_MIN(rd->pass_left, sizeof(sink)));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return io_fail(rd);
		if (n == 0)
			return fail(rd, ZD_RERR_TRUNCATED, "%s: byte %" PRIu64 ": record %" PRIu64 " (PAGES): "
				    "truncated: stream ends inside the body, %" PRIu64 " bytes short", rd->name,
				    start, rd->nrec, rd->pass_left);
		rd->pass_left -= (uint64_t)n;
	}
	return 0;
}

int zd_reader_pass_out(struct zd_reader *rd, int out_fd, uint64_t *written)
{
	uint64_t start = rd->offset - rd->pass_head - rd->pass_left, left = rd->pass_left;

	if (!rd->pass_open) {
		errno = EINVAL;
		return -1;
	}
	/* Read and written, the data is checked on the way; spliced, it is
	 * left to the stage that reads it. */
	const uint8_t *h = rd->buf + rd->buf_pos;
	uint32_t crc = zd_crc32c(zd_crc32c(0, h, 8), h + ZD_RECHDR_LEN, rd->pass_head - ZD_RECHDR_LEN);
	uint32_t stored = zd_get_u32(h + 8);
	/* Where writing fails, the record stays open: a next read skips
	 * what is left of it. */
	if (zd_write_full(out_fd, rd->buf + rd->buf_pos, rd->pass_head) < 0)
		return -1;
	rd->pass_open = false;
	rd->buf_pos += rd->pass_head;
	*written += rd->pass_head;
	/* splice(2) moves the pipe's pages; where neither end is a pipe it
	 * says EINVAL, and read and write do it. */
	bool by_splice = true, spliced = false;
	uint8_t *bounce = NULL;
	while (left) {
		ssize_t n;

		if (by_splice) {
			n = splice(rd->fd, NULL, out_fd, NULL, ZD_MIN(left, (uint64_t)(1u << 30)),
				   SPLICE_F_MOVE);
			if (n < 0 && errno == EINVAL) {
				by_splice = false;
				bounce = zd_xmalloc(DIRECT_PIECE);
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				/* which end failed: splice says EPIPE for the out side */
				if (errno == EPIPE || errno == ECONNRESET || errno == ENOSPC || errno == EIO)
					goto out_failed;
				io_fail(rd);
				goto in_failed;
			}
		} else {
			n = read(rd->fd, bounce, ZD_MIN(left, (uint64_t)DIRECT_PIECE));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				io_fail(rd);
				goto in_failed;
			}
			if (n > 0)
				crc = zd_crc32c(crc, bounce, (size_t)n);
			if (n > 0 && zd_write_full(out_fd, bounce, (size_t)n) < 0)
				goto out_failed;
		}
		if (n == 0) {
			rd->eof = true;
			fail(rd, ZD_RERR_TRUNCATED, "%s: byte %" PRIu64 ": record %" PRIu64 " (PAGES): truncated: "
			     "stream ends inside the body, %" PRIu64 " bytes short", rd->name, start,
			     rd->nrec, left);
			goto in_failed;
		}
		spliced |= by_splice;
		left -= (uint64_t)n;
		*written += (uint64_t)n;
	}
	rd->pass_left = 0;
	free(bounce);
	if (!spliced && crc != stored)
		return fail(rd, ZD_RERR_CRC, "%s: byte %" PRIu64 ": record %" PRIu64 " (PAGES): crc mismatch "
			    "(stored 0x%08x, computed 0x%08x)", rd->name, start, rd->nrec, stored, crc), -2;
	return 0;
out_failed:
	rd->pass_open = true;
	rd->pass_head = 0;
	rd->pass_left = left;
	free(bounce);
	return -1;
in_failed:
	rd->pass_left = 0;
	free(bounce);
	return -2;
}

/* A big PAGES record: its prefix through the buffer, its data read from
 * the input straight into the buffer the record keeps. 1: read; -1:
 * failed (rd says why); 0: not this way (the prefix is not where it
 * should be, or the data is mostly buffered already): the caller reads it
 * whole, and reports what is wrong with it. */
static int next_pages_direct(struct zd_reader *rd, struct zd_record *r, uint32_t blen, const char *where)
{
	char what[200];
	size_t plen, total = ZD_RECHDR_LEN + (size_t)blen;
	uint32_t dlen;
	ssize_t n = fill(rd, ZD_RECHDR_LEN + ZD_MIN((size_t)blen, (size_t)PREFIX_MAX));

	if (n < 0)
		return io_fail(rd);
	/* all that is buffered of the body, which may be more than asked for */
	size_t buffered = ZD_MIN(rd->buf_len - rd->buf_pos, total);
	const uint8_t *body = rd->buf + rd->buf_pos + ZD_RECHDR_LEN;
	size_t avail = buffered - ZD_MIN(buffered, (size_t)ZD_RECHDR_LEN);

	if (zd_pages_prefix_len(body, avail, &plen, &dlen) < 0 || plen + dlen != blen)
		return 0;
	size_t have = avail - plen;	/* of the data */
	if (have > dlen / 2)
		return 0;
	if (passing(rd))
		return pass_pages(rd, r, plen, dlen, have, where);
	uint8_t *data = zd_xmalloc(dlen);
	const uint8_t *h = rd->buf + rd->buf_pos;
	uint32_t crc = zd_crc32c(zd_crc32c(zd_crc32c(0, h, 8), body, plen), body + plen, have);

	memcpy(data, body + plen, have);
	/* the CRC of each piece as it comes in, while it is in the cache */
	while (have < dlen) {
		n = rd_read(rd, data + have, ZD_MIN(dlen - have, (size_t)DIRECT_PIECE));
		if (n > 0)
			crc = zd_crc32c(crc, data + have, (size_t)n);
		if (n < 0 && errno == EINTR && !stopped(rd))
			continue;
		if (n <= 0) {
			free(data);
			if (n < 0)
				return io_fail(rd);
			rd->eof = true;
			return truncated_body(rd, where, "PAGES", rd->offset + ZD_RECHDR_LEN + plen + have, blen);
		}
		have += (size_t)n;
	}
	int rc = zd_decode_binary_pages(h, plen, data, dlen, crc, rd->have_header ? &rd->hdr : NULL, r,
					what, sizeof(what));
	if (rc < 0)
		return fail(rd, (enum zd_read_err)-rc, "%s: record %" PRIu64 " (PAGES): %s", where,
			    rd->nrec + 1, what);
	if (accept(rd, r, where) < 0)
		return -1;
	rd->buf_pos += ZD_RECHDR_LEN + avail;
	rd->offset += total;
	return 1;
}

static int next_binary(struct zd_reader *rd, struct zd_record *r)
{
	char where[200], what[200];
	snprintf(where, sizeof(where), "%s: byte %" PRIu64, rd->name, rd->offset);
	ssize_t n = fill(rd, ZD_RECHDR_LEN);
	if (n < 0)
		return io_fail(rd);
	if (n == 0)
		return end_of_input(rd, where);
	const uint8_t *p = rd->buf + rd->buf_pos;
	uint64_t rec = rd->nrec + 1;
	if (n < ZD_RECHDR_LEN) {
		if (n < 2)
			return fail(rd, ZD_RERR_TRUNCATED,
				    "%s: record %" PRIu64 ": truncated: stream ends at byte %" PRIu64
				    " inside the record header", where, rec, rd->offset + (uint64_t)n);
		return fail(rd, ZD_RERR_TRUNCATED,
			    "%s: record %" PRIu64 " (%s): truncated: stream ends at byte %" PRIu64
			    " inside the record header", where, rec,
			    zd_rec_type_name(zd_get_u16(p)), rd->offset + (uint64_t)n);
	}
	const char *tname = zd_rec_type_name(zd_get_u16(p));
	uint32_t blen = zd_get_u32(p + 4);
	if (blen > ZD_REC_MAX)
		return fail(rd, ZD_RERR_TOO_BIG, "%s: record %" PRIu64 " (%s): length %u over the limit of %u",
			    where, rec, tname, blen, ZD_REC_MAX);
	if (zd_get_u16(p) == ZD_REC_PAGES && blen >= (passing(rd) ? PASS_MIN : DIRECT_MIN)) {
		int rc = next_pages_direct(rd, r, blen, where);
		if (rc)
			return rc;
	}
	size_t total = ZD_RECHDR_LEN + (size_t)blen;
	n = fill(rd, total);
	if (n < 0)
		return io_fail(rd);
	if ((size_t)n < total)
		return truncated_body(rd, where, tname, rd->offset + (uint64_t)n, blen);
	p = rd->buf + rd->buf_pos;
	int rc = zd_decode_binary(p, total, rd->have_header ? &rd->hdr : NULL, r, what,
				  sizeof(what));
	if (rc < 0)
		return fail(rd, (enum zd_read_err)-rc, "%s: record %" PRIu64 " (%s): %s", where, rec,
			    tname, what);
	if (accept(rd, r, where) < 0)
		return -1;
	rd->buf_pos += total;
	rd->offset += total;
	return 1;
}

static bool blank(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
			return false;
	return true;
}

static int next_json(struct zd_reader *rd, struct zd_record *r)
{
	char where[200], what[200];
	for (;;) {
		snprintf(where, sizeof(where), "%s: line %" PRIu64, rd->name, rd->line);
		size_t scanned = 0;
		const uint8_t *nl = NULL;
		for (;;) {
			size_t avail = rd->buf_len - rd->buf_pos;
			nl = memchr(rd->buf + rd->buf_pos + scanned, '\n', avail - scanned);
			if (nl)
				break;
			scanned = avail;
			if (avail > ZD_JSON_LINE_MAX)
				return fail(rd, ZD_RERR_TOO_BIG,
					    "%s: record %" PRIu64 ": line longer than %u bytes", where,
					    rd->nrec + 1, ZD_JSON_LINE_MAX);
			ssize_t n = fill(rd, avail + 1);
			if (n < 0)
				return io_fail(rd);
			if ((size_t)n <= avail)
				break;	/* EOF */
		}
		const uint8_t *p = rd->buf + rd->buf_pos;
		size_t len = nl ? (size_t)(nl - p) : rd->buf_len - rd->buf_pos;
		if (!nl) {
			if (blank(p, len))
				return end_of_input(rd, where);
			return fail(rd, ZD_RERR_TRUNCATED,
				    "%s: record %" PRIu64 ": truncated: stream ends at byte %" PRIu64
				    " inside a line (no newline)", where, rd->nrec + 1,
				    rd->offset + (uint64_t)len);
		}
		if (len > ZD_JSON_LINE_MAX)
			return fail(rd, ZD_RERR_TOO_BIG,
				    "%s: record %" PRIu64 ": line longer than %u bytes", where,
				    rd->nrec + 1, ZD_JSON_LINE_MAX);
		if (blank(p, len)) {
			rd->buf_pos += len + 1;
			rd->offset += len + 1;
			rd->line++;
			continue;
		}
		int rc = zd_decode_json((const char *)p, len, rd->have_header ? &rd->hdr : NULL, r,
					what, sizeof(what));
		if (rc < 0) {
			if (r->type)
				return fail(rd, (enum zd_read_err)-rc, "%s: record %" PRIu64 " (%s): %s",
					    where, rd->nrec + 1, zd_rec_type_name(r->type), what);
			return fail(rd, (enum zd_read_err)-rc, "%s: record %" PRIu64 ": %s", where,
				    rd->nrec + 1, what);
		}
		if (accept(rd, r, where) < 0)
			return -1;
		rd->buf_pos += len + 1;
		rd->offset += len + 1;
		rd->line++;
		return 1;
	}
}

int zd_reader_next(struct zd_reader *rd, struct zd_record *r)
{
	zd_record_init(r, 0);
	if (rd->err)
		return -1;
	if (rd->pass_open && pass_skip(rd) < 0)
		return -1;
	if (!rd->detected && detect(rd) < 0)
		return -1;
	return rd->enc == ZD_ENC_BINARY ? next_binary(rd, r) : next_json(rd, r);
}
