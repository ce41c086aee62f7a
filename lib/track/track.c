/* SPDX-License-Identifier: MIT */
/*
 * zd-track's checkpoint loop.
 *
 *   open target → serve feedback socket → HEADER
 *   for epoch = 1, 2, …:   mode->round()   (mode_remus.c, mode_buffered.c,
 *                          mode_zddspt.c: each lists its steps, in the
 *                          order they run, at its top)
 *                          then any ACK records the feedback thread queued
 *   END (0 done, 1 interrupted, 2 failed) → stop feedback → close target
 *
 * The steps the rounds share are below, in the order a round uses them;
 * each wraps one target op, takes the target lock and turns a failure
 * into one diagnostic and an exit code. The last step of every mode,
 * release_output_on_ack, runs on the feedback thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "track_int.h"
#include "zd/status.h"
#include "zd/util.h"

static const struct zd_mode_ops *const modes[] = {
	[ZD_MODE_REMUS] = &zd_mode_remus,
	[ZD_MODE_BUFFERED] = &zd_mode_buffered,
	[ZD_MODE_ZDDSPT] = &zd_mode_zddspt,
};
_Static_assert(ZD_ARRAY_SIZE(modes) == ZD_MODE_MAX, "one ops table per mode");

int zd__track_fail(struct zd_track *k, int code, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* The first failure is the one worth reading; later ones follow from it. */
	if (!k->rc) {
		zd_warnx("%s", line);
		k->rc = code;
	}
	return -1;
}

static int target_fail(struct zd_track *k, const char *op)
{
	return zd__track_fail(k, ZD_EXIT_TARGET, "%s: %s: %s", k->t->spec, op,
			      k->t->err[0] ? k->t->err : "failed");
}

uint64_t zd__track_deadline(const struct zd_track *k, unsigned pct)
{
	return k->run_start_ns + k->o->interval_ns * pct / 100;
}

int zd__track_run_until(struct zd_track *k, uint64_t deadline_ns)
{
	int r = k->t->ops->run_until(k->t, deadline_ns);

	if (r < 0)
		return target_fail(k, "run");
	return r ? 1 : 0;
}

int zd__track_pause(struct zd_track *k, uint64_t *t1_ns)
{
	int r;

	pthread_mutex_lock(&k->tlock);
	*t1_ns = zd_now_ns();
	r = k->t->ops->pause(k->t, k->epoch);
	/* The vCPU is stopped: the guest's counters hold still. */
	k->have_gc = r == 0 && k->t->ops->guest_clock && k->t->ops->guest_clock(k->t, &k->gc) == 0;
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return target_fail(k, "pause");
	pthread_mutex_lock(&k->amu);
	k->t1[k->epoch % T1_RING].epoch = k->epoch;
	k->t1[k->epoch % T1_RING].t1_ns = *t1_ns;
	pthread_mutex_unlock(&k->amu);
	return 0;
}

int zd__track_harvest(struct zd_track *k, struct zd_pageset *set)
{
	int r;

	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->harvest(k->t, set);
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return target_fail(k, "harvest dirty log");
	if (zd_pageset_end(set) > k->t->page_count)
		return zd__track_fail(k, ZD_EXIT_TARGET, "%s: dirty log names pfn %llu beyond %llu pages",
				      k->t->spec, (unsigned long long)zd_pageset_end(set) - 1,
				      (unsigned long long)k->t->page_count);
	return 0;
}

/* zd-send asked for a resync (its backup lost epochs it cannot send
 * again): this checkpoint's set becomes every page, flagged FULL, so the
 * backup is whole again once it commits it. Right after the T1 harvest. */
void zd__track_full_if_asked(struct zd_track *k, struct zd_pageset *set, struct zd_rec_checkpoint *c)
{
	if (!zd_fbserver_take_resync(k->fb))
		return;
	zd_pageset_add_range(set, 0, k->t->page_count);
	c->flags |= ZD_CKPT_FULL;
	zd_warnx("epoch %llu: a full checkpoint (%llu pages): zd-send's backup lost epochs it cannot resend",
		 (unsigned long long)k->epoch, (unsigned long long)k->t->page_count);
}

int zd__track_rearm(struct zd_track *k, const struct zd_pageset *set)
{
	int r;

	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->rearm(k->t, set);
	pthread_mutex_unlock(&k->tlock);
	return r < 0 ? target_fail(k, "re-arm dirty log") : 0;
}

