/* SPDX-License-Identifier: MIT */
/*
 * buffered: Remus as published (NSDI'08) — copy while paused, send while
 * running.
 *
 *   run until T1 → pause → harvest → re-arm all → copy dirty pages to a
 *   local buffer → vCPU state → [memsum] → resume
 *   → CHECKPOINT (PAGES_INLINE), DIRTY, PAGES…, STATE, COMMIT while the
 *   VM runs
 *
 * Output of the epoch is released when its ACK comes back on the
 * feedback socket (the feedback thread calls the target's commit).
 */
#include "track_int.h"
#include "zd/util.h"

static int buffered_round(struct zd_track *k)
{
	struct zd_rec_checkpoint c = { .flags = ZD_CKPT_PAGES_INLINE };
	struct zd_record state, commit;
	uint64_t harvest_ns, copy_ns;
	int r;

	r = track_run_until(k, track_deadline(k, 100));
	if (r)
		return r > 0 ? 1 : -1;

	if (track_pause(k, &c.t1_ns) < 0)
		return -1;
	harvest_ns = zd_now_ns();
	if (track_harvest(k, &k->dirty) < 0 || track_rearm(k, NULL) < 0)
		goto fail_paused;
	track_full_if_asked(k, &k->dirty, &c);
	copy_ns = zd_now_ns();
	harvest_ns = copy_ns - harvest_ns;
	if (track_read_pages(k, &k->dirty) < 0)
		goto fail_paused;
	copy_ns = zd_now_ns() - copy_ns;
	if (track_get_state(k, &state) < 0)
		goto fail_paused;
	init_commit(k, &commit, zd_pageset_count(&k->dirty));
	if (track_memsum(k, &commit) < 0)
		goto fail_state;
	if (track_resume(k, &c.resume_ns) < 0)
		goto fail_state;
	c.pause_ns = c.resume_ns - c.t1_ns;

	r = 0;
	if (emit_checkpoint(k, &c) < 0 || emit_set(k, ZD_REC_DIRTY, &k->dirty) < 0 ||
	    emit_pages(k, &k->dirty, 0) < 0 || emit_record(k, &state) < 0 ||
	    emit_record(k, &commit) < 0)
		r = -1;
	zd_record_free(&state);
	zd_pageset_swap(&k->prev, &k->dirty);
	if (r < 0)
		return -1;

	static const char *const keys[] = { "pause_ns", "harvest_ns", "copy_ns", "dirty" };
	double vals[] = { (double)c.pause_ns, (double)harvest_ns, (double)copy_ns,
			  (double)zd_pageset_count(&k->prev) };
	return emit_stat(k, keys, vals, 4);

fail_state:
	zd_record_free(&state);
fail_paused:
	track_resume_quietly(k);
	return -1;
}

const struct zd_mode_ops zd_mode_buffered = {
	.mode = ZD_MODE_BUFFERED,
	.round = buffered_round,
};
