/* SPDX-License-Identifier: MIT */
/*
 * CHECKPOINT (vmctl.h): zddspt's pause as one control request. Each step
 * the function zd_vm_checkpoint calls, in the order it runs:
 *
 *   (zd_vm_vcpu_call: the steps below run on the vCPU thread itself, between
 *   two KVM_RUNs, so the guest stands still exactly while they run)
 *   stop_vcpu        the pause starts: its epoch's output is closed
 *   harvest          the dirty log into bitmap out: the frozen set F
 *   split_frozen     per page of F: copy now, or write-protect
 *   copy_at_pause    the chosen pages into the copy area, bitmap in = them
 *   protect_runs     uffd write-protect the rest of F, run by run
 *   rearm            re-arm the dirty log (exactly F: all that is dirty):
 *                    the next epoch's table
 *   memsum           [the checksum of guest RAM at this checkpoint]
 *   save_state       the vCPU and device state blob
 *   resume           the pause ends: the vCPU thread enters KVM_RUN again
 *
 * Why split F. A protected page costs the guest ~60 us if it writes it
 * before zd-swap has drained it (a userfaultfd fault served by another
 * process), and each protect call ~1.5 us plus ~0.06 us a page
 * (bench/README.md, "zd-swap: the copy-on-write fault"). Copying a page
 * here costs ~0.6 us of pause. So a page the guest is likely to write
 * soon (the tracker's hint: the standby set) and a short isolated run are
 * copied; long runs are protected with one call each. Nothing but F is protected: a clean page inside a merged
 * range faulted when written (two thirds of the faults before this).
 * A budget (COPY_MAX) bounds what the copy adds to the pause; beyond it
 * pages are protected.
 *
 * Before this request the tracker made six round trips while the VM was
 * stopped (PAUSE, DIRTY_GET, PROTECT, DIRTY_CLEAR, STATE, RESUME), each a
 * wake-up of two processes on a loaded host. Running the steps on the
 * vCPU thread also leaves out the wake-ups of zd-vm's main thread (park,
 * then resume), and the vCPU ioctls of the state save run where the vCPU
 * was loaded last (~10 us each from another thread on kvm_pvm).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

/* The copy area: at most this many pages copied per checkpoint (a sparse
 * memfd: only what was ever copied takes memory). */
#define COPY_AREA_PAGES 16384u

int zd_vm_copy_area(struct zd_vm *vm)
{
	return zd_vm_area_make(&vm->copy, "zd-vm-copy", ZD_MIN((uint64_t)COPY_AREA_PAGES, vm->npages));
}

struct ckpt {
	struct zd_vm *vm;
	uint64_t copy_max, protect_run;
	bool hint;
	uint32_t flags;
	uint64_t epoch;
	uint64_t asked_ns;		/* the request came in */
	uint64_t *copy_bm;		/* pages of F to copy */
	struct zd_vmctl_ckpt *out;
	uint8_t *state;
	uint32_t state_len;
	int rc;
};

static bool test_bit(const uint64_t *bm, uint64_t pfn)
{
	return bm[pfn / 64] >> (pfn % 64) & 1;
}

static void set_bit(uint64_t *bm, uint64_t pfn)
{
	bm[pfn / 64] |= 1ull << (pfn % 64);
}

/* The next run of pages set in bm and not in skip (NULL: none), from
 * *pfn on: [*first, *pfn). False when there is none. */
static bool next_run(const struct zd_vm *vm, const uint64_t *bm, const uint64_t *skip,
		     uint64_t *pfn, uint64_t *first)
{
	uint64_t p = *pfn;

	while (p < vm->npages) {
		uint64_t w = bm[p / 64] & (skip ? ~skip[p / 64] : ~0ull);

		w &= ~0ull << (p % 64);
		if (w) {
			p = p / 64 * 64 + (uint64_t)__builtin_ctzll(w);
			break;
		}
		p = (p / 64 + 1) * 64;
	}
	if (p >= vm->npages)
		return false;
	*first = p;
	while (p < vm->npages && test_bit(bm, p) && !(skip && test_bit(skip, p)))
		p++;
	*pfn = p;
	return true;
}

