/* SPDX-License-Identifier: MIT */
/*
 * Put the guest straight into 64-bit user mode: no firmware, no boot code.
 * zd-vm writes the page tables, a GDT and a TSS into guest RAM and loads
 * the matching hidden segment state with KVM_SET_SREGS, so the first
 * instruction the vCPU executes is the guest's _start at CPL3. Under
 * kvm_pvm CPL0 code is emulated one instruction at a time, so the guest
 * never runs any; on hardware KVM the same state works unchanged.
 *
 * Identity map with 2 MiB pages, user-accessible, covering RAM and the MMIO
 * window above it. Interrupts stay off (RFLAGS.IF = 0) and there is no IDT:
 * a guest fault becomes a triple fault, which zd-vm reports as the guest
 * dying.
 */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

extern const uint8_t zd_guest_image[], zd_guest_image_end[];

#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_US 0x4ull
#define PTE_PS 0x80ull

#define CR0_PE 0x1ull
#define CR0_MP 0x2ull
#define CR0_ET 0x10ull
#define CR0_NE 0x20ull
#define CR0_WP 0x10000ull
#define CR0_PG 0x80000000ull
#define CR4_PAE 0x20ull
#define CR4_OSFXSR 0x200ull
#define CR4_OSXMMEXCPT 0x400ull
#define EFER_SCE 0x1ull
#define EFER_LME 0x100ull
#define EFER_LMA 0x400ull

static void *gpa(struct zd_vm *vm, uint64_t a)
{
	return vm->ram + a;
}

static int build_page_tables(struct zd_vm *vm, uint64_t map_end, char *msg, size_t msglen)
{
	uint64_t *pml4 = gpa(vm, ZDG_PT_GPA);
	uint64_t *pdpt = gpa(vm, ZDG_PT_GPA + ZDG_PAGE);
	uint64_t npd = (map_end + (1ull << 30) - 1) >> 30;
	uint64_t flags = PTE_P | PTE_RW | PTE_US;

	if (npd + 2 > ZDG_PT_MAX_PAGES) {
		snprintf(msg, msglen, "guest RAM too large for the page table area");
		return -1;
	}
	pml4[0] = (ZDG_PT_GPA + ZDG_PAGE) | flags;
	for (uint64_t i = 0; i < npd; i++) {
		uint64_t pd_gpa = ZDG_PT_GPA + (2 + i) * ZDG_PAGE;
		uint64_t *pd = gpa(vm, pd_gpa);

		pdpt[i] = pd_gpa | flags;
		for (uint64_t j = 0; j < 512; j++) {
			uint64_t a = (i << 30) | (j << 21);

			if (a < map_end)
				pd[j] = a | flags | PTE_PS;
		}
	}
	return 0;
}

/* Segment descriptors, as in the GDT (the CPU does not read them while the
 * guest never reloads a segment, but a GDT that matches the loaded state
 * keeps the VM consistent for anyone who inspects or migrates it). */
static void build_gdt(struct zd_vm *vm)
{
	uint64_t *gdt = gpa(vm, ZDG_GDT_GPA);
	uint64_t tss = ZDG_TSS_GPA, lim = 0x67;

	gdt[0] = 0;
	gdt[1] = 0x00af9b000000ffffull;	/* kernel code, 64-bit */
	gdt[2] = 0x00cf93000000ffffull;	/* kernel data */
	gdt[3] = 0x00affb000000ffffull;	/* user code, 64-bit, DPL 3 */
	gdt[4] = 0x00cff3000000ffffull;	/* user data, DPL 3 */
	gdt[5] = (lim & 0xffff) | ((tss & 0xffffff) << 16) | (0xbull << 40) | (1ull << 47) |
		 (((lim >> 16) & 0xf) << 48) | (((tss >> 24) & 0xff) << 56);
	gdt[6] = tss >> 32;
	/* The TSS: RSP0 below the user stack (the field at offset 4 is not
	 * 8-byte aligned), no I/O bitmap. */
	uint8_t *t = gpa(vm, ZDG_TSS_GPA);
	uint64_t rsp0 = ZDG_STACK_TOP - 0x80000;
	uint16_t iomap = 104;

	memset(t, 0, ZDG_PAGE);
	memcpy(t + 4, &rsp0, sizeof(rsp0));
	memcpy(t + 102, &iomap, sizeof(iomap));
}

static void user_seg(struct kvm_segment *s, uint16_t sel, bool code)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = code ? 0xb : 0x3;
	s->present = 1;
	s->dpl = 3;
	s->db = code ? 0 : 1;
	s->s = 1;
	s->l = code ? 1 : 0;
	s->g = 1;
}

