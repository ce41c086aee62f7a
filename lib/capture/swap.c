/* SPDX-License-Identifier: MIT */
/*
 * zd-swap's stage (zd_swap_run): every record passes through; for an epoch
 * whose pages the tracker did not send inline the capture (capture.c)
 * reads the DIRTY pages from the target and emits PAGES before the COMMIT,
 * and zd-track is told the epoch is DRAINED (remus mode resumes the VM only
 * then).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "zd/capture.h"
#include "zd/fb.h"
#include "zd/stream.h"
#include "zd/util.h"

static int emit(void *arg, const struct zd_record *r)
{
	return zd_writer_put(arg, r);
}

/* Records that end a unit downstream waits for go out at once. */
static bool flush_after(uint16_t type)
{
	return type != ZD_REC_CHECKPOINT && type != ZD_REC_DIRTY && type != ZD_REC_PAGES &&
	       type != ZD_REC_STATE && type != ZD_REC_STANDBY;
}

/* The VM died mid-epoch: drop the rest of that epoch (zd-recv discards
 * it at END status 3) and wait for zd-track's END, which tells the
 * backup to take over. Returns whether END went on. */
static bool pass_end(struct zd_reader *rd, struct zd_writer *w)
{
	struct zd_record r;
	bool end = false;

	zd_warnx("the VM died: dropping the epoch, passing on zd-track's END");
	while (!end && zd_reader_next(rd, (zd_record_init(&r, 0), &r)) > 0) {
		if ((end = r.type == ZD_REC_END) && (zd_writer_put(w, &r) < 0 || zd_writer_flush(w) < 0))
			end = false;
		zd_record_free(&r);
	}
	return end;
}

int zd_swap_run(int in_fd, int out_fd, bool json, uint64_t drain_delay_ns)
{
	struct zd_reader rd;
	struct zd_writer w;
	struct zd_capture *cap;
	struct zd_record r;
	int n, rc = 0, fb = -1;
	bool ended = false;

	zd_reader_init(&rd, in_fd, "stdin");
	zd_writer_init(&w, out_fd, zd_output_encoding(out_fd, json));
	/* what zd-swap reads of PAGES is their page set */
	rd.pass_pages = w.enc == ZD_ENC_BINARY;
	cap = zd_capture_new(emit, &w, -1);
	zd_capture_own_guard(cap);
	zd_capture_set_drain_delay(cap, drain_delay_ns);
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		if (r.type == ZD_REC_HEADER && fb < 0) {
			fb = zd_fb_join(&r.u.header, ZD_ROLE_SWAP);
			zd_capture_set_fb(cap, fb);
		}
		if ((rc = zd_capture_feed(cap, &r))) {
			if (rd.err) {	/* a passed record's input was cut */
				zd_warnx("%s", rd.msg);
				rc = rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
			} else if (rc == ZD_EXIT_FAIL)
				zd_warnx("stdout: %s: %s", zd_capture_error(cap), strerror(w.err));
			else
				zd_warnx("%s", zd_capture_error(cap));
			zd_record_free(&r);
			if (zd_capture_vm_died(cap))
				ended = pass_end(&rd, &w);
			break;
		}
		if (flush_after(r.type) && zd_writer_flush(&w) < 0) {
			zd_warnx("stdout: write: %s", strerror(w.err));
			rc = ZD_EXIT_FAIL;
			zd_record_free(&r);
			break;
		}
		if (r.type == ZD_REC_COMMIT) {
			const struct zd_capture_stats *st = zd_capture_stats(cap);

			zd_debug("epoch %" PRIu64 ": %" PRIu64 " pages captured", st->epoch, st->captured);
			/* After the flush: DRAINED means downstream has the pages. */
			if (fb >= 0) {
				struct zd_fb_msg m = { .op = ZD_FB_DRAINED, .epoch = st->epoch, .a = st->captured,
						       .b = st->cow_faults };

				if (zd_fb_send(fb, &m, NULL, NULL, 0) < 0) {
					/* A tracker that died is the stream's to report
					 * (it ends without END); only a live one matters. */
					if (errno == EPIPE || errno == ECONNRESET)
						zd_debug("control socket: DRAINED: %s", strerror(errno));
					else
						zd_warn("control socket: DRAINED: continuing open loop");
					close(fb);
					fb = -1;
					zd_capture_set_fb(cap, -1);
				}
			}
		}
		ended = r.type == ZD_REC_END;
		zd_record_free(&r);
	}
	if (n < 0) {
		zd_warnx("%s", rd.msg);
		rc = rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
	} else if (!rc && !ended) {
		/* Cut between records: the stage before died. What came whole
		 * went on; the stages after see the same missing END. */
		zd_warnx("stdin: byte %" PRIu64 ": after record %" PRIu64 ": truncated: the stream ends without END",
			 (uint64_t)rd.offset, (uint64_t)rd.nrec);
		rc = ZD_EXIT_DATA;
	}
	if (!rc && zd_writer_flush(&w) < 0) {
		zd_warnx("stdout: write: %s", strerror(w.err));
		rc = ZD_EXIT_FAIL;
	}
	if (fb >= 0)
		close(fb);
	zd_capture_free(cap);
	zd_writer_free(&w);
	zd_reader_free(&rd);
	return rc;
}