int zd__track_harvest_all(struct zd_track *k, struct track_round *rd)
{
	uint64_t t0 = zd_now_ns();

	if (zd__track_harvest(k, &k->dirty) < 0 || zd__track_rearm(k, NULL) < 0)
		return -1;
	zd__track_full_if_asked(k, &k->dirty, &rd->c);
	rd->harvest_ns = zd_now_ns() - t0;
	return 0;
}

int zd__track_protect(struct zd_track *k, const struct zd_pageset *set)
{
	int r;

	if (!k->t->ops->protect)
		return 1;
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->protect(k->t, set);
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return target_fail(k, "write-protect the frozen set");
	return r > 0 ? 1 : 0;
}

/* A buffer is never made smaller than this: rounds of up to 4096 pages
 * reuse one, whose pages are already faulted in (a new one costs a fault
 * a page, inside zddspt's pre-copy window). */
#define TRACK_BUF_MIN ((size_t)16 << 20)

uint8_t *zd__track_buf(uint8_t **buf, size_t *cap, size_t need)
{
	size_t size;

	/* Given back only at 8 times what the round needs, and then to twice
	 * that: rounds whose sizes vary keep their buffer. */
	if (*buf && need <= *cap && *cap <= 8 * ZD_MAX(need, TRACK_BUF_MIN))
		return *buf;
	size = ZD_MAX(need > *cap ? need : 2 * need, TRACK_BUF_MIN);
	free(*buf);
	*buf = malloc(size);
	*cap = *buf ? size : 0;
	return *buf;
}

int zd__track_read_pages(struct zd_track *k, const struct zd_pageset *set)
{
	size_t need = (size_t)zd_pageset_count(set) * k->t->page_size;
	int r;

	if (!zd__track_buf(&k->buf, &k->buf_cap, need))
		return zd__track_fail(k, ZD_EXIT_FAIL, "no memory for %zu bytes of pages", need);
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->read_pages(k->t, k->epoch, set, k->buf);
	pthread_mutex_unlock(&k->tlock);
	return r < 0 ? target_fail(k, "read pages") : 0;
}

int zd__track_precopy(struct zd_track *k, const struct zd_pageset *set, const struct zd_pageset *last,
		      const uint8_t **data)
{
	int r;

	if (!k->t->ops->precopy)
		return 1;
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->precopy(k->t, set, last, data);
	pthread_mutex_unlock(&k->tlock);
	return r < 0 ? target_fail(k, "pre-copy") : r;
}

int zd__track_read_pages_into(struct zd_track *k, const struct zd_pageset *set, uint8_t *buf)
{
	int r;

	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->read_pages(k->t, k->epoch, set, buf);
	pthread_mutex_unlock(&k->tlock);
	return r < 0 ? target_fail(k, "read pages") : 0;
}

int zd__track_paused_writes(struct zd_track *k, struct zd_pageset *set, uint8_t **data)
{
	int r = 0;

	*data = NULL;
	if (!k->t->ops->paused_writes)
		return 0;
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->paused_writes(k->t, set, data);
	pthread_mutex_unlock(&k->tlock);
	return r < 0 ? target_fail(k, "pages written while paused") : 0;
}

static int get_state(struct zd_track *k, struct zd_record *state)
{
	int r;

	zd_record_init(state, ZD_REC_STATE);
	state->u.state.epoch = k->epoch;
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->get_state(k->t, &state->u.state.kind, &state->u.state.data,
				 &state->u.state.len);
	pthread_mutex_unlock(&k->tlock);
	return r < 0 ? target_fail(k, "vCPU state") : 0;
}

static int memsum(struct zd_track *k, struct zd_record *commit)
{
	int r;

	if (!k->o->verify)
		return 0;
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->memsum(k->t, &commit->u.commit.memsum);
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return target_fail(k, "memory checksum");
	commit->u.commit.flags |= ZD_COMMIT_HAS_MEMSUM;
	return 0;
}

int zd__track_save_state(struct zd_track *k, struct track_round *rd)
{
	if (get_state(k, &rd->state) < 0)
		return -1;
	rd->have_state = true;
	zd_record_init(&rd->commit, ZD_REC_COMMIT);
	rd->commit.u.commit.epoch = k->epoch;
	rd->commit.u.commit.pages = zd_pageset_count(&k->dirty);
	if (zd__track_collect_disk(k, rd) < 0)
		return -1;
	return memsum(k, &rd->commit);
}

