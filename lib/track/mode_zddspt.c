/* SPDX-License-Identifier: MIT */
/*
 * zddspt: the double-shadow-page-table method of the paper.
 * The main table is the target's dirty log; the frozen table F is what
 * the harvest at T1 takes out of it (k->dirty), kept as it was at T1 by
 * write-protection until zd-swap has drained it. The cycle, in the order
 * it runs, each step the function zddspt_round calls:
 *
 *   run_until_t0               the VM runs until T0 = T1 - precopy% of the
 *                              interval
 *   precopy                    T0..T1: P = every page dirty so far (or only
 *                              those of the standby set: STANDBY from zd-mru
 *                              on the feedback socket, else last epoch's
 *                              pages, with ZD_ZDDSPT_PRECOPY_ALL=0), less the
 *                              pages that
 *                              were written again after their pre-copy last
 *                              epoch (k->rewritten: they go with F, copied at
 *                              the pause); re-arm exactly P (a later write to
 *                              it is seen again at T1); copy P while the VM
 *                              runs (sent with the checkpoint: send_precopied);
 *                              on kvm: one request, zd-vm re-arming and copying
 *                              a group at a time (vm_precopy.c)
 *   run_until_t1               the VM runs on until T1
 *   choose_guard               protect F, or copy it at the pause (enum
 *                              fallback says why); waits for the previous
 *                              epoch's DRAINED
 *   pause_and_guard            T1 to resume as one target request (kvm:
 *                              zd-vm's CHECKPOINT, lib/vm/vm_ckpt.c): F
 *                              harvested, the pages the guest is predicted
 *                              to write first and short runs copied at the
 *                              pause, exactly the rest protected, re-armed,
 *                              state saved, resumed; where the target
 *                              cannot, the six steps below instead
 *   zd__track_pause            T1
 *   harvest_frozen             the main table's pages become the frozen set F
 *   protect_frozen             the copy-on-write guard over F, or F copied now
 *   swap_tables                re-arm all: the other table is main for the next
 *                              epoch (after protect, as in the paper: F goes
 *                              read-only, then the VM writes to the new table)
 *   zd__track_save_state       vCPU state, [memsum]
 *   zd__track_resume           the VM runs again
 *   send_checkpoint            CHECKPOINT, [PAGES copied at the pause], DIRTY
 *                              = F, [PAGES of F], PAGES (PRECOPY) of P less F
 *                              (send_precopied), STATE, COMMIT
 *   report_epoch               STAT "track"; P ∪ F is the next epoch's hint
 *   uffd_drain                 (zd-swap, lib/capture/drain_uffd.c) saves F
 *                              while the VM runs, un-protects it, says DRAINED
 *   release_output_on_ack      (track.c, on the feedback thread) the epoch's
 *                              output goes out on the backup's ACK
 *
 * DIRTY carries only F, the pages still to capture at checkpoint time; a
 * page of P that is not in F kept its pre-copied contents. The epoch's
 * pages are P ∪ F.
 *
 * Why T0 is late (--precopy 2 % by default) and P is every page dirty so
 * far but the predicted-hot ones (measured on kvm_pvm, issue 15): each
 * page of P the guest writes again before T1 costs it a second dirty-log
 * write fault (~20 us, the guest's own clock), while a page left to F
 * costs ~0.75 us of copy at the pause. Pre-copy pays only for pages
 * unlikely to be written again before T1: a short window, and not the
 * most recently used pages (which the paper's standby set is).
 *
 * Why part of F is copied at the pause (pause_and_guard), measured on
 * kvm_pvm (bench/README.md, "zd-swap: the copy-on-write fault"): a
 * protect call costs ~1-1.5 us, a page copied ~0.5-0.8 us of pause; a
 * guest write to a protected page before the drain costs a ~60 us
 * fault, and every protected page's KVM mapping is dropped twice (protect, un-protect), which the guest pays
 * for in re-faults. Copying the predicted-hot pages and short runs, up to
 * a budget, and protecting only long runs beyond it, keeps both the pause
 * and the faults small. The pages copied go out as PAGES with the
 * CHECKPOINT (flag WP_EXACT: exactly the rest of F is protected), zd-swap
 * drains the rest.
 *
 * A live target without write-protect (copy_frozen_paused: xen:, or
 * kvm: whose zd-vm has no uffd guard: protect returns 1) cannot keep F's
 * pre-images once the VM runs again, so F is copied while paused and sent
 * inline (PAGES_INLINE): pre-copy only, the pause shrinks by what P took.
 * Neither can a run without zd-swap: only zd-swap un-protects (drain_uffd),
 * a protected page nobody serves would stop the guest for good.
 *
 * A protect that fails (-1) fails the epoch: see protect_frozen.
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
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "track_int.h"
#include "zd/util.h"

/* Why an epoch copied its frozen set while paused (STAT "fallback"). */
enum fallback {
	FB_NONE = 0,		/* protected (or a target that replays pages) */
	FB_NO_GUARD = 1,	/* the target cannot write-protect (xen:, zd-vm without uffd) */
	FB_NO_SWAP = 2,		/* no zd-swap on the control socket to drain */
	FB_LATE_DRAIN = 3,	/* the previous epoch's DRAINED did not come in time */
	FB_DISABLED = 4,	/* --no-guard */
};

