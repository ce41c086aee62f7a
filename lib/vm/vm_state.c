/* SPDX-License-Identifier: MIT */
/*
 * The STATE blob: everything but RAM that a restored VM needs, taken while
 * the VM is paused. Layout version 1 (all little-endian, documented in
 * zd-vm(1)):
 *
 *   header  u32 magic "ZDVS" (0x5356445a), u16 version 1, u16 reserved,
 *           u32 total length, u32 section count
 *   then sections, each u32 tag, u32 length, length bytes, padded to 8:
 *     1 REGS    struct kvm_regs
 *     2 SREGS   struct kvm_sregs
 *     3 XSAVE   struct kvm_xsave (4096 bytes), or
 *     4 FPU     struct kvm_fpu where XSAVE is not available
 *     5 MSRS    u32 count, u32 0, then {u32 index, u32 0, u64 value}
 *     6 DEVICE  struct zd_vm_devstate below
 *
 * A reader skips tags it does not know, so sections can be added without
 * a new version; a changed section layout needs version 2.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

#define ZD_VMST_MAGIC 0x5356445au
#define ZD_VMST_VERSION 1

enum { ST_REGS = 1, ST_SREGS = 2, ST_XSAVE = 3, ST_FPU = 4, ST_MSRS = 5, ST_DEVICE = 6 };

/* zd-vm's device state not already in guest RAM. */
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
};

/* The MSRs a 64-bit guest's state depends on. */
static const uint32_t msr_list[] = {
	0xc0000080,	/* EFER */
	0xc0000081,	/* STAR */
	0xc0000082,	/* LSTAR */
	0xc0000083,	/* CSTAR */
	0xc0000084,	/* SFMASK */
	0xc0000100,	/* FS_BASE */
	0xc0000101,	/* GS_BASE */
	0xc0000102,	/* KERNEL_GS_BASE */
	0x00000010,	/* TSC */
	0xc0000103,	/* TSC_AUX */
	0x00000174,	/* SYSENTER_CS */
	0x00000175,	/* SYSENTER_ESP */
	0x00000176,	/* SYSENTER_EIP */
	0x00000277,	/* PAT */
};

struct blob {
	uint8_t *p;
	size_t len, cap;
	uint32_t nsec;
};

static void put(struct blob *b, uint32_t tag, const void *data, size_t len)
{
	size_t need = 8 + ((len + 7) & ~(size_t)7);

	if (b->len + need > b->cap) {
		b->cap = (b->len + need) * 2;
		b->p = zd_xrealloc(b->p, b->cap);
	}
	memcpy(b->p + b->len, &tag, 4);
	memcpy(b->p + b->len + 4, &(uint32_t){ (uint32_t)len }, 4);
	memcpy(b->p + b->len + 8, data, len);
	memset(b->p + b->len + 8 + len, 0, need - 8 - len);
	b->len += need;
	b->nsec++;
}

/* KVM_GET_MSRS stops at the first MSR it cannot read; skip that one and go
 * on, so one MSR missing under some KVM (kvm_pvm) costs only itself. */
static size_t read_msrs(struct zd_vm *vm, uint64_t *out_pairs)
{
	size_t n = ZD_ARRAY_SIZE(msr_list), got = 0;
	struct kvm_msrs *m = zd_xcalloc(1, sizeof(*m) + n * sizeof(m->entries[0]));

	for (size_t i = 0; i < n;) {
		int r;

		m->nmsrs = (uint32_t)(n - i);
		for (size_t j = i; j < n; j++)
			m->entries[j - i] = (struct kvm_msr_entry){ .index = msr_list[j] };
		r = ioctl(vm->vcpu_fd, KVM_GET_MSRS, m);
		if (r < 0)
			break;
		for (int j = 0; j < r; j++) {
			out_pairs[2 * got] = m->entries[j].index;
			out_pairs[2 * got + 1] = m->entries[j].data;
			got++;
		}
		i += (size_t)r + 1;	/* entry r failed */
	}
	free(m);
	return got;
}

int zd_vm_state_save(struct zd_vm *vm, uint8_t **blobp, uint32_t *lenp)
{
	struct blob b = { 0 };
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xsave *xs = zd_xcalloc(1, sizeof(*xs));
	struct kvm_fpu fpu;
	struct zd_vm_devstate dev;
	uint64_t pairs[2 * ZD_ARRAY_SIZE(msr_list) + 2];
	uint32_t hdr[4] = { ZD_VMST_MAGIC, ZD_VMST_VERSION, 0, 0 };
	size_t nmsr;

	if (ioctl(vm->vcpu_fd, KVM_GET_REGS, &regs) < 0 ||
	    ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
		free(xs);
		return -errno;
	}
	b.len = sizeof(hdr);
	b.cap = 8192;
	b.p = zd_xmalloc(b.cap);
	put(&b, ST_REGS, &regs, sizeof(regs));
	put(&b, ST_SREGS, &sregs, sizeof(sregs));
	if (ioctl(vm->vcpu_fd, KVM_GET_XSAVE, xs) == 0)
		put(&b, ST_XSAVE, xs, sizeof(*xs));
	else if (ioctl(vm->vcpu_fd, KVM_GET_FPU, &fpu) == 0)
		put(&b, ST_FPU, &fpu, sizeof(fpu));
	free(xs);

	nmsr = read_msrs(vm, pairs + 1);
	pairs[0] = nmsr;		/* u32 count, u32 0 */
	for (size_t i = 0; i < nmsr; i++)
		pairs[1 + 2 * i] &= 0xffffffffu;
	put(&b, ST_MSRS, pairs, 8 + nmsr * 16);

	memset(&dev, 0, sizeof(dev));
	pthread_mutex_lock(&vm->mu);
	dev.epoch = vm->last_pause_epoch;
	dev.mbox_seq = vm->mbox_seq;
	dev.inflight = vm->inflight != NULL;
	pthread_mutex_unlock(&vm->mu);
	dev.mem_bytes = vm->mem_bytes;
	dev.mmio_gpa = vm->mmio_gpa;
	dev.tsc_hz = vm->tsc_hz;
	dev.answers = vm->n_answers;
	dev.released = vm->n_released;
	dev.committed = vm->committed;
	dev.abi = ZDG_ABI_VERSION;
	put(&b, ST_DEVICE, &dev, sizeof(dev));

	hdr[2] = (uint32_t)b.len;
	hdr[3] = b.nsec;
	memcpy(b.p, &hdr[0], 4);
	memcpy(b.p + 4, &(uint16_t){ ZD_VMST_VERSION }, 2);
	memcpy(b.p + 6, &(uint16_t){ 0 }, 2);
	memcpy(b.p + 8, &hdr[2], 4);
	memcpy(b.p + 12, &hdr[3], 4);
	*blobp = b.p;
	*lenp = (uint32_t)b.len;
	return 0;
}
