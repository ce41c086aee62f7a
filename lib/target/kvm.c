/* SPDX-License-Identifier: MIT */
/*
 * kvm:PATH — a VM run by zd-vm on this host, PATH being its control socket
 * (vm/vmctl.h, zd-vm(1)).
 *
 * Tracker role: connect, INFO (which hands over guest RAM's memfd and the
 * shared dirty-bitmap area), map both, then one control request per step
 * of the round. Harvest and re-arm move bitmaps through the shared area,
 * page contents are copied straight from the read-only RAM mapping.
 *
 * Attach role (zd-swap, zd-send): only the memfd is needed. It comes from
 * the tracker's feedback socket (ZD_FB_MEMORY), since a downstream stage
 * knows the tracker, not zd-vm.
 *
 * The fbserver thread may call release_output while the tracker's loop
 * runs, so every request/reply pair holds mu.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "vm/guest/abi.h"
#include "vm/vmctl_client.h"
#include "zd/fb.h"
#include "zd/target.h"
#include "zd/util.h"

/* A shared area zd-vm hands over (COPY_INFO, PRECOPY_INFO), mapped
 * read-only by map_vm_area; none: this zd-vm has none (an older one, or
 * no guard), not asked again. */
struct vm_area {
	const uint8_t *map;
	uint64_t pages;
	bool none;
};

static void unmap_vm_area(const struct zd_target *t, struct vm_area *a)
{
	if (a->map)
		munmap((void *)a->map, a->pages * t->page_size);
	a->map = NULL;
}

struct kvm_priv {
	int fd;				/* control socket, -1 in the attach role */
	int memfd;			/* kept for export_fds */
	int uffd;			/* -1 until zd-vm registers one */
	const uint8_t *ram;
	size_t ram_bytes;
	uint64_t *bm;			/* bitmap area: out, then in */
	size_t bm_bytes;
	uint64_t nwords;
	uint64_t ram_base;		/* guest RAM in zd-vm's address space */
	struct zd_vm_info info;
	bool gone;
	char path[108];			/* the control socket, for vm_gone() */
	/* zd-vm's block device (DISK_INFO): its write log mapped read-only
	 * and the disk file, read only (NODATA entries, whole-disk copies). */
	uint64_t disk_size;
	int diskfd;
	const uint8_t *dlog;
	size_t dlog_bytes;
	/* CHECKPOINT's copy area (COPY_INFO) and PRECOPY's (PRECOPY_INFO);
	 * none: this zd-vm has none (an older one, or no guard). */
	struct vm_area copy, pre;
	pthread_mutex_t mu;
};

static struct kvm_priv *priv_new(void)
{
	struct kvm_priv *p = zd_xcalloc(1, sizeof(*p));

	p->fd = p->memfd = p->uffd = p->diskfd = -1;
	pthread_mutex_init(&p->mu, NULL);
	return p;
}

static void set_err(struct zd_target *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct zd_target *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
}

/*
 * zd-vm closed its control socket: did it exit or die? An exiting zd-vm
 * unlinks the socket before it closes its clients; one that was killed
 * (SIGKILL, a crash, the OOM killer) leaves it behind, refusing
 * connections. Only a death is a loss the backup should take over from:
 * a VM stopped on purpose must not come back on the backup. A dying
 * zd-vm may close our connection before its listening socket, which
 * still queues a connect: ask again for up to 500 ms. A socket that
 * keeps taking connections is a live zd-vm (a new one), not ours.
 */
static void vm_gone(struct zd_target *t)
{
	struct kvm_priv *p = t->priv;
	struct stat st;

	p->gone = true;
	for (int i = 0; i < 50; i++) {
		int fd;

		if (lstat(p->path, &st) < 0 || !S_ISSOCK(st.st_mode))
			break;
		fd = zd_vmctl_connect(p->path);
		if (fd < 0 && errno == ECONNREFUSED) {
			t->vm_died = true;
			set_err(t, "zd-vm died (its control socket %s is left behind): the VM is lost", p->path);
			return;
		}
		if (fd < 0)
			break;
		close(fd);
		usleep(10000);
	}
	set_err(t, "zd-vm closed its control socket (the VM exited)");
}