struct zddspt_round {
	struct track_round base;
	struct zd_pageset precopied;	/* P */
	struct zd_pageset hint;		/* the standby set P was taken from */
	/* The pause was one target request (pause_and_guard): F minus
	 * `copied` is write-protected, `copied` was copied at the pause. */
	bool one_request;
	struct zd_pageset copied;
	const uint8_t *copy_data;
	uint64_t kept_out;		/* k->rewritten at T0 */
	uint64_t precopy_ns;		/* T0 to the pre-copy read */
	bool precopy_in_target;		/* the target re-armed and copied P (kvm: PRECOPY) */
	const uint8_t *pre_buf;		/* P's contents as read at T0, in pfn order (k's) */
	struct zd_pageset late;		/* P less F, sent with the checkpoint */
	uint8_t *late_buf;		/* k's */
	/* The target gives F back after the fact (synth:, trace:): nothing
	 * to protect or copy. */
	bool replay;
	enum fallback why;		/* FB_NONE: F is guarded (or replayed) */
	struct zd_ckpt_steps steps;	/* protect_ns alone when not one request */
};

/* F is copied at the pause and sent inline. */
static bool copies_frozen(const struct zddspt_round *rd)
{
	return !rd->replay && rd->why != FB_NONE;
}

static int run_until_t0(struct zd_track *k)
{
	return zd__track_run_until(k, zd__track_deadline(k, 100 - k->o->precopy_pct));
}

/* The guard's policy (vm_ckpt.c split_frozen): at most COPY_MAX pages of
 * F copied at the pause, predicted-hot ones first, then runs shorter than
 * PROTECT_RUN pages; the rest write-protected, run by run. */
static uint32_t policy_env(const char *name, uint32_t dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return dflt;
	n = strtoul(v, &end, 10);
	return *end || n > UINT32_MAX ? dflt : (uint32_t)n;
}

/* The pre-copy reads into k->buf (zd__track_read_pages); the copy then
 * moves to k->pre_buf and k->buf gets pre_buf's old allocation back. */
#define ZD_SWAP_BUF(a, acap, b, bcap) do { \
	uint8_t *t_ = (a); size_t c_ = (acap); \
	(a) = (b); (acap) = (bcap); (b) = t_; (bcap) = c_; \
} while (0)

/*
 * Re-arm P and read it, a chunk at a time: a page of P written again
 * after its re-arm costs the guest a second dirty-log fault, so each page
 * should be re-armed as late as possible. Re-arming all of P and then
 * reading it (~0.75 us a page: 10 ms for 14000) left every page re-armed
 * for the whole read; chunk by chunk, each is re-armed only for what
 * remains of it. Correct either way: a write before a page's re-arm is
 * in the read that follows, one after it makes the page dirty at T1.
 */
/* Each chunk's re-arm is one more control request, milliseconds on a
 * loaded host: at 25 ms epochs (P ~850 pages) chunks of 512 let more
 * pre-copied pages be written again (38 an epoch against 12-20). So P is
 * split in at most PRECOPY_SPLIT chunks of at least PRECOPY_CHUNK pages:
 * a small pre-copy is one chunk. */
