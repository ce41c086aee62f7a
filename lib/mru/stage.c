/* SPDX-License-Identifier: MIT */
/*
 * The zd-mru stage: a filter that passes every record through and, when
 * an epoch closes (its COMMIT, or the next epoch starting in a stream
 * without COMMITs), scores the prediction made for it and predicts the
 * next one:
 *
 *   … COMMIT(e)  →  STAT "mru"(e): standby, dirty, hits, precision, recall
 *                →  STANDBY(e+1)  (also sent to the tracker's feedback socket)
 *
 * An epoch's pages are its DIRTY set plus any pages pre-copied for it
 * (PAGES flagged PRECOPY, zddspt mode), so every mode is scored alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/fb.h"
#include "zd/mru.h"
#include "zd/stream.h"
#include "zd/util.h"

struct stage {
	const struct zd_mru_stage_opts *o;
	struct zd_reader rd;
	struct zd_writer w;
	struct zd_mru *m;
	int fb;				/* feedback socket (non-blocking), -1 if none */
	uint8_t *fbbuf;
	uint64_t fb_dropped;		/* STANDBY hints the full socket refused */

	uint64_t acc_epoch;		/* epoch whose pages are being gathered */
	bool acc_open;
	struct zd_pageset acc;
	struct zd_pageset tmp;

	uint64_t pred_epoch;		/* epoch the standby set is for, 0 = none */
	struct zd_pageset standby;
};

static int out_fail(struct stage *s)
{
	int e = s->w.err ? s->w.err : EIO;

	if (s->rd.err) {	/* a passed record's input was cut */
		zd_warnx("%s", s->rd.msg);
		return s->rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
	}

	/* The usual way to get here: the next stage died. Say so, and where
	 * in the run, since every stage before this one reports the same. */
	if (e == EPIPE || e == ECONNRESET)
		zd_warnx("stdout: %s: the stage after zd-mru is gone (at epoch %llu)", strerror(e),
			 (unsigned long long)s->acc_epoch);
	else
		zd_warnx("stdout: %s", strerror(e));
	return ZD_EXIT_FAIL;
}

static void feedback_send(struct stage *s)
{
	struct zd_fb_msg msg = { .op = ZD_FB_STANDBY, .epoch = s->pred_epoch };
	size_t cap = ZD_FB_MAX_MSG - sizeof(msg);

	if (s->fb < 0)
		return;
	msg.len = (uint32_t)zd_fb_encode_set(&s->standby, s->fbbuf, cap);
	if (zd_fb_send(s->fb, &msg, s->fbbuf, NULL, 0) == 0)
		return;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		/* The tracker is not reading (stalled, or its feedback thread
		 * wedged): drop this hint rather than stop the stream for it;
		 * zd-track falls back to the last epoch's pages. */
		if (!s->fb_dropped++)
			zd_debug("feedback socket full: STANDBY for epoch %llu dropped (and any more)",
				 (unsigned long long)s->pred_epoch);
	} else {
		/* The tracker went away; the stream carries on without it. */
		zd_debug("feedback socket: %s; no more STANDBY sent there", strerror(errno));
		close(s->fb);
		s->fb = -1;
	}
}

static int emit_stat(struct stage *s, uint64_t epoch, uint64_t budget)
{
	struct zd_record r;
	uint64_t ns = zd_pageset_count(&s->standby), nd = zd_pageset_count(&s->acc);
	uint64_t hits = zd_pageset_intersect_count(&s->standby, &s->acc);
	unsigned n = 0;

	zd_record_init(&r, ZD_REC_STAT);
	r.u.stat.epoch = epoch;
	snprintf(r.u.stat.source, sizeof(r.u.stat.source), "mru");
#define KV(k, v) do { snprintf(r.u.stat.kv[n].key, sizeof(r.u.stat.kv[n].key), "%s", k); \
		      r.u.stat.kv[n++].value = (double)(v); } while (0)
	KV("standby", ns);
	KV("dirty", nd);
	KV("hits", hits);
	KV("budget", budget);
	/* A ratio over an empty set is undefined: left out, not zero. */
	if (ns)
		KV("precision", (double)hits / (double)ns);
	if (nd)
		KV("recall", (double)hits / (double)nd);
#undef KV
	r.u.stat.n = n;
	return zd_writer_put(&s->w, &r);
}

/* Epoch acc_epoch is complete: score its prediction, predict the next. */
static int close_epoch(struct stage *s)
{
	struct zd_record r;
	uint64_t budget = zd_mru_budget_pages(&s->o->budget, zd_pageset_count(&s->acc));

	if (!s->acc_open)
		return 0;
	s->acc_open = false;
	if (s->pred_epoch == s->acc_epoch && emit_stat(s, s->acc_epoch, budget) < 0)
		return -1;
	zd_mru_observe(s->m, s->acc_epoch, &s->acc);
	zd_mru_predict(s->m, budget, &s->standby);
	s->pred_epoch = s->acc_epoch + 1;
	zd_pageset_clear(&s->acc);

	zd_record_init(&r, ZD_REC_STANDBY);
	r.u.dirty.epoch = s->pred_epoch;
	r.u.dirty.set = s->standby;	/* borrowed */
	if (zd_writer_put(&s->w, &r) < 0)
		return -1;
	feedback_send(s);
	return 0;
}