/* One request; -1 with t->err on any failure (transport or status). */
static int call2(struct zd_target *t, uint32_t op, uint32_t flags, uint64_t arg0, uint64_t arg1,
		 struct zd_vmctl_rep *rep, void *payload, size_t cap, int *fds, int *nfds)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_req req = { .op = op, .flags = flags, .arg0 = arg0, .arg1 = arg1 };
	int r;

	if (p->fd < 0) {
		set_err(t, "not connected to zd-vm");
		return -1;
	}
	if (p->gone) {
		if (!t->vm_died)
			set_err(t, "zd-vm has gone away (the VM exited)");
		return -1;
	}
	pthread_mutex_lock(&p->mu);
	r = zd_vmctl_call(p->fd, &req, rep, payload, cap, fds, nfds);
	pthread_mutex_unlock(&p->mu);
	if (r < 0) {
		if (errno == EPIPE || errno == ECONNRESET) {
			vm_gone(t);
		} else {
			set_err(t, "control socket: %s", strerror(errno));
		}
		return -1;
	}
	if (rep->status < 0) {
		set_err(t, "zd-vm refused: %s", strerror(-rep->status));
		return -1;
	}
	return 0;
}

static int call(struct zd_target *t, uint32_t op, uint32_t flags, uint64_t arg0,
		struct zd_vmctl_rep *rep, void *payload, size_t cap, int *fds, int *nfds)
{
	return call2(t, op, flags, arg0, 0, rep, payload, cap, fds, nfds);
}

static int map_ram(struct zd_target *t, int memfd)
{
	struct kvm_priv *p = t->priv;
	struct stat st;
	void *m;

	if (fstat(memfd, &st) < 0 || st.st_size <= 0) {
		set_err(t, "guest RAM descriptor: %s", st.st_size <= 0 ? "empty" : strerror(errno));
		return -1;
	}
	if (t->page_count && (uint64_t)st.st_size < t->page_count * t->page_size) {
		set_err(t, "guest RAM is %lld bytes, the stream says %llu pages",
			(long long)st.st_size, (unsigned long long)t->page_count);
		return -1;
	}
	/* Read-only: a reader must never change the guest it protects. */
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, memfd, 0);
	if (m == MAP_FAILED) {
		set_err(t, "mmap guest RAM: %s", strerror(errno));
		return -1;
	}
	if (p->ram)
		munmap((void *)p->ram, p->ram_bytes);
	p->ram = m;
	p->ram_bytes = (size_t)st.st_size;
	return 0;
}

/* The block device, if zd-vm has one (a zd-vm without disks refuses
 * DISK_INFO: no disk either). */
static int open_disk(struct zd_target *t)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_req req = { .op = ZD_VMCTL_DISK_INFO };
	struct zd_vmctl_rep rep;
	int fds[4], nfds = 0;
	void *m;

	if (zd_vmctl_call(p->fd, &req, &rep, NULL, 0, fds, &nfds) < 0) {
		set_err(t, "control socket: %s", strerror(errno));
		return -1;
	}
	if (rep.status < 0 || rep.v0 == 0) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return 0;
	}
	if (nfds != 2 || rep.v1 < ZD_DLOG_START) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		set_err(t, "DISK_INFO reply malformed (%d descriptors)", nfds);
		return -1;
	}
	m = mmap(NULL, (size_t)rep.v1, PROT_READ, MAP_SHARED, fds[0], 0);
	close(fds[0]);
	p->diskfd = fds[1];
	if (m == MAP_FAILED) {
		set_err(t, "mmap disk write log: %s", strerror(errno));
		return -1;
	}
	p->dlog = m;
	p->dlog_bytes = (size_t)rep.v1;
	p->disk_size = rep.v0;
	return 0;
}

