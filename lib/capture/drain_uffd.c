/* SPDX-License-Identifier: MIT */
/*
 * zddspt's drain: the frozen table F of epoch k is write-protected by
 * zd-vm at T1 (PROTECT) and the VM runs again at once. This drain saves
 * every page of F as it was at T1 while the guest goes on writing:
 *
 *   fault handler (a thread, from the HEADER on): reads uffd_msg; a write
 *     fault on a protected page means the page still holds its checkpoint
 *     contents (the write is blocked) — copy it, un-protect (wakes the
 *     guest), keep the copy as the page's pre-image;
 *   drain (at epoch k's COMMIT): walks F in pfn order; a page the handler
 *     saved goes out from its pre-image, any other is copied from guest
 *     RAM (still protected, so unchanged) and un-protected, range by
 *     range — including the clean pages zd-vm's PROTECT coalesced between
 *     F's pages (ZD_VMCTL_WP_GAP; not after CHECKPOINT, flag WP_EXACT,
 *     which protects F's runs only: un-protecting clean pages would drop
 *     KVM's mappings of pages the guest may be using); PAGES
 *     (ZD_PAGES_PREIMAGE when saved by a fault); then every page is free
 *     again and the generation moves on.
 *
 * Exactly once: per-page state (mu) — 0 untouched, SAVED by the handler,
 * DONE by the drain. Only this process un-protects, always under mu after
 * the copy, so a page found protected under mu holds the checkpoint's
 * contents.
 *
 * Stale faults: a message read during generation g may be handled after
 * the drain of g ended (the page was un-protected and may be written and
 * protected again for g+1 meanwhile). The handler samples the generation
 * before read() and only wakes the faulting thread if it has moved on: a
 * still-blocked writer faults again and is served in the new generation.
 * zd-track protects F(k+1) only after DRAINED(k) (mode_zddspt.c), so one
 * generation is protected at a time.
 *
 * One handler per uffd. A uffd gives each fault message to whichever
 * reader reads it first. Before this was fixed, every stage capturing pages
 * started this drain — zd-send too (its capture filter attached at the
 * HEADER) — so two processes served the same uffd: zd-send's handler took
 * some faults, saved a pre-image nobody sent and un-protected the page;
 * the guest's next writes to it went through without a fault and
 * zd-swap's drain then copied the page as changed after the checkpoint.
 * That was the replica/MEMSUM mismatch at the first guarded epochs of
 * tests/e2e/kvm_zddspt.sh (debug dumps: every wrong page had flag "not
 * saved" but held words the guest wrote after T1; the fault log showed
 * messages served by a second handler whose generation never moved).
 * Only the filter marked with zd_capture_own_guard (zd-swap) drains here.
 *
 * Every protected page must be un-protected by its generation's drain,
 * or a later fault would save a stale pre-image for a newer epoch. zd-vm
 * protected the coalesced ranges of DIRTY (PROTECT); the drain walks
 * `missing`, which is DIRTY unless PAGES upstream covered some of it —
 * then the whole span of DIRTY is un-protected at the end too (one call).
 * With CHECKPOINT (CHECKPOINT flag WP_EXACT) zd-vm protected exactly
 * `missing`, DIRTY less the pages it copied at the pause and zd-track sent
 * as PAGES: the drain's ranges free all of it, and the whole-span call,
 * which would drop KVM's mappings of every page in between (the guest
 * then faults them back in), is left out.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "zd/capture.h"
#include "zd/target.h"
#include "zd/util.h"
#include "vm/vmctl.h"

enum { PG_NONE = 0, PG_SAVED = 1, PG_DONE = 2 };

struct uffd_drain {
	int uffd;			/* the target's */
	uint64_t base;			/* guest RAM in zd-vm */
	const uint8_t *ram;		/* our read-only mapping */
	size_t ps;
	uint64_t npages;
	int stopfd;
	pthread_t thr;
	bool running;

	pthread_mutex_t mu;
	uint8_t *st;			/* PG_* per page */
	uint8_t **pre;			/* pre-images saved by faults */
	uint64_t *touched;		/* pages with st != PG_NONE */
	size_t ntouched, cap;
	uint64_t gen;			/* drains finished (atomic reads) */
	uint64_t faults, fault_ns, stale;
	uint64_t block_ns;		/* read() of the message → the writer woken */
	char err[160];			/* the handler's failure, "" if none */
	bool vm_gone;			/* an ioctl said ESRCH: zd-vm's mm is gone */
};

