/* SPDX-License-Identifier: MIT */
/*
 * The copy-on-write guard of zddspt (zd-vm side): a userfaultfd registered
 * for write-protect over guest RAM. zd-vm only registers it and arms it
 * (PROTECT, at the checkpoint, VM paused); the faults are read and served
 * by zd-swap, which gets the uffd through the tracker (INFO → MEMORY).
 *
 * Arming costs one ioctl per range (measured on kvm_pvm: ~1.5 µs a call,
 * ~0.06 µs a page), so the pages to protect are coalesced: runs closer than
 * ZD_VMCTL_WP_GAP pages become one range. A clean page inside a range costs
 * little to protect and only faults if the guest writes it later; zd-swap
 * then un-protects it without keeping it.
 *
 * userfaultfd needs root or CAP_SYS_PTRACE (vm.unprivileged_userfaultfd =
 * 0, and KVM's faults are kernel-mode); without it zd-vm runs unguarded and
 * zddspt copies the frozen set while paused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"


/* Linux 6.4; Debian 12's headers are older. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif

/* A userfaultfd with the API handshake done and guest RAM registered for
 * write-protect; *unpopulated: protection covers pages never touched
 * (UFFD_FEATURE_WP_UNPOPULATED). -1 with errno; *no_fd when the
 * descriptor itself was refused (the privilege). */
static int uffd_new(struct zd_vm *vm, bool *unpopulated, bool *no_fd)
{
	/* The handshake is once per descriptor: asking for a feature the
	 * kernel lacks costs a new one. */
	for (int i = 0; i < 2; i++) {
		struct uffdio_api api = { .api = UFFD_API,
					  .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
						      (i == 0 ? UFFD_FEATURE_WP_UNPOPULATED : 0) };
		struct uffdio_register reg = {
			.range = { .start = (uint64_t)(uintptr_t)vm->ram, .len = vm->mem_bytes },
			.mode = UFFDIO_REGISTER_MODE_WP,
		};
		int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), e;

		if (fd < 0) {
			*no_fd = true;
			return -1;
		}
		if (ioctl(fd, UFFDIO_API, &api) == 0) {
			if (ioctl(fd, UFFDIO_REGISTER, &reg) == 0 &&
			    (reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT))) {
				*unpopulated = i == 0;
				return fd;
			}
			e = errno ? errno : EOPNOTSUPP;
			close(fd);
			errno = e;
			return -1;
		}
		e = errno;
		close(fd);
		errno = e;
		if (e != EINVAL)
			break;
	}
	return -1;
}

int zd_vm_uffd_open(struct zd_vm *vm)
{
	bool unpopulated = false, no_fd = false;
	int fd;

	vm->uffd = -1;
	if (getenv("ZD_VM_NO_UFFD") && !strcmp(getenv("ZD_VM_NO_UFFD"), "1"))
		return 0;
	errno = 0;
	fd = uffd_new(vm, &unpopulated, &no_fd);
	if (fd < 0 && no_fd) {
		zd_warnx("userfaultfd: %s: running without the write-protect guard "
			 "(zddspt copies the frozen set while paused; run as root or with CAP_SYS_PTRACE)",
			 strerror(errno));
		return 0;
	}
	if (fd < 0) {
		zd_warnx("userfaultfd write-protect on guest RAM: %s: running without the guard",
			 errno ? strerror(errno) : "not offered");
		return 0;
	}
	/* Write-protect only marks page table entries that exist: without
	 * UFFD_FEATURE_WP_UNPOPULATED (Linux < 6.4) a page never touched
	 * through this mapping would stay writable and lose its pre-image.
	 * Populate all of guest RAM once, writable, before any PROTECT. With
	 * the feature it is not needed, and it cost a restored VM ~1 ms per
	 * MiB of RAM before it could answer (zeroing pages the replica then
	 * overwrites). */
	if (!unpopulated && madvise(vm->ram, vm->mem_bytes, MADV_POPULATE_WRITE) < 0) {
		for (uint64_t off = 0; off < vm->mem_bytes; off += ZDG_PAGE)
			__atomic_fetch_add(vm->ram + off, 0, __ATOMIC_RELAXED);
	}
	vm->uffd = fd;
	zd_debug("userfaultfd write-protect registered over %llu bytes of guest RAM%s",
		 (unsigned long long)vm->mem_bytes, unpopulated ? " (unpopulated pages included)" : "");
	return 0;
}

void zd_vm_uffd_close(struct zd_vm *vm)
{
	if (vm->uffd >= 0)
		close(vm->uffd);
	vm->uffd = -1;
}

int zd_vm_uffd_wp(struct zd_vm *vm, uint64_t first, uint64_t count)
{
	struct uffdio_writeprotect w = {
		.range = { .start = (uint64_t)(uintptr_t)vm->ram + first * ZDG_PAGE,
			   .len = count * ZDG_PAGE },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	return ioctl(vm->uffd, UFFDIO_WRITEPROTECT, &w) < 0 ? -errno : 0;
}

/* Write-protect the pages set in bm_in, coalesced. VM paused. Returns the
 * number of ioctl calls made, or -errno. */
int64_t zd_vm_uffd_protect(struct zd_vm *vm)
{
	uint64_t start = 0, end = 0, calls = 0;	/* current range [start, end) */
	bool open = false;
	int r;

	if (vm->uffd < 0)
		return -ENOSYS;
	for (uint64_t w = 0; w < vm->nwords; w++) {
		uint64_t bits = vm->bm_in[w];

		while (bits) {
			uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(bits);

			bits &= bits - 1;
			if (pfn >= vm->npages)
				break;
			if (open && pfn <= end + ZD_VMCTL_WP_GAP) {
				end = pfn + 1;
				continue;
			}
			if (open) {
				if ((r = zd_vm_uffd_wp(vm, start, end - start)) < 0)
					return r;
				calls++;
			}
			start = pfn, end = pfn + 1, open = true;
		}
	}
	if (open) {
		if ((r = zd_vm_uffd_wp(vm, start, end - start)) < 0)
			return r;
		calls++;
	}
	return (int64_t)calls;
}