#define PRECOPY_CHUNK 1024u
#define PRECOPY_SPLIT 8u

static int reread_in_chunks(struct zd_track *k, const struct zd_pageset *p)
{
	struct zd_pageset_iter it;
	struct zd_pageset chunk = ZD_PAGESET_INIT;
	uint64_t size = ZD_MAX((uint64_t)PRECOPY_CHUNK, zd_pageset_count(p) / PRECOPY_SPLIT + 1);
	uint8_t *buf;
	int rc = 0;

	buf = zd__track_buf(&k->buf, &k->buf_cap, (size_t)zd_pageset_count(p) * k->t->page_size);
	if (!buf)
		return zd__track_fail(k, ZD_EXIT_FAIL, "no memory for the pre-copy of %" PRIu64 " pages",
				      zd_pageset_count(p));
	zd_pageset_iter_init(&it, p);
	while (rc == 0 && zd_pageset_iter_take(&it, &chunk, size)) {
		if (zd__track_rearm(k, &chunk) < 0 || zd__track_read_pages_into(k, &chunk, buf) < 0)
			rc = -1;
		buf += (size_t)zd_pageset_count(&chunk) * k->t->page_size;
	}
	zd_pageset_free(&chunk);
	return rc;
}

/*
 * Re-arm P and copy it: in one target request where the target can (kvm:
 * zd-vm's PRECOPY, the pages of the last two epochs last), else here in
 * chunks. The copies wait until the checkpoint is sent (send_precopied):
 * writing them into the pipe now could block for milliseconds behind the
 * stages downstream on a loaded host, and every such millisecond before
 * T1 is one in which the guest may write a re-armed page again, a second
 * dirty-log fault (~20 us on kvm_pvm) for a copy that is then worthless.
 */
static int rearm_and_copy(struct zd_track *k, struct zddspt_round *rd, const struct zd_pageset *p)
{
	const struct zd_pageset *last = policy_env("ZD_ZDDSPT_HOT_LAST", 1) ? &k->hot : NULL;
	int rc = policy_env("ZD_ZDDSPT_TARGET_PRECOPY", 1) ? zd__track_precopy(k, p, last, &rd->pre_buf) : 1;

	if (rc <= 0) {
		rd->precopy_in_target = rc == 0;
		return rc;
	}
	if (reread_in_chunks(k, p) < 0)
		return -1;
	ZD_SWAP_BUF(k->buf, k->buf_cap, k->pre_buf, k->pre_cap);
	rd->pre_buf = k->pre_buf;
	return 0;
}

static int precopy(struct zd_track *k, struct zddspt_round *rd)
{
	struct zd_pageset sofar = ZD_PAGESET_INIT, *hint = &rd->hint;
	struct zd_pageset *p = &rd->precopied;
	int rc = -1;

	rd->base.c.t0_ns = zd_now_ns();
	rd->precopy_ns = 0;
	if (zd_fbserver_standby(k->fb, hint) == 0 && zd_pageset_copy(hint, &k->prev) < 0)
		goto out;
	if (zd__track_harvest(k, &sofar) < 0)
		goto out;
	/* Every page dirtied so far, not only the standby set's: a page
	 * pre-copied and not written again costs nothing at the pause, and
	 * the standby set (the most recently used pages) holds the pages
	 * likeliest to be written again (ZD_ZDDSPT_PRECOPY_ALL=0: the
	 * paper's standby set only). */
	if (policy_env("ZD_ZDDSPT_PRECOPY_ALL", 1))
		zd_pageset_copy(p, &sofar);
	else
		zd_pageset_intersect(p, &sofar, hint);
	/* A page the guest wrote again after its pre-copy last epoch is
	 * likely to be written again before T1: re-arming it now would cost
	 * the guest a second dirty-log fault and the pre-copy would be sent
	 * for nothing. It stays dirty, lands in F and is copied at the pause
	 * first (it is in the hint). */
	rd->kept_out = zd_pageset_count(&k->rewritten);
	if (!zd_pageset_empty(&k->rewritten)) {
		zd_pageset_subtract(&sofar, p, &k->rewritten);
		zd_pageset_swap(&sofar, p);
	}
	if (rearm_and_copy(k, rd, p) < 0)
		goto out;
	rc = 0;
	rd->precopy_ns = zd_now_ns() - rd->base.c.t0_ns;
out:
	zd_pageset_free(&sofar);
	return rc;
}

