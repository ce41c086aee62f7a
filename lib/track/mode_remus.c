/* SPDX-License-Identifier: MIT */
/*
 * remus: stop-and-copy, as the ZDDSPT paper describes Remus.
 *
 *   run until T1 → pause → harvest → re-arm all → vCPU state → [memsum]
 *   → CHECKPOINT, DIRTY, STATE, COMMIT (no pages: the stage downstream,
 *   zd-swap or zd-send, captures them from the paused VM)
 *   → wait for the backup (ACK via zd-send, else DRAINED via zd-swap,
 *   else open loop) → resume
 *
 * Before epoch 1 it gives the stages after it --grace (1 s) to connect to
 * the feedback socket (they do once they read the HEADER).
 *
 * The VM stays stopped until the backup has the epoch, so pause_ns is
 * known only after the CHECKPOINT went out: it follows in STAT "track".
 */
#include "track_int.h"
#include "zd/util.h"

static int remus_round(struct zd_track *k)
{
	struct zd_rec_checkpoint c = { 0 };
	struct zd_record state, commit;
	uint64_t harvest_ns;
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
	harvest_ns = zd_now_ns() - harvest_ns;
	if (track_get_state(k, &state) < 0)
		goto fail_paused;
	init_commit(k, &commit, zd_pageset_count(&k->dirty));
	if (track_memsum(k, &commit) < 0)
		goto fail_state;

	if (emit_checkpoint(k, &c) < 0 || emit_set(k, ZD_REC_DIRTY, &k->dirty) < 0 ||
	    emit_record(k, &state) < 0 || emit_record(k, &commit) < 0 || emit_flush(k) < 0)
		goto fail_state;
	zd_record_free(&state);

	if (track_wait_backup(k) < 0)
		goto fail_paused;
	uint64_t resume_ns;

	if (track_resume(k, &resume_ns) < 0)
		return -1;
	zd_pageset_swap(&k->prev, &k->dirty);

	static const char *const keys[] = { "pause_ns", "harvest_ns", "dirty" };
	double vals[] = { (double)(resume_ns - c.t1_ns), (double)harvest_ns,
			  (double)zd_pageset_count(&k->prev) };
	return emit_stat(k, keys, vals, 3);

fail_state:
	zd_record_free(&state);
fail_paused:
	track_resume_quietly(k);
	return -1;
}

/* Remus stops the VM for the backup: it waits for one to be there. */
static int remus_start(struct zd_track *k)
{
	track_wait_connect(k, k->o->grace_ns);
	return 0;
}

const struct zd_mode_ops zd_mode_remus = {
	.mode = ZD_MODE_REMUS,
	.start = remus_start,
	.round = remus_round,
};