static void fill_params(struct zd_vm *vm)
{
	struct zdg_params *p = gpa(vm, ZDG_PARAM_GPA);
	const struct zd_vm_workload *wl = &vm->cfg.wl;
	uint64_t span = wl->span_bytes ? wl->span_bytes : vm->mem_bytes - ZDG_WORK_GPA;
	uint64_t hot = wl->hotset_bytes;

	span = ZD_MIN(span, vm->mem_bytes - ZDG_WORK_GPA);
	if (!hot)
		hot = ZD_MIN(span / 16, 4ull << 20);
	hot = ZD_MIN(hot, span);
	memset(p, 0, sizeof(*p));
	p->abi = ZDG_ABI_VERSION;
	p->mem_bytes = vm->mem_bytes;
	p->mmio_gpa = vm->mmio_gpa;
	p->tsc_hz = vm->tsc_hz;
	p->dirty_rate = wl->dirty_rate;
	p->hot_frac32 = (uint64_t)(wl->hot * 4294967296.0);
	if (p->hot_frac32 > 0xffffffffull)
		p->hot_frac32 = 0xffffffffull;
	p->span_gpa = ZDG_WORK_GPA;
	p->span_pages = span / ZDG_PAGE;
	p->hot_pages = ZD_MAX(hot / ZDG_PAGE, 1);
	p->seed = wl->seed ? wl->seed : 1;
	/* The guest re-checks its mailbox at least this often even if no
	 * doorbell came (belt and braces; zd-vm does wake it). */
	p->idle_max_ticks = vm->tsc_hz / 10;
	p->disk_bytes = vm->disk_bytes;
	p->disk_rate = vm->disk_bytes ? wl->disk_rate : 0;
}

int zd_vm_setup_guest(struct zd_vm *vm, char *msg, size_t msglen)
{
	size_t isz = (size_t)(zd_guest_image_end - zd_guest_image);
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (isz > ZDG_IMAGE_MAX) {
		snprintf(msg, msglen, "guest image too large (%zu bytes)", isz);
		return -1;
	}
	/* The MMIO window: the first 2 MiB-aligned address above RAM. */
	vm->mmio_gpa = (vm->mem_bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1);
	memcpy(gpa(vm, ZDG_IMAGE_GPA), zd_guest_image, isz);
	build_gdt(vm);
	if (build_page_tables(vm, vm->mmio_gpa + (2ull << 20), msg, msglen) < 0)
		return -1;
	fill_params(vm);

	if (ioctl(vm->vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
		snprintf(msg, msglen, "KVM_GET_SREGS: %s", strerror(errno));
		return -1;
	}
	user_seg(&sregs.cs, ZDG_SEL_UCODE, true);
	user_seg(&sregs.ds, ZDG_SEL_UDATA, false);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	memset(&sregs.tr, 0, sizeof(sregs.tr));
	sregs.tr.base = ZDG_TSS_GPA;
	sregs.tr.limit = 0x67;
	sregs.tr.selector = ZDG_SEL_TSS;
	sregs.tr.type = 0xb;		/* busy 64-bit TSS */
	sregs.tr.present = 1;
	memset(&sregs.ldt, 0, sizeof(sregs.ldt));
	sregs.ldt.type = 0x2;
	sregs.ldt.unusable = 1;
	sregs.gdt.base = ZDG_GDT_GPA;
	sregs.gdt.limit = 7 * 8 - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	sregs.cr3 = ZDG_PT_GPA;
	/* CR4.TSD stays 0: the guest reads the TSC at CPL3. */
	sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	sregs.efer = EFER_LME | EFER_LMA | EFER_SCE;
	if (ioctl(vm->vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
		snprintf(msg, msglen, "KVM_SET_SREGS (64-bit CPL3 entry): %s", strerror(errno));
		return -1;
	}
	memset(&regs, 0, sizeof(regs));
	regs.rip = ZDG_IMAGE_GPA;
	regs.rsp = ZDG_STACK_TOP;
	regs.rflags = 0x2;		/* IF = 0, IOPL = 0 */
	if (ioctl(vm->vcpu_fd, KVM_SET_REGS, &regs) < 0) {
		snprintf(msg, msglen, "KVM_SET_REGS: %s", strerror(errno));
		return -1;
	}
	zd_debug("guest: %zu-byte image at %#llx, MMIO at %#llx, workload %llu pages/s over %llu pages",
		 isz, (unsigned long long)ZDG_IMAGE_GPA, (unsigned long long)vm->mmio_gpa,
		 (unsigned long long)vm->cfg.wl.dirty_rate,
		 (unsigned long long)((struct zdg_params *)gpa(vm, ZDG_PARAM_GPA))->span_pages);
	return 0;
}