/* A target that ends during the epoch (1) still gets this checkpoint. */
static int run_until_t1(struct zd_track *k)
{
	return zd__track_run_until(k, zd__track_deadline(k, 100)) < 0 ? -1 : 0;
}

/* Can this round protect instead of copying? Waits for the previous
 * epoch's DRAINED (see above). */
static enum fallback guard_available(struct zd_track *k)
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

/* Before the pause: the wait for DRAINED is spent while the VM runs. */
static void choose_guard(struct zd_track *k, struct zddspt_round *rd)
{
	rd->replay = k->t->replays_pages;
	if (!rd->replay)
		rd->why = guard_available(k);
}

/*
 * T1 to resume as one target request (zd_target_ops.checkpoint): pause,
 * harvest F, copy the pages of F the guest is likely to write soon and
 * the short runs, write-protect exactly the rest, re-arm, [memsum], state,
 * resume. 1: the target cannot (or a resync makes F every page, which the
 * step-by-step pause handles); nothing was done.
 */
static int pause_and_guard(struct zd_track *k, struct zddspt_round *rd)
{
	struct zd_pageset hint = ZD_PAGESET_INIT;
	struct zd_target_ckpt ck = {
		.copy_max = policy_env("ZD_ZDDSPT_COPY_MAX", 512),
		.protect_run = policy_env("ZD_ZDDSPT_PROTECT_RUN", 8),
		.copied = &rd->copied,
	};
	int rc;

	if (rd->replay || rd->why != FB_NONE || zd_fbserver_resync_asked(k->fb) ||
	    policy_env("ZD_ZDDSPT_ONE_REQUEST", 1) == 0)
		return 1;
	/* Written first after the resume: the pages kept out of the pre-copy,
	 * and the standby set's. */
	zd_pageset_union(&hint, &rd->hint, &k->rewritten);
	ck.hint = zd_pageset_empty(&hint) ? NULL : &hint;
	rc = zd__track_checkpoint(k, &rd->base, &ck);
	zd_pageset_free(&hint);
	free(ck.state);
	if (rc)
		return rc;
	rd->one_request = true;
	rd->base.c.flags |= ZD_CKPT_WP_EXACT;
	rd->copy_data = ck.copy_data;
	rd->steps = ck.steps;
	return 0;
}

static int harvest_frozen(struct zd_track *k, struct zddspt_round *rd)
{
	if (zd__track_harvest(k, &k->dirty) < 0)
		return -1;
	zd__track_full_if_asked(k, &k->dirty, &rd->base.c);
	return 0;
}

/*
 * The copy-on-write guard over F, or, where the round cannot have it, F
 * copied now. A target that says it cannot protect (1) protected nothing:
 * F is copied instead (FB_NO_GUARD). A protect that fails (-1) fails the
 * epoch, with the VM resumed and the run ended (exit 4): zd-vm protects F
 * range by range, so part of it may be protected, and nothing here can
 * undo that. Copying F instead would leave those pages protected in an
 * epoch zd-swap never drains (PAGES_INLINE): a later write fault would
 * save a stale pre-image that the next guarded epoch sends as its own.
 * Nor is it tried again: a retry that succeeds would call F guarded
 * whatever the first attempt left behind.
 */
static int protect_frozen(struct zd_track *k, struct zddspt_round *rd)
{
	uint64_t t0 = zd_now_ns();
	int rc;

	if (rd->replay)
		return 0;
	if (rd->why == FB_NONE) {
		rc = zd__track_protect(k, &k->dirty);
		if (rc < 0)
			return -1;
		if (rc > 0)
			rd->why = FB_NO_GUARD;
		rd->steps.protect_ns = zd_now_ns() - t0;
	}
	return copies_frozen(rd) ? zd__track_read_pages(k, &k->dirty) : 0;
}

/* The emptied main table records the next epoch; F stays as harvested. */
static int swap_tables(struct zd_track *k)
{
	return zd__track_rearm(k, NULL);
}

