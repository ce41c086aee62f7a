/* SPDX-License-Identifier: MIT */
/*
 * Inside zd-vm. One struct zd_vm holds the VM; three threads touch it:
 *
 *   main thread   the event loop: control socket, service clients, output
 *                 release (vm_main.c, vm_ctl.c, vm_service.c);
 *   vCPU thread   KVM_RUN and its exits, the guest's requests and answers
 *                 (vm_run.c); the only writer of guest RAM on zd-vm's side,
 *                 and only while the VM is not paused;
 *   (signals)     SIGUSR1 kicks the vCPU out of KVM_RUN for a pause.
 *
 * mu guards the run state (pause_req, paused, wake, the request queue);
 * out_mu guards the output queue. The dirty bitmaps of zd-vm's own writes
 * use atomic word operations.
 */
#ifndef ZD_VM_IMPL_H
#define ZD_VM_IMPL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <poll.h>
#include <stdio.h>

#include "zd/vm.h"
#include "vm/guest/abi.h"
#include "vm/vmctl.h"

struct zd_vm_req {
	struct zd_vm_req *next;
	uint64_t client;		/* service client id */
	uint32_t len;
	char text[ZDG_REQ_MAX];
};

struct zd_vm_out {
	struct zd_vm_out *next;
	uint64_t client;
	uint64_t seq;			/* the guest's N */
	uint64_t epoch;			/* epoch that produced it */
	uint64_t produced_ns;
};

/* The STATE blob's DEVICE section (tag 6): zd-vm's device state not
 * already in guest RAM. Fields are only ever appended; a reader takes the
 * prefix it finds. */
struct zd_vm_devstate {
	uint64_t epoch;			/* last PAUSE epoch */
	uint64_t mem_bytes;
	uint64_t mmio_gpa;
	uint64_t tsc_hz;
	uint64_t mbox_seq;		/* last request number put in the mailbox */
	uint64_t inflight;		/* 1 if that request is unanswered */
	uint64_t answers;		/* answers produced so far */
	uint64_t released;		/* answers released so far */
	uint64_t committed;		/* highest COMMIT epoch */
	uint64_t abi;			/* ZDG_ABI_VERSION of the guest */
	/* appended after the first layout (80 bytes): */
	uint64_t released_seq;		/* the highest N of "seq N" released */
};
#define ZD_VM_DEVSTATE_V1_LEN 80u

/* A parsed STATE blob (vm_state.c): pointers into the blob, NULL where the
 * section is absent. */
struct zd_vm_state_view {
	const struct kvm_regs *regs;
	const struct kvm_sregs *sregs;
	const struct kvm_xsave *xsave;
	const struct kvm_fpu *fpu;
	const uint8_t *msrs;		/* u32 count, u32 0, {u32 index, u32 0, u64 value} */
	uint32_t nmsrs;
	struct zd_vm_devstate dev;	/* copied; released_seq 0 if absent */
	bool have_released_seq;
	char serve[64];			/* SERVE section, "" if absent */
	char control[256];		/* CONTROL section, "" if absent */
};

/* Answers a restored VM may owe its clients (vm_restore.c): those the
 * checkpoint had produced but perhaps not released, and the request that
 * was in the mailbox unanswered (the guest answers it again). */
struct zd_vm_replay {
	struct zd_vm_replay *next;
	uint64_t seq;			/* 0: the in-flight request, not answered yet */
	uint64_t claimant;		/* client that resent it, 0 = none yet */
	uint32_t len;			/* request length (the ring keeps a prefix) */
	char text[ZDG_REQ_MAX];
	uint32_t text_len;		/* bytes of text known */
	bool orphan;			/* the in-flight request */
};

/* Client id of the request a restored VM found in flight in the mailbox. */
#define ZD_VM_CLIENT_ORPHAN 0

struct zd_vm_client {
	int fd;
	uint64_t id;
	size_t len;
	char buf[ZDG_REQ_MAX + 16];
	bool overlong;			/* dropping the rest of a too-long line */
};

/* A memfd shared with the tracker, mapped here read-write (vm_area.c). */
struct zd_vm_area {
	int fd;				/* -1 until made */
	uint8_t *map;
	uint64_t pages;
};
int zd_vm_area_make(struct zd_vm_area *a, const char *name, uint64_t pages);
void zd_vm_area_free(struct zd_vm_area *a);

struct zd_vm {
	struct zd_vm_config cfg;
	bool pvm;