static void touch(struct uffd_drain *u, uint64_t pfn, uint8_t state)
{
	if (u->st[pfn] == PG_NONE) {
		if (u->ntouched == u->cap) {
			u->cap = u->cap ? 2 * u->cap : 1024;
			u->touched = zd_xrealloc(u->touched, u->cap * sizeof(*u->touched));
		}
		u->touched[u->ntouched++] = pfn;
	}
	u->st[pfn] = state;
}

/* Un-protect [first, first+count) and wake whoever waits there. */
static int unprotect(struct uffd_drain *u, uint64_t first, uint64_t count)
{
	struct uffdio_writeprotect w = {
		.range = { .start = u->base + first * u->ps, .len = count * u->ps },
		.mode = 0,
	};

	if (ioctl(u->uffd, UFFDIO_WRITEPROTECT, &w) == 0)
		return 0;
	if (errno == ESRCH)
		u->vm_gone = true;
	return -1;
}

static void wake(struct uffd_drain *u, uint64_t pfn)
{
	struct uffdio_range r = { .start = u->base + pfn * u->ps, .len = u->ps };

	ioctl(u->uffd, UFFDIO_WAKE, &r);
}

static void serve(struct uffd_drain *u, const struct uffd_msg *m, uint64_t gen_at_read,
		  uint64_t read_ns)
{
	uint64_t t0 = zd_now_ns(), addr = m->arg.pagefault.address, pfn;

	if (m->event != UFFD_EVENT_PAGEFAULT || addr < u->base)
		return;
	pfn = (addr - u->base) / u->ps;
	if (pfn >= u->npages)
		return;
	pthread_mutex_lock(&u->mu);
	if (__atomic_load_n(&u->gen, __ATOMIC_ACQUIRE) != gen_at_read || u->st[pfn] != PG_NONE) {
		/* Already free (by the drain or an earlier fault): let the
		 * writer retry. */
		u->stale++;
		wake(u, pfn);
	} else {
		u->pre[pfn] = zd_xmalloc(u->ps);
		memcpy(u->pre[pfn], u->ram + pfn * u->ps, u->ps);
		touch(u, pfn, PG_SAVED);
		if (unprotect(u, pfn, 1) < 0 && !u->err[0])
			snprintf(u->err, sizeof(u->err), "un-protect pfn %" PRIu64 ": %s", pfn,
				 strerror(errno));
		u->faults++;
		u->fault_ns += zd_now_ns() - t0;
		/* Messages read together wait for each other: from the read. */
		u->block_ns += zd_now_ns() - read_ns;
	}
	pthread_mutex_unlock(&u->mu);
}

static void *handler(void *arg)
{
	struct uffd_drain *u = arg;
	struct uffd_msg msgs[32];

	for (;;) {
		struct pollfd pfd[2] = { { .fd = u->uffd, .events = POLLIN },
					 { .fd = u->stopfd, .events = POLLIN } };
		uint64_t g;
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		g = __atomic_load_n(&u->gen, __ATOMIC_ACQUIRE);
		n = read(u->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			pthread_mutex_lock(&u->mu);
			snprintf(u->err, sizeof(u->err), "reading userfaultfd: %s", strerror(errno));
			pthread_mutex_unlock(&u->mu);
			break;
		}
		uint64_t read_ns = zd_now_ns();

		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
			serve(u, &msgs[i], g, read_ns);
	}
	return NULL;
}