/* The pre-copied pages that were not written again after T0 (P less F):
 * their T0 copies are their contents at T1. Sent with the checkpoint,
 * after DIRTY (zd-swap drains from there). A page of P in F goes with F. */
static int send_precopied(struct zd_track *k, struct zddspt_round *rd)
{
	struct zd_pageset_iter it;
	const uint8_t *src = rd->pre_buf;
	uint8_t *dst;
	uint64_t pfn;
	size_t ps = k->t->page_size;

	zd_pageset_subtract(&rd->late, &rd->precopied, &k->dirty);
	if (zd_pageset_empty(&rd->late))
		return 0;
	if (!zd__track_buf(&k->late_buf, &k->late_cap, (size_t)zd_pageset_count(&rd->late) * ps))
		return zd__track_fail(k, ZD_EXIT_FAIL, "no memory for %" PRIu64 " pre-copied pages",
				      zd_pageset_count(&rd->late));
	dst = rd->late_buf = k->late_buf;
	zd_pageset_iter_init(&it, &rd->precopied);
	while (zd_pageset_iter_next(&it, &pfn)) {
		if (!zd_pageset_contains(&k->dirty, pfn)) {
			memcpy(dst, src, ps);
			dst += ps;
		}
		src += ps;
	}
	rd->base.late = &rd->late;
	rd->base.late_data = rd->late_buf;
	return 0;
}

static int send_checkpoint(struct zd_track *k, struct zddspt_round *rd)
{
	if (send_precopied(k, rd) < 0)
		return -1;
	if (rd->one_request)
		return zd__track_send_checkpoint(k, &rd->base, &rd->copied, rd->copy_data);
	if (copies_frozen(rd))
		rd->base.c.flags |= ZD_CKPT_PAGES_INLINE;
	return zd__track_send_checkpoint(k, &rd->base, copies_frozen(rd) ? &k->dirty : NULL, k->buf);
}