static int64_t harvest(struct ckpt *c)
{
	uint64_t t0 = zd_now_ns();
	int64_t n = zd_vm_dirty_get(c->vm);

	c->out->harvest_ns = zd_now_ns() - t0;
	if (n >= 0)
		c->out->dirty = (uint64_t)n;
	return n;
}

/* copy_bm = the pages of F to copy, while the budget lasts: hinted pages
 * first (the guest writes them first), then runs shorter than
 * protect_run (a protect call each would cost more than their copy),
 * then whole longer runs in pfn order; what is left is protected. */
static void split_frozen(struct ckpt *c)
{
	struct zd_vm *vm = c->vm;
	const uint64_t *f = vm->bm_out;
	uint64_t n = 0, pfn = 0, first;

	memset(c->copy_bm, 0, vm->nwords * 8);
	if (c->hint) {
		for (uint64_t w = 0; w < vm->nwords && n < c->copy_max; w++) {
			uint64_t b = f[w] & vm->bm_in[w];

			while (b && n < c->copy_max) {
				c->copy_bm[w] |= b & -b;
				b &= b - 1;
				n++;
			}
		}
	}
	while (n < c->copy_max && next_run(vm, f, c->copy_bm, &pfn, &first)) {
		if (pfn - first >= c->protect_run)
			continue;
		for (uint64_t p = first; p < pfn && n < c->copy_max; p++, n++)
			set_bit(c->copy_bm, p);
	}
	/* (next_run skips copied pages: a run split by hinted pages is
	 * judged by its pieces.) */
	for (pfn = 0; n < c->copy_max && next_run(vm, f, c->copy_bm, &pfn, &first);) {
		if (pfn - first > c->copy_max - n)
			continue;
		for (uint64_t p = first; p < pfn; p++, n++)
			set_bit(c->copy_bm, p);
	}
}

static void copy_at_pause(struct ckpt *c)
{
	struct zd_vm *vm = c->vm;
	uint64_t t0 = zd_now_ns(), n = 0, pfn = 0, first;

	while (next_run(vm, c->copy_bm, NULL, &pfn, &first)) {
		memcpy(vm->copy.map + n * ZDG_PAGE, vm->ram + first * ZDG_PAGE, (pfn - first) * ZDG_PAGE);
		n += pfn - first;
	}
	memcpy(vm->bm_in, c->copy_bm, vm->nwords * 8);
	c->out->copied = n;
	c->out->copy_ns = zd_now_ns() - t0;
}

/* ZD_VM_WP_FAIL=N (tests): the Nth CHECKPOINT's protect fails with EIO
 * after its first range, as a real failure midway would. */
static bool inject_wp_failure(void)
{
	static uint64_t n;
	const char *e = getenv("ZD_VM_WP_FAIL");

	return e && *e && ++n == strtoull(e, NULL, 10);
}

static int protect_runs(struct ckpt *c)
{
	struct zd_vm *vm = c->vm;
	uint64_t t0 = zd_now_ns(), pfn = 0, first;
	bool fail = inject_wp_failure();
	int r = 0;

	while (next_run(vm, vm->bm_out, c->copy_bm, &pfn, &first)) {
		if ((r = zd_vm_uffd_wp(vm, first, pfn - first)) < 0)
			break;
		if (fail) {
			r = -EIO;
			break;
		}
		c->out->protect_calls++;
		c->out->protected_pages += pfn - first;
	}
	c->out->protect_ns = zd_now_ns() - t0;
	return r;
}

/* Re-arm exactly F: with the vCPU stopped (and zd-vm's own writes to
 * guest RAM made by this very thread) no other page can be dirty, so this
 * is the whole dirty log re-armed, with one KVM_CLEAR_DIRTY_LOG over F's
 * span instead of over the whole slot (28 us in a 512M VM). */
