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
 *     6 DEVICE  struct zd_vm_devstate (vm_impl.h)
 *     7 SERVE   the service address the VM serves, "ADDR:PORT" (no NUL)
 *     8 CONTROL the control socket path (no NUL)
 *
 * SERVE and CONTROL let zd-vm --restore bring the VM back where clients
 * and trackers expect it with no flags (zd-recv's default failover).
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

enum {
	ST_REGS = 1, ST_SREGS = 2, ST_XSAVE = 3, ST_FPU = 4, ST_MSRS = 5, ST_DEVICE = 6,
	ST_SERVE = 7, ST_CONTROL = 8,
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

	/* Paused, the vCPU has not run since KVM_RUN last returned: the
	 * sync regs in kvm_run are its registers now. (A write of zd-vm's
	 * with KVM_SET_REGS would make them stale: there is none after the
	 * vCPU thread starts.) */
	pthread_mutex_lock(&vm->mu);
	bool synced = vm->regs_synced;
	pthread_mutex_unlock(&vm->mu);
	if (synced) {
		regs = vm->run->s.regs.regs;
		sregs = vm->run->s.regs.sregs;
	} else if (ioctl(vm->vcpu_fd, KVM_GET_REGS, &regs) < 0 ||
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
	dev.released_seq = vm->released_seq;
	put(&b, ST_DEVICE, &dev, sizeof(dev));
	if (vm->serve_addr[0])
		put(&b, ST_SERVE, vm->serve_addr, strlen(vm->serve_addr));
	if (vm->cfg.control_path)
		put(&b, ST_CONTROL, vm->cfg.control_path, strlen(vm->cfg.control_path));

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

/* A text section into buf, refusing NULs and overlong text. */
static int get_text(const uint8_t *d, uint32_t len, char *buf, size_t cap)
{
	if (len == 0 || len >= cap || memchr(d, 0, len))
		return -1;
	memcpy(buf, d, len);
	buf[len] = 0;
	return 0;
}

int zd_vm_state_parse(const uint8_t *blob, size_t len, struct zd_vm_state_view *v,
		      char *msg, size_t msglen)
{
	uint32_t magic, total, nsec;
	uint16_t ver;
	size_t off = 16;

	memset(v, 0, sizeof(*v));
	if (len < 16) {
		snprintf(msg, msglen, "byte 0: %zu bytes, shorter than the 16-byte header", len);
		return -1;
	}
	memcpy(&magic, blob, 4);
	memcpy(&ver, blob + 4, 2);
	memcpy(&total, blob + 8, 4);
	memcpy(&nsec, blob + 12, 4);
	if (magic != ZD_VMST_MAGIC) {
		snprintf(msg, msglen, "byte 0: magic %#x, not a zd-vm state blob (\"ZDVS\")", magic);
		return -1;
	}
	if (ver != ZD_VMST_VERSION) {
		snprintf(msg, msglen, "byte 4: state version %u, this zd-vm reads %u", ver, ZD_VMST_VERSION);
		return -1;
	}
	if (total != len) {
		snprintf(msg, msglen, "byte 8: header says %u bytes, the blob has %zu (truncated?)",
			 total, len);
		return -1;
	}
	for (uint32_t i = 0; i < nsec; i++) {
		uint32_t tag, slen;
		const uint8_t *d;
		bool bad = false;

		if (len - off < 8) {
			snprintf(msg, msglen, "byte %zu: section %u of %u missing", off, i + 1, nsec);
			return -1;
		}
		memcpy(&tag, blob + off, 4);
		memcpy(&slen, blob + off + 4, 4);
		if (slen > len - off - 8) {
			snprintf(msg, msglen, "byte %zu: section %u (tag %u) of %u bytes overruns the blob",
				 off, i + 1, tag, slen);
			return -1;
		}
		d = blob + off + 8;
		switch (tag) {
		case ST_REGS:
			bad = slen != sizeof(*v->regs);
			v->regs = (const struct kvm_regs *)d;
			break;
		case ST_SREGS:
			bad = slen != sizeof(*v->sregs);
			v->sregs = (const struct kvm_sregs *)d;
			break;
		case ST_XSAVE:
			bad = slen != sizeof(*v->xsave);
			v->xsave = (const struct kvm_xsave *)d;
			break;
		case ST_FPU:
			bad = slen != sizeof(*v->fpu);
			v->fpu = (const struct kvm_fpu *)d;
			break;
		case ST_MSRS: {
			uint32_t n = 0;

			if (slen >= 8)
				memcpy(&n, d, 4);
			bad = slen < 8 || n > 1024 || slen != 8 + (size_t)n * 16;
			v->msrs = d;
			v->nmsrs = n;
			break;
		}
		case ST_DEVICE:
			bad = slen < ZD_VM_DEVSTATE_V1_LEN;
			memcpy(&v->dev, d, ZD_MIN((size_t)slen, sizeof(v->dev)));
			v->have_released_seq = slen >= sizeof(v->dev);
			break;
		case ST_SERVE:
			bad = get_text(d, slen, v->serve, sizeof(v->serve)) < 0;
			break;
		case ST_CONTROL:
			bad = get_text(d, slen, v->control, sizeof(v->control)) < 0;
			break;
		default:
			break;		/* a newer writer's section */
		}
		if (bad) {
			snprintf(msg, msglen, "byte %zu: section tag %u has a bad length (%u bytes)",
				 off, tag, slen);
			return -1;
		}
		off += 8 + (((size_t)slen + 7) & ~(size_t)7);
		if (off > len) {
			snprintf(msg, msglen, "byte %zu: the padding of the last section overruns the blob", len);
			return -1;
		}
	}
	if (!v->regs || !v->sregs || !v->dev.mem_bytes) {
		snprintf(msg, msglen, "byte %zu: no %s section", off,
			 !v->regs ? "REGS (1)" : !v->sregs ? "SREGS (2)" : "DEVICE (6)");
		return -1;
	}
	return 0;
}

/* KVM_SET_MSRS stops at the first MSR it refuses (as GET does); skip that
 * one: a restored guest of ours needs EFER (also in SREGS) and little else,
 * and an MSR one KVM cannot read back another may not take. */
static void write_msrs(struct zd_vm *vm, const uint8_t *d, uint32_t n)
{
	struct kvm_msrs *m = zd_xcalloc(1, sizeof(*m) + n * sizeof(m->entries[0]));

	for (uint32_t i = 0; i < n;) {
		int r;

		m->nmsrs = n - i;
		for (uint32_t j = i; j < n; j++) {
			uint32_t idx;
			uint64_t val;

			memcpy(&idx, d + 8 + (size_t)j * 16, 4);
			memcpy(&val, d + 8 + (size_t)j * 16 + 8, 8);
			m->entries[j - i] = (struct kvm_msr_entry){ .index = idx, .data = val };
		}
		r = ioctl(vm->vcpu_fd, KVM_SET_MSRS, m);
		if (r < 0)
			break;
		if ((uint32_t)r < m->nmsrs)
			zd_debug("restore: KVM refused MSR %#x, skipped", m->entries[r].index);
		i += (uint32_t)r + 1;
	}
	free(m);
}

int zd_vm_state_load_vcpu(struct zd_vm *vm, const struct zd_vm_state_view *v,
			  char *msg, size_t msglen)
{
	/* SREGS first: the mode (EFER, CR0, CR4) decides how KVM reads the
	 * rest. The structures may sit unaligned in the blob: copy them. */
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	memcpy(&sregs, v->sregs, sizeof(sregs));
	memcpy(&regs, v->regs, sizeof(regs));
	if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
		snprintf(msg, msglen, "KVM_SET_SREGS: %s", strerror(errno));
		return -1;
	}
	if (v->msrs && v->nmsrs)
		write_msrs(vm, v->msrs, v->nmsrs);
	if (v->xsave) {
		struct kvm_xsave *xs = zd_xmalloc(sizeof(*xs));
		int r;

		memcpy(xs, v->xsave, sizeof(*xs));
		r = ioctl(vm->vcpu_fd, KVM_SET_XSAVE, xs);
		free(xs);
		if (r < 0) {
			snprintf(msg, msglen, "KVM_SET_XSAVE: %s", strerror(errno));
			return -1;
		}
	} else if (v->fpu) {
		struct kvm_fpu fpu;

		memcpy(&fpu, v->fpu, sizeof(fpu));
		if (ioctl(vm->vcpu_fd, KVM_SET_FPU, &fpu) < 0) {
			snprintf(msg, msglen, "KVM_SET_FPU: %s", strerror(errno));
			return -1;
		}
	}
	if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) < 0) {
		snprintf(msg, msglen, "KVM_SET_REGS: %s", strerror(errno));
		return -1;
	}
	return 0;
}
