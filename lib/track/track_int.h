/* SPDX-License-Identifier: MIT */
/*
 * Inside the checkpoint loop: the tracker's state, the steps a round is
 * made of (track.c), and one struct zd_mode_ops per mode (mode_*.c). Each
 * mode file lists its round's steps, in the order they run, at its top.
 */
#ifndef ZD_TRACK_INT_H
#define ZD_TRACK_INT_H

#include <pthread.h>
#include "fb/fbserver.h"
#include "zd/stream.h"
#include "zd/target.h"
#include "zd/track.h"

#define T1_RING 4096		/* T1 of recent epochs, for ACK latency */
#define MAX_PENDING_ACKS 1024

struct pending_ack {
	uint64_t epoch, wall_ns, latency_ns;
};

struct zd_track {
	const struct zd_track_opts *o;
	volatile sig_atomic_t *stop;
	struct zd_target *t;
	/* Target calls come from the loop and from the feedback thread
	 * (release_output on ACK, export_fds on MEMORY); one at a time.
	 * run_until is outside: the VM runs while it waits. */
	pthread_mutex_t tlock;
	struct zd_fbserver *fb;
	struct zd_writer w;
	int rc;				/* exit code of the first failure */

	uint64_t epoch;			/* the checkpoint being taken */
	uint64_t run_start_ns;		/* the VM's last resume: epoch start */
	struct zd_pageset dirty;	/* harvested at T1 */
	struct zd_pageset prev;		/* last epoch's pages: zddspt's fallback hint */
	struct zd_pageset hot;		/* zddspt: pages of each of the last two epochs,
					 * which the pre-copy copies last */
	struct zd_pageset rewritten;	/* zddspt: pages written again after their
					 * pre-copy, kept out of the next one */
	/* zddspt: the pre-copy's buffers, kept from round to round (a fresh
	 * one of tens of MiB costs a page fault per page, inside the window
	 * in which a re-armed page can be written again) */
	uint8_t *pre_buf, *late_buf;
	size_t pre_cap, late_cap;
	uint8_t *buf;			/* page copies */
	size_t buf_cap;
	bool said_open_loop;
	bool disk_synced;	/* an epoch shipped the whole disk (track_disk.c) */
	bool had_backup;	/* remus: a zd-send or zd-swap waited on once */
	bool hold_warned;	/* --max-hold exceeded, said so */
	uint64_t hold_since_ns;	/* T1 of the oldest epoch held then */
	uint32_t said_fallback;	/* zddspt: a bit per fallback reason told on stderr */
	/* The guest's lost-time counters read at this epoch's pause and at
	 * the last one (STAT "guest": the difference). */
	struct zd_guest_clock gc, gc_prev;
	bool have_gc, have_gc_prev;

	pthread_mutex_t amu;		/* the two fields below */
	struct { uint64_t epoch, t1_ns; } t1[T1_RING];
	struct pending_ack acks[MAX_PENDING_ACKS];
	size_t nacks;
	uint64_t notified_ns;		/* last STATUS= to a service manager (feedback thread) */
	struct zd_status *status;	/* live status (zd/status.h), or NULL */
};

/* One round per epoch. Returns 0 when the epoch's records are written,
 * 1 if the target had no more epochs (nothing written), -1 on failure
 * (k->rc set, diagnostic printed, the VM resumed if it was paused). */
struct zd_mode_ops {
	enum zd_mode mode;
	/* Optional: once, after the HEADER went out, before epoch 1. */
	int (*start)(struct zd_track *k);
	int (*round)(struct zd_track *k);
};

extern const struct zd_mode_ops zd_mode_remus;
extern const struct zd_mode_ops zd_mode_buffered;
extern const struct zd_mode_ops zd_mode_zddspt;

/* What a round gathered while the VM was paused, to send once it runs. */
struct track_round {
	struct zd_rec_checkpoint c;	/* times and flags of the CHECKPOINT */
	struct zd_record state, commit;
	bool have_state;		/* state holds a blob to free */
	/* The guest's disk writes of the epoch, DISK records with raw data
	 * copied at the pause (track_disk.c), packed as they are sent. */
	struct zd_record *disk;
	size_t ndisk, disk_cap;
	uint64_t disk_writes, disk_bytes;	/* for the STAT "disk" */
	uint64_t disk_size;		/* 0: the guest has no disk */
	bool disk_full;
	uint64_t harvest_ns;		/* zd__track_harvest_all's time */
	/* zddspt: pre-copied pages sent with the checkpoint, after DIRTY
	 * (PAGES flag PRECOPY), or NULL. Not freed by round_free. */
	const struct zd_pageset *late;
	const uint8_t *late_data;
};

/* The time the guest stood still at the last pause by the VM monitor's
 * clock (vCPU parked to resumed), 0 where the target does not say. */
uint64_t zd__track_vcpu_stopped_ns(const struct zd_track *k);
/* The CHECKPOINT's pause_ns: the time the guest stood still by the VM
 * monitor's clock where the target says (kvm:), else T1 to the resume by
 * ours, which adds the requests' round trips (a request to stop the vCPU,
 * a reply after it runs again). */