	/* KVM */
	int kvm_fd, vm_fd, vcpu_fd;
	struct kvm_run *run;
	size_t run_size;
	uint64_t tsc_hz;
	uint64_t mmio_gpa;

	/* Guest RAM: one memfd, one memslot. */
	int memfd;
	uint8_t *ram;
	uint64_t mem_bytes, npages;
	int uffd;			/* write-protect guard, -1 = none (vm_uffd.c) */
	/* CHECKPOINT's copy area (vm_ckpt.c), made at the first COPY_INFO,
	 * and PRECOPY's (vm_precopy.c), at the first PRECOPY_INFO. */
	struct zd_vm_area copy, pre;

	/* Dirty tracking. The bitmap area (a second memfd shared with the
	 * tracker) holds bm_out then bm_in, nwords each. */
	bool manual_protect;		/* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 on */
	int bmfd;
	uint64_t *bm_area, *bm_out, *bm_in;
	size_t bm_area_bytes;
	uint64_t nwords;
	uint64_t *kvm_log;		/* scratch for KVM_GET_DIRTY_LOG */
	uint64_t *classic_pending;	/* classic mode: harvested, not cleared */
	uint64_t *vmm_dirty;		/* zd-vm wrote these since the last GET */
	uint64_t *vmm_seen;		/* ... reported by a GET, not yet cleared */

	/* vCPU thread and its run state (under mu). */
	pthread_t thr;
	bool thr_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool pause_req, paused, stop, wake;
	bool dead;
	char dead_msg[256];
	uint64_t last_pause_epoch;	/* answers are tagged last + 1 */
	uint64_t paused_at_ns;
	/* kvm_run holds the registers as of the last return of KVM_RUN
	 * (sync regs, vm_kvm.c); regs_synced once KVM_RUN has returned. */
	bool sync_regs, regs_synced;
	/* zd_vm_vcpu_call: a job the vCPU thread runs between two KVM_RUNs. */
	void (*job)(struct zd_vm *vm, void *arg);
	void *job_arg;
	bool job_done;

	/* Service: requests queued for the guest (under mu). */
	struct zd_vm_req *rq_head, *rq_tail;
	uint64_t rq_len;
	struct zd_vm_req *inflight;	/* in the mailbox, not answered yet */
	uint64_t mbox_seq;		/* last req_seq written */

	/* Output queue (under out_mu), in production order. */
	pthread_mutex_t out_mu;
	struct zd_vm_out *out_head, *out_tail;
	uint64_t committed;		/* highest COMMIT epoch */
	int evfd;			/* vCPU thread -> main loop: answers, death */
	FILE *out_log;

	/* Control socket (vm_ctl.c). */
	int ctl_lfd;
	int ctl_cl[16];
	int ctl_ncl;
	bool ctl_bound;
	/* The client whose PRECOPY the pre-copy thread is serving (-1:
	 * none): the main loop leaves it alone until the thread replies, so
	 * that the guest's service is not kept waiting (vm_precopy.c). */
	int ctl_busy_fd;
	struct zd_vm_precopier *precopier;

	/* Service (vm_service.c). */
	int svc_lfd;
	struct zd_vm_client *cl;
	size_t ncl, capcl;
	uint64_t next_client;
	char serve_addr[64];

	/* Counters (STATS). Written by one thread each; read racily. */
	uint64_t n_exits, n_mmio, n_idle, n_pauses, n_requests, n_answers,
		n_released;
	uint64_t released_seq;		/* highest seq released (STATE) */
	bool guest_ready;

	/* Restored from a replica (vm_restore.c). Until a tracker pauses it
	 * the VM has no backup, so output commit has nothing to wait for:
	 * answers go out at once (unprotected). */
	bool restored, unprotected, first_answer_done;
	uint64_t restored_epoch;	/* the replica's epoch */
	uint64_t restore_wall_ns;	/* CLOCK_REALTIME when --restore began */
	uint64_t last_heard_wall_ns;	/* zd-recv's ZD_LAST_HEARD_NS, 0 = none */
	uint64_t lost_wall_ns;		/* zd-recv's ZD_LOST_NS, 0 = none */
	struct zd_vm_replay *replay;	/* main thread only */

	/* The block device (vm_disk.c): --disk FILE and its per-epoch write
	 * log, a memfd the tracker maps (layout in vmctl.h). The vCPU thread
	 * appends while the VM runs; the main thread reads it and starts it
	 * over only while the VM is paused. */
	int disk_fd;
	uint64_t disk_bytes;
	int dlog_fd;
	uint8_t *dlog;
	uint64_t dlog_bytes;
	uint64_t n_disk_writes, n_disk_bytes, n_disk_overflows;
};

