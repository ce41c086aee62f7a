/* SPDX-License-Identifier: MIT */
/*
 * The contract between zd-vm and its built-in guest: where things live in
 * guest-physical memory (identity-mapped, so also the guest's virtual
 * addresses), the parameter page zd-vm fills before the first KVM_RUN, the
 * service mailbox, and the MMIO registers the guest writes to talk to zd-vm.
 *
 * Included by the freestanding guest and by the monitor, so: fixed-size
 * types only, no pointers, no libc.
 *
 * Guest-physical layout (every address below 4 MiB is fixed; RAM is one
 * memslot at 0; the MMIO window lies just above RAM, outside every slot,
 * so a guest store there is a KVM_EXIT_MMIO):
 *
 *   0x000000  unused (page 0)
 *   0x001000  GDT
 *   0x002000  TSS
 *   0x008000  parameter page (zd-vm writes it once, before the first run)
 *   0x009000  service mailbox (zd-vm writes requests, the guest answers)
 *   0x00a000  service state (guest-owned: counter, ring head)
 *   0x00b000  disk request (guest writes it, zd-vm completes it)
 *   0x00c000  disk buffer (one ZDG_DISK_BLOCK the guest writes from)
 *   0x010000  page tables (PML4, PDPT, PDs: 2 MiB pages), up to 0x050000
 *   0x100000  guest image (.text .rodata .data .bss), up to 0x200000
 *   0x200000  stack (grows down from 0x300000)
 *   0x300000  service log ring (ZDG_RING_ENTRIES entries)
 *   0x400000  workload area, up to the end of RAM
 */
#ifndef ZD_VM_GUEST_ABI_H
#define ZD_VM_GUEST_ABI_H

#include <stdint.h>

#define ZDG_ABI_VERSION 1

#define ZDG_PAGE 0x1000ull
#define ZDG_GDT_GPA 0x1000ull
#define ZDG_TSS_GPA 0x2000ull
#define ZDG_PARAM_GPA 0x8000ull
#define ZDG_MBOX_GPA 0x9000ull
#define ZDG_SVC_GPA 0xa000ull
#define ZDG_DISK_GPA 0xb000ull
#define ZDG_DISKBUF_GPA 0xc000ull
#define ZDG_DISK_BLOCK 4096ull
#define ZDG_DISK_MAGIC 0x4b534944445aull	/* "ZDDISK": word 0 of a block the workload wrote */
#define ZDG_PT_GPA 0x10000ull
#define ZDG_PT_MAX_PAGES 64u		/* PML4 + PDPT + 62 PDs: 62 GiB */
#define ZDG_IMAGE_GPA 0x100000ull
#define ZDG_IMAGE_MAX 0x100000ull
#define ZDG_STACK_TOP 0x300000ull
#define ZDG_RING_GPA 0x300000ull
#define ZDG_RING_ENTRIES 4096u
#define ZDG_WORK_GPA 0x400000ull
#define ZDG_MIN_MEM (8ull << 20)

/* GDT selectors (index << 3 | RPL). User segments carry RPL 3. */
#define ZDG_SEL_KCODE 0x08
#define ZDG_SEL_KDATA 0x10
#define ZDG_SEL_UCODE 0x1b
#define ZDG_SEL_UDATA 0x23
#define ZDG_SEL_TSS 0x28

/* MMIO registers: 8-byte stores at mmio_gpa + offset. */
#define ZDG_MMIO_READY 0x00	/* value = ZDG_ABI_VERSION: the guest is up */
#define ZDG_MMIO_IDLE 0x08	/* value = TSC ticks the guest has nothing to do */
#define ZDG_MMIO_ANSWER 0x10	/* value = seq of the answer now in the mailbox */
#define ZDG_MMIO_EXIT 0x18	/* value = exit code: the guest stopped */
#define ZDG_MMIO_DISK 0x20	/* value = 1: do the write described at ZDG_DISK_GPA */
#define ZDG_MMIO_SIZE 0x1000

