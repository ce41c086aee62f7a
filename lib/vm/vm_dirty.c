/* SPDX-License-Identifier: MIT */
/*
 * Dirty tracking as the tracker sees it: DIRTY_GET reports every page
 * written since it was last re-armed, DIRTY_CLEAR re-arms all pages or a
 * chosen set. Three sources are merged:
 *
 *   - KVM's dirty log of the memslot. With manual protect (the normal case)
 *     GET does not re-arm and KVM_CLEAR_DIRTY_LOG re-arms exactly the
 *     pages asked for; INITIALLY_SET makes every page dirty at start, which
 *     is what a first full copy needs.
 *   - Without manual protect, classic GET re-arms everything it returns; we
 *     keep what it returned in classic_pending until the tracker clears it,
 *     so the semantics stay those of manual protect.
 *   - zd-vm's own writes to guest RAM (the service mailbox), which KVM
 *     never logs: vmm_dirty, set by the vCPU thread after each write. GET
 *     moves those bits to vmm_seen (an atomic exchange, so a write racing
 *     with GET is reported now or at the next GET, never lost), and CLEAR
 *     clears only vmm_seen.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

int zd_vm_dirty_init(struct zd_vm *vm, char *msg, size_t msglen)
{
	size_t wbytes;

	vm->nwords = (vm->npages + 63) / 64;
	wbytes = vm->nwords * 8;
	vm->bm_area_bytes = (2 * wbytes + 4095) & ~(size_t)4095;
	vm->bmfd = memfd_create("zd-vm-dirty", MFD_CLOEXEC);
	if (vm->bmfd < 0 || ftruncate(vm->bmfd, (off_t)vm->bm_area_bytes) < 0) {
		snprintf(msg, msglen, "dirty bitmap area: %s", strerror(errno));
		return -1;
	}
	vm->bm_area = mmap(NULL, vm->bm_area_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
			   vm->bmfd, 0);
	if (vm->bm_area == MAP_FAILED) {
		vm->bm_area = NULL;
		snprintf(msg, msglen, "mmap dirty bitmap area: %s", strerror(errno));
		return -1;
	}
	vm->bm_out = vm->bm_area;
	vm->bm_in = vm->bm_area + vm->nwords;
	vm->kvm_log = zd_xcalloc(vm->nwords, 8);
	vm->vmm_dirty = zd_xcalloc(vm->nwords, 8);
	vm->vmm_seen = zd_xcalloc(vm->nwords, 8);
	if (!vm->manual_protect) {
		/* Mimic INITIALLY_SET: nothing was ever re-armed. */
		vm->classic_pending = zd_xcalloc(vm->nwords, 8);
		for (uint64_t p = 0; p < vm->npages; p++)
			vm->classic_pending[p / 64] |= 1ull << (p % 64);
	}
	return 0;
}

void zd_vm_dirty_free(struct zd_vm *vm)
{
	if (vm->bm_area)
		munmap(vm->bm_area, vm->bm_area_bytes);
	if (vm->bmfd >= 0)
		close(vm->bmfd);
	vm->bm_area = vm->bm_out = vm->bm_in = NULL;
	vm->bmfd = -1;
	free(vm->kvm_log);
	free(vm->vmm_dirty);
	free(vm->vmm_seen);
	free(vm->classic_pending);
	vm->kvm_log = vm->vmm_dirty = vm->vmm_seen = vm->classic_pending = NULL;
}

void zd_vm_mark_dirty(struct zd_vm *vm, uint64_t gpa, uint64_t len)
{
	uint64_t p, end;

	if (!len || gpa >= vm->mem_bytes)
		return;
	end = ZD_MIN(gpa + len, vm->mem_bytes);
	for (p = gpa / ZDG_PAGE; p < (end + ZDG_PAGE - 1) / ZDG_PAGE; p++)
		__atomic_fetch_or(&vm->vmm_dirty[p / 64], 1ull << (p % 64), __ATOMIC_RELEASE);
}

