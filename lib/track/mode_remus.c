/* SPDX-License-Identifier: MIT */
/*
 * remus: stop-and-copy, as the ZDDSPT paper describes Remus. The cycle, in
 * the order it runs, each step the function remus_round calls:
 *
 *   zd__track_run_until        the VM runs until T1
 *   zd__track_pause            T1
 *   zd__track_harvest_all      the dirty log, re-armed for the next epoch
 *   zd__track_save_state       vCPU state, [memsum]
 *   zd__track_paused_writes    the pages the target itself writes while the
 *                              VM is paused (Xen's event bits), as memsum saw
 *                              them
 *   send_checkpoint            CHECKPOINT, DIRTY, those pages, STATE, COMMIT:
 *                              the stage downstream, zd-swap or zd-send,
 *                              copies the rest from the paused VM
 *   zd__track_wait_backup      until the backup has the epoch: ACK via
 *                              zd-send, else DRAINED via zd-swap, else open loop
 *   zd__track_resume           the VM runs again
 *   report_epoch               STAT "track"
 *   release_output_on_ack      (track.c, on the feedback thread) the epoch's
 *                              output goes out on its ACK, which the wait
 *                              above has already seen
 *
 * Before epoch 1 it gives the stages after it --grace (1 s) to connect to
 * the feedback socket (they do once they read the HEADER).
 *
 * The VM stays stopped until the backup has the epoch, so pause_ns is
 * known only after the CHECKPOINT went out: it follows in STAT "track".
 */
#include <stdlib.h>

#include "track_int.h"
#include "zd/util.h"

/* The backup copies from the paused VM: flushed now, or it waits for us. */
static int send_checkpoint(struct zd_track *k, struct track_round *rd,
			   const struct zd_pageset *pages, const uint8_t *data)
{
	if (zd__track_send_checkpoint(k, rd, zd_pageset_empty(pages) ? NULL : pages, data) < 0)
		return -1;
	return zd__emit_flush(k);
}

static int report_epoch(struct zd_track *k, const struct track_round *rd, uint64_t resume_ns)
{
	static const char *const keys[] = { "pause_ns", "harvest_ns", "dirty" };
	struct zd_rec_checkpoint c = { .t1_ns = rd->c.t1_ns, .resume_ns = resume_ns };
	double vals[] = { (double)zd__track_pause_ns(k, &c), (double)rd->harvest_ns,
			  (double)zd_pageset_count(&k->prev) };

	return zd__emit_stat(k, keys, vals, 3);
}

static int remus_round(struct zd_track *k)
{
	struct track_round rd = { 0 };
	struct zd_pageset held = ZD_PAGESET_INIT;
	uint8_t *held_data = NULL;
	uint64_t resume_ns;
	int rc;

	rc = zd__track_run_until(k, zd__track_deadline(k, 100));
	if (rc)
		return rc;
	if (zd__track_pause(k, &rd.c.t1_ns) < 0)
		return -1;
	rc = zd__track_harvest_all(k, &rd) < 0 || zd__track_save_state(k, &rd) < 0 ||
	     zd__track_paused_writes(k, &held, &held_data) < 0 ||
	     send_checkpoint(k, &rd, &held, held_data) < 0 || zd__track_wait_backup(k) < 0;
	zd__track_round_free(&rd);
	zd_pageset_free(&held);
	free(held_data);
	if (rc) {
		zd__track_resume_quietly(k);
		return -1;
	}
	if (zd__track_resume(k, &resume_ns) < 0)
		return -1;
	/* The next round harvests into k->dirty; prev keeps this epoch's set. */
	zd_pageset_swap(&k->prev, &k->dirty);
	return report_epoch(k, &rd, resume_ns);
}

/* Remus stops the VM for the backup: it waits for one to be there. */
static int remus_start(struct zd_track *k)
{
	zd__track_wait_connect(k, k->o->grace_ns);
	return 0;
}

const struct zd_mode_ops zd_mode_remus = {
	.mode = ZD_MODE_REMUS,
	.start = remus_start,
	.round = remus_round,
};