uint64_t zd__track_pause_ns(const struct zd_track *k, const struct zd_rec_checkpoint *c);

/* *BUF, of *CAP bytes, made at least NEED bytes (NULL: no memory; what it
 * held is not kept). Epoch 1 grows a page buffer to the guest's whole
 * memory; a later round that needs an eighth of it or less gets a smaller
 * one back, or the run would hold a copy of the guest it no longer uses. */
uint8_t *zd__track_buf(uint8_t **buf, size_t *cap, size_t need);

/* --- steps, in the order a round uses them (track.c) --- */
int zd__track_fail(struct zd_track *k, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int zd__track_run_until(struct zd_track *k, uint64_t deadline_ns);	/* 0, 1 = ended, -1 */
uint64_t zd__track_deadline(const struct zd_track *k, unsigned pct);	/* run_start + pct% of interval */
int zd__track_pause(struct zd_track *k, uint64_t *t1_ns);
int zd__track_harvest(struct zd_track *k, struct zd_pageset *set);
void zd__track_full_if_asked(struct zd_track *k, struct zd_pageset *set, struct zd_rec_checkpoint *c);
int zd__track_rearm(struct zd_track *k, const struct zd_pageset *set);
/* remus, buffered: the whole dirty log into k->dirty, re-armed for the next
 * epoch, [FULL], timed in rd->harvest_ns. */
int zd__track_harvest_all(struct zd_track *k, struct track_round *rd);
/* 0 protected, 1 the target cannot after all (nothing was protected),
 * -1 failed (k->rc set): never retried, see mode_zddspt.c protect_frozen. */
int zd__track_protect(struct zd_track *k, const struct zd_pageset *set);
int zd__track_read_pages(struct zd_track *k, const struct zd_pageset *set);	/* into k->buf */
/* Re-arm and copy the set while the VM runs, the pages also in last at
 * the end, if the target can in one request (zd_target_ops.precopy): 0
 * (*data the target's), 1 it cannot. */
int zd__track_precopy(struct zd_track *k, const struct zd_pageset *set, const struct zd_pageset *last,
		      const uint8_t **data);
int zd__track_read_pages_into(struct zd_track *k, const struct zd_pageset *set, uint8_t *buf);
/* The target's pages of this checkpoint that change while paused
 * (zd_target_ops.paused_writes), as memsum hashed them: set and a
 * malloc'd *data (NULL, set empty where the target has none). */
int zd__track_paused_writes(struct zd_track *k, struct zd_pageset *set, uint8_t **data);
/* vCPU state and the COMMIT (pages = |k->dirty|, [memsum]) into rd. */
int zd__track_save_state(struct zd_track *k, struct track_round *rd);
int zd__track_resume(struct zd_track *k, uint64_t *resume_ns);
void zd__track_resume_quietly(struct zd_track *k);	/* after a failure while paused */
/* zddspt: pause … resume as one target request (track.c); 0, 1 = the
 * target cannot (nothing done), -1 (k->rc set). */
int zd__track_checkpoint(struct zd_track *k, struct track_round *rd, struct zd_target_ckpt *ck);
/* CHECKPOINT, DIRTY (k->dirty), PAGES of `pages` from data (NULL: none),
 * STATE, COMMIT: the epoch as the stages downstream read it. */
int zd__track_send_checkpoint(struct zd_track *k, struct track_round *rd,
			      const struct zd_pageset *pages, const uint8_t *data);
void zd__track_round_free(struct track_round *rd);
/* track_disk.c: the epoch's disk writes into rd (paused; the whole disk
 * on the run's first epoch and on a FULL one), [disksum into the COMMIT],
 * then sent as DISK records and a STAT "disk", with those the target
 * gives only after the pause (disk_writes_late) collected first. */
int zd__track_collect_disk(struct zd_track *k, struct track_round *rd);
int zd__track_send_disk(struct zd_track *k, struct track_round *rd);
void zd__track_disk_free(struct track_round *rd);

int zd__emit_checkpoint(struct zd_track *k, const struct zd_rec_checkpoint *c);
int zd__emit_set(struct zd_track *k, uint16_t type, const struct zd_pageset *set);
int zd__emit_pages(struct zd_track *k, const struct zd_pageset *set, uint8_t flags);	/* from k->buf */
int zd__emit_pages_from(struct zd_track *k, const struct zd_pageset *set, const uint8_t *data,
			uint8_t flags);
int zd__emit_record(struct zd_track *k, const struct zd_record *r);
int zd__emit_stat(struct zd_track *k, const char *const *keys, const double *vals, unsigned n);
int zd__emit_stat_from(struct zd_track *k, const char *source, const char *const *keys,
		       const double *vals, unsigned n);
int zd__emit_flush(struct zd_track *k);

/* remus: wait for the backup before resuming. 0, or -1 (k->rc set). */
int zd__track_wait_backup(struct zd_track *k);
/* Wait up to grace_ns for a backup stage (zd-send, zd-swap) to connect. */
void zd__track_wait_connect(struct zd_track *k, uint64_t grace_ns);

#endif