/* vm_kvm.c: /dev/kvm, the VM, RAM, the memslot, the vCPU. */
int zd_vm_kvm_open(struct zd_vm *vm, char *msg, size_t msglen);
void zd_vm_kvm_close(struct zd_vm *vm);

/* vm_cpu.c: the guest image, page tables, GDT, and the CPL3 entry state. */
int zd_vm_setup_guest(struct zd_vm *vm, char *msg, size_t msglen);

/* vm_run.c: the vCPU thread, pause and resume. */
int zd_vm_start(struct zd_vm *vm, char *msg, size_t msglen);
void zd_vm_stop_vcpu(struct zd_vm *vm);
/* Returns ns the vCPU took to stop, or -1 (the VM is dead). */
int64_t zd_vm_pause(struct zd_vm *vm, uint64_t epoch);
/* Run fn on the vCPU thread, between two KVM_RUNs (a half-done MMIO
 * instruction completed first), and wait for it: the guest stands still
 * exactly while fn runs, with no wake-up of another thread inside that
 * time. 0, or -1 if the vCPU is dead (fn not run). */
int zd_vm_vcpu_call(struct zd_vm *vm, void (*fn)(struct zd_vm *vm, void *arg), void *arg);
int64_t zd_vm_resume(struct zd_vm *vm);
bool zd_vm_is_paused(struct zd_vm *vm);
/* Wake the main loop (evfd): answers to release, a death, a client to poll again. */
void zd_vm_notify_main(struct zd_vm *vm);
/* A request was queued: make a running vCPU leave KVM_RUN to take it. */
void zd_vm_kick_for_request(struct zd_vm *vm);

/* vm_dirty.c */
int zd_vm_dirty_init(struct zd_vm *vm, char *msg, size_t msglen);
void zd_vm_dirty_free(struct zd_vm *vm);
/* zd-vm wrote [gpa, gpa+len): KVM does not log that, we do. */
void zd_vm_mark_dirty(struct zd_vm *vm, uint64_t gpa, uint64_t len);
/* Harvest into bm_out; returns dirty pages or -errno. */
int64_t zd_vm_dirty_get(struct zd_vm *vm);
/* Re-arm all pages, or those set in bm_in. 0 or -errno. */
int zd_vm_dirty_clear(struct zd_vm *vm, bool all);
/* Re-arm the pages set in bits (nwords words). 0 or -errno. */
int zd_vm_dirty_clear_bits(struct zd_vm *vm, const uint64_t *bits);
/* The same for the words [fw, lw] of bits only. */
int zd_vm_dirty_clear_words(struct zd_vm *vm, const uint64_t *bits, uint64_t fw, uint64_t lw);

/* vm_state.c: the STATE blob (layout in zd-vm(1)). malloc'd; -errno. */
int zd_vm_state_save(struct zd_vm *vm, uint8_t **blob, uint32_t *len);
/* Check and index a blob; -1 with msg naming the byte offset. The view
 * points into blob. */
int zd_vm_state_parse(const uint8_t *blob, size_t len, struct zd_vm_state_view *v,
		      char *msg, size_t msglen);
/* Load the vCPU sections into the vCPU: 0 or -1 with msg. */
int zd_vm_state_load_vcpu(struct zd_vm *vm, const struct zd_vm_state_view *v,
			  char *msg, size_t msglen);

/* vm_restore.c: --restore DIR. prepare reads and checks the replica and
 * fills cfg (memory size, serve and control addresses unless given);
 * apply loads it into the VM made from cfg. Both return 0 or an exit code
 * with msg. */
struct zd_vm_restore;
int zd_vm_restore_prepare(struct zd_vm_config *cfg, struct zd_vm_restore **r,
			  char *msg, size_t msglen);
int zd_vm_restore_apply(struct zd_vm *vm, struct zd_vm_restore *r, char *msg, size_t msglen);
void zd_vm_restore_free(struct zd_vm_restore *r);
/* Main thread: a request line from a client. Returns true when it was a
 * resend the restored VM answers itself (from the checkpoint's answers). */
bool zd_vm_replay_claim(struct zd_vm *vm, uint64_t client, const char *text, size_t len);
/* Main thread: the guest answered the in-flight request it was restored
 * with; hand the answer to whoever resent it. */
