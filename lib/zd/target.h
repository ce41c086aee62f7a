/* SPDX-License-Identifier: MIT */
/*
 * A target is the protected VM as the checkpoint round sees it: pause,
 * resume, harvest the dirty log, re-arm it, read page contents, device state.
 * Each kind of VM is one file under lib/target/ filling struct
 * zd_target_ops; zd_target_open() picks it by the scheme of the spec
 * ("kvm:/run/zd/vm1.sock", "synth:pages=4096,dirty=128", "trace:FILE").
 *
 * The same ops serve two roles:
 *   - the tracker (zd-track) *opens* a target and drives the whole round;
 *   - a downstream stage (zd-swap, zd-send) *attaches* to a running
 *     tracker from the stream's HEADER only to read page contents
 *     (zd_target_attach): synth regenerates them, kvm maps the memfd that
 *     the tracker hands over its control socket.
 */
#ifndef ZD_TARGET_H
#define ZD_TARGET_H

#include <stdint.h>
#include <stdbool.h>
#include "zd/pageset.h"
#include "zd/stream.h"

struct zd_target;

/* What a guest measured of its own lost time (zd-vm's built-in guest:
 * lib/vm/guest/abi.h, struct zdg_svc), in ns since it started. */
struct zd_guest_clock {
	uint64_t lost_ns, lost_n;	/* every gap >= 2 us it did not ask for */
	uint64_t stall_ns, stall_n;	/* the gaps >= 40 us among them */
	uint64_t wfault_ns, wfault_n;	/* page writes of 2-40 us: dirty-log faults */
};

/* The times of a one-request pause's steps, and its protect calls. */
struct zd_ckpt_steps {
	uint64_t protect_ns, protect_calls, copy_ns;
	uint64_t stop_ns, harvest_ns, rearm_ns, state_ns;
};

/* zddspt's pause as one target request (the checkpoint op). */
struct zd_target_ckpt {
	/* in */
	uint64_t epoch;
	uint32_t copy_max;		/* pages of F at most copied at the pause */
	uint32_t protect_run;		/* shorter runs of F are copied, not protected */
	const struct zd_pageset *hint;	/* pages the guest is predicted to write first, or NULL */
	bool memsum;			/* also the checksum of memory at the pause */
	/* out */
	struct zd_pageset *frozen;	/* F (the caller's set, filled) */
	struct zd_pageset *copied;	/* the pages of F copied at the pause; the
					 * others are write-protected */
	const uint8_t *copy_data;	/* their contents in pfn order, valid until
					 * the next call */
	uint64_t memsum_value;
	uint8_t *state;			/* malloc'd STATE blob (kind 1) */
	uint32_t state_len;
	struct zd_ckpt_steps steps;
};

struct zd_target_ops {
	const char *scheme;		/* "kvm", "synth", "trace", "xen" */
	const char *usage;		/* one line for --help and the man page */

	/* Tracker role. args is the spec after "scheme:". On failure fill
	 * t->err and return -1 (the caller prints it and exits ZD_EXIT_TARGET). */
	int (*open)(struct zd_target *t, const char *args);
	/* Attach role: only read_pages (and close) need to work afterwards. */
	int (*attach)(struct zd_target *t, const struct zd_rec_header *hdr);
	void (*close)(struct zd_target *t);

	/* Let the VM run until deadline_ns (CLOCK_MONOTONIC). A real VM just
	 * runs, so this sleeps; synth generates the epoch's writes here;
	 * trace returns at once. May return early when the target ends:
	 * returns 1 if the target has no more epochs (trace at EOF), 0 to go on. */
	int (*run_until)(struct zd_target *t, uint64_t deadline_ns);

	/* epoch is the checkpoint being taken: output the VM produced
	 * before this pause belongs to it. */
	int (*pause)(struct zd_target *t, uint64_t epoch);
	int (*resume)(struct zd_target *t);

	/* Pages written since they were last re-armed. Does not re-arm
	 * (KVM manual dirty-log protect, Xen PEEK). */
	int (*harvest)(struct zd_target *t, struct zd_pageset *dirty);
	/* Re-arm tracking of exactly these pages (NULL: all pages). */
	int (*rearm)(struct zd_target *t, const struct zd_pageset *set);

	/* Optional: re-arm the set's pages and copy them, a few at a time,
	 * while the VM runs (zddspt's pre-copy): rearm then read_pages with
	 * each page exposed to a second write for less time; the pages also
	 * in last (NULL: none), predicted to be written soonest, last of all.
	 * *data: the copies in pfn order, the target's until the next call.
	 * 0, 1 the target cannot (nothing done), -1 (t->err). */
	int (*precopy)(struct zd_target *t, const struct zd_pageset *set, const struct zd_pageset *last,
		       const uint8_t **data);
	/* Copy the current contents of the set's pages, in pfn order, into
	 * buf (set->pages * page_size bytes). epoch is the epoch the set
	 * belongs to (synth derives contents from it). */
	int (*read_pages)(struct zd_target *t, uint64_t epoch,
			  const struct zd_pageset *set, uint8_t *buf);
	/* Optional: pages of this checkpoint's dirty set that change while
	 * the VM is paused (Xen sets event bits in frames behind log-dirty),
	 * as the harvest copied them and memsum hashed them: a mode that
	 * leaves the copying to the stage downstream (remus) sends these
	 * itself, or that stage would read a later version. After memsum;
	 * *data is malloc'd, set->pages * page_size bytes in pfn order. */
	int (*paused_writes)(struct zd_target *t, struct zd_pageset *set, uint8_t **data);

