/* SPDX-License-Identifier: MIT */
/*
 * Page capture: a record filter that makes sure every DIRTY set of an epoch
 * is followed by PAGES covering it before the epoch's COMMIT.
 *
 *   - CHECKPOINT with ZD_CKPT_PAGES_INLINE: the tracker sends the pages
 *     itself; the epoch passes through untouched.
 *   - otherwise the filter collects the epoch's DIRTY sets and the PAGES
 *     already in the stream (an upstream zd-swap, pre-copy); at COMMIT it
 *     reads the pages still missing from the target and emits them as PAGES
 *     records of at most ZD_PAGES_PER_RECORD pages, then the COMMIT.
 *
 * The target is attached lazily from the HEADER (zd_target_attach), only
 * when an epoch needs pages, so a pipeline whose pages are all inline never
 * touches it. How pages are read is a drain method (lib/capture/drain_*.c):
 * drain_read reads the target's current memory through ops->read_pages,
 * which is the checkpoint's content when the VM is still paused (remus) or
 * the target can regenerate any epoch (synth). ZDDSPT's drain — frozen
 * pages read while the VM runs, pre-images from userfaultfd write faults —
 * is another drain method chosen in zd_capture_drain_for().
 */
#ifndef ZD_CAPTURE_H
#define ZD_CAPTURE_H

#include <stdint.h>
#include "zd/pageset.h"
#include "zd/stream.h"

struct zd_capture;
struct zd_target;

/* Where the filter's output goes; returns 0 or -1 (the caller's writer
 * holds the reason). */
typedef int (*zd_capture_emit)(void *arg, const struct zd_record *r);

struct zd_drain_ops {
	const char *name;
	/* Emit PAGES for exactly `missing` of `epoch`, in pfn order; 0 or an
	 * exit code with c's message set. */
	int (*drain)(struct zd_capture *c, uint64_t epoch, const struct zd_pageset *missing);
	/* Optional: at the HEADER, the target attached (drain_uffd starts its
	 * fault handler: faults may come before the first COMMIT); 0 or an
	 * exit code. stop: at zd_capture_free. */
	int (*start)(struct zd_capture *c);
	void (*stop)(struct zd_capture *c);
};
extern const struct zd_drain_ops zd_drain_read;
extern const struct zd_drain_ops zd_drain_uffd;

struct zd_capture_stats {
	uint64_t epoch;		/* last epoch closed by COMMIT */
	uint64_t captured;	/* pages this filter read for it */
	uint64_t bytes;		/* page bytes it emitted for it */
	uint64_t total_pages;	/* over the run */
	uint64_t cow_faults;	/* drain_uffd: write faults served for it */
	uint64_t fault_ns;	/* ... time spent serving them */
	uint64_t drain_ns;	/* ... the drain, start to last un-protect */
};

/* fb_fd: the caller's connection to the tracker's control socket, or -1,
 * for drain methods that talk to the tracker (zddspt's fault handling).
 * Guest memory itself comes through zd_target_attach. */
struct zd_capture *zd_capture_new(zd_capture_emit emit, void *arg, int fb_fd);
void zd_capture_set_fb(struct zd_capture *c, int fb_fd);
/* Make this filter the one that serves the write-protect guard (zddspt on
 * kvm:, drain_uffd); call before the HEADER. Only one process may: the
 * guard's userfaultfd hands each fault message to whichever reader reads
 * it first, and a second handler un-protects pages whose pre-images the
 * drainer then never sees (the guest's next write lands unsaved). zd-swap
 * owns it; any other stage that captures (zd-send) reads pages as they are
 * (drain_read), which is all it needs since zd-track only protects when a
 * zd-swap is connected. Default: not the owner. */
void zd_capture_own_guard(struct zd_capture *c);
/* Wait ns after a guarded (zddspt) epoch's COMMIT before draining it,
 * with the VM running: the guest's writes then meet the write-protected
 * frozen set, as they do behind a slow link. For tests and measurements
 * of the copy-on-write path (zd-swap --drain-delay); default 0. */
void zd_capture_set_drain_delay(struct zd_capture *c, uint64_t ns);
uint64_t zd_capture_drain_delay(const struct zd_capture *c);
void zd_capture_free(struct zd_capture *c);

/* Feed one record (the filter emits it, and PAGES before a COMMIT that
 * needs them). The record stays the caller's. Returns 0, or an exit code
 * of zd/util.h with zd_capture_error() saying why: ZD_EXIT_TARGET when the
 * target cannot be attached or read, ZD_EXIT_FAIL when emit failed. */
int zd_capture_feed(struct zd_capture *c, const struct zd_record *r);
const char *zd_capture_error(const struct zd_capture *c);
/* The capture failed because zd-vm died under it (zddspt's guard). */
bool zd_capture_vm_died(const struct zd_capture *c);
/* Figures of the epoch just closed by the last COMMIT fed. */
const struct zd_capture_stats *zd_capture_stats(const struct zd_capture *c);

/* Join the stream's control socket (HEADER "control") as role. Returns the
 * fd, or -1 after saying once on stderr that the pipeline runs open loop
 * (no control socket in the stream, or the tracker cannot be reached). */
int zd_fb_join(const struct zd_rec_header *hdr, int role);

/* For drain methods. */
struct zd_target *zd_capture_target(struct zd_capture *c);
int zd_capture_emit_pages(struct zd_capture *c, uint64_t epoch, const struct zd_pageset *set,
			  uint8_t *data, uint8_t flags);
int zd_capture_fail(struct zd_capture *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The drain method's own state (NULL until it sets it). */
void **zd_capture_drain_state(struct zd_capture *c);
struct zd_capture_stats *zd_capture_stats_mut(struct zd_capture *c);
/* A STAT record of source "swap" for epoch. */
int zd_capture_emit_stat(struct zd_capture *c, uint64_t epoch, const char *const *keys,
			 const double *vals, unsigned n);
/* The open epoch's DIRTY pages so far (for drain_uffd: what zd-track
 * write-protected). */
const struct zd_pageset *zd_capture_dirty(const struct zd_capture *c);
/* The open epoch's CHECKPOINT said ZD_CKPT_WP_EXACT: the drain's `missing`
 * is exactly what is protected. */
bool zd_capture_wp_exact(const struct zd_capture *c);
/* The drain method for a stream (by HEADER mode and target), for the
 * guard's owner (zd_capture_own_guard); every other filter reads. */
const struct zd_drain_ops *zd_capture_drain_for(const struct zd_rec_header *hdr);

/* zd-swap's stage: records from in_fd to out_fd, pages captured for each
 * epoch that lacks them (lib/capture/swap.c). Diagnostics on stderr;
 * returns 0 after END, else an exit code. */
int zd_swap_run(int in_fd, int out_fd, bool json, uint64_t drain_delay_ns);

#endif