int zd__track_resume(struct zd_track *k, uint64_t *resume_ns)
{
	int r;

	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->resume(k->t);
	*resume_ns = zd_now_ns();
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return target_fail(k, "resume");
	k->run_start_ns = *resume_ns;
	return 0;
}

uint64_t zd__track_vcpu_stopped_ns(const struct zd_track *k)
{
	const struct zd_target *t = k->t;

	return t->vm_parked_ns && t->vm_resumed_ns > t->vm_parked_ns ?
		       t->vm_resumed_ns - t->vm_parked_ns : 0;
}

uint64_t zd__track_pause_ns(const struct zd_track *k, const struct zd_rec_checkpoint *c)
{
	uint64_t v = zd__track_vcpu_stopped_ns(k);

	return v ? v : c->resume_ns - c->t1_ns;
}

void zd__track_resume_quietly(struct zd_track *k)
{
	/* A failed round must not leave the guest stopped: best effort. */
	pthread_mutex_lock(&k->tlock);
	(void)k->t->ops->resume(k->t);
	pthread_mutex_unlock(&k->tlock);
}

/* zddspt's pause as one target request (zd_target_ops.checkpoint): the
 * frozen set into k->dirty, the STATE and COMMIT into rd as
 * zd__track_save_state would, T1 and the resume as zd__track_pause and
 * zd__track_resume would. 1: the target cannot, nothing done. */
int zd__track_checkpoint(struct zd_track *k, struct track_round *rd, struct zd_target_ckpt *ck)
{
	int r;

	ck->epoch = k->epoch;
	ck->memsum = k->o->verify;
	ck->frozen = &k->dirty;
	pthread_mutex_lock(&k->tlock);
	rd->c.t1_ns = zd_now_ns();
	r = k->t->ops->checkpoint ? k->t->ops->checkpoint(k->t, ck) : 1;
	rd->c.resume_ns = zd_now_ns();
	/* The guest runs again here (the op resumed it): its counters are
	 * read as they stand, and the gap of this pause lands in the next
	 * epoch's figures, once the guest has timed it. Totals and medians
	 * over a run are the same. */
	k->have_gc = r == 0 && k->t->ops->guest_clock && k->t->ops->guest_clock(k->t, &k->gc) == 0;
	pthread_mutex_unlock(&k->tlock);
	if (r > 0)
		return 1;
	if (r < 0)
		return target_fail(k, "checkpoint (pause, write-protect, resume)");
	k->run_start_ns = rd->c.resume_ns;
	pthread_mutex_lock(&k->amu);
	k->t1[k->epoch % T1_RING].epoch = k->epoch;
	k->t1[k->epoch % T1_RING].t1_ns = rd->c.t1_ns;
	pthread_mutex_unlock(&k->amu);
	zd_record_init(&rd->state, ZD_REC_STATE);
	rd->state.u.state.epoch = k->epoch;
	rd->state.u.state.kind = 1;
	rd->state.u.state.data = ck->state;
	rd->state.u.state.len = ck->state_len;
	ck->state = NULL;
	rd->have_state = true;
	zd_record_init(&rd->commit, ZD_REC_COMMIT);
	rd->commit.u.commit.epoch = k->epoch;
	rd->commit.u.commit.pages = zd_pageset_count(&k->dirty);
	if (k->o->verify) {
		rd->commit.u.commit.memsum = ck->memsum_value;
		rd->commit.u.commit.flags |= ZD_COMMIT_HAS_MEMSUM;
	}
	return 0;
}

int zd__track_send_checkpoint(struct zd_track *k, struct track_round *rd,
			      const struct zd_pageset *pages, const uint8_t *data)
{
	/* WP_EXACT: the pages first, so that zd-swap knows at DIRTY what is
	 * protected and starts draining it there (capture.c drain_at_dirty). */
	bool first = rd->c.flags & ZD_CKPT_WP_EXACT;

	if (zd__emit_checkpoint(k, &rd->c) < 0 ||
	    (first && pages && zd__emit_pages_from(k, pages, data, 0) < 0) ||
	    zd__emit_set(k, ZD_REC_DIRTY, &k->dirty) < 0 ||
	    (!first && pages && zd__emit_pages_from(k, pages, data, 0) < 0) ||
	    (rd->late && zd__emit_pages_from(k, rd->late, rd->late_data, ZD_PAGES_PRECOPY) < 0) ||
	    zd__track_send_disk(k, rd) < 0 ||
	    zd__emit_record(k, &rd->state) < 0 || zd__emit_record(k, &rd->commit) < 0)
		return -1;
	return 0;
}