static void kvm_close(struct zd_target *t)
{
	struct kvm_priv *p = t->priv;

	if (!p)
		return;
	if (p->ram)
		munmap((void *)p->ram, p->ram_bytes);
	if (p->bm)
		munmap(p->bm, p->bm_bytes);
	if (p->fd >= 0)
		close(p->fd);
	if (p->memfd >= 0)
		close(p->memfd);
	if (p->uffd >= 0)
		close(p->uffd);
	if (p->dlog)
		munmap((void *)p->dlog, p->dlog_bytes);
	if (p->diskfd >= 0)
		close(p->diskfd);
	unmap_vm_area(t, &p->copy);
	unmap_vm_area(t, &p->pre);
	pthread_mutex_destroy(&p->mu);
	free(p);
	t->priv = NULL;
}

static int kvm_open(struct zd_target *t, const char *args)
{
	struct kvm_priv *p = priv_new();
	struct zd_vmctl_rep rep;
	int fds[4], nfds = 0;
	void *m;

	t->priv = p;
	if (!*args) {
		set_err(t, "want kvm:PATH, the control socket of zd-vm");
		goto fail;
	}
	snprintf(p->path, sizeof(p->path), "%s", args);
	p->fd = zd_vmctl_connect(args);
	if (p->fd < 0) {
		set_err(t, "cannot connect: %s", strerror(errno));
		goto fail;
	}
	if (call(t, ZD_VMCTL_INFO, 0, 0, &rep, &p->info, sizeof(p->info), fds, &nfds) < 0)
		goto fail;
	if (nfds < 2 || rep.len < sizeof(p->info) || !p->info.page_size ||
	    p->info.mem_bytes % p->info.page_size) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		set_err(t, "INFO reply malformed (%d descriptors, %u bytes)", nfds, rep.len);
		goto fail;
	}
	p->memfd = fds[0];
	if (nfds > 2)
		p->uffd = fds[2];
	for (int i = 3; i < nfds; i++)
		close(fds[i]);
	t->page_size = p->info.page_size;
	t->page_count = p->info.mem_bytes / p->info.page_size;
	p->ram_base = p->info.ram_base;
	p->nwords = p->info.bitmap_words;
	p->bm_bytes = (2 * p->nwords * 8 + 4095) & ~(size_t)4095;
	m = mmap(NULL, p->bm_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	close(fds[1]);
	if (m == MAP_FAILED) {
		set_err(t, "mmap dirty bitmap area: %s", strerror(errno));
		goto fail;
	}
	p->bm = m;
	if (p->nwords * 64 < t->page_count) {
		set_err(t, "bitmap area of %llu words cannot hold %llu pages",
			(unsigned long long)p->nwords, (unsigned long long)t->page_count);
		goto fail;
	}
	if (map_ram(t, p->memfd) < 0 || open_disk(t) < 0)
		goto fail;
	zd_debug("kvm:%s: %llu pages of %u bytes, %s", args, (unsigned long long)t->page_count,
		 t->page_size, (p->info.flags & ZD_VM_F_PVM) ? "kvm_pvm" : "hardware KVM");
	return 0;
fail:
	kvm_close(t);
	return -1;
}

static int kvm_run_until(struct zd_target *t, uint64_t deadline_ns)
{
	struct kvm_priv *p = t->priv;

	/* The VM just runs. Watch the control socket meanwhile: zd-vm
	 * exiting (the guest died) shows as a hang-up, and the round should
	 * fail now rather than at the next pause. */
	for (;;) {
		uint64_t now = zd_now_ns();
		struct pollfd pfd = { .fd = p->fd, .events = POLLRDHUP };
		struct timespec ts;
		int r;

		if (now >= deadline_ns)
			return 0;
		ts.tv_sec = (time_t)((deadline_ns - now) / 1000000000u);
		ts.tv_nsec = (long)((deadline_ns - now) % 1000000000u);
		r = ppoll(&pfd, 1, &ts, NULL);
		if (r < 0 && errno != EINTR) {
			set_err(t, "poll: %s", strerror(errno));
			return -1;
		}
		if (r > 0 && (pfd.revents & (POLLHUP | POLLRDHUP | POLLERR))) {
			vm_gone(t);
			return -1;
		}
	}
}