/* Gather pages of epoch e; a record of a later epoch closes the open one. */
static int gather(struct stage *s, uint64_t e, const struct zd_pageset *set)
{
	if (s->acc_open && e > s->acc_epoch && close_epoch(s) < 0)
		return -1;
	if (!s->acc_open || e > s->acc_epoch) {
		s->acc_open = true;
		s->acc_epoch = e;
	} else if (e < s->acc_epoch) {
		return 0;	/* late pages of a closed epoch: already scored */
	}
	if (set) {
		zd_pageset_union(&s->tmp, &s->acc, set);
		zd_pageset_swap(&s->tmp, &s->acc);
	}
	return 0;
}

static void on_header(struct stage *s, const struct zd_rec_header *h)
{
	s->m = zd_mru_new(h->page_count, s->o->policy);
	if (h->control && *h->control) {
		/* Best effort: a recorded stream names a tracker long gone. */
		s->fb = zd_fb_connect(h->control, ZD_ROLE_MRU);
		if (s->fb < 0) {
			zd_debug("feedback socket %s: %s", h->control, strerror(errno));
		} else {
			/* The stream must never wait for a hint to be taken. */
			int fl = fcntl(s->fb, F_GETFL);

			if (fl < 0 || fcntl(s->fb, F_SETFL, fl | O_NONBLOCK) < 0) {
				zd_debug("feedback socket %s: %s; not used", h->control, strerror(errno));
				close(s->fb);
				s->fb = -1;
				return;
			}
			s->fbbuf = zd_xmalloc(ZD_FB_MAX_MSG);
		}
	}
}

/* Before the stage would block on input, the stages after it get what it
 * has: prediction latency matters to zddspt. */
static bool input_drained(const struct zd_reader *rd)
{
	return rd->buf_pos >= rd->buf_len;
}

int zd_mru_stage_run(const struct zd_mru_stage_opts *o)
{
	struct stage s = { .o = o, .fb = -1 };
	struct zd_record r;
	int rc = ZD_EXIT_OK, got;
	bool ended = false;

	zd_reader_init(&s.rd, o->in_fd, "stdin");
	zd_writer_init(&s.w, o->out_fd, zd_output_encoding(o->out_fd, o->json));
	/* zd-mru reads page sets, not page contents */
	s.rd.pass_pages = s.w.enc == ZD_ENC_BINARY;
	zd_pageset_init(&s.acc);
	zd_pageset_init(&s.tmp);
	zd_pageset_init(&s.standby);

	while ((got = zd_reader_next(&s.rd, &r)) > 0) {
		int step = 0;

		switch (r.type) {
		case ZD_REC_HEADER:
			on_header(&s, &r.u.header);
			break;
		case ZD_REC_CHECKPOINT:
			step = gather(&s, r.u.ckpt.epoch, NULL);
			break;
		case ZD_REC_DIRTY:
			step = gather(&s, r.u.dirty.epoch, &r.u.dirty.set);
			break;
		case ZD_REC_PAGES:
			if (r.u.pages.flags & ZD_PAGES_PRECOPY)
				step = gather(&s, r.u.pages.epoch, &r.u.pages.set);
			break;
		case ZD_REC_END:
			step = close_epoch(&s);
			break;
		default:
			break;
		}
		ended = r.type == ZD_REC_END;
		/* The record itself goes on first, unchanged … */
		if (step == 0 && zd_writer_put(&s.w, &r) < 0)
			step = -1;
		/* … and the epoch's verdict right after its COMMIT. */
		if (step == 0 && r.type == ZD_REC_COMMIT && r.u.commit.epoch == s.acc_epoch)
			step = close_epoch(&s);
		zd_record_free(&r);
		if (step == 0 && input_drained(&s.rd) && zd_writer_flush(&s.w) < 0)
			step = -1;
		if (step < 0) {
			rc = out_fail(&s);
			goto out;
		}
	}
	if (got < 0) {
		if (zd_writer_flush(&s.w) < 0) {
			rc = out_fail(&s);
			goto out;
		}
		zd_warnx("%s", s.rd.msg);
		rc = s.rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
		goto out;
	}
	if (zd_writer_flush(&s.w) < 0) {
		rc = out_fail(&s);
		goto out;
	}
	if (!ended) {
		/* Cut exactly between records: everything read went on, but
		 * the stream is not whole, and the stages after say so too. */
		zd_warnx("%s: %s %llu: after record %llu: truncated: the stream ends without END",
			 s.rd.name, s.rd.enc == ZD_ENC_JSON ? "line" : "byte",
			 (unsigned long long)(s.rd.enc == ZD_ENC_JSON ? s.rd.line : s.rd.offset),
			 (unsigned long long)s.rd.nrec);
		rc = ZD_EXIT_DATA;
	}
out:
	if (s.fb >= 0)
		close(s.fb);
	free(s.fbbuf);
	zd_mru_free(s.m);
	zd_pageset_free(&s.acc);
	zd_pageset_free(&s.tmp);
	zd_pageset_free(&s.standby);
	zd_reader_free(&s.rd);
	zd_writer_free(&s.w);
	return rc;
}