static int rearm(struct ckpt *c)
{
	uint64_t t0 = zd_now_ns();
	int r = zd_vm_dirty_clear_bits(c->vm, c->vm->bm_out);

	c->out->rearm_ns = zd_now_ns() - t0;
	return r;
}

static void memsum(struct ckpt *c)
{
	if (c->flags & ZD_VMCTL_F_MEMSUM)
		c->out->memsum = zd_hash64(c->vm->ram, c->vm->mem_bytes);
}

static int save_state(struct ckpt *c)
{
	uint64_t t0 = zd_now_ns();
	int r = zd_vm_state_save(c->vm, &c->state, &c->state_len);

	c->out->state_ns = zd_now_ns() - t0;
	c->out->state_len = r == 0 ? c->state_len : 0;
	return r;
}

/* As zd_vm_pause: from here the guest's output belongs to the next epoch,
 * and a tracker protects the VM (output waits for its backup). */
static void stop_vcpu(struct ckpt *c)
{
	struct zd_vm *vm = c->vm;

	c->out->paused_at_ns = zd_now_ns();
	c->out->stop_ns = c->out->paused_at_ns - c->asked_ns;
	pthread_mutex_lock(&vm->mu);
	vm->n_pauses++;
	vm->paused_at_ns = c->out->paused_at_ns;
	vm->unprotected = false;
	if (c->epoch > vm->last_pause_epoch)
		__atomic_store_n(&vm->last_pause_epoch, c->epoch, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&vm->mu);
}

static void resume(struct ckpt *c)
{
	c->out->resumed_ns = zd_now_ns();
}

/* The job: on the vCPU thread, the vCPU out of KVM_RUN. */
static void checkpoint_job(struct zd_vm *vm, void *arg)
{
	struct ckpt *c = arg;
	int64_t v;
	int r;

	(void)vm;
	stop_vcpu(c);
	v = harvest(c);
	r = v < 0 ? (int)v : 0;
	if (r >= 0) {
		split_frozen(c);
		copy_at_pause(c);
		r = protect_runs(c);
	}
	if (r >= 0)
		r = rearm(c);
	if (r >= 0) {
		memsum(c);
		r = save_state(c);
	}
	resume(c);
	c->rc = r;
}

int zd_vm_checkpoint(struct zd_vm *vm, const struct zd_vmctl_req *req, struct zd_vmctl_ckpt *out,
		     uint8_t **state, uint32_t *state_len)
{
	struct ckpt c = {
		.vm = vm,
		.copy_max = ZD_MIN((uint64_t)ZD_CKPT_COPY_MAX(req->arg1), vm->copy.pages),
		.protect_run = ZD_CKPT_PROTECT_RUN(req->arg1),
		.hint = req->flags & ZD_VMCTL_F_HINT,
		.flags = req->flags,
		.epoch = req->arg0,
		.out = out,
		.asked_ns = zd_now_ns(),
	};

	memset(out, 0, sizeof(*out));
	*state = NULL;
	*state_len = 0;
	/* The disk's write log is read while paused by a later request: not
	 * with this one (the tracker takes the six-step pause). A VM paused
	 * by PAUSE is the six-step pause's too. */
	if (vm->uffd < 0 || !vm->copy.map || vm->disk_fd >= 0 || zd_vm_is_paused(vm))
		return -EOPNOTSUPP;
	c.copy_bm = zd_xcalloc(vm->nwords, 8);
	if (zd_vm_vcpu_call(vm, checkpoint_job, &c) < 0)
		c.rc = -EIO;
	/* -EOPNOTSUPP tells the tracker nothing was done (it then pauses
	 * step by step): never after the pause, where part of F may be
	 * protected already. */
	if (c.rc == -EOPNOTSUPP)
		c.rc = -EIO;
	free(c.copy_bm);
	*state = c.state;
	*state_len = c.state_len;
	return c.rc < 0 ? c.rc : 0;
}