static int kvm_pause(struct zd_target *t, uint64_t epoch)
{
	struct zd_vmctl_rep rep;

	if (call(t, ZD_VMCTL_PAUSE, 0, epoch, &rep, NULL, 0, NULL, NULL) < 0)
		return -1;
	t->vm_parked_ns = rep.v1;
	return 0;
}

static int kvm_resume(struct zd_target *t)
{
	struct zd_vmctl_rep rep;

	if (call(t, ZD_VMCTL_RESUME, 0, 0, &rep, NULL, 0, NULL, NULL) < 0)
		return -1;
	t->vm_resumed_ns = rep.v1;
	return 0;
}

static int kvm_harvest(struct zd_target *t, struct zd_pageset *dirty)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_rep rep;

	if (call(t, ZD_VMCTL_DIRTY_GET, 0, 0, &rep, NULL, 0, NULL, NULL) < 0)
		return -1;
	zd_pageset_from_bitmap(dirty, p->bm, t->page_count, 0);
	if (zd_pageset_count(dirty) != rep.v0) {
		set_err(t, "dirty bitmap holds %llu pages, zd-vm counted %llu",
			(unsigned long long)zd_pageset_count(dirty), (unsigned long long)rep.v0);
		return -1;
	}
	return 0;
}

static int kvm_rearm(struct zd_target *t, const struct zd_pageset *set)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_rep rep;

	if (!set)
		return call(t, ZD_VMCTL_DIRTY_CLEAR, ZD_VMCTL_F_ALL, 0, &rep, NULL, 0, NULL, NULL);
	zd_pageset_to_bitmap(set, p->bm + p->nwords, p->nwords * 64, 0);
	return call(t, ZD_VMCTL_DIRTY_CLEAR, 0, 0, &rep, NULL, 0, NULL, NULL);
}

static int kvm_read_pages(struct zd_target *t, uint64_t epoch, const struct zd_pageset *set,
			  uint8_t *buf)
{
	struct kvm_priv *p = t->priv;
	size_t ps = t->page_size;

	(void)epoch;
	if (!p->ram) {
		set_err(t, "guest RAM is not mapped");
		return -1;
	}
	for (size_t i = 0; i < set->n; i++) {
		uint64_t first = set->r[i].first, count = set->r[i].count;

		if ((first + count) * ps > p->ram_bytes) {
			set_err(t, "pfn %llu beyond guest RAM",
				(unsigned long long)(first + count - 1));
			return -1;
		}
		memcpy(buf, p->ram + first * ps, count * ps);
		buf += count * ps;
	}
	return 0;
}

static int kvm_get_state(struct zd_target *t, uint32_t *kind, uint8_t **data, uint32_t *len)
{
	uint8_t *buf = zd_xmalloc(ZD_VMCTL_MAX_MSG);
	struct zd_vmctl_rep rep;

	if (call(t, ZD_VMCTL_STATE, 0, 0, &rep, buf, ZD_VMCTL_MAX_MSG, NULL, NULL) < 0) {
		free(buf);
		return -1;
	}
	*kind = 1;
	*len = rep.len;
	*data = zd_xrealloc(buf, rep.len ? rep.len : 1);
	return 0;
}

/* Bytes [off, off + len) of the disk as they are now (paused: as at the
 * pause), to fn in pieces of at most ZD_DISK_PER_RECORD. */
static int disk_read(struct zd_target *t, uint64_t off, uint64_t len,
		     int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len), void *arg)
{
	struct kvm_priv *p = t->priv;
	uint8_t *buf = zd_xmalloc(ZD_DISK_PER_RECORD);
	int rc = 0;

	while (len && rc == 0) {
		uint32_t n = (uint32_t)ZD_MIN(len, (uint64_t)ZD_DISK_PER_RECORD);

		if (pread(p->diskfd, buf, n, (off_t)off) != (ssize_t)n) {
			set_err(t, "disk: read at %llu: %s", (unsigned long long)off, strerror(errno));
			rc = -1;
			break;
		}
		rc = fn(arg, off, buf, n);
		off += n;
		len -= n;
	}
	free(buf);
	return rc;
}