static void say_fallback(struct zd_track *k, enum fallback why)
{
	static const char *const text[] = {
		[FB_NO_GUARD] = "the target cannot write-protect",
		[FB_NO_SWAP] = "no zd-swap is connected to drain the frozen set",
		[FB_LATE_DRAIN] = "the previous epoch was not DRAINED in time",
		[FB_DISABLED] = "--no-guard",
	};

	if (why == FB_NONE || why == FB_DISABLED || (k->said_fallback & (1u << why)))
		return;
	k->said_fallback |= 1u << why;
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

static int report_epoch(struct zd_track *k, const struct zddspt_round *rd)
{
	static const char *const keys[] = { "pause_ns", "protect_ns", "precopy",
					    "precopy_redirtied", "frozen", "guarded", "fallback",
					    "one_request", "vcpu_stopped_ns", "copied_at_pause",
					    "protected", "protect_calls", "copy_ns", "stop_ns",
					    "harvest_ns", "rearm_ns", "state_ns", "kept_out",
					    "precopy_ns", "precopy_in_target" };
	uint64_t copied = rd->one_request ? zd_pageset_count(&rd->copied) : 0;
	double vals[] = { (double)rd->base.c.pause_ns, (double)rd->steps.protect_ns,
			  (double)zd_pageset_count(&rd->precopied),
			  (double)zd_pageset_intersect_count(&rd->precopied, &k->dirty),
			  (double)zd_pageset_count(&k->dirty), copies_frozen(rd) ? 0.0 : 1.0,
			  (double)rd->why, rd->one_request ? 1.0 : 0.0, (double)zd__track_vcpu_stopped_ns(k),
			  (double)copied,
			  copies_frozen(rd) || rd->replay ? 0.0 : (double)(zd_pageset_count(&k->dirty) - copied),
			  (double)rd->steps.protect_calls, (double)rd->steps.copy_ns, (double)rd->steps.stop_ns,
			  (double)rd->steps.harvest_ns, (double)rd->steps.rearm_ns, (double)rd->steps.state_ns,
			  (double)rd->kept_out, (double)rd->precopy_ns, rd->precopy_in_target ? 1.0 : 0.0 };

	_Static_assert(ZD_ARRAY_SIZE(keys) == ZD_ARRAY_SIZE(vals), "a value per key");
	return zd__emit_stat(k, keys, vals, ZD_ARRAY_SIZE(keys));
}

/* The pages to keep out of the next pre-copy: those written again after
 * their pre-copy (P ∩ F), and those kept out this time that were written
 * again (they were not re-armed at T0, so this says written during the
 * epoch: a hot page). At most a quarter of the copy budget, so that most
 * of it stays for F's other pages. Only where F's pages are copied at the
 * pause: elsewhere they would be protected, and a fault costs more than
 * the dirty-log fault saved. */
static void keep_rewritten(struct zd_track *k, const struct zddspt_round *rd)
{
	struct zd_pageset hot = ZD_PAGESET_INIT, again = ZD_PAGESET_INIT;
	uint64_t max = policy_env("ZD_ZDDSPT_COPY_MAX", 512) / 4;

	zd_pageset_clear(&k->rewritten);
	if (!rd->one_request || !max)
		return;
	zd_pageset_intersect(&hot, &rd->precopied, &k->dirty);
	zd_pageset_intersect(&again, &k->dirty, &k->rewritten);
	zd_pageset_union(&k->rewritten, &hot, &again);
	if (zd_pageset_count(&k->rewritten) > max) {
		zd_pageset_clear(&hot);
		zd_pageset_take_front(&hot, &k->rewritten, max);
		zd_pageset_swap(&hot, &k->rewritten);
	}
	zd_pageset_free(&hot);
	zd_pageset_free(&again);
}

/* k->prev = this epoch's pages (P and F), k->hot = those that were in
 * the last epoch's too. A page written in two epochs running is likelier
 * than most to be written in the moment after its pre-copy: copied last,
 * it is open to that for the shortest time (zd-vm's PRECOPY). */
static void remember_epoch(struct zd_track *k, const struct zddspt_round *rd)
{
	struct zd_pageset now = ZD_PAGESET_INIT;

	zd_pageset_union(&now, &rd->precopied, &k->dirty);
	zd_pageset_intersect(&k->hot, &k->prev, &now);
	zd_pageset_swap(&k->prev, &now);
	zd_pageset_free(&now);
}

static int zddspt_round(struct zd_track *k)
{
	struct zddspt_round rd = { .precopied = ZD_PAGESET_INIT, .hint = ZD_PAGESET_INIT,
				   .copied = ZD_PAGESET_INIT, .late = ZD_PAGESET_INIT };
	struct zd_rec_checkpoint *c = &rd.base.c;
	int rc;

	rc = run_until_t0(k);
	if (rc)
		return rc;
	rc = -1;
	if (precopy(k, &rd) < 0 || run_until_t1(k) < 0)
		goto out;
	choose_guard(k, &rd);
	rc = pause_and_guard(k, &rd);
	if (rc < 0)
		goto out;
	rc = -1;
	if (!rd.one_request) {
		if (zd__track_pause(k, &c->t1_ns) < 0)
			goto out;
		if (harvest_frozen(k, &rd) < 0 || protect_frozen(k, &rd) < 0 || swap_tables(k) < 0 ||
		    zd__track_save_state(k, &rd.base) < 0 || zd__track_resume(k, &c->resume_ns) < 0) {
			zd__track_resume_quietly(k);
			goto out;
		}
	}
	c->pause_ns = zd__track_pause_ns(k, c);
	rc = send_checkpoint(k, &rd);
	say_fallback(k, rd.why);
	if (rc == 0)
		rc = report_epoch(k, &rd);
	/* The next epoch's fallback hint: every page this epoch changed;
	 * those the last epoch changed too are the next pre-copy's hot ones. */
	remember_epoch(k, &rd);
	keep_rewritten(k, &rd);
out:
	zd__track_round_free(&rd.base);
	zd_pageset_free(&rd.precopied);
	zd_pageset_free(&rd.hint);
	zd_pageset_free(&rd.copied);
	zd_pageset_free(&rd.late);
	return rc;
}

const struct zd_mode_ops zd_mode_zddspt = {
	.mode = ZD_MODE_ZDDSPT,
	.round = zddspt_round,
};