void zd__track_round_free(struct track_round *rd)
{
	if (rd->have_state)
		zd_record_free(&rd->state);
	rd->have_state = false;
	zd__track_disk_free(rd);
}

/* --- emitting --- */

static int out_fail(struct zd_track *k)
{
	return zd__track_fail(k, ZD_EXIT_FAIL, "stdout: %s", strerror(k->w.err ? k->w.err : EIO));
}

int zd__emit_record(struct zd_track *k, const struct zd_record *r)
{
	return zd_writer_put(&k->w, r) < 0 ? out_fail(k) : 0;
}

int zd__emit_flush(struct zd_track *k)
{
	return zd_writer_flush(&k->w) < 0 ? out_fail(k) : 0;
}

int zd__emit_checkpoint(struct zd_track *k, const struct zd_rec_checkpoint *c)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_CHECKPOINT);
	r.u.ckpt = *c;
	r.u.ckpt.epoch = k->epoch;
	zd_status_set(k->status, "epoch", json_integer((json_int_t)k->epoch));
	zd_status_sample(k->status, "pause_us", (double)c->pause_ns / 1e3);
	zd_status_mark(k->status, "last_checkpoint");
	if (k->o->epochs && k->epoch == k->o->epochs)
		r.u.ckpt.flags |= ZD_CKPT_FINAL;
	return zd__emit_record(k, &r);
}

int zd__emit_set(struct zd_track *k, uint16_t type, const struct zd_pageset *set)
{
	struct zd_record r;

	zd_record_init(&r, type);
	r.u.dirty.epoch = k->epoch;
	/* Borrowed, not copied: the record is not freed. */
	r.u.dirty.set = *set;
	return zd__emit_record(k, &r);
}

int zd__emit_pages(struct zd_track *k, const struct zd_pageset *set, uint8_t flags)
{
	return zd__emit_pages_from(k, set, k->buf, flags);
}

int zd__emit_pages_from(struct zd_track *k, const struct zd_pageset *set, const uint8_t *data,
			uint8_t flags)
{
	struct zd_pageset rest = ZD_PAGESET_INIT, part = ZD_PAGESET_INIT;
	int rc = 0;

	if (zd_pageset_copy(&rest, set) < 0)
		return zd__track_fail(k, ZD_EXIT_FAIL, "out of memory");
	/* Bounded records: a reader never holds more than one in memory. */
	while (rc == 0 && !zd_pageset_empty(&rest)) {
		struct zd_record r;

		zd_pageset_take_front(&part, &rest, ZD_PAGES_PER_RECORD);
		zd_record_init(&r, ZD_REC_PAGES);
		r.u.pages.epoch = k->epoch;
		r.u.pages.enc = ZD_PENC_RAW;
		r.u.pages.flags = flags;
		r.u.pages.set = part;
		r.u.pages.data_len = (uint32_t)(zd_pageset_count(&part) * k->t->page_size);
		r.u.pages.data = (uint8_t *)data;
		data += r.u.pages.data_len;
		rc = zd__emit_record(k, &r);
	}
	zd_pageset_free(&rest);
	zd_pageset_free(&part);
	return rc;
}

int zd__emit_stat(struct zd_track *k, const char *const *keys, const double *vals, unsigned n)
{
	return zd__emit_stat_from(k, "track", keys, vals, n);
}

int zd__emit_stat_from(struct zd_track *k, const char *source, const char *const *keys,
		       const double *vals, unsigned n)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_STAT);
	r.u.stat.epoch = k->epoch;
	snprintf(r.u.stat.source, sizeof(r.u.stat.source), "%s", source);
	for (unsigned i = 0; i < n && i < ZD_STAT_MAX_KV; i++) {
		snprintf(r.u.stat.kv[i].key, sizeof(r.u.stat.kv[i].key), "%s", keys[i]);
		r.u.stat.kv[i].value = vals[i];
	}
	r.u.stat.n = n;
	return zd__emit_record(k, &r);
}

