/* SPDX-License-Identifier: MIT */
/*
 * The control socket (zd/vmctl.h, documented in zd-vm(1)): one
 * SOCK_SEQPACKET request, one reply, served by the main thread. Guest RAM
 * and the dirty bitmap area go to the client as file descriptors with
 * INFO, so no page contents or bitmaps ever travel in a message.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

int zd_vm_ctl_open(struct zd_vm *vm, char *msg, size_t msglen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *path = vm->cfg.control_path;
	struct stat st;
	int fd, cerr;

	vm->ctl_lfd = -1;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(msg, msglen, "%s: control socket path too long", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(msg, msglen, "%s: %s", path, strerror(errno));
		return -1;
	}
	/* A socket file left by a dead zd-vm is replaced; a live one is not. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		close(fd);
		snprintf(msg, msglen, "%s: another zd-vm is serving this control socket", path);
		return -1;
	}
	cerr = errno;
	close(fd);
	if (cerr == ECONNREFUSED && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	/* Only this user (and root) may drive the VM or map its memory. */
	mode_t old = umask(0077);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		umask(old);
		snprintf(msg, msglen, "%s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	umask(old);
	vm->ctl_lfd = fd;
	vm->ctl_bound = true;
	return 0;
}

void zd_vm_ctl_close(struct zd_vm *vm)
{
	zd_vm_precopy_stop(vm);
	/* The socket file goes first: a tracker that sees its connection
	 * close finds it gone and knows the VM exited, not died (a killed
	 * zd-vm leaves it behind; see the kvm: target's vm_gone). */
	if (vm->ctl_bound)
		unlink(vm->cfg.control_path);
	vm->ctl_bound = false;
	for (int i = 0; i < vm->ctl_ncl; i++)
		close(vm->ctl_cl[i]);
	vm->ctl_ncl = 0;
	if (vm->ctl_lfd >= 0)
		close(vm->ctl_lfd);
	vm->ctl_lfd = -1;
}

/* The pre-copy thread is serving this client: not ours until it replies. */
static bool busy(const struct zd_vm *vm, int fd)
{
	return __atomic_load_n(&vm->ctl_busy_fd, __ATOMIC_ACQUIRE) == fd;
}

int zd_vm_ctl_pollfds(struct zd_vm *vm, struct pollfd *pfds, int max)
{
	int n = 0;

	if (vm->ctl_lfd < 0)
		return 0;
	pfds[n++] = (struct pollfd){ .fd = vm->ctl_lfd, .events = POLLIN };
	for (int i = 0; i < vm->ctl_ncl && n < max; i++)
		/* A negative fd is not polled at all: a busy client that hangs
		 * up must not make every poll return until the thread replies. */
		pfds[n++] = (struct pollfd){ .fd = busy(vm, vm->ctl_cl[i]) ? -1 : vm->ctl_cl[i], .events = POLLIN };
	return n;
}