static int kvm_disk_writes(struct zd_target *t, bool full, uint64_t *size,
			   int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len), void *arg)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_rep rep;
	uint64_t at = 0;

	*size = p->disk_size;
	if (!p->disk_size || !fn)
		return 0;
	/* Also while full: it says the guest is paused. */
	if (call(t, ZD_VMCTL_DISK_LOG, 0, 0, &rep, NULL, 0, NULL, NULL) < 0)
		return -1;
	if (full || (rep.v2 & ZD_DLOG_ALL))
		return disk_read(t, 0, p->disk_size, fn, arg);
	if (rep.v0 > p->dlog_bytes - ZD_DLOG_START) {
		set_err(t, "disk write log: %llu bytes used of %zu", (unsigned long long)rep.v0, p->dlog_bytes);
		return -1;
	}
	/* zd-vm wrote the log before it parked the vCPU; the reply came after. */
	while (at < rep.v0) {
		struct zd_dlog_ent e;
		const uint8_t *q = p->dlog + ZD_DLOG_START + at;
		int rc;

		if (rep.v0 - at < sizeof(e))
			goto bad;
		memcpy(&e, q, sizeof(e));
		if (!e.len || e.offset > p->disk_size || e.len > p->disk_size - e.offset)
			goto bad;
		at += sizeof(e);
		if (e.flags & ZD_DLOG_NODATA) {
			rc = disk_read(t, e.offset, e.len, fn, arg);
		} else {
			if (rep.v0 - at < e.len)
				goto bad;
			rc = fn(arg, e.offset, q + sizeof(e), e.len);
			at += ((uint64_t)e.len + 7) & ~7ull;
		}
		if (rc < 0)
			return -1;
	}
	return 0;
bad:
	set_err(t, "disk write log: bad entry at byte %llu", (unsigned long long)at);
	return -1;
}

static int hash_chunk(void *arg, uint64_t off, const uint8_t *data, uint32_t len)
{
	(void)off;
	zd_hash64_update(arg, data, len);
	return 0;
}

static int kvm_disksum(struct zd_target *t, uint64_t *sum, uint64_t *size)
{
	struct kvm_priv *p = t->priv;
	XXH3_state_t *h;
	int rc;

	*size = p->disk_size;
	if (!p->disk_size)
		return 0;
	h = XXH3_createState();
	XXH3_64bits_reset(h);
	rc = disk_read(t, 0, p->disk_size, hash_chunk, h);
	*sum = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return rc;
}

static int kvm_memsum(struct zd_target *t, uint64_t *sum)
{
	struct zd_vmctl_rep rep;

	if (call(t, ZD_VMCTL_MEMSUM, 0, 0, &rep, NULL, 0, NULL, NULL) < 0)
		return -1;
	*sum = rep.v0;
	return 0;
}

/* zd-vm holds the guest's answers until the COMMIT of their epoch. */
static int kvm_release_output(struct zd_target *t, uint64_t epoch)
{
	struct zd_vmctl_rep rep;

	return call(t, ZD_VMCTL_COMMIT, 0, epoch, &rep, NULL, 0, NULL, NULL);
}

/* zddspt's T1: write-protect the frozen set (VM paused). zd-vm coalesces
 * the bitmap into ranges; zd-swap un-protects as it drains. */
static int kvm_protect(struct zd_target *t, const struct zd_pageset *set)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_rep rep;

	/* Without zd-vm's uffd the frozen set is copied while paused. Whether
	 * to protect at all is zd-track's choice (mode_zddspt.c, --no-guard). */
	if (p->uffd < 0 || !(p->info.flags & ZD_VM_F_UFFD_WP))
		return 1;
	zd_pageset_to_bitmap(set, p->bm + p->nwords, p->nwords * 64, 0);
	return call(t, ZD_VMCTL_PROTECT, 0, 0, &rep, NULL, 0, NULL, NULL);
}

