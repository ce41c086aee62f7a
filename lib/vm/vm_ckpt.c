/* SPDX-License-Identifier: MIT */
/*
 * CHECKPOINT (vmctl.h): zddspt's pause as one control request. Each step
 * the function zd_vm_checkpoint calls, in the order it runs:
 *
 *   stop_vcpu        park the vCPU (zd_vm_pause); the pause starts here
 *   harvest          the dirty log into bitmap out: the frozen set F
 *   split_frozen     per page of F: copy now, or write-protect
 *   copy_at_pause    the chosen pages into the copy area, bitmap in = them
 *   protect_runs     uffd write-protect the rest of F, run by run
 *   rearm            re-arm the whole dirty log: the next epoch's table
 *   memsum           [the checksum of guest RAM at this checkpoint]
 *   save_state       the vCPU and device state blob
 *   resume           let the vCPU go; the pause ends here
 *
 * Why split F. A protected page costs the guest ~60 us if it writes it
 * before zd-swap has drained it (a userfaultfd fault served by another
 * process), and each protect call ~1.5 us plus ~0.06 us a page
 * (KVM-NOTES.md). Copying a page here costs ~0.6 us of pause. So a page
 * the guest is likely to write soon (the tracker's hint: the standby set)
 * and a short isolated run are copied; long runs are protected with one
 * call each. Nothing but F is protected: a clean page inside a merged
 * range faulted when written (two thirds of the faults before this).
 * A budget (COPY_MAX) bounds what the copy adds to the pause; beyond it
 * pages are protected.
 *
 * Before this request the tracker made six round trips while the VM was
 * stopped (PAUSE, DIRTY_GET, PROTECT, DIRTY_CLEAR, STATE, RESUME), each a
 * wake-up of two processes on a loaded host.
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
	uint64_t pages = ZD_MIN((uint64_t)COPY_AREA_PAGES, vm->npages);
	void *m;

	if (vm->copyfd >= 0)
		return 0;
	vm->copyfd = memfd_create("zd-vm-copy", MFD_CLOEXEC);
	if (vm->copyfd < 0 || ftruncate(vm->copyfd, (off_t)(pages * ZDG_PAGE)) < 0)
		goto fail;
	m = mmap(NULL, pages * ZDG_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, vm->copyfd, 0);
	if (m == MAP_FAILED)
		goto fail;
	vm->copy = m;
	vm->copy_pages = pages;
	return 0;
fail:
	zd_vm_copy_area_free(vm);
	return -1;
}

void zd_vm_copy_area_free(struct zd_vm *vm)
{
	int e = errno;

	if (vm->copy)
		munmap(vm->copy, vm->copy_pages * ZDG_PAGE);
	if (vm->copyfd >= 0)
		close(vm->copyfd);
	vm->copy = NULL;
	vm->copy_pages = 0;
	vm->copyfd = -1;
	errno = e;
}

struct ckpt {
	struct zd_vm *vm;
	uint64_t copy_max, protect_run;
	bool hint;
	uint64_t *copy_bm;		/* pages of F to copy */
	struct zd_vmctl_ckpt *out;
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
		memcpy(vm->copy + n * ZDG_PAGE, vm->ram + first * ZDG_PAGE, (pfn - first) * ZDG_PAGE);
		n += pfn - first;
	}
	memcpy(vm->bm_in, c->copy_bm, vm->nwords * 8);
	c->out->copied = n;
	c->out->copy_ns = zd_now_ns() - t0;
}

static int protect_runs(struct ckpt *c)
{
	struct zd_vm *vm = c->vm;
	uint64_t t0 = zd_now_ns(), pfn = 0, first;
	int r = 0;

	while (next_run(vm, vm->bm_out, c->copy_bm, &pfn, &first)) {
		if ((r = zd_vm_uffd_wp(vm, first, pfn - first)) < 0)
			break;
		c->out->protect_calls++;
		c->out->protected_pages += pfn - first;
	}
	c->out->protect_ns = zd_now_ns() - t0;
	return r;
}

static int rearm(struct ckpt *c)
{
	uint64_t t0 = zd_now_ns();
	int r = zd_vm_dirty_clear(c->vm, true);

	c->out->rearm_ns = zd_now_ns() - t0;
	return r;
}

static void memsum(struct ckpt *c, uint32_t flags)
{
	if (flags & ZD_VMCTL_F_MEMSUM)
		c->out->memsum = zd_hash64(c->vm->ram, c->vm->mem_bytes);
}

static int save_state(struct ckpt *c, uint8_t **state, uint32_t *len)
{
	uint64_t t0 = zd_now_ns();
	int r = zd_vm_state_save(c->vm, state, len);

	c->out->state_ns = zd_now_ns() - t0;
	c->out->state_len = r == 0 ? *len : 0;
	return r;
}

static void resume(struct ckpt *c)
{
	zd_vm_resume(c->vm);
	c->out->resumed_ns = zd_now_ns();
}

int zd_vm_checkpoint(struct zd_vm *vm, const struct zd_vmctl_req *req, struct zd_vmctl_ckpt *out,
		     uint8_t **state, uint32_t *state_len)
{
	struct ckpt c = {
		.vm = vm,
		.copy_max = ZD_MIN((uint64_t)ZD_CKPT_COPY_MAX(req->arg1), vm->copy_pages),
		.protect_run = ZD_CKPT_PROTECT_RUN(req->arg1),
		.hint = req->flags & ZD_VMCTL_F_HINT,
		.out = out,
	};
	int64_t v;
	int r;

	memset(out, 0, sizeof(*out));
	*state = NULL;
	*state_len = 0;
	/* The disk's write log is read while paused by a later request: not
	 * with this one (the tracker takes the six-step pause). */
	if (vm->uffd < 0 || !vm->copy || vm->disk_fd >= 0)
		return -EOPNOTSUPP;
	v = zd_vm_pause(vm, req->arg0);
	out->stop_ns = v < 0 ? 0 : (uint64_t)v;
	out->paused_at_ns = vm->paused_at_ns;
	if (v < 0) {
		resume(&c);
		return -EIO;
	}
	c.copy_bm = zd_xcalloc(vm->nwords, 8);
	v = harvest(&c);
	r = v < 0 ? (int)v : 0;
	if (r >= 0) {
		split_frozen(&c);
		copy_at_pause(&c);
		r = protect_runs(&c);
	}
	if (r >= 0)
		r = rearm(&c);
	if (r >= 0) {
		memsum(&c, req->flags);
		r = save_state(&c, state, state_len);
	}
	resume(&c);
	free(c.copy_bm);
	return r < 0 ? r : 0;
}