int zd_vm_ctl_reply(int fd, const struct zd_vmctl_rep *rep, const void *payload, const int *fds,
		    int nfds)
{
	struct iovec iov[2] = {
		{ .iov_base = (void *)rep, .iov_len = sizeof(*rep) },
		{ .iov_base = (void *)payload, .iov_len = rep->len },
	};
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = rep->len ? 2 : 1 };

	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	return sendmsg(fd, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static void fill_stats(struct zd_vm *vm, struct zd_vm_stats *st)
{
	const struct zdg_svc *svc = (const struct zdg_svc *)(vm->ram + ZDG_SVC_GPA);

	memset(st, 0, sizeof(*st));
	st->exits = vm->n_exits;
	st->mmio_exits = vm->n_mmio;
	st->idle_exits = vm->n_idle;
	st->pauses = vm->n_pauses;
	st->guest_pages = __atomic_load_n(&svc->pages_written, __ATOMIC_RELAXED);
	st->requests = vm->n_requests;
	st->answers = vm->n_answers;
	st->released = vm->n_released;
	st->held = zd_vm_service_held(vm);
	st->epoch = vm->last_pause_epoch + 1;
	st->committed = vm->committed;
	st->paused = zd_vm_is_paused(vm);
	st->tsc_hz = vm->tsc_hz;
	st->disk_writes = vm->n_disk_writes;
	st->disk_done = __atomic_load_n(&((const struct zdg_disk *)(vm->ram + ZDG_DISK_GPA))->done,
					__ATOMIC_RELAXED);
	st->disk_overflows = vm->n_disk_overflows;
	st->guest_lost_ticks = __atomic_load_n(&svc->lost_ticks, __ATOMIC_RELAXED);
	st->guest_stall_ticks = __atomic_load_n(&svc->stall_ticks, __ATOMIC_RELAXED);
}

/* Handle one request. Returns 1 after STOP, -1 when the client is gone. */
static int handle(struct zd_vm *vm, int fd)
{
	struct zd_vmctl_req req;
	struct zd_vmctl_rep rep;
	union {
		struct zd_vm_info info;
		struct zd_vm_stats stats;
	} pl;
	uint8_t *blob = NULL;
	const void *payload = NULL;
	int fds[3], nfds = 0, ret = 0;
	ssize_t n = recv(fd, &req, sizeof(req), MSG_DONTWAIT);
	int64_t v;

	if (n == 0)
		return -1;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	memset(&rep, 0, sizeof(rep));
	if (n != (ssize_t)sizeof(req)) {
		rep.status = -EBADMSG;
		return zd_vm_ctl_reply(fd, &rep, NULL, NULL, 0) < 0 ? -1 : 0;
	}
	switch (req.op) {
	case ZD_VMCTL_INFO:
		memset(&pl.info, 0, sizeof(pl.info));
		pl.info.mem_bytes = vm->mem_bytes;
		pl.info.ram_base = (uint64_t)(uintptr_t)vm->ram;
		pl.info.bitmap_words = vm->nwords;
		pl.info.page_size = (uint32_t)ZDG_PAGE;
		pl.info.flags = (vm->pvm ? ZD_VM_F_PVM : 0) | (vm->uffd >= 0 ? ZD_VM_F_UFFD_WP : 0);
		pl.info.epoch = vm->last_pause_epoch;
		snprintf(pl.info.serve, sizeof(pl.info.serve), "%s", vm->serve_addr);
		rep.v0 = vm->mem_bytes;
		rep.v1 = ZDG_PAGE;
		rep.v2 = pl.info.flags;
		rep.len = sizeof(pl.info);
		payload = &pl.info;
		fds[nfds++] = vm->memfd;
		fds[nfds++] = vm->bmfd;
		if (vm->uffd >= 0)
			fds[nfds++] = vm->uffd;
		break;
	case ZD_VMCTL_PAUSE:
		v = zd_vm_pause(vm, req.arg0);
		if (v < 0)
			rep.status = -EIO;
		rep.v0 = (uint64_t)(v < 0 ? 0 : v);
		rep.v1 = vm->paused_at_ns;
		break;
	case ZD_VMCTL_RESUME:
		/* The writes the tracker collected at this pause are shipped:
		 * the log holds the next epoch's from here. */
		if (zd_vm_is_paused(vm))
			zd_vm_disk_log_reset(vm);
		v = zd_vm_resume(vm);
		if (v < 0)
			rep.status = -EIO;
		rep.v0 = (uint64_t)(v < 0 ? 0 : v);
		rep.v1 = zd_now_ns();
		break;
	case ZD_VMCTL_DISK_INFO:
		rep.v0 = vm->disk_bytes;
		rep.v1 = vm->dlog_bytes;
		if (vm->disk_fd >= 0) {
			fds[nfds++] = vm->dlog_fd;
			fds[nfds++] = vm->disk_fd;
		}
		break;
	case ZD_VMCTL_DISK_LOG: {
		const struct zd_dlog_hdr *h = (const struct zd_dlog_hdr *)(void *)vm->dlog;

		if (!vm->dlog) {
			rep.status = -ENODEV;
		} else if (!zd_vm_is_paused(vm)) {
			rep.status = -EBUSY;	/* the guest would append under the reader */
		} else {
			rep.v0 = h->used;
			rep.v1 = h->writes;
			rep.v2 = h->flags;
		}
		break;
	}
	case ZD_VMCTL_DIRTY_GET: {
		uint64_t t0 = zd_now_ns();

		v = zd_vm_dirty_get(vm);
		if (v < 0)
			rep.status = (int32_t)v;
		else
			rep.v0 = (uint64_t)v;
		rep.v1 = zd_now_ns() - t0;
		break;
	}
	case ZD_VMCTL_DIRTY_CLEAR: {
		uint64_t t0 = zd_now_ns();

		rep.status = zd_vm_dirty_clear(vm, req.flags & ZD_VMCTL_F_ALL);
		rep.v1 = zd_now_ns() - t0;
		break;
	}
	case ZD_VMCTL_STATE: {
		uint32_t len = 0;

		if (!zd_vm_is_paused(vm)) {
			rep.status = -EBUSY;
			break;
		}
		rep.status = zd_vm_state_save(vm, &blob, &len);
		if (!rep.status) {
			rep.len = len;
			payload = blob;
		}
		break;
	}
	case ZD_VMCTL_MEMSUM: {
		uint64_t t0 = zd_now_ns();

		/* A running guest would change memory under the hash. */
		if (!zd_vm_is_paused(vm)) {
			rep.status = -EBUSY;
			break;
		}
		rep.v0 = zd_hash64(vm->ram, vm->mem_bytes);
		rep.v1 = zd_now_ns() - t0;
		break;
	}
	case ZD_VMCTL_COMMIT:
		if (req.arg0 > vm->committed)
			vm->committed = req.arg0;
		zd_vm_service_release(vm);
		rep.v0 = vm->committed;
		break;
	case ZD_VMCTL_PROTECT: {
		uint64_t t0 = zd_now_ns();

		/* Only at a checkpoint: the pages must still hold its contents. */
		if (!zd_vm_is_paused(vm)) {
			rep.status = -EBUSY;
			break;
		}
		v = zd_vm_uffd_protect(vm);
		if (v < 0)
			rep.status = (int32_t)v;
		else
			rep.v0 = (uint64_t)v;
		rep.v1 = zd_now_ns() - t0;
		break;
	}
	case ZD_VMCTL_COPY_INFO:
		if (vm->uffd < 0 || zd_vm_copy_area(vm) < 0) {
			rep.status = vm->uffd < 0 ? -ENOSYS : -ENOMEM;
			break;
		}
		rep.v0 = vm->copy.pages;
		fds[nfds++] = vm->copy.fd;
		break;
	case ZD_VMCTL_PRECOPY_INFO:
		if (zd_vm_precopy_area(vm) < 0) {
			rep.status = -ENOMEM;
			break;
		}
		rep.v0 = vm->pre.pages;
		fds[nfds++] = vm->pre.fd;
		break;
	case ZD_VMCTL_PRECOPY:
		if (!vm->pre.map) {
			rep.status = -ENXIO;	/* PRECOPY_INFO first */
			break;
		}
		if (zd_vm_precopy_async(vm, fd, req.flags & ZD_VMCTL_F_HINT) == 0)
			return 0;	/* the pre-copy thread replies */
		zd_vm_precopy_reply(vm, req.flags & ZD_VMCTL_F_HINT, &rep);
		break;
	case ZD_VMCTL_CHECKPOINT: {
		struct zd_vmctl_ckpt ck;
		uint8_t *st = NULL;
		uint32_t len = 0;

		rep.status = zd_vm_checkpoint(vm, &req, &ck, &st, &len);
		/* The figures go back on a failure too; the state only with 0. */
		if (rep.status)
			len = 0;
		blob = zd_xmalloc(sizeof(ck) + len);
		memcpy(blob, &ck, sizeof(ck));
		if (len)
			memcpy(blob + sizeof(ck), st, len);
		free(st);
		rep.len = (uint32_t)(sizeof(ck) + len);
		rep.v0 = ck.dirty;
		payload = blob;
		break;
	}
	case ZD_VMCTL_STOP:
		ret = 1;
		break;
	case ZD_VMCTL_STATS:
		fill_stats(vm, &pl.stats);
		rep.len = sizeof(pl.stats);
		payload = &pl.stats;
		break;
	default:
		rep.status = -EOPNOTSUPP;
		break;
	}
	if (zd_vm_ctl_reply(fd, &rep, payload, fds, nfds) < 0 && ret == 0)
		ret = -1;
	free(blob);
	return ret;
}

int zd_vm_ctl_events(struct zd_vm *vm, const struct pollfd *pfds, int n)
{
	int ncl = vm->ctl_ncl, stop = 0;

	if (vm->ctl_lfd < 0 || n == 0)
		return 0;
	for (int i = ZD_MIN(ncl, n - 1); i-- > 0;) {
		int r;

		if (!(pfds[1 + i].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		r = handle(vm, vm->ctl_cl[i]);
		if (r == 1)
			stop = 1;
		if (r < 0) {
			close(vm->ctl_cl[i]);
			vm->ctl_cl[i] = vm->ctl_cl[--vm->ctl_ncl];
		}
	}
	if (pfds[0].revents & POLLIN) {
		int fd = accept4(vm->ctl_lfd, NULL, NULL, SOCK_CLOEXEC);
		struct ucred cr;
		socklen_t cl = sizeof(cr);

		if (fd >= 0) {
			if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 ||
			    (cr.uid != 0 && cr.uid != geteuid()) ||
			    vm->ctl_ncl == (int)ZD_ARRAY_SIZE(vm->ctl_cl)) {
				close(fd);
			} else {
				vm->ctl_cl[vm->ctl_ncl++] = fd;
			}
		}
	}
	return stop;
}