/* The area that request op hands over, mapped once: 0 mapped, 1 none
 * (or under min_pages, at least 1), -1 failed (t->err). */
static int map_vm_area(struct zd_target *t, uint32_t op, uint64_t min_pages, const char *what,
		       struct vm_area *a)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_req req = { .op = op };
	struct zd_vmctl_rep rep;
	int fds[4], nfds = 0;
	void *m;

	if (a->map)
		return 0;
	if (a->none)
		return 1;
	pthread_mutex_lock(&p->mu);
	if (zd_vmctl_call(p->fd, &req, &rep, NULL, 0, fds, &nfds) < 0) {
		pthread_mutex_unlock(&p->mu);
		set_err(t, "control socket: %s", strerror(errno));
		return -1;
	}
	pthread_mutex_unlock(&p->mu);
	if (rep.status < 0 || nfds != 1 || rep.v0 < min_pages) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		a->none = true;	/* an older zd-vm, or one without the feature */
		return 1;
	}
	m = mmap(NULL, rep.v0 * t->page_size, PROT_READ, MAP_SHARED, fds[0], 0);
	close(fds[0]);
	if (m == MAP_FAILED) {
		set_err(t, "mmap %s: %s", what, strerror(errno));
		return -1;
	}
	a->map = m;
	a->pages = rep.v0;
	return 0;
}

static int kvm_precopy(struct zd_target *t, const struct zd_pageset *set, const struct zd_pageset *last,
		       const uint8_t **data)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_rep rep;
	bool hint = last && !zd_pageset_empty(last);
	int r;

	if ((r = map_vm_area(t, ZD_VMCTL_PRECOPY_INFO, t->page_count, "pre-copy area", &p->pre)) != 0)
		return r;
	zd_pageset_to_bitmap(set, p->bm + p->nwords, p->nwords * 64, 0);
	if (hint)
		zd_pageset_to_bitmap(last, p->bm, p->nwords * 64, 0);
	if (call(t, ZD_VMCTL_PRECOPY, hint ? ZD_VMCTL_F_HINT : 0, 0, &rep, NULL, 0, NULL, NULL) < 0)
		return -1;
	if (rep.v0 != zd_pageset_count(set)) {
		set_err(t, "PRECOPY copied %llu pages of %llu", (unsigned long long)rep.v0,
			(unsigned long long)zd_pageset_count(set));
		return -1;
	}
	*data = p->pre.map;
	return 0;
}

/* zddspt's pause in one CHECKPOINT request (vmctl.h). Not with a disk:
 * its write log is read while paused by DISK_LOG requests. */
