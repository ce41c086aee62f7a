/* SPDX-License-Identifier: MIT */
/*
 * The KVM side of zd-vm: open /dev/kvm, create the VM, back guest RAM with
 * one memfd registered as a single dirty-logged memslot, create the vCPU
 * and map its kvm_run.
 *
 * Manual dirty-log protect must be enabled before the memslot exists, or
 * KVM write-protects the whole slot at creation and GET resets the log.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

const char *zd_vm_kvm_mode(void)
{
	if (access("/sys/module/kvm_pvm", F_OK) == 0)
		return "kvm_pvm";
	if (access("/dev/kvm", F_OK) == 0 || access("/sys/module/kvm", F_OK) == 0)
		return "kvm";
	return "none";
}

static int set_cpuid(struct zd_vm *vm)
{
	/* Give the guest the CPUID KVM supports, as kvmtool does: without it
	 * the vCPU has an empty CPUID, which some KVMs refuse to run. */
	int nent = 64;

	for (;;) {
		struct kvm_cpuid2 *c = zd_xcalloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		int r;

		c->nent = (uint32_t)nent;
		r = ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (r < 0 && errno == E2BIG && nent < 4096) {
			free(c);
			nent *= 2;
			continue;
		}
		if (r == 0)
			r = ioctl(vm->vcpu_fd, KVM_SET_CPUID2, c);
		free(c);
		return r;
	}
}

static inline uint64_t host_rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* The guest paces its writes with rdtsc, so it needs the TSC frequency it
 * sees. KVM_GET_TSC_KHZ gives it where available (it includes any
 * scaling); otherwise measure the host TSC against CLOCK_MONOTONIC, which
 * is what an unscaled guest sees. */
static uint64_t measure_tsc_hz(void)
{
	uint64_t t0 = zd_now_ns(), c0 = host_rdtsc(), t1, c1;

	zd_sleep_ns(20 * 1000 * 1000);
	t1 = zd_now_ns();
	c1 = host_rdtsc();
	if (t1 <= t0 || c1 <= c0)
		return 0;
	return (uint64_t)((unsigned __int128)(c1 - c0) * 1000000000u / (t1 - t0));
}

static void tsc_setup(struct zd_vm *vm)
{
	int khz = ioctl(vm->vcpu_fd, KVM_GET_TSC_KHZ, 0);
	/* The measurement sleeps 20 ms: a third of a restored VM's start
	 * when it was always made. */
	uint64_t measured = khz > 0 ? 0 : measure_tsc_hz();

	vm->tsc_hz = khz > 0 ? (uint64_t)khz * 1000 : measured;
	zd_debug("guest TSC %llu Hz (%s)", (unsigned long long)vm->tsc_hz,
		 khz > 0 ? "KVM_GET_TSC_KHZ" : "measured against CLOCK_MONOTONIC");
	if (!vm->tsc_hz)
		vm->tsc_hz = 1000000000ull;
}

static int enable_manual_protect(struct zd_vm *vm)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 };
	int have = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

	if (have <= 0 || ((uint64_t)have & want) != want)
		return -1;
	cap.args[0] = want;
	return ioctl(vm->vm_fd, KVM_ENABLE_CAP, &cap);
}

