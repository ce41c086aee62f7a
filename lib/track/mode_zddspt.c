/* SPDX-License-Identifier: MIT */
/*
 * zddspt: the double-table method of the paper, first cut.
 *
 *   run until T0 (= T1 - precopy% of the interval)
 *   → harvest → pre-copy set P = dirty so far ∩ the standby set (STANDBY
 *     from zd-mru on the feedback socket, else last epoch's pages)
 *   → re-arm exactly P (a later write to it is seen again at T1)
 *   → copy P and emit PAGES (PRECOPY) while the VM runs
 *   → run until T1 → pause → harvest the frozen set F → write-protect F
 *     (where the target can) → re-arm all → vCPU state → [memsum] → resume
 *   → CHECKPOINT, DIRTY = F, STATE, COMMIT (pages = |F|)
 *
 * No page is copied while the VM is stopped. DIRTY carries only F, the
 * pages still to capture at checkpoint time; a page of P that is not in F
 * kept its pre-copied contents. The epoch's pages are P ∪ F.
 *
 * A live target without write-protect (copy_frozen_paused: xen:, or
 * kvm: whose zd-vm has no uffd guard: protect returns 1) cannot keep F's
 * pre-images once the VM runs again, so F is copied while paused and sent
 * inline (PAGES_INLINE): pre-copy only, the pause shrinks by what P took.
 * Neither can a run without zd-swap: only zd-swap un-protects (drain_uffd),
 * a protected page nobody serves would stop the guest for good.
 *
 * One protected generation at a time: before protecting F(k), epoch k-1
 * must be DRAINED (every page of F(k-1) saved and un-protected), so a
 * write fault zd-swap reads is always for the newest checkpoint. The drain
 * runs during the interval, so this wait is normally already over.
 *
 * The guard is the default on kvm:; each epoch that falls back to the
 * paused copy says why in STAT "track" key "fallback" (enum fallback), and
 * the first time on stderr.
 */
#include <stdlib.h>
#include <string.h>

#include "track_int.h"
#include "zd/util.h"

static int precopy(struct zd_track *k, struct zd_pageset *p, uint64_t *t0_ns)
{
	struct zd_pageset hint = ZD_PAGESET_INIT, sofar = ZD_PAGESET_INIT;
	int rc = -1;

	*t0_ns = zd_now_ns();
	if (zd_fbserver_standby(k->fb, &hint) == 0 && zd_pageset_copy(&hint, &k->prev) < 0)
		goto out;
	if (track_harvest(k, &sofar) < 0)
		goto out;
	zd_pageset_intersect(p, &sofar, &hint);
	if (track_rearm(k, p) < 0 || track_read_pages(k, p) < 0)
		goto out;
	rc = emit_pages(k, p, ZD_PAGES_PRECOPY);
	if (rc == 0)
		rc = emit_flush(k);
out:
	zd_pageset_free(&hint);
	zd_pageset_free(&sofar);
	return rc;
}

/* synth: and trace: give any epoch's pages back after the fact (they are
 * a function of the epoch, or recorded): nothing to protect or copy. */
static bool replayable(const struct zd_track *k)
{
	return !k->t->ops->protect && !k->t->ops->copy_frozen_paused;
}

/* Why an epoch copied its frozen set while paused (STAT "fallback"). */
enum fallback {
	FB_NONE = 0,		/* protected (or a replayable target) */
	FB_NO_GUARD = 1,	/* the target cannot write-protect (xen:, zd-vm without uffd) */
	FB_NO_SWAP = 2,		/* no zd-swap on the control socket to drain */
	FB_LATE_DRAIN = 3,	/* the previous epoch's DRAINED did not come in time */
	FB_DISABLED = 4,	/* --no-guard */
};

static void say_fallback(struct zd_track *k, enum fallback why)
{
	static bool said[5];
	static const char *const text[] = {
		[FB_NO_GUARD] = "the target cannot write-protect",
		[FB_NO_SWAP] = "no zd-swap is connected to drain the frozen set",
		[FB_LATE_DRAIN] = "the previous epoch was not DRAINED in time",
		[FB_DISABLED] = "--no-guard",
	};

	if (why == FB_NONE || why == FB_DISABLED || said[why])
		return;
	said[why] = true;
	/* Expected, and in the man page: xen: never protects, and a pipeline
	 * without zd-swap (zd-track | zd-send) has nobody to drain. */
	if (why == FB_NO_SWAP || (why == FB_NO_GUARD && k->t->ops->copy_frozen_paused)) {
		zd_debug("epoch %llu: copying the frozen set while paused: %s (STAT fallback=%d)",
			 (unsigned long long)k->epoch, text[why], (int)why);
		return;
	}
	zd_warnx("epoch %llu: copying the frozen set while paused: %s (STAT fallback=%d)",
		 (unsigned long long)k->epoch, text[why], (int)why);
}

/* Can this round protect instead of copying? Waits for the previous
 * epoch's DRAINED (see above). */