static int kvm_checkpoint(struct zd_target *t, struct zd_target_ckpt *ck)
{
	struct kvm_priv *p = t->priv;
	struct zd_vmctl_rep rep = { 0 };
	struct zd_vmctl_ckpt out;
	uint8_t *buf;
	int r;

	if (p->uffd < 0 || !(p->info.flags & ZD_VM_F_UFFD_WP) || p->disk_size)
		return 1;
	if ((r = map_vm_area(t, ZD_VMCTL_COPY_INFO, 1, "copy area", &p->copy)) != 0)
		return r;
	if (ck->hint)
		zd_pageset_to_bitmap(ck->hint, p->bm + p->nwords, p->nwords * 64, 0);
	buf = zd_xmalloc(ZD_VMCTL_MAX_MSG);
	if (call2(t, ZD_VMCTL_CHECKPOINT, (ck->hint ? ZD_VMCTL_F_HINT : 0) | (ck->memsum ? ZD_VMCTL_F_MEMSUM : 0),
		 ck->epoch, ZD_CKPT_POLICY(ck->copy_max, ck->protect_run), &rep, buf, ZD_VMCTL_MAX_MSG,
		 NULL, NULL) < 0) {
		free(buf);
		/* Refused before it paused: nothing was done. */
		if (rep.status != -EOPNOTSUPP)
			return -1;
		p->copy.none = true;
		return 1;
	}
	if (rep.len < sizeof(out)) {
		free(buf);
		set_err(t, "CHECKPOINT reply of %u bytes", rep.len);
		return -1;
	}
	memcpy(&out, buf, sizeof(out));
	if (out.state_len != rep.len - sizeof(out) || out.copied > p->copy.pages) {
		free(buf);
		set_err(t, "CHECKPOINT reply malformed (%u bytes, state %u, %llu copied)", rep.len,
			out.state_len, (unsigned long long)out.copied);
		return -1;
	}
	memmove(buf, buf + sizeof(out), out.state_len);
	ck->state = zd_xrealloc(buf, out.state_len ? out.state_len : 1);
	ck->state_len = out.state_len;
	zd_pageset_from_bitmap(ck->frozen, p->bm, t->page_count, 0);
	zd_pageset_from_bitmap(ck->copied, p->bm + p->nwords, t->page_count, 0);
	if (zd_pageset_count(ck->frozen) != out.dirty || zd_pageset_count(ck->copied) != out.copied) {
		set_err(t, "CHECKPOINT: bitmaps hold %llu dirty and %llu copied pages, zd-vm counted %llu and %llu",
			(unsigned long long)zd_pageset_count(ck->frozen),
			(unsigned long long)zd_pageset_count(ck->copied), (unsigned long long)out.dirty,
			(unsigned long long)out.copied);
		return -1;
	}
	ck->copy_data = p->copy.map;
	ck->memsum_value = out.memsum;
	t->vm_parked_ns = out.paused_at_ns;
	t->vm_resumed_ns = out.resumed_ns;
	ck->steps = (struct zd_ckpt_steps){
		.protect_ns = out.protect_ns, .protect_calls = out.protect_calls, .copy_ns = out.copy_ns,
		.stop_ns = out.stop_ns, .harvest_ns = out.harvest_ns, .rearm_ns = out.rearm_ns,
		.state_ns = out.state_ns,
	};
	return 0;
}

static int kvm_guard(struct zd_target *t, int *uffd, uint64_t *base, const uint8_t **ram)
{
	struct kvm_priv *p = t->priv;

	if (p->uffd < 0 || !p->ram)
		return -1;
	*uffd = p->uffd;
	*base = p->ram_base;
	*ram = p->ram;
	return 0;
}

/* The descriptors stay the target's: the caller passes them on and must
 * not close them. */
static int kvm_export_fds(struct zd_target *t, int *fds, uint64_t *base)
{
	struct kvm_priv *p = t->priv;
	int n = 0;

	if (p->memfd < 0)
		return 0;
	fds[n++] = p->memfd;
	if (p->uffd >= 0)
		fds[n++] = p->uffd;
	*base = p->ram_base;
	return n;
}

/* Attach role: fds[0] is guest RAM, fds[1] the uffd if any. The caller
 * closes its copies; we keep a mapping and a dup. */