int zd_vm_kvm_open(struct zd_vm *vm, char *msg, size_t msglen)
{
	struct kvm_userspace_memory_region slot;
	int r, api;

	vm->pvm = access("/sys/module/kvm_pvm", F_OK) == 0;
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		snprintf(msg, msglen, "/dev/kvm: %s", strerror(errno));
		return -1;
	}
	api = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		snprintf(msg, msglen, "/dev/kvm: API version %d, want %d", api, KVM_API_VERSION);
		return -1;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		snprintf(msg, msglen, "KVM_CREATE_VM: %s", strerror(errno));
		return -1;
	}

	vm->memfd = memfd_create("zd-vm-ram", MFD_CLOEXEC);
	if (vm->memfd < 0 || ftruncate(vm->memfd, (off_t)vm->mem_bytes) < 0) {
		snprintf(msg, msglen, "guest RAM (%llu bytes): %s",
			 (unsigned long long)vm->mem_bytes, strerror(errno));
		return -1;
	}
	vm->ram = mmap(NULL, vm->mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		       vm->memfd, 0);
	if (vm->ram == MAP_FAILED) {
		vm->ram = NULL;
		snprintf(msg, msglen, "mmap guest RAM: %s", strerror(errno));
		return -1;
	}
	zd_vm_uffd_open(vm);

	/* ZD_VM_CLASSIC_DIRTY_LOG=1 takes the fallback path on a KVM that has
	 * the capability, so the fallback can be tested. */
	if (getenv("ZD_VM_CLASSIC_DIRTY_LOG") && !strcmp(getenv("ZD_VM_CLASSIC_DIRTY_LOG"), "1"))
		vm->manual_protect = false;
	else
		vm->manual_protect = enable_manual_protect(vm) == 0;
	if (!vm->manual_protect)
		zd_warnx("KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: using classic "
			 "KVM_GET_DIRTY_LOG (every harvest re-arms; selective re-arm is emulated)");
	if (zd_vm_dirty_init(vm, msg, msglen) < 0)
		return -1;

	memset(&slot, 0, sizeof(slot));
	slot.slot = 0;
	slot.flags = KVM_MEM_LOG_DIRTY_PAGES;
	slot.guest_phys_addr = 0;
	slot.memory_size = vm->mem_bytes;
	slot.userspace_addr = (uint64_t)(uintptr_t)vm->ram;
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
		snprintf(msg, msglen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
		return -1;
	}

	vm->vcpu_fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, 0);
	if (vm->vcpu_fd < 0) {
		snprintf(msg, msglen, "KVM_CREATE_VCPU: %s", strerror(errno));
		return -1;
	}
	r = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (r < (int)sizeof(struct kvm_run)) {
		snprintf(msg, msglen, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		return -1;
	}
	vm->run_size = (size_t)r;
	vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu_fd, 0);
	if (vm->run == MAP_FAILED) {
		vm->run = NULL;
		snprintf(msg, msglen, "mmap kvm_run: %s", strerror(errno));
		return -1;
	}
	/* Sync regs: KVM copies the registers into kvm_run at every return
	 * of KVM_RUN, so the state save at a checkpoint reads them there
	 * instead of two vCPU ioctls (~10 us each on kvm_pvm). */
	if ((ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS) &
	     (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)) == (KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS) &&
	    !(getenv("ZD_VM_NO_SYNC_REGS") && !strcmp(getenv("ZD_VM_NO_SYNC_REGS"), "1"))) {
		vm->run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
		vm->sync_regs = true;
	}
	if (set_cpuid(vm) < 0)
		zd_warn("KVM_SET_CPUID2 (the guest does not need CPUID, continuing)");
	tsc_setup(vm);
	zd_debug("KVM %s, %llu MiB RAM, dirty log %s", vm->pvm ? "kvm_pvm" : "hardware",
		 (unsigned long long)(vm->mem_bytes >> 20),
		 vm->manual_protect ? "manual protect" : "classic");
	return 0;
}

void zd_vm_kvm_close(struct zd_vm *vm)
{
	if (vm->run)
		munmap(vm->run, vm->run_size);
	if (vm->vcpu_fd >= 0)
		close(vm->vcpu_fd);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	zd_vm_dirty_free(vm);
	zd_vm_uffd_close(vm);
	zd_vm_area_free(&vm->copy);
	zd_vm_area_free(&vm->pre);
	if (vm->ram)
		munmap(vm->ram, vm->mem_bytes);
	if (vm->memfd >= 0)
		close(vm->memfd);
	vm->run = NULL;
	vm->ram = NULL;
	vm->vcpu_fd = vm->vm_fd = vm->kvm_fd = vm->memfd = -1;
}