void zd_vm_replay_orphan(struct zd_vm *vm, uint64_t seq);
void zd_vm_replay_free(struct zd_vm *vm);
/* The first answer a restored VM gave a client: log the failover time. */
void zd_vm_restore_first_answer(struct zd_vm *vm, uint64_t seq);

/* vm_service.c */
/* open binds the --serve address; listen starts taking connections. */
int zd_vm_service_open(struct zd_vm *vm, char *msg, size_t msglen);
int zd_vm_service_listen(struct zd_vm *vm, char *msg, size_t msglen);
void zd_vm_service_close(struct zd_vm *vm);
/* Poll integration: fill pfds from *n, return how many added. */
int zd_vm_service_pollfds(struct zd_vm *vm, struct pollfd *pfds, int max);
void zd_vm_service_events(struct zd_vm *vm, const struct pollfd *pfds, int n);
/* Release every held answer whose epoch is committed (all without output
 * commit). Called after COMMIT and when the vCPU produced answers. */
void zd_vm_service_release(struct zd_vm *vm);
uint64_t zd_vm_service_held(struct zd_vm *vm);
/* Write "seq N" to a client (if still connected). */
void zd_vm_service_send(struct zd_vm *vm, uint64_t client, uint64_t seq);
/* vCPU thread side: the guest answered. */
void zd_vm_output_push(struct zd_vm *vm, uint64_t client, uint64_t seq);

/* vm_uffd.c: the zddspt write-protect guard. open never fails (without
 * the privilege zd-vm runs unguarded, uffd = -1); protect arms bm_in and
 * returns the ioctl calls made or -errno. */
int zd_vm_uffd_open(struct zd_vm *vm);
void zd_vm_uffd_close(struct zd_vm *vm);
int64_t zd_vm_uffd_protect(struct zd_vm *vm);
/* Write-protect [first, first + count): 0 or -errno. */
int zd_vm_uffd_wp(struct zd_vm *vm, uint64_t first, uint64_t count);

/* vm_precopy.c: PRECOPY_INFO and PRECOPY (vmctl.h). precopy_reply does
 * the pre-copy (hint: bm_out holds the pages to do last) and fills its
 * reply: status, v0 pages, v1 ns, v2 re-arm calls. */
int zd_vm_precopy_area(struct zd_vm *vm);
void zd_vm_precopy_reply(struct zd_vm *vm, bool hint, struct zd_vmctl_rep *rep);
/* Serve a PRECOPY request from client fd on the pre-copy thread, which
 * replies: 0, or -1 (no thread: the caller serves it itself). */
int zd_vm_precopy_async(struct zd_vm *vm, int fd, bool hint);
void zd_vm_precopy_stop(struct zd_vm *vm);
/* vm_ctl.c: one reply message on a control connection; 0 or -1. */
int zd_vm_ctl_reply(int fd, const struct zd_vmctl_rep *rep, const void *payload, const int *fds,
		    int nfds);

/* vm_ckpt.c: COPY_INFO and CHECKPOINT (vmctl.h). */
int zd_vm_copy_area(struct zd_vm *vm);
int zd_vm_checkpoint(struct zd_vm *vm, const struct zd_vmctl_req *req, struct zd_vmctl_ckpt *out,
		     uint8_t **state, uint32_t *state_len);

/* vm_disk.c: the block device. open does nothing without --disk. mmio is
 * the vCPU thread's ZDG_MMIO_DISK; log_reset starts the next epoch's log
 * (paused, before the resume). */
int zd_vm_disk_open(struct zd_vm *vm, char *msg, size_t msglen);
void zd_vm_disk_close(struct zd_vm *vm);
void zd_vm_disk_mmio(struct zd_vm *vm);
void zd_vm_disk_log_reset(struct zd_vm *vm);
/* --restore, memory loaded: the guest's disk is the replica's (size), and
 * for the built-in workload the newest block on the disk is the write the
 * guest's memory counts (said on stderr). 0 or an exit code with msg. */
int zd_vm_disk_restore_check(struct zd_vm *vm, char *msg, size_t msglen);

/* vm_ctl.c: the control socket server. */
int zd_vm_ctl_open(struct zd_vm *vm, char *msg, size_t msglen);
void zd_vm_ctl_close(struct zd_vm *vm);
int zd_vm_ctl_pollfds(struct zd_vm *vm, struct pollfd *pfds, int max);
/* Returns 1 when a STOP was handled. */
int zd_vm_ctl_events(struct zd_vm *vm, const struct pollfd *pfds, int n);

#endif
