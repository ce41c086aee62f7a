/* SPDX-License-Identifier: MIT */
/*
 * PRECOPY (vmctl.h): zddspt's pre-copy, re-arm and copy interleaved, in
 * zd-vm, while the guest runs.
 *
 * A pre-copied page is re-armed before it is read (a write after the read
 * must show in the dirty log at T1), and from its re-arm to T1 the guest
 * may write it again: a second dirty-log write fault (~17 us on kvm_pvm)
 * for a copy that is then thrown away. Re-arming all of P and then reading
 * it leaves every page exposed for the whole read; re-arming chunk by
 * chunk from the tracker costs a control round trip per chunk (~35 us
 * here), which lengthened the pre-copy as much as it saved (bench/README.md,
 * "The pre-copy in zd-vm"). Here a group of about GROUP_PAGES pages of P is
 * re-armed by one KVM_CLEAR_DIRTY_LOG and copied at once, with nothing
 * between groups: a page is exposed for what is left of the pre-copy
 * after its group, half of it on average.
 *
 * The copies go to the pre-copy area, a memfd the tracker maps read-only
 * (PRECOPY_INFO): as many pages as guest RAM, sparse, so only what a
 * pre-copy ever wrote takes memory. It holds one pre-copy, until the next.
 *
 * The request is served on a thread of its own, which replies to it: the
 * main loop also carries the guest's service, and a client's request
 * that came in during a pre-copy on the main loop waited for it, ~1 ms
 * more than in the rest of the epoch (bench/README.md).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

/* At least this many pages of P per re-arm call. A call costs ~13 us on
 * kvm_pvm, so groups of 16 made the pre-copy of ~1000 pages twice as
 * long; 64 and 256 left as many pages written again (bench/README.md). */
#define GROUP_PAGES 256u

int zd_vm_precopy_area(struct zd_vm *vm)
{
	return zd_vm_area_make(&vm->pre, "zd-vm-precopy", vm->npages);
}

/* One pass over P (bm_in): the pages also in hint (hot) or not (!hot),
 * re-armed and copied a group at a time, each page to its place in pfn
 * order (rank: pages of P in the words before each word). */
struct pass {
	struct zd_vm *vm;
	const uint64_t *hint;		/* NULL: every page is cold */
	const uint64_t *rank;
	uint64_t *sel;			/* the group's pages, words [fw, lw] */
	uint64_t calls, pages;
};

static int group(struct pass *ps, uint64_t fw, uint64_t lw)
{
	struct zd_vm *vm = ps->vm;
	int rc = zd_vm_dirty_clear_words(vm, ps->sel, fw, lw);

	if (rc)
		return rc;
	ps->calls++;
	for (uint64_t w = fw; w <= lw; w++) {
		for (uint64_t b = ps->sel[w]; b; b &= b - 1) {
			uint64_t bit = (uint64_t)__builtin_ctzll(b), pfn = w * 64 + bit;
			uint64_t at = ps->rank[w] + (uint64_t)__builtin_popcountll(vm->bm_in[w] & ((1ull << bit) - 1));

			memcpy(vm->pre.map + at * ZDG_PAGE, vm->ram + pfn * ZDG_PAGE, ZDG_PAGE);
			ps->pages++;
		}
		ps->sel[w] = 0;
	}
	return 0;
}

static int pass(struct pass *ps, bool hot)
{
	struct zd_vm *vm = ps->vm;
	uint64_t fw = UINT64_MAX, lw = 0, in_group = 0;
	int rc;

	if (hot && !ps->hint)
		return 0;
	for (uint64_t w = 0; w < vm->nwords; w++) {
		uint64_t h = ps->hint ? ps->hint[w] : 0;
		uint64_t m = vm->bm_in[w] & (hot ? h : ~h);

		if (!m)
			continue;
		if (fw == UINT64_MAX)
			fw = w;
		lw = w;
		ps->sel[w] = m;
		in_group += (uint64_t)__builtin_popcountll(m);
		if (in_group < GROUP_PAGES)
			continue;
		if ((rc = group(ps, fw, lw)))
			return rc;
		in_group = 0;
		fw = UINT64_MAX;
	}
	return fw == UINT64_MAX ? 0 : group(ps, fw, lw);
}