static int uffd_start(struct zd_capture *c)
{
	struct zd_target *t = zd_capture_target(c);
	struct uffd_drain *u;
	int uffd;
	uint64_t base;
	const uint8_t *ram;

	if (!t->ops->guard || t->ops->guard(t, &uffd, &base, &ram) < 0) {
		zd_debug("%s: no write-protect guard: zd-track copies the frozen set while paused", t->spec);
		return 0;
	}
	u = zd_xcalloc(1, sizeof(*u));
	u->uffd = uffd;
	u->base = base;
	u->ram = ram;
	u->ps = t->page_size;
	u->npages = t->page_count;
	u->st = zd_xcalloc(u->npages, 1);
	u->pre = zd_xcalloc(u->npages, sizeof(*u->pre));
	pthread_mutex_init(&u->mu, NULL);
	u->stopfd = eventfd(0, EFD_CLOEXEC);
	if (u->stopfd < 0 || pthread_create(&u->thr, NULL, handler, u) != 0) {
		int e = errno;

		if (u->stopfd >= 0)
			close(u->stopfd);
		free(u->st);
		free(u->pre);
		free(u);
		return zd_capture_fail(c, ZD_EXIT_FAIL, "starting the write-fault handler: %s", strerror(e));
	}
	u->running = true;
	*zd_capture_drain_state(c) = u;
	return 0;
}

static void uffd_stop(struct zd_capture *c)
{
	struct uffd_drain *u = *zd_capture_drain_state(c);

	if (!u)
		return;
	if (u->running) {
		uint64_t one = 1;

		if (write(u->stopfd, &one, sizeof(one)) < 0)
			zd_warn("stopping the write-fault handler");
		pthread_join(u->thr, NULL);
	}
	close(u->stopfd);
	for (size_t i = 0; i < u->ntouched; i++)
		free(u->pre[u->touched[i]]);
	free(u->touched);
	free(u->pre);
	free(u->st);
	pthread_mutex_destroy(&u->mu);
	free(u);
	*zd_capture_drain_state(c) = NULL;
}

/* Copy and free one chunk of F (pfn order) and, unless zd-vm protected
 * exactly F's pages (WP_EXACT), the protected gaps up to `until` (the next
 * chunk's first page, or the end). mu is taken per range, not for the
 * chunk: a fault waits for one range's copy at most, not for 4096 pages'. */
static int take_chunk(struct uffd_drain *u, const struct zd_pageset *chunk, uint64_t until,
		      bool exact, uint8_t *buf, uint64_t *from_faults)
{
	for (size_t i = 0; i < chunk->n; i++) {
		uint64_t first = chunk->r[i].first, count = chunk->r[i].count, end;
		int r;

		pthread_mutex_lock(&u->mu);
		for (uint64_t pfn = first; pfn < first + count; pfn++, buf += u->ps) {
			if (u->st[pfn] == PG_SAVED) {
				memcpy(buf, u->pre[pfn], u->ps);
				(*from_faults)++;
			} else {
				memcpy(buf, u->ram + pfn * u->ps, u->ps);
			}
			touch(u, pfn, PG_DONE);
		}
		/* zd-vm's PROTECT protected the gap to the next page of F too. */
		end = first + count;
		uint64_t next = i + 1 < chunk->n ? chunk->r[i + 1].first : until;

		if (!exact && next > end && next - end <= ZD_VMCTL_WP_GAP) {
			for (uint64_t pfn = end; pfn < next; pfn++)
				if (u->st[pfn] == PG_NONE)
					touch(u, pfn, PG_DONE);
			end = next;
		}
		r = unprotect(u, first, end - first);
		pthread_mutex_unlock(&u->mu);
		if (r < 0)
			return -1;
	}
	return 0;
}