/* ACKs the feedback thread queued: logged forward so zd-stat sees the
 * checkpoint latency (T1 → ACK at the primary). */
static int emit_acks(struct zd_track *k)
{
	struct pending_ack acks[MAX_PENDING_ACKS];
	size_t n;
	int rc = 0;

	pthread_mutex_lock(&k->amu);
	n = k->nacks;
	memcpy(acks, k->acks, n * sizeof(acks[0]));
	k->nacks = 0;
	pthread_mutex_unlock(&k->amu);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct zd_record r;

		zd_record_init(&r, ZD_REC_ACK);
		r.u.ack.epoch = acks[i].epoch;
		r.u.ack.commit_wall_ns = acks[i].wall_ns;
		r.u.ack.latency_ns = acks[i].latency_ns;
		rc = zd__emit_record(k, &r);
	}
	return rc;
}

/* --- feedback callbacks (feedback thread) --- */

/* The last step of every mode's cycle: the backup holds the epoch, so the
 * output the VM produced before its pause may reach the clients now. */
static void release_output_on_ack(void *ctx, uint64_t epoch, uint64_t wall_ns)
{
	struct zd_track *k = ctx;
	uint64_t now;
	int r;

	if (!k->notified_ns)
		zd_notify_ready("protected: the backup holds a checkpoint");
	zd_notify_status(&k->notified_ns, "epoch %" PRIu64 " acknowledged by the backup", epoch);
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->release_output ? k->t->ops->release_output(k->t, epoch) : 0;
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		zd_warnx("%s: release output of epoch %llu: %s", k->t->spec,
			 (unsigned long long)epoch, k->t->err);
	now = zd_now_ns();
	pthread_mutex_lock(&k->amu);
	if (k->nacks < MAX_PENDING_ACKS) {
		uint64_t t1 = k->t1[epoch % T1_RING].epoch == epoch ?
			      k->t1[epoch % T1_RING].t1_ns : 0;

		k->acks[k->nacks++] = (struct pending_ack){
			.epoch = epoch, .wall_ns = wall_ns,
			.latency_ns = t1 && now > t1 ? now - t1 : 0,
		};
		if (t1 && now > t1)
			zd_status_sample(k->status, "latency_us", (double)(now - t1) / 1e3);
	}
	pthread_mutex_unlock(&k->amu);
	/* Epochs taken that the backup does not hold yet. */
	zd_status_set(k->status, "acked_epoch", json_integer((json_int_t)epoch));
	zd_status_set(k->status, "lag_epochs", json_integer((json_int_t)(k->epoch > epoch ? k->epoch - epoch : 0)));
	zd_status_mark(k->status, "last_ack");
}

static int on_memory(void *ctx, int *fds, uint64_t *base)
{
	struct zd_track *k = ctx;
	int n;

	if (!k->t->ops->export_fds)
		return 0;
	pthread_mutex_lock(&k->tlock);
	n = k->t->ops->export_fds(k->t, fds, base);
	pthread_mutex_unlock(&k->tlock);
	return n;
}

/* --- remus's wait for the backup --- */

int zd__track_wait_backup(struct zd_track *k)
{
	enum zd_fb_op op;
	enum zd_fb_role role;
	uint64_t deadline = zd_now_ns() + k->o->timeout_ns;
	const char *what;

	if (zd_fbserver_clients(k->fb, ZD_ROLE_SEND) > 0) {
		op = ZD_FB_ACK, role = ZD_ROLE_SEND, what = "ACK";
	} else if (zd_fbserver_clients(k->fb, ZD_ROLE_SWAP) > 0) {
		op = ZD_FB_DRAINED, role = ZD_ROLE_SWAP, what = "DRAINED";
	} else if (k->had_backup) {
		/* A backup that was there and left is a broken pipeline, not
		 * an open-loop run: stop, once, rather than run on unprotected
		 * and fail a moment later on the broken stdout. */
		return zd__track_fail(k, ZD_EXIT_PEER,
				      "control socket: the zd-send and zd-swap clients left before epoch %llu's ACK",
				      (unsigned long long)k->epoch);
	} else {
		if (!k->said_open_loop)
			zd_warnx("no backup connected: running open loop");
		k->said_open_loop = true;
		return 0;
	}
	k->had_backup = true;
	/* Short slices, so a stop request is not held up by a slow backup. */
	for (;;) {
		uint64_t now = zd_now_ns();
		uint64_t until = ZD_MIN(deadline, now + 50 * 1000000ull);
		/* zd-send reconnecting: the epoch is safe once it holds it
		 * (DRAINED); the output stays held until the ACK. */
		enum zd_fb_op want = role == ZD_ROLE_SEND && zd_fbserver_link_down(k->fb) ? ZD_FB_DRAINED : op;

		switch (zd_fbserver_wait(k->fb, want, role, k->epoch, until)) {
		case ZD_FBWAIT_OK:
			return 0;
		case ZD_FBWAIT_GONE:
			return zd__track_fail(k, ZD_EXIT_PEER,
					      "control socket: the %s client left before epoch %llu's %s",
					      role == ZD_ROLE_SEND ? "zd-send" : "zd-swap",
					      (unsigned long long)k->epoch, what);
		case ZD_FBWAIT_TIMEOUT:
			break;
		}
		if (*k->stop)
			return 0;
		if (zd_now_ns() >= deadline)
			return zd__track_fail(k, ZD_EXIT_PEER, "control socket: no %s for epoch %llu within %llu ms",
					      what, (unsigned long long)k->epoch,
					      (unsigned long long)(k->o->timeout_ns / 1000000));
	}
}

