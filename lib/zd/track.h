/* SPDX-License-Identifier: MIT */
/*
 * zd-track's checkpoint loop (lib/track/), driven by cmd/zd-track.c: open
 * the target, serve the feedback socket, write the stream, run one round
 * per epoch in the chosen mode until --epochs, the target's end or a stop
 * request.
 */
#ifndef ZD_TRACK_H
#define ZD_TRACK_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "zd/stream.h"

struct zd_track_opts {
	const char *spec;		/* target spec */
	uint64_t interval_ns;		/* checkpoint interval, 0 = back to back */
	uint64_t epochs;		/* stop after this many, 0 = until stopped */
	enum zd_mode mode;
	unsigned precopy_pct;		/* zddspt: T0 = T1 - precopy% of the interval */
	bool verify;			/* memsum in COMMIT */
	bool no_guard;			/* zddspt: copy F while paused, never write-protect */
	bool json;			/* JSON lines even on a pipe */
	const char *control;		/* feedback socket path, NULL = default */
	uint64_t timeout_ns;		/* remus: longest wait for ACK/DRAINED */
	uint64_t grace_ns;		/* remus: wait at the start for a backup stage */
	uint64_t max_hold_ns;		/* warn when output waits longer for an ACK, 0 = never */
	uint64_t window;		/* buffered, zddspt: most epochs unacknowledged, 0 = no limit */
	int out_fd;			/* where the stream goes (1) */
	bool precopy_set, grace_set;	/* given on the command line */
};

#define ZD_TRACK_DEFAULT_INTERVAL_NS (25ull * 1000000)
#define ZD_TRACK_DEFAULT_PRECOPY 2
#define ZD_TRACK_DEFAULT_TIMEOUT_NS (10ull * 1000000000)
#define ZD_TRACK_DEFAULT_GRACE_NS (1000ull * 1000000)
#define ZD_TRACK_DEFAULT_MAX_HOLD_NS (2000ull * 1000000)
#define ZD_TRACK_DEFAULT_WINDOW 1

/* Run the whole tracker; *stop is set (by a signal handler) to end the run
 * after the current round with END status 1. Prints its own diagnostics;
 * returns the process exit code (enum zd_exit). */
int zd_track_run(const struct zd_track_opts *o, volatile sig_atomic_t *stop);
/* zd-track as a whole: ZD_EXIT_USAGE with msg if the flags do not go with
 * the mode, else zd_track_run (msg empty: it printed its own). */
int zd_track_main(const struct zd_track_opts *o, volatile sig_atomic_t *stop, char *msg, size_t msglen);

#endif
