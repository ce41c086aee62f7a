/* SPDX-License-Identifier: MIT */
/*
 * zd-vm's block device: --disk FILE, written by the guest one
 * request at a time through ZDG_MMIO_DISK (vm/guest/abi.h), and the
 * per-epoch write log the tracker collects at each pause (vmctl.h).
 *
 * Which epoch a write belongs to: the vCPU thread does the whole write
 * (pwrite, log append, completion in guest memory) inside one MMIO exit,
 * and a pause waits for the vCPU thread to park between exits. So a write
 * the guest issued before pause N is on the disk and in the log when
 * pause N returns, and one issued after it waits for the resume. The log
 * starts over at RESUME: it then holds exactly the writes of the epoch
 * the next pause closes, with their data as the guest wrote them (a later
 * write to the same block appends, it does not change an earlier entry).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/stream.h"
#include "zd/util.h"

int zd_vm_disk_open(struct zd_vm *vm, char *msg, size_t msglen)
{
	const char *path = vm->cfg.disk_path;
	uint64_t logb = vm->cfg.disk_log_bytes ? vm->cfg.disk_log_bytes : ZD_VM_DISK_LOG_DEFAULT;
	struct stat st;
	void *m;

	if (!path)
		return 0;
	vm->disk_fd = open(path, O_RDWR | O_CLOEXEC);
	if (vm->disk_fd < 0 || fstat(vm->disk_fd, &st) < 0) {
		snprintf(msg, msglen, "--disk %s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)ZDG_DISK_BLOCK ||
	    st.st_size % (off_t)ZDG_DISK_BLOCK || (uint64_t)st.st_size > ZD_DISK_MAX) {
		snprintf(msg, msglen, "--disk %s: want a regular file of a multiple of 4K bytes, "
			 "at least 4K (it has %jd)", path, (intmax_t)st.st_size);
		return -1;
	}
	vm->disk_bytes = (uint64_t)st.st_size;
	vm->dlog_fd = memfd_create("zd-vm-disk-log", MFD_CLOEXEC);
	if (vm->dlog_fd < 0 || ftruncate(vm->dlog_fd, (off_t)logb) < 0) {
		snprintf(msg, msglen, "disk write log: %s", strerror(errno));
		return -1;
	}
	m = mmap(NULL, (size_t)logb, PROT_READ | PROT_WRITE, MAP_SHARED, vm->dlog_fd, 0);
	if (m == MAP_FAILED) {
		snprintf(msg, msglen, "disk write log: mmap: %s", strerror(errno));
		return -1;
	}
	vm->dlog = m;
	vm->dlog_bytes = logb;
	zd_debug("disk %s: %" PRIu64 " bytes, write log %" PRIu64 " bytes", path, vm->disk_bytes, logb);
	return 0;
}

void zd_vm_disk_close(struct zd_vm *vm)
{
	if (vm->dlog)
		munmap(vm->dlog, (size_t)vm->dlog_bytes);
	vm->dlog = NULL;
	if (vm->dlog_fd >= 0)
		close(vm->dlog_fd);
	if (vm->disk_fd >= 0)
		close(vm->disk_fd);
	vm->dlog_fd = vm->disk_fd = -1;
}

void zd_vm_disk_log_reset(struct zd_vm *vm)
{
	if (vm->dlog)
		memset(vm->dlog, 0, sizeof(struct zd_dlog_hdr));
}

static void log_append(struct zd_vm *vm, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct zd_dlog_hdr *h = (struct zd_dlog_hdr *)(void *)vm->dlog;
	uint64_t cap = vm->dlog_bytes - ZD_DLOG_START;
	uint64_t need = sizeof(struct zd_dlog_ent) + (((uint64_t)len + 7) & ~7ull);
	struct zd_dlog_ent e = { .offset = off, .len = len };
	uint8_t *at = vm->dlog + ZD_DLOG_START + h->used;

	h->writes++;
	if (h->flags & ZD_DLOG_ALL)
		return;
	if (h->used + need <= cap) {
		memcpy(at, &e, sizeof(e));
		memcpy(at + sizeof(e), data, len);
		h->used += need;
		return;
	}
	vm->n_disk_overflows++;
	if (h->used + sizeof(e) <= cap) {
		e.flags = ZD_DLOG_NODATA;
		memcpy(at, &e, sizeof(e));
		h->used += sizeof(e);
		return;
	}
	h->flags |= ZD_DLOG_ALL;
}

/* vCPU thread, inside the MMIO exit. The request page is guest memory the
 * guest just wrote; zd-vm's completion there is marked dirty by hand (KVM
 * does not log the monitor's own writes). */
void zd_vm_disk_mmio(struct zd_vm *vm)
{
	struct zdg_disk *d = (struct zdg_disk *)(void *)(vm->ram + ZDG_DISK_GPA);
	uint64_t off = d->offset, len = d->len, buf = d->buf_gpa, seq = d->seq;
	uint64_t status = 0;

	if (vm->disk_fd < 0)
		status = ENODEV;
	else if (len == 0 || len > ZD_DISK_PER_RECORD || off > vm->disk_bytes ||
		 len > vm->disk_bytes - off || buf > vm->mem_bytes || len > vm->mem_bytes - buf)
		status = EINVAL;
	else if ((errno = 0, pwrite(vm->disk_fd, vm->ram + buf, (size_t)len, (off_t)off)) != (ssize_t)len)
		status = errno ? (uint64_t)errno : EIO;	/* 0: a short write */
	if (!status) {
		log_append(vm, off, vm->ram + buf, (uint32_t)len);
		vm->n_disk_writes++;
		vm->n_disk_bytes += len;
		d->done = seq;
	}
	d->status = status;
	zd_vm_mark_dirty(vm, ZDG_DISK_GPA, sizeof(*d));
}

int zd_vm_disk_restore_check(struct zd_vm *vm, char *msg, size_t msglen)
{
	const struct zdg_params *p = (const struct zdg_params *)(vm->ram + ZDG_PARAM_GPA);
	const struct zdg_disk *d = (const struct zdg_disk *)(vm->ram + ZDG_DISK_GPA);
	uint64_t newest = 0, blk[2];

	if (p->disk_bytes != vm->disk_bytes) {
		snprintf(msg, msglen, "the guest has a disk of %" PRIu64 " bytes, the replica's disk.img %" PRIu64,
			 p->disk_bytes, vm->disk_bytes);
		return ZD_EXIT_DATA;
	}
	if (vm->disk_fd < 0 || !p->disk_rate)
		return 0;
	for (uint64_t off = 0; off < vm->disk_bytes; off += ZDG_DISK_BLOCK) {
		if (pread(vm->disk_fd, blk, sizeof(blk), (off_t)off) != (ssize_t)sizeof(blk)) {
			snprintf(msg, msglen, "%s: read: %s", vm->cfg.disk_path, strerror(errno));
			return ZD_EXIT_FAIL;
		}
		if (blk[0] == ZDG_DISK_MAGIC && blk[1] > newest)
			newest = blk[1];
	}
	zd_warnx("restore: disk: newest block write %" PRIu64 ", the guest's memory counts %" PRIu64 ": %s",
		 newest, d->done, newest == d->done ? "consistent" : "INCONSISTENT");
	return 0;
}