/* Output waits for the ACK of its epoch. With no ACK for longer than
 * --max-hold (zd-send reconnecting, a stalled backup), say so loudly,
 * once, and again when ACKs flow: the VM runs on, its clients wait. */
static void check_hold(struct zd_track *k)
{
	uint64_t acked = zd_fbserver_acked(k->fb), t1 = 0, now = zd_now_ns();

	if (!k->o->max_hold_ns || zd_fbserver_clients(k->fb, ZD_ROLE_SEND) == 0)
		return;
	pthread_mutex_lock(&k->amu);
	if (acked < k->epoch && k->t1[(acked + 1) % T1_RING].epoch == acked + 1)
		t1 = k->t1[(acked + 1) % T1_RING].t1_ns;
	pthread_mutex_unlock(&k->amu);
	if (t1 && now - t1 > k->o->max_hold_ns && !k->hold_warned) {
		zd_warnx("WARNING: output held %llu ms: no ACK from the backup since epoch %llu "
			 "(--max-hold %llu ms); the VM runs on, its output waits for the backup",
			 (unsigned long long)((now - t1) / 1000000), (unsigned long long)acked,
			 (unsigned long long)(k->o->max_hold_ns / 1000000));
		k->hold_warned = true;
		k->hold_since_ns = t1;
	} else if (k->hold_warned && (!t1 || now - t1 <= k->o->max_hold_ns)) {
		zd_warnx("output released again: the backup acknowledged epoch %llu after %llu ms",
			 (unsigned long long)acked, (unsigned long long)((now - k->hold_since_ns) / 1000000));
		k->hold_warned = false;
	}
}

/* Buffered and zddspt send an epoch while the VM runs on, and nothing but
 * the pipes and socket buffers bounded how far the primary ran ahead of a
 * slower backup: tens of MB under load, up to seconds of epochs whose
 * answers output commit held from the clients, and that a backup taking
 * over first had to read. So the next checkpoint waits, the VM running,
 * until at most --window epochs (this one included) are unacknowledged;
 * the epoch grows meanwhile, and fewer, larger epochs let the backup
 * catch up. Only while a zd-send with a backup (one that said LINK 1) is
 * connected and its link is up: without ACKs there is nothing to wait for,
 * and a reconnecting zd-send holds the epochs itself. 0 = go on, 1 if the
 * target ended, -1. */
static int wait_window(struct zd_track *k)
{
	uint64_t want, deadline = zd_now_ns() + k->o->timeout_ns;

	if (!k->o->window || k->o->mode == ZD_MODE_REMUS || k->epoch <= k->o->window)
		return 0;
	want = k->epoch - k->o->window;
	while (zd_fbserver_acked(k->fb) < want && !*k->stop) {
		uint64_t now = zd_now_ns();
		int r;

		if (now >= deadline || !zd_fbserver_acks_expected(k->fb))
			return 0;
		if (zd_fbserver_wait(k->fb, ZD_FB_ACK, ZD_ROLE_SEND, want,
				     ZD_MIN(deadline, now + 20 * 1000000ull)) != ZD_FBWAIT_TIMEOUT)
			continue;
		/* A slow backup: look at the VM meanwhile (its death is
		 * a loss the backup must hear of now, not after the wait). */
		if ((r = zd__track_run_until(k, zd_now_ns() + 1000000)) != 0)
			return r;
	}
	return 0;
}

