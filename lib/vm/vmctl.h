/* SPDX-License-Identifier: MIT */
/*
 * zd-vm's control protocol (documented for operators in zd-vm(1)).
 * Unix SOCK_SEQPACKET at --control PATH; one request, one reply.
 * The tracker (lib/target/kvm.c) is the usual client.
 *
 * Guest RAM is one memfd; the dirty bitmap is exchanged through a second,
 * shared memfd (the "bitmap area", two bitmaps of one bit per page:
 * words [0, nwords) = dirty out, [nwords, 2*nwords) = pages to clear or
 * protect in), so a harvest of several GiB needs no large message.
 */
#ifndef ZD_VMCTL_H
#define ZD_VMCTL_H

#include <stdint.h>

#define ZD_VMCTL_MAX_MSG (64u << 10)

enum zd_vmctl_op {
	ZD_VMCTL_INFO = 1,	/* reply: v0 mem bytes, v1 page size, v2 flags;
				 * fds: [memfd, bitmap memfd, uffd if any];
				 * payload: struct zd_vm_info */
	ZD_VMCTL_PAUSE = 2,	/* arg0 = epoch being checkpointed; reply v0 = ns to stop the vCPU */
	ZD_VMCTL_RESUME = 3,	/* reply v0 = ns */
	ZD_VMCTL_DIRTY_GET = 4,	/* KVM_GET_DIRTY_LOG into bitmap out; v0 = dirty pages */
	ZD_VMCTL_DIRTY_CLEAR = 5, /* flags ALL, or clear the pages set in bitmap in */
	ZD_VMCTL_STATE = 6,	/* reply payload: vCPU + device state blob */
	ZD_VMCTL_MEMSUM = 7,	/* reply v0 = zd_hash64 of guest RAM (paused) */
	ZD_VMCTL_COMMIT = 8,	/* arg0 = epoch acknowledged: release its output */
	ZD_VMCTL_PROTECT = 9,	/* uffd write-protect the pages set in bitmap in */
	ZD_VMCTL_STOP = 10,	/* end the VM */
	ZD_VMCTL_STATS = 11,	/* reply payload: struct zd_vm_stats */
	ZD_VMCTL_DISK_INFO = 12, /* reply v0 disk bytes (0: no disk), v1 log bytes;
				 * fds: [log memfd, disk file] */
	ZD_VMCTL_DISK_LOG = 13,	/* paused only: reply v0 log bytes used, v1 writes,
				 * v2 ZD_DLOG_* flags; the log is in the memfd */
	ZD_VMCTL_COPY_INFO = 14, /* reply v0 = pages the copy area holds;
				 * fds: [copy area memfd] (see CHECKPOINT) */
	ZD_VMCTL_CHECKPOINT = 15, /* zddspt's whole pause in one request, below */
	ZD_VMCTL_PRECOPY_INFO = 16, /* reply v0 = pages the pre-copy area holds;
				 * fds: [pre-copy area memfd] */
	ZD_VMCTL_PRECOPY = 17,	/* re-arm and copy the pages set in bitmap in,
				 * a group at a time, into the pre-copy area in
				 * pfn order, the VM running; flags HINT: those
				 * also in bitmap out last; reply v0 = pages,
				 * v1 = ns, v2 = re-arm calls */
};

/*
 * CHECKPOINT: pause, harvest, guard, re-arm, [memsum], vCPU state, resume,
 * all in zd-vm (vm_ckpt.c), so the guest stops for one request instead of
 * six round trips. Request: arg0 = epoch being checkpointed; arg1 = the
 * guard's policy, ZD_CKPT_COPY_MAX(arg1) pages at most copied at the pause
 * and ZD_CKPT_PROTECT_RUN(arg1) the shortest run of dirty pages that is
 * write-protected instead of copied; flags ZD_VMCTL_F_HINT (bitmap in holds
 * pages predicted to be written first: copied, not protected, if dirty)
 * and ZD_VMCTL_F_MEMSUM. The frozen set F is the harvest (bitmap out).
 * Each page of F is either copied now into the copy area (COPY_INFO), in
 * pfn order, its bit set in bitmap in, or write-protected: exactly the
 * pages of F not copied, no clean page between them (the drain un-protects
 * them). Reply: payload struct zd_vmctl_ckpt, then the STATE blob. A
 * failure after the pause resumes the VM and says -errno; pages may then
 * be left protected (the tracker ends the run).
 */
#define ZD_CKPT_POLICY(copy_max, protect_run) \
	((uint64_t)(copy_max) | (uint64_t)(protect_run) << 32)