static enum fallback guarded(struct zd_track *k)
{
	uint64_t deadline = zd_now_ns() + k->o->timeout_ns;

	/* ZD_KVM_GUARD=0: for scripts that cannot pass --no-guard. */
	if (k->o->no_guard || (getenv("ZD_KVM_GUARD") && !strcmp(getenv("ZD_KVM_GUARD"), "0")))
		return FB_DISABLED;
	if (!k->t->ops->protect || k->t->ops->copy_frozen_paused)
		return FB_NO_GUARD;
	if (zd_fbserver_clients(k->fb, ZD_ROLE_SWAP) == 0)
		return FB_NO_SWAP;
	if (k->epoch <= 1)
		return FB_NONE;
	for (;;) {
		uint64_t until = ZD_MIN(deadline, zd_now_ns() + 50 * 1000000ull);

		switch (zd_fbserver_wait(k->fb, ZD_FB_DRAINED, ZD_ROLE_SWAP, k->epoch - 1, until)) {
		case ZD_FBWAIT_OK:
			return FB_NONE;
		case ZD_FBWAIT_GONE:
			return FB_NO_SWAP;
		case ZD_FBWAIT_TIMEOUT:
			break;
		}
		if (*k->stop || zd_now_ns() >= deadline)
			return FB_LATE_DRAIN;
	}
}

/* 0 protected, 1 cannot (copy instead), -1 failed. */
static int protect(struct zd_track *k, const struct zd_pageset *set)
{
	int r;

	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->protect(k->t, set);
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return track_protect(k, set);	/* says why, the same way */
	return r;
}

static int zddspt_round(struct zd_track *k)
{
	struct zd_rec_checkpoint c = { 0 };
	struct zd_pageset p = ZD_PAGESET_INIT;
	struct zd_record state, commit;
	uint64_t protect_ns = 0;
	enum fallback why = FB_NONE;
	bool copy_frozen = true;
	int r;

	r = track_run_until(k, track_deadline(k, 100 - k->o->precopy_pct));
	if (r)
		return r > 0 ? 1 : -1;
	if (precopy(k, &p, &c.t0_ns) < 0)
		goto fail;
	r = track_run_until(k, track_deadline(k, 100));
	if (r < 0)
		goto fail;
	bool replay = replayable(k);

	if (!replay)
		why = guarded(k);
	copy_frozen = !replay && why != FB_NONE;

	if (track_pause(k, &c.t1_ns) < 0)
		goto fail;
	if (track_harvest(k, &k->dirty) < 0)
		goto fail_paused;
	track_full_if_asked(k, &k->dirty, &c);
	if (!replay && !copy_frozen) {
		protect_ns = zd_now_ns();
		if ((r = protect(k, &k->dirty)) < 0)
			goto fail_paused;
		copy_frozen = r > 0;
		if (copy_frozen)
			why = FB_NO_GUARD;
		protect_ns = zd_now_ns() - protect_ns;
	}
	if (copy_frozen && track_read_pages(k, &k->dirty) < 0)
		goto fail_paused;
	if (track_rearm(k, NULL) < 0 || track_get_state(k, &state) < 0)
		goto fail_paused;
	init_commit(k, &commit, zd_pageset_count(&k->dirty));
	if (track_memsum(k, &commit) < 0)
		goto fail_state;
	if (track_resume(k, &c.resume_ns) < 0)
		goto fail_state;
	c.pause_ns = c.resume_ns - c.t1_ns;

	r = 0;
	if (copy_frozen)
		c.flags |= ZD_CKPT_PAGES_INLINE;
	if (emit_checkpoint(k, &c) < 0 || emit_set(k, ZD_REC_DIRTY, &k->dirty) < 0 ||
	    (copy_frozen && emit_pages(k, &k->dirty, 0) < 0) ||
	    emit_record(k, &state) < 0 || emit_record(k, &commit) < 0)
		r = -1;
	zd_record_free(&state);
	say_fallback(k, why);

	/* Next epoch's fallback hint: every page this epoch changed. */
	static const char *const keys[] = { "pause_ns", "protect_ns", "precopy",
					    "precopy_redirtied", "frozen", "guarded", "fallback" };
	double vals[] = { (double)c.pause_ns, (double)protect_ns, (double)zd_pageset_count(&p),
			  (double)zd_pageset_intersect_count(&p, &k->dirty),
			  (double)zd_pageset_count(&k->dirty), copy_frozen ? 0.0 : 1.0, (double)why };
	zd_pageset_union(&k->prev, &p, &k->dirty);
	zd_pageset_free(&p);
	if (r < 0)
		return -1;
	return emit_stat(k, keys, vals, 7);

fail_state:
	zd_record_free(&state);
fail_paused:
	track_resume_quietly(k);
fail:
	zd_pageset_free(&p);
	return -1;
}

const struct zd_mode_ops zd_mode_zddspt = {
	.mode = ZD_MODE_ZDDSPT,
	.round = zddspt_round,
};