/* The stages after zd-track connect once they have read the HEADER: give
 * them a moment, so the first epochs are not taken open loop for want of
 * a few milliseconds. */
void zd__track_wait_connect(struct zd_track *k, uint64_t grace_ns)
{
	uint64_t deadline = zd_now_ns() + grace_ns;

	while (!*k->stop && zd_now_ns() < deadline &&
	       zd_fbserver_clients(k->fb, ZD_ROLE_SEND) + zd_fbserver_clients(k->fb, ZD_ROLE_SWAP) == 0)
		zd_sleep_ns(2 * 1000000);
}

/* --- the run --- */

static int write_header(struct zd_track *k)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_HEADER);
	r.u.header.major = ZD_STREAM_MAJOR;
	r.u.header.minor = ZD_STREAM_MINOR;
	r.u.header.page_size = k->t->page_size;
	r.u.header.page_count = k->t->page_count;
	r.u.header.mode = (uint8_t)k->o->mode;
	r.u.header.interval_us = (uint32_t)(k->o->interval_ns / 1000);
	r.u.header.start_ns = zd_wall_ns();
	r.u.header.target = k->t->spec;
	r.u.header.control = (char *)zd_fbserver_path(k->fb);
	if (zd__emit_record(k, &r) < 0)
		return -1;
	return zd__emit_flush(k);
}

static int write_end(struct zd_track *k, uint64_t epochs, uint32_t status)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_END);
	r.u.end.epochs = epochs;
	r.u.end.status = status;
	if (zd__emit_record(k, &r) < 0)
		return -1;
	return zd__emit_flush(k);
}

/*
 * STAT "guest": what the guest lost, by its own clock, from the previous
 * pause to this one — the running time of this epoch, with the previous
 * pause (the guest sees a gap only once it runs again), the faults of the
 * previous frozen set's drain and this epoch's dirty-log faults.
 * wfault_ns is the mean cost of one dirty-log write fault: zd-stat prices
 * zddspt's re-armed pre-copied pages with it.
 */
static int emit_guest_stat(struct zd_track *k)
{
	static const char *const keys[] = { "lost_ns", "lost", "stall_ns", "stalls",
					    "wfaults", "wfault_ns" };
	const struct zd_guest_clock *a = &k->gc_prev, *b = &k->gc;
	double vals[6];
	int rc = 0;

	if (k->have_gc && k->have_gc_prev && b->lost_ns >= a->lost_ns) {
		uint64_t wn = b->wfault_n - a->wfault_n;

		vals[0] = (double)(b->lost_ns - a->lost_ns);
		vals[1] = (double)(b->lost_n - a->lost_n);
		vals[2] = (double)(b->stall_ns - a->stall_ns);
		vals[3] = (double)(b->stall_n - a->stall_n);
		vals[4] = (double)wn;
		vals[5] = wn ? (double)(b->wfault_ns - a->wfault_ns) / (double)wn : 0;
		rc = zd__emit_stat_from(k, "guest", keys, vals, wn ? 6 : 5);
	}
	k->gc_prev = k->gc;
	k->have_gc_prev = k->have_gc;
	k->have_gc = false;
	return rc;
}

static int loop(struct zd_track *k, const struct zd_mode_ops *mode)
{
	uint64_t done = 0;
	uint32_t status = 0;

	if (mode->start && mode->start(k) < 0)
		return -1;
	k->run_start_ns = zd_now_ns();
	for (k->epoch = 1;; k->epoch++) {
		int r;

		if (*k->stop) {
			status = 1;
			break;
		}
		r = wait_window(k);
		if (r == 0)
			r = mode->round(k);
		if (r == 1)
			break;
		if (r == 0)
			r = emit_guest_stat(k);
		if (r < 0 || emit_acks(k) < 0 || zd__emit_flush(k) < 0) {
			/* A VM that died is the loss the backup exists for:
			 * END says so, and zd-recv takes over. */
			status = k->t->vm_died ? ZD_END_VM_DIED : ZD_END_ERROR;
			break;
		}
		done = k->epoch;
		check_hold(k);
		zd_debug("epoch %llu: %llu dirty", (unsigned long long)k->epoch,
			 (unsigned long long)zd_pageset_count(&k->prev));
		if (k->o->epochs && done == k->o->epochs)
			break;
	}
	/* An interrupted remus wait ended the round early, not with a failure. */
	if (status == 0 && *k->stop && k->o->epochs && done < k->o->epochs)
		status = 1;
	if (k->w.err == 0) {
		(void)emit_acks(k);
		(void)write_end(k, done, status);
	}
	return status >= 2 ? -1 : 0;
}