#define ZD_CKPT_COPY_MAX(arg1) ((uint32_t)(arg1))
#define ZD_CKPT_PROTECT_RUN(arg1) ((uint32_t)((arg1) >> 32))
struct zd_vmctl_ckpt {
	uint64_t dirty;		/* pages in F */
	uint64_t copied;	/* of them copied into the copy area */
	uint64_t protected_pages, protect_calls;
	uint64_t memsum;	/* with ZD_VMCTL_F_MEMSUM */
	uint64_t paused_at_ns;	/* the vCPU parked (CLOCK_MONOTONIC) */
	uint64_t resumed_ns;	/* the vCPU was let go */
	uint64_t stop_ns;	/* request to park */
	uint64_t harvest_ns, copy_ns, protect_ns, rearm_ns, state_ns;
	uint32_t state_len;	/* STATE blob bytes after this struct */
	uint32_t reserved;
};

/* The disk write log (a memfd of --disk-log bytes): struct zd_dlog_hdr,
 * then from ZD_DLOG_START entries of struct zd_dlog_ent, each followed by
 * its len bytes unless NODATA, padded to 8. It holds the writes the guest
 * issued since the VM last resumed, in order; RESUME starts it over. A
 * write that does not fit with its data is logged NODATA (the reader takes
 * those bytes from the disk while the VM is paused: their content at the
 * pause, which is what the epoch must ship); one that does not fit at all
 * sets ZD_DLOG_ALL: the epoch ships the whole disk. */
#define ZD_DLOG_START 64u
#define ZD_DLOG_ALL 0x1
#define ZD_DLOG_NODATA 0x1
struct zd_dlog_hdr {
	uint64_t used;			/* bytes from ZD_DLOG_START */
	uint64_t writes;
	uint64_t flags;			/* ZD_DLOG_ALL */
};
struct zd_dlog_ent {
	uint64_t offset;
	uint32_t len;
	uint32_t flags;			/* ZD_DLOG_NODATA */
};

#define ZD_VMCTL_F_ALL 0x1
#define ZD_VMCTL_F_HINT 0x2	/* CHECKPOINT, PRECOPY */
#define ZD_VMCTL_F_MEMSUM 0x4	/* CHECKPOINT */

/* PROTECT coalesces the in-bitmap: set pages at most this many pages apart
 * share one write-protected range (clean pages in between included). The
 * un-protecting side (zd-swap) applies the same rule to free those too. */
#define ZD_VMCTL_WP_GAP 16

#define ZD_VM_F_PVM 0x1		/* KVM is kvm_pvm: guest runs at CPL3 */
#define ZD_VM_F_UFFD_WP 0x2	/* a uffd with write-protect is registered */

struct zd_vmctl_req {
	uint32_t op;
	uint32_t flags;
	uint64_t arg0, arg1;
};

struct zd_vmctl_rep {
	int32_t status;		/* 0 or -errno */
	uint32_t len;		/* payload bytes after this struct */
	uint64_t v0, v1, v2;
};

struct zd_vm_info {
	uint64_t mem_bytes;
	uint64_t ram_base;	/* address of guest RAM in zd-vm's address space */
	uint64_t bitmap_words;	/* words per bitmap in the bitmap area */
	uint32_t page_size;
	uint32_t flags;		/* ZD_VM_F_* */
	uint64_t epoch;		/* last epoch paused for */
	char serve[64];		/* --serve address, "" if none */
};

/* STATS: counters since zd-vm started (additive: new fields go at the end,
 * len tells the client how many arrived). */
struct zd_vm_stats {
	uint64_t exits;		/* KVM_RUN returns */
	uint64_t mmio_exits;
	uint64_t idle_exits;	/* guest said it had nothing to do */
	uint64_t pauses;
	uint64_t guest_pages;	/* pages the workload has written (guest counter) */
	uint64_t requests;	/* service lines received */
	uint64_t answers;	/* answers the guest produced */
	uint64_t released;	/* answers released to clients */
	uint64_t held;		/* answers waiting for their epoch's commit */
	uint64_t epoch;		/* epoch now running (1 + last PAUSE's epoch) */
	uint64_t committed;	/* highest COMMIT epoch */
	uint64_t paused;	/* 1 while paused */
	uint64_t tsc_hz;
	/* appended: the block device */
	uint64_t disk_writes;		/* writes done by zd-vm */
	uint64_t disk_done;		/* the guest's counter (zdg_disk.done) */
	uint64_t disk_overflows;	/* writes logged NODATA or ALL */
	/* appended: the guest's own lost time (zdg_svc), TSC ticks */
	uint64_t guest_lost_ticks, guest_stall_ticks;
};

#endif
