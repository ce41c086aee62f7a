/* SPDX-License-Identifier: MIT */
/*
 * Inside the checkpoint loop: the tracker's state, the steps a round is
 * made of (track.c), and one struct zd_mode_ops per mode (mode_*.c).
 */
#ifndef ZD_TRACK_INT_H
#define ZD_TRACK_INT_H

#include <pthread.h>
#include "zd/fbserver.h"
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
	/* Target calls come from the loop and from the feedback thread (commit
	 * on ACK, export_fds on MEMORY); one at a time. run_until is outside:
	 * the VM runs while it waits. */
	pthread_mutex_t tlock;
	struct zd_fbserver *fb;
	struct zd_writer w;
	int rc;				/* exit code of the first failure */

	uint64_t epoch;			/* the checkpoint being taken */
	uint64_t run_start_ns;		/* the VM's last resume: epoch start */
	struct zd_pageset dirty;	/* harvested at T1 */
	struct zd_pageset prev;		/* last epoch's pages: zddspt's fallback hint */
	uint8_t *buf;			/* page copies */
	size_t buf_cap;
	bool said_open_loop;
	bool had_backup;	/* remus: a zd-send or zd-swap waited on once */
	bool hold_warned;	/* --max-hold exceeded, said so */
	uint64_t hold_since_ns;	/* T1 of the oldest epoch held then */

	pthread_mutex_t amu;		/* the two fields below */
	struct { uint64_t epoch, t1_ns; } t1[T1_RING];
	struct pending_ack acks[MAX_PENDING_ACKS];
	size_t nacks;
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

/* --- steps, in the order a round uses them (track.c) --- */
int track_fail(struct zd_track *k, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int track_run_until(struct zd_track *k, uint64_t deadline_ns);	/* 0, 1 = ended, -1 */
uint64_t track_deadline(const struct zd_track *k, unsigned pct);	/* run_start + pct% of interval */
int track_pause(struct zd_track *k, uint64_t *t1_ns);
int track_harvest(struct zd_track *k, struct zd_pageset *set);
void track_full_if_asked(struct zd_track *k, struct zd_pageset *set, struct zd_rec_checkpoint *c);
int track_rearm(struct zd_track *k, const struct zd_pageset *set);
int track_protect(struct zd_track *k, const struct zd_pageset *set);
int track_read_pages(struct zd_track *k, const struct zd_pageset *set);	/* into k->buf */
int track_get_state(struct zd_track *k, struct zd_record *state);
int track_memsum(struct zd_track *k, struct zd_record *commit);
int track_resume(struct zd_track *k, uint64_t *resume_ns);
void track_resume_quietly(struct zd_track *k);	/* after a failure while paused */

int emit_checkpoint(struct zd_track *k, const struct zd_rec_checkpoint *c);
int emit_set(struct zd_track *k, uint16_t type, const struct zd_pageset *set);
int emit_pages(struct zd_track *k, const struct zd_pageset *set, uint8_t flags);	/* from k->buf */
int emit_record(struct zd_track *k, const struct zd_record *r);
int emit_stat(struct zd_track *k, const char *const *keys, const double *vals, unsigned n);
int emit_flush(struct zd_track *k);
void init_commit(struct zd_track *k, struct zd_record *commit, uint64_t pages);

/* remus: wait for the backup before resuming. 0, or -1 (k->rc set). */
int track_wait_backup(struct zd_track *k);
/* Wait up to grace_ns for a backup stage (zd-send, zd-swap) to connect. */
void track_wait_connect(struct zd_track *k, uint64_t grace_ns);

#endif