static int uffd_drain(struct zd_capture *c, uint64_t epoch, const struct zd_pageset *missing)
{
	struct uffd_drain *u = *zd_capture_drain_state(c);
	struct zd_target *t = zd_capture_target(c);
	const struct zd_pageset *f = zd_capture_dirty(c);
	struct zd_pageset rest = ZD_PAGESET_INIT, chunk = ZD_PAGESET_INIT;
	uint64_t t0 = zd_now_ns(), from_faults = 0, faults, fault_ns, stale, delay, block_ns;
	uint8_t *buf;
	int rc = 0;

	if (!u)
		return zd_drain_read.drain(c, epoch, missing);
	if ((delay = zd_capture_drain_delay(c))) {
		zd_sleep_ns(delay);
		t0 = zd_now_ns();	/* drain_ns is the drain's own time */
	}
	zd_pageset_copy(&rest, missing);
	buf = zd_xmalloc((size_t)ZD_MIN(rest.pages, ZD_PAGES_PER_RECORD) * u->ps);
	while (!zd_pageset_empty(&rest) && !rc) {
		uint64_t until, n;

		zd_pageset_clear(&chunk);
		zd_pageset_take_front(&chunk, &rest, ZD_PAGES_PER_RECORD);
		until = zd_pageset_empty(&rest) ? u->npages : rest.r[0].first;
		if (chunk.r[chunk.n - 1].first + chunk.r[chunk.n - 1].count > u->npages) {
			rc = zd_capture_fail(c, ZD_EXIT_DATA, "epoch %" PRIu64 ": DIRTY reaches beyond "
					     "guest RAM (%" PRIu64 " pages)", epoch, u->npages);
			break;
		}
		n = from_faults;
		pthread_mutex_lock(&u->mu);
		if (u->err[0])
			rc = zd_capture_fail(c, ZD_EXIT_TARGET, "%s: %s", t->spec, u->err);
		pthread_mutex_unlock(&u->mu);
		if (!rc && take_chunk(u, &chunk, until, zd_capture_wp_exact(c), buf, &from_faults) < 0)
			rc = zd_capture_fail(c, ZD_EXIT_TARGET, "%s: un-protect: %s", t->spec, strerror(errno));
		if (!rc)
			rc = zd_capture_emit_pages(c, epoch, &chunk, buf,
						   from_faults > n ? ZD_PAGES_PREIMAGE : 0);
	}
	/* The generation ends: every page of F is out and free. */
	pthread_mutex_lock(&u->mu);
	if (!rc && !zd_capture_wp_exact(c) && zd_pageset_count(f) != zd_pageset_count(missing) &&
	    !zd_pageset_empty(f)) {
		uint64_t first = f->r[0].first, end = f->r[f->n - 1].first + f->r[f->n - 1].count;

		if (end <= u->npages && unprotect(u, first, end - first) < 0)
			rc = zd_capture_fail(c, ZD_EXIT_TARGET, "%s: un-protect: %s", t->spec, strerror(errno));
	}
	for (size_t i = 0; i < u->ntouched; i++) {
		uint64_t pfn = u->touched[i];

		free(u->pre[pfn]);
		u->pre[pfn] = NULL;
		u->st[pfn] = PG_NONE;
	}
	u->ntouched = 0;
	/* zd-vm died under the drain: its tracker will say so (END status 3). */
	if (rc == ZD_EXIT_TARGET && u->vm_gone)
		t->vm_died = true;
	faults = u->faults, fault_ns = u->fault_ns, stale = u->stale, block_ns = u->block_ns;
	u->faults = u->fault_ns = u->stale = u->block_ns = 0;
	__atomic_add_fetch(&u->gen, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&u->mu);
	free(buf);
	zd_pageset_free(&rest);
	zd_pageset_free(&chunk);
	if (!rc) {
		struct zd_capture_stats *st = zd_capture_stats_mut(c);
		static const char *const keys[] = { "cow_faults", "fault_ns", "drain_ns",
						    "preimages_sent", "stale_faults", "drained",
						    "cow_block_ns" };
		double vals[7];

		st->cow_faults = faults;
		st->fault_ns = fault_ns;
		st->drain_ns = zd_now_ns() - t0;
		vals[0] = (double)faults, vals[1] = (double)fault_ns, vals[2] = (double)st->drain_ns;
		vals[3] = (double)from_faults, vals[4] = (double)stale;
		vals[5] = (double)zd_pageset_count(missing), vals[6] = (double)block_ns;
		rc = zd_capture_emit_stat(c, epoch, keys, vals, 7);
	}
	return rc;
}

const struct zd_drain_ops zd_drain_uffd = {
	.name = "uffd",
	.drain = uffd_drain,
	.start = uffd_start,
	.stop = uffd_stop,
};