/* The parameter page. Written by zd-vm before the first run only. */
struct zdg_params {
	uint32_t abi;			/* ZDG_ABI_VERSION */
	uint32_t flags;
	uint64_t mem_bytes;
	uint64_t mmio_gpa;		/* base of the MMIO window */
	uint64_t tsc_hz;		/* guest TSC frequency, measured by zd-vm */
	uint64_t dirty_rate;		/* pages per second, 0 = no workload */
	uint64_t hot_frac32;		/* fraction of writes to the hot set, × 2^32 */
	uint64_t span_gpa, span_pages;	/* where the workload writes */
	uint64_t hot_pages;		/* hot set: the first hot_pages of the span */
	uint64_t seed;
	uint64_t idle_max_ticks;	/* longest IDLE the guest asks for */
	/* appended: the block device (zd-vm --disk), 0 = none */
	uint64_t disk_bytes;		/* a multiple of ZDG_DISK_BLOCK */
	uint64_t disk_rate;		/* workload block writes per second */
};

/* The block device: one write at a time. The guest fills offset, len,
 * buf_gpa and seq, then stores 1 to ZDG_MMIO_DISK; zd-vm writes the disk
 * and, in the same exit, sets done = seq and status (0 or an errno), so a
 * checkpoint never sees the write on disk and not in memory or the other
 * way round. The workload's seq counts its writes: block seq mod
 * (disk_bytes / ZDG_DISK_BLOCK) holds ZDG_DISK_MAGIC, seq, then words
 * i = 2..511 equal to seq * 0x9E3779B97F4A7C15 + i. */
struct zdg_disk {
	uint64_t offset, len, buf_gpa;	/* guest: the write */
	uint64_t seq;			/* guest: its number */
	uint64_t done;			/* zd-vm: seq of the last completed write */
	uint64_t status;		/* zd-vm: 0, or errno of the last write */
};

/* Stats the guest keeps in its own memory (in the service state page), so
 * they travel with a checkpoint. */
struct zdg_svc {
	uint64_t counter;		/* answers given: the N of "seq N" */
	uint64_t ring_head;		/* next ring slot (mod ZDG_RING_ENTRIES) */
	uint64_t pages_written;		/* workload writes so far */
	uint64_t loops;			/* main loop iterations */
	uint64_t last_req;		/* last mailbox request handled */
	/* appended: the time the guest lost, by its own clock (rdtsc at
	 * CPL3, so it sees every way it was stopped: a pause, a fault zd-vm
	 * or zd-swap served, an exit, the host descheduling its vCPU).
	 * A gap between two of its marks longer than ZDG_LOST_MIN_NS beyond
	 * what it asked to idle counts into lost_*, one longer than
	 * ZDG_STALL_MIN_NS into stall_* too; a page write that took between
	 * the two is a dirty-log write fault (wfault_*). Ticks of tsc_hz. */
	uint64_t lost_ticks, lost_n;
	uint64_t stall_ticks, stall_n;
	uint64_t wfault_ticks, wfault_n;
};

/* A loop iteration of the guest takes well under a microsecond natively;
 * a dirty-log write fault ~3-25 us under kvm_pvm, a copy-on-write fault
 * served by zd-swap ~50-70 us, a pause hundreds. */
#define ZDG_LOST_MIN_NS 2000ull
#define ZDG_STALL_MIN_NS 40000ull

#define ZDG_REQ_MAX 240

/* The mailbox: one request in flight. zd-vm writes req_* and then bumps
 * req_seq; the guest, on seeing req_seq != ans_req, writes ans_* and then
 * ans_req = req_seq, and rings ZDG_MMIO_ANSWER. */
struct zdg_mbox {
	volatile uint64_t req_seq;	/* zd-vm: number of the request in req */
	volatile uint64_t req_len;
	char req[ZDG_REQ_MAX];
	volatile uint64_t ans_req;	/* guest: request answered */
	volatile uint64_t ans_seq;	/* guest: the N of "seq N" */
	volatile uint64_t ans_tsc;	/* guest: TSC when it answered */
};

/* One log ring entry (64 bytes). */
struct zdg_ring_ent {
	uint64_t seq;
	uint64_t tsc;
	uint32_t len;
	char text[44];
};

_Static_assert(sizeof(struct zdg_params) <= ZDG_PAGE, "param page");
_Static_assert(sizeof(struct zdg_mbox) <= ZDG_PAGE, "mailbox page");
_Static_assert(sizeof(struct zdg_ring_ent) == 64, "ring entry");

#endif