	/* Optional: the guest's disk. Only while paused. Calls fn
	 * for every write the guest issued since the VM last resumed, in the
	 * order it issued them, with the bytes it wrote (valid during the
	 * call); with full, for the whole disk instead. *size is the disk's
	 * size, 0 (and no call) for a guest without a disk. fn returns 0 or
	 * -1 (stops the walk). NULL: no target of this kind has a disk. */
	int (*disk_writes)(struct zd_target *t, bool full, uint64_t *size,
			   int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len),
			   void *arg);
	/* Optional: the rest of disk_writes' writes, called once after it,
	 * the VM running again or not, with the same fn: a target that only
	 * marks its write log in the pause (xen: dm-log-writes) reads it
	 * here, out of the pause. *sum_void true: the disksum taken in that
	 * pause may hold writes of the next epoch (it is not to be sent). */
	int (*disk_writes_late)(struct zd_target *t,
				int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len),
				void *arg, bool *sum_void);
	/* Optional: zd_hash64 of the whole disk (paused, after disk_writes);
	 * *size 0 if none. */
	int (*disksum)(struct zd_target *t, uint64_t *sum, uint64_t *size);

	/* Device and vCPU state, malloc'd blob; kind as in zd_rec_state. */
	int (*get_state)(struct zd_target *t, uint32_t *kind, uint8_t **data, uint32_t *len);
	/* zd_hash64 of the whole memory; only meaningful while paused. NULL if
	 * the target cannot (then --verify is refused). */
	int (*memsum)(struct zd_target *t, uint64_t *sum);
	/* The last step of the cycle: the backup acknowledged this epoch, so
	 * the output the VM produced before its pause goes out now. Called
	 * from the feedback thread; NULL if the target holds no output. */
	int (*release_output)(struct zd_target *t, uint64_t epoch);

	/* Optional (zddspt): write-protect these pages so the VM's next write
	 * to each is trapped; NULL if the target cannot. Returns 1 when this
	 * instance cannot after all (kvm: zd-vm has no uffd guard), having
	 * protected nothing: the caller then copies the frozen set while
	 * paused. -1 may leave part of the set protected. */
	int (*protect)(struct zd_target *t, const struct zd_pageset *set);

	/* Optional (zddspt): pause, harvest F, copy part of it and
	 * write-protect exactly the rest, re-arm all, [memsum], state,
	 * resume, as one request. Returns 1 when this instance cannot (the
	 * caller then takes the pause step by step), having done nothing;
	 * -1 with the VM resumed, part of F maybe protected. */
	int (*checkpoint)(struct zd_target *t, struct zd_target_ckpt *ck);
	/* Optional: file descriptors a downstream stage needs (memfd of guest
	 * RAM, uffd), passed over the tracker's control socket. Returns the
	 * number of fds written to fds[] (max 4) and fills *base with the
	 * address of guest RAM in the VM monitor's address space (uffd fault
	 * addresses are in that space). */
	int (*export_fds)(struct zd_target *t, int *fds, uint64_t *base);
	/* Attach role counterpart of export_fds for targets that need them. */
	int (*import_fds)(struct zd_target *t, const int *fds, int nfds, uint64_t base);

	/* A live VM without protect (xen:): a page read after resume is not
	 * the checkpoint's, so zddspt copies its frozen set while paused. */
	bool copy_frozen_paused;

	/* Optional, attach role (zd-swap's drain_uffd): the write-protect
	 * guard's uffd (the target's, do not close), the address of guest RAM
	 * in the VM monitor (fault addresses are there) and our read-only
	 * mapping of it. Returns -1 if the target has no guard. */
	int (*guard)(struct zd_target *t, int *uffd, uint64_t *base, const uint8_t **ram);

	/* Optional, tracker role, called while paused: the guest's own
	 * account of the time it lost so far (counters that only grow; the
	 * tracker reports each epoch's difference). Returns -1 if the target
	 * has no such figures. */
	int (*guest_clock)(struct zd_target *t, struct zd_guest_clock *gc);
};

struct zd_target {
	const struct zd_target_ops *ops;
	char *spec;			/* the whole spec as given */
	uint32_t page_size;
	uint64_t page_count;
	void *priv;			/* the implementation's state */
	char err[256];			/* why the last op failed */
	/* The VM died under us (not stopped): the backup should take over
	 * (END status 3). Set with err by the op that found out. */
	bool vm_died;
	/* read_pages gives any past epoch's pages back after the fact
	 * (synth: computes them, trace: recorded them): zddspt need neither
	 * protect nor copy its frozen set. Set by open. */
	bool replays_pages;
	/* The VM monitor's own clock (CLOCK_MONOTONIC) at the last pause's
	 * vCPU park and the last resume, 0 where unknown (kvm: sets them):
	 * the time the guest really stood still, without the requests'
	 * round trips. */
	uint64_t vm_parked_ns, vm_resumed_ns;
};

extern const struct zd_target_ops zd_target_synth;
extern const struct zd_target_ops zd_target_trace;
extern const struct zd_target_ops zd_target_kvm;
extern const struct zd_target_ops zd_target_xen;

/* Open by spec for the tracker role. Returns 0, or -1 with *t == NULL and
 * msg filled (e.g. "unknown target scheme 'foo' (want kvm, synth, trace)").
 * errno EINVAL after a failure means the spec itself is wrong (a usage
 * error, exit 2): an open op sets it for a bad key or value. */
int zd_target_open(struct zd_target **t, const char *spec, char *msg, size_t msglen);
/* Attach for reading pages, from a stream's HEADER. For kvm this connects
 * to hdr->control and receives the memfd. */
int zd_target_attach(struct zd_target **t, const struct zd_rec_header *hdr, char *msg, size_t msglen);
void zd_target_close(struct zd_target *t);

#endif
