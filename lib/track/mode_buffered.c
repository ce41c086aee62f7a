/* SPDX-License-Identifier: MIT */
/*
 * buffered: Remus as published (NSDI'08): copy while paused, send while
 * running. The cycle, in the order it runs, each step the function
 * buffered_round calls:
 *
 *   zd__track_run_until        the VM runs until T1
 *   zd__track_pause            T1
 *   zd__track_harvest_all      the dirty log, re-armed for the next epoch
 *   copy_dirty                 the dirty pages into a local buffer
 *   zd__track_save_state       vCPU state, [memsum]
 *   zd__track_resume           the VM runs again
 *   zd__track_send_checkpoint  CHECKPOINT (PAGES_INLINE), DIRTY, PAGES…,
 *                              STATE, COMMIT, while the VM runs
 *   report_epoch               STAT "track"
 *   release_output_on_ack      (track.c, on the feedback thread) the epoch's
 *                              output goes out when its ACK comes back; the
 *                              loop does not wait for it
 */
#include "track_int.h"
#include "zd/util.h"

struct buffered_round {
	struct track_round base;
	uint64_t copy_ns;
};

static int copy_dirty(struct zd_track *k, struct buffered_round *rd)
{
	uint64_t t0 = zd_now_ns();

	if (zd__track_read_pages(k, &k->dirty) < 0)
		return -1;
	rd->copy_ns = zd_now_ns() - t0;
	return 0;
}

static int report_epoch(struct zd_track *k, const struct buffered_round *rd)
{
	static const char *const keys[] = { "pause_ns", "harvest_ns", "copy_ns", "dirty",
					    "vcpu_stopped_ns" };
	double vals[] = { (double)rd->base.c.pause_ns, (double)rd->base.harvest_ns,
			  (double)rd->copy_ns, (double)zd_pageset_count(&k->prev),
			  (double)zd__track_vcpu_stopped_ns(k) };

	return zd__emit_stat(k, keys, vals, 5);
}

static int buffered_round(struct zd_track *k)
{
	struct buffered_round rd = { .base.c.flags = ZD_CKPT_PAGES_INLINE };
	struct zd_rec_checkpoint *c = &rd.base.c;
	int rc;

	rc = zd__track_run_until(k, zd__track_deadline(k, 100));
	if (rc)
		return rc;
	if (zd__track_pause(k, &c->t1_ns) < 0)
		return -1;
	if (zd__track_harvest_all(k, &rd.base) < 0 || copy_dirty(k, &rd) < 0 ||
	    zd__track_save_state(k, &rd.base) < 0 || zd__track_resume(k, &c->resume_ns) < 0) {
		zd__track_resume_quietly(k);
		zd__track_round_free(&rd.base);
		return -1;
	}
	c->pause_ns = zd__track_pause_ns(k, c);
	rc = zd__track_send_checkpoint(k, &rd.base, &k->dirty, k->buf);
	zd__track_round_free(&rd.base);
	/* The next round harvests into k->dirty; prev keeps this epoch's set. */
	zd_pageset_swap(&k->prev, &k->dirty);
	if (rc < 0)
		return -1;
	return report_epoch(k, &rd);
}

const struct zd_mode_ops zd_mode_buffered = {
	.mode = ZD_MODE_BUFFERED,
	.round = buffered_round,
};