static int64_t precopy(struct zd_vm *vm, bool hint, uint64_t *calls)
{
	struct pass ps = { .vm = vm, .hint = hint ? vm->bm_out : NULL };
	uint64_t *rank, n = 0;
	int rc;

	if (vm->npages % 64 && vm->bm_in[vm->nwords - 1] >> (vm->npages % 64))
		return -EINVAL;	/* a page beyond guest RAM */
	rank = zd_xmalloc(vm->nwords * 8);
	ps.sel = zd_xcalloc(vm->nwords, 8);
	for (uint64_t w = 0; w < vm->nwords; w++) {
		rank[w] = n;
		n += (uint64_t)__builtin_popcountll(vm->bm_in[w]);
	}
	ps.rank = rank;
	/* The pages predicted to be written again soonest go last: each is
	 * then open to a second write for the shortest time. */
	rc = pass(&ps, false);
	if (!rc)
		rc = pass(&ps, true);
	free(rank);
	free(ps.sel);
	*calls = ps.calls;
	return rc ? rc : (int64_t)ps.pages;
}

void zd_vm_precopy_reply(struct zd_vm *vm, bool hint, struct zd_vmctl_rep *rep)
{
	uint64_t t0 = zd_now_ns(), calls = 0;
	int64_t v = precopy(vm, hint, &calls);

	if (v < 0)
		rep->status = (int32_t)v;
	else
		rep->v0 = (uint64_t)v;
	rep->v1 = zd_now_ns() - t0;
	rep->v2 = calls;
}

struct zd_vm_precopier {
	pthread_t thr;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool quit, job, hint;
	int fd;
};

static void *precopier(void *arg)
{
	struct zd_vm *vm = arg;
	struct zd_vm_precopier *pc = vm->precopier;

	pthread_mutex_lock(&pc->mu);
	for (;;) {
		struct zd_vmctl_rep rep = { 0 };

		while (!pc->job && !pc->quit)
			pthread_cond_wait(&pc->cv, &pc->mu);
		if (pc->quit)
			break;
		pthread_mutex_unlock(&pc->mu);
		zd_vm_precopy_reply(vm, pc->hint, &rep);
		/* The reply goes while the fd is still ours: the main loop may
		 * close a client that hung up, and accept another on its
		 * number, once it is given back. A client gone is the main
		 * loop's to see. */
		(void)zd_vm_ctl_reply(pc->fd, &rep, NULL, NULL, 0);
		/* Then wake the main loop at once: the tracker's next request
		 * (CHECKPOINT) follows the reply, and must not wait for the
		 * main loop's next reason to poll. */
		pthread_mutex_lock(&pc->mu);
		pc->job = false;
		__atomic_store_n(&vm->ctl_busy_fd, -1, __ATOMIC_RELEASE);
		zd_vm_notify_main(vm);
	}
	pthread_mutex_unlock(&pc->mu);
	return NULL;
}

int zd_vm_precopy_async(struct zd_vm *vm, int fd, bool hint)
{
	struct zd_vm_precopier *pc = vm->precopier;

	if (!pc) {
		pc = zd_xcalloc(1, sizeof(*pc));
		pthread_mutex_init(&pc->mu, NULL);
		pthread_cond_init(&pc->cv, NULL);
		vm->precopier = pc;
		if (pthread_create(&pc->thr, NULL, precopier, vm) != 0) {
			pthread_mutex_destroy(&pc->mu);
			pthread_cond_destroy(&pc->cv);
			free(pc);
			vm->precopier = NULL;
			return -1;
		}
	}
	pthread_mutex_lock(&pc->mu);
	if (pc->job) {	/* one tracker, one request at a time: not here */
		pthread_mutex_unlock(&pc->mu);
		return -1;
	}
	pc->job = true;
	pc->hint = hint;
	pc->fd = fd;
	__atomic_store_n(&vm->ctl_busy_fd, fd, __ATOMIC_RELEASE);
	pthread_cond_signal(&pc->cv);
	pthread_mutex_unlock(&pc->mu);
	return 0;
}

void zd_vm_precopy_stop(struct zd_vm *vm)
{
	struct zd_vm_precopier *pc = vm->precopier;

	if (!pc)
		return;
	pthread_mutex_lock(&pc->mu);
	pc->quit = true;
	pthread_cond_signal(&pc->cv);
	pthread_mutex_unlock(&pc->mu);
	pthread_join(pc->thr, NULL);
	pthread_mutex_destroy(&pc->mu);
	pthread_cond_destroy(&pc->cv);
	free(pc);
	vm->precopier = NULL;
}