int64_t zd_vm_dirty_get(struct zd_vm *vm)
{
	struct kvm_dirty_log log = { .slot = 0 };
	uint64_t count = 0, tail_mask = ~0ull;

	memset(vm->kvm_log, 0, vm->nwords * 8);
	log.dirty_bitmap = vm->kvm_log;
	if (ioctl(vm->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
		return -errno;
	if (vm->npages % 64)
		tail_mask = (1ull << (vm->npages % 64)) - 1;
	for (uint64_t w = 0; w < vm->nwords; w++) {
		uint64_t v = __atomic_exchange_n(&vm->vmm_dirty[w], 0, __ATOMIC_ACQ_REL);
		uint64_t d;

		vm->vmm_seen[w] |= v;
		if (vm->manual_protect) {
			d = vm->kvm_log[w];
		} else {
			vm->classic_pending[w] |= vm->kvm_log[w];
			d = vm->classic_pending[w];
		}
		d |= vm->vmm_seen[w];
		if (w == vm->nwords - 1)
			d &= tail_mask;
		vm->bm_out[w] = d;
		count += (uint64_t)__builtin_popcountll(d);
	}
	return (int64_t)count;
}

static int kvm_clear(struct zd_vm *vm, uint64_t fw, uint64_t lw, uint64_t *bits)
{
	struct kvm_clear_dirty_log c = { .slot = 0 };
	uint64_t end = ZD_MIN((lw + 1) * 64, vm->npages);

	/* first_page must be a multiple of 64 (word aligned: it is), and
	 * num_pages a multiple of 64 unless it reaches the slot's end. */
	c.first_page = fw * 64;
	c.num_pages = (uint32_t)(end - c.first_page);
	c.dirty_bitmap = bits;
	return ioctl(vm->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0 ? -errno : 0;
}

int zd_vm_dirty_clear(struct zd_vm *vm, bool all)
{
	int rc = 0;

	if (all) {
		if (vm->manual_protect) {
			uint64_t *ones = zd_xmalloc(vm->nwords * 8);

			memset(ones, 0xff, vm->nwords * 8);
			/* num_pages is a u32: clear in chunks of 2^31 pages. */
			for (uint64_t w = 0; w < vm->nwords && !rc; w += (1ull << 31) / 64)
				rc = kvm_clear(vm, w, ZD_MIN(w + (1ull << 31) / 64, vm->nwords) - 1,
					       ones + w);
			free(ones);
		} else {
			memset(vm->classic_pending, 0, vm->nwords * 8);
		}
		memset(vm->vmm_seen, 0, vm->nwords * 8);
		return rc;
	}
	return zd_vm_dirty_clear_bits(vm, vm->bm_in);
}

int zd_vm_dirty_clear_bits(struct zd_vm *vm, const uint64_t *bits)
{
	uint64_t fw = UINT64_MAX, lw = 0;

	for (uint64_t w = 0; w < vm->nwords; w++) {
		if (!bits[w])
			continue;
		if (fw == UINT64_MAX)
			fw = w;
		lw = w;
	}
	/* One ioctl over the span of the set: KVM re-arms only the bits set
	 * in the bitmap, and one call is far cheaper than one per word. */
	return fw == UINT64_MAX ? 0 : zd_vm_dirty_clear_words(vm, bits, fw, lw);
}

int zd_vm_dirty_clear_words(struct zd_vm *vm, const uint64_t *bits, uint64_t fw, uint64_t lw)
{
	for (uint64_t w = fw; w <= lw; w++) {
		vm->vmm_seen[w] &= ~bits[w];
		if (!vm->manual_protect)
			vm->classic_pending[w] &= ~bits[w];
	}
	if (!vm->manual_protect)
		return 0;
	return kvm_clear(vm, fw, lw, (uint64_t *)bits + fw);
}