int zd_track_run(const struct zd_track_opts *o, volatile sig_atomic_t *stop)
{
	struct zd_track k = { .o = o, .stop = stop };
	struct zd_fbserver_ops fbops = { .ctx = &k, .ack = release_output_on_ack, .memory = on_memory };
	char msg[512], path[256];
	int rc;

	pthread_mutex_init(&k.tlock, NULL);
	pthread_mutex_init(&k.amu, NULL);
	zd_pageset_init(&k.dirty);
	zd_pageset_init(&k.prev);
	zd_pageset_init(&k.rewritten);
	zd_pageset_init(&k.hot);
	zd_writer_init(&k.w, o->out_fd, zd_output_encoding(o->out_fd, o->json));

	if (zd_target_open(&k.t, o->spec, msg, sizeof(msg)) < 0) {
		/* EINVAL: the spec itself is wrong, not the target. */
		rc = errno == EINVAL ? ZD_EXIT_USAGE : ZD_EXIT_TARGET;
		zd_warnx("%s", msg);
		goto out;
	}
	if (o->verify && !k.t->ops->memsum) {
		zd_warnx("--verify: target %s cannot checksum its memory", k.t->ops->scheme);
		rc = ZD_EXIT_USAGE;
		goto out;
	}
	if (o->control && o->control[0] != '/') {
		/* The stages after us connect from their own directory. */
		char cwd[4096];

		if (!getcwd(cwd, sizeof(cwd)) ||
		    (size_t)snprintf(path, sizeof(path), "%s/%s", cwd, o->control) >= sizeof(path)) {
			zd_warnx("--control %s: path too long", o->control);
			rc = ZD_EXIT_USAGE;
			goto out;
		}
	} else if (o->control)
		snprintf(path, sizeof(path), "%s", o->control);
	else
		zd_fbserver_default_path(path, sizeof(path));
	k.fb = zd_fbserver_start(path, k.t->page_size, k.t->page_count, &fbops, msg, sizeof(msg));
	if (!k.fb) {
		zd_warnx("%s", msg);
		rc = ZD_EXIT_FAIL;
		goto out;
	}
	k.status = zd_status_open("zd-track");
	zd_status_set(k.status, "role", json_string("primary"));
	zd_status_set(k.status, "target", json_string(k.t->spec));
	zd_status_set(k.status, "mode", json_string(zd_mode_name(o->mode)));
	if (write_header(&k) == 0)
		(void)loop(&k, modes[o->mode]);
	rc = k.rc;
out:
	/* The feedback thread may call into the target: stop it first. */
	zd_fbserver_stop(k.fb);
	zd_status_close(k.status);
	zd_target_close(k.t);
	zd_writer_free(&k.w);
	zd_pageset_free(&k.dirty);
	zd_pageset_free(&k.prev);
	zd_pageset_free(&k.rewritten);
	zd_pageset_free(&k.hot);
	free(k.pre_buf);
	free(k.late_buf);
	free(k.buf);
	pthread_mutex_destroy(&k.tlock);
	pthread_mutex_destroy(&k.amu);
	return rc;
}

int zd_track_main(const struct zd_track_opts *o, volatile sig_atomic_t *stop, char *msg, size_t msglen)
{
	*msg = 0;
	if (o->precopy_set && o->mode != ZD_MODE_ZDDSPT)
		return zd_msg(ZD_EXIT_USAGE, msg, msglen, "--precopy needs --mode zddspt");
	if (o->no_guard && o->mode != ZD_MODE_ZDDSPT)
		return zd_msg(ZD_EXIT_USAGE, msg, msglen, "--no-guard needs --mode zddspt");
	if (o->grace_set && o->mode != ZD_MODE_REMUS)
		return zd_msg(ZD_EXIT_USAGE, msg, msglen, "--grace needs --mode remus");
	return zd_track_run(o, stop);
}