static int kvm_import_fds(struct zd_target *t, const int *fds, int nfds, uint64_t base)
{
	struct kvm_priv *p = t->priv;

	if (nfds < 1) {
		set_err(t, "no guest RAM descriptor received");
		return -1;
	}
	if (map_ram(t, fds[0]) < 0)
		return -1;
	p->ram_base = base;
	if (nfds > 1 && p->uffd < 0) {
		p->uffd = fcntl(fds[1], F_DUPFD_CLOEXEC, 0);
		if (p->uffd < 0) {
			set_err(t, "dup userfaultfd: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}

static int kvm_attach(struct zd_target *t, const struct zd_rec_header *hdr)
{
	struct zd_fb_msg m = { .op = ZD_FB_MEMORY };
	int fd, fds[4], nfds = 0, rc = -1;

	t->priv = priv_new();
	if (!hdr->control || !*hdr->control) {
		set_err(t, "the stream names no control socket: guest memory is out of reach");
		goto out;
	}
	fd = zd_fb_connect(hdr->control, ZD_ROLE_OTHER);
	if (fd < 0) {
		set_err(t, "%s: cannot connect: %s", hdr->control, strerror(errno));
		goto out;
	}
	if (zd_fb_send(fd, &m, NULL, NULL, 0) < 0) {
		set_err(t, "%s: MEMORY request: %s", hdr->control, strerror(errno));
		close(fd);
		goto out;
	}
	/* Skip anything else the tracker may send before the reply. */
	do {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		nfds = 0;
		memset(&m, 0, sizeof(m));
		if (zd_fb_recv(fd, &m, NULL, 0, fds, &nfds) < 0 || m.op == 0) {
			set_err(t, "%s: no reply to MEMORY", hdr->control);
			close(fd);
			goto out;
		}
	} while (m.op != ZD_FB_MEMORY && m.op != ZD_FB_ERROR);
	close(fd);
	if (m.op == ZD_FB_ERROR)
		set_err(t, "%s: MEMORY refused: %s", hdr->control, strerror((int)m.a));
	else
		rc = kvm_import_fds(t, fds, nfds, m.a);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
out:
	if (rc < 0) {
		char err[sizeof(t->err)];

		memcpy(err, t->err, sizeof(err));
		kvm_close(t);
		memcpy(t->err, err, sizeof(err));
	}
	return rc;
}

/* zd-vm runs only its built-in guest, which keeps these counters in its
 * service page (zd-vm's STATS reads the same page); read from our mapping
 * while the vCPU is stopped, so no request to zd-vm and nothing added to
 * the pause. A guest restored from an older replica has zeros there. */
static int kvm_guest_clock(struct zd_target *t, struct zd_guest_clock *gc)
{
	struct kvm_priv *p = t->priv;
	const volatile struct zdg_svc *s;
	const volatile struct zdg_params *pa;
	uint64_t hz;

	if (!p->ram || p->ram_bytes < ZDG_MIN_MEM)
		return -1;
	s = (const volatile struct zdg_svc *)(p->ram + ZDG_SVC_GPA);
	pa = (const volatile struct zdg_params *)(p->ram + ZDG_PARAM_GPA);
	hz = pa->tsc_hz;
	if (pa->abi != ZDG_ABI_VERSION || !hz)
		return -1;
#define NS(ticks) ((uint64_t)((double)(ticks) * 1e9 / (double)hz))
	gc->lost_ns = NS(s->lost_ticks);
	gc->lost_n = s->lost_n;
	gc->stall_ns = NS(s->stall_ticks);
	gc->stall_n = s->stall_n;
	gc->wfault_ns = NS(s->wfault_ticks);
	gc->wfault_n = s->wfault_n;
#undef NS
	return 0;
}

const struct zd_target_ops zd_target_kvm = {
	.scheme = "kvm",
	.usage = "kvm:PATH  a VM run by zd-vm, PATH being its --control socket",
	.open = kvm_open,
	.attach = kvm_attach,
	.close = kvm_close,
	.run_until = kvm_run_until,
	.pause = kvm_pause,
	.resume = kvm_resume,
	.harvest = kvm_harvest,
	.rearm = kvm_rearm,
	.precopy = kvm_precopy,
	.read_pages = kvm_read_pages,
	.get_state = kvm_get_state,
	.disk_writes = kvm_disk_writes,
	.disksum = kvm_disksum,
	.memsum = kvm_memsum,
	.release_output = kvm_release_output,
	/* With zd-vm's uffd guard the frozen set is write-protected at T1
	 * and drained by zd-swap while the VM runs; without it (.protect
	 * returns 1) zddspt copies it while paused, as on xen:. */
	.protect = kvm_protect,
	.checkpoint = kvm_checkpoint,
	.export_fds = kvm_export_fds,
	.import_fds = kvm_import_fds,
	.guard = kvm_guard,
	.guest_clock = kvm_guest_clock,
};
