/* SPDX-License-Identifier: MIT */
/*
 * The vCPU thread and the pause protocol.
 *
 * Pause: the control thread sets pause_req and kvm_run.immediate_exit under
 * mu, then sends SIGUSR1 to the vCPU thread. If the thread is inside
 * KVM_RUN, the signal makes it return EINTR; if it is about to enter,
 * immediate_exit makes KVM_RUN return at once (a signal alone could land
 * just before the ioctl and be lost). The thread then parks on cv with
 * paused = true, which is what the control thread waits for.
 *
 * An MMIO exit leaves the guest's store half done until the next KVM_RUN,
 * so before parking the thread re-enters once with immediate_exit set:
 * KVM completes the instruction and returns EINTR. Registers read while
 * paused (STATE) are then those after the store, never mid-instruction.
 *
 * The thread is also zd-vm's only writer of guest RAM (the mailbox), and
 * writes only while the VM is not paused, so a paused VM's memory is
 * exactly what DIRTY_GET, MEMSUM and the page readers see.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

static void on_kick(int sig)
{
	(void)sig;
}

void zd_vm_notify_main(struct zd_vm *vm)
{
	uint64_t one = 1;

	if (write(vm->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		zd_warn("eventfd");
}

static void die(struct zd_vm *vm, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void die(struct zd_vm *vm, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&vm->mu);
	va_start(ap, fmt);
	vsnprintf(vm->dead_msg, sizeof(vm->dead_msg), fmt, ap);
	va_end(ap);
	vm->dead = true;
	pthread_cond_broadcast(&vm->cv);
	pthread_mutex_unlock(&vm->mu);
	zd_vm_notify_main(vm);
}

static uint64_t guest_rip(struct zd_vm *vm)
{
	struct kvm_regs r;

	return ioctl(vm->vcpu_fd, KVM_GET_REGS, &r) == 0 ? r.rip : 0;
}

/* Under mu, VM running: put the next queued request into the mailbox if
 * the guest has answered the last one. */
static void feed_mailbox(struct zd_vm *vm)
{
	struct zdg_mbox *m = (struct zdg_mbox *)(vm->ram + ZDG_MBOX_GPA);
	struct zd_vm_req *r = vm->rq_head;

	if (vm->inflight || !r)
		return;
	vm->rq_head = r->next;
	if (!vm->rq_head)
		vm->rq_tail = NULL;
	vm->rq_len--;
	vm->inflight = r;
	memcpy(m->req, r->text, r->len);
	m->req_len = r->len;
	/* The guest polls req_seq: it must see the text before the number. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	m->req_seq = ++vm->mbox_seq;
	zd_vm_mark_dirty(vm, ZDG_MBOX_GPA, sizeof(*m));
}

static void guest_answered(struct zd_vm *vm, uint64_t seq)
{
	struct zdg_mbox *m = (struct zdg_mbox *)(vm->ram + ZDG_MBOX_GPA);
	struct zd_vm_req *r;

	pthread_mutex_lock(&vm->mu);
	r = vm->inflight;
	if (r && m->ans_req == vm->mbox_seq)
		vm->inflight = NULL;
	else
		r = NULL;
	pthread_mutex_unlock(&vm->mu);
	if (!r) {
		zd_warnx("guest answered seq %llu with no request in flight",
			 (unsigned long long)seq);
		return;
	}
	vm->n_answers++;
	zd_vm_output_push(vm, r->client, seq);
	free(r);
	zd_vm_notify_main(vm);
}

/* The guest has nothing to do for `ticks` TSC ticks: sleep that long
 * unless a pause, a stop or a request comes first. */
static void guest_idle(struct zd_vm *vm, uint64_t ticks)
{
	uint64_t ns = (uint64_t)((unsigned __int128)ticks * 1000000000u / vm->tsc_hz);
	struct timespec ts;

	vm->n_idle++;
	if (ns < 20000)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ns / 1000000000u);
	ts.tv_nsec += (long)(ns % 1000000000u);
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&vm->mu);
	while (!vm->pause_req && !vm->job && !vm->stop && !vm->wake && !(vm->rq_head && !vm->inflight)) {
		if (pthread_cond_timedwait(&vm->cv, &vm->mu, &ts) == ETIMEDOUT)
			break;
	}
	vm->wake = false;
	pthread_mutex_unlock(&vm->mu);
}

/* Returns false when the guest is finished. */
static bool handle_mmio(struct zd_vm *vm)
{
	struct kvm_run *run = vm->run;
	uint64_t addr = run->mmio.phys_addr, val = 0;

	vm->n_mmio++;
	if (addr < vm->mmio_gpa || addr >= vm->mmio_gpa + ZDG_MMIO_SIZE) {
		die(vm, "guest: access to unbacked memory at %#llx (rip %#llx)",
		    (unsigned long long)addr, (unsigned long long)guest_rip(vm));
		return false;
	}
	if (!run->mmio.is_write) {
		memset(run->mmio.data, 0, sizeof(run->mmio.data));
		return true;
	}
	memcpy(&val, run->mmio.data, ZD_MIN(run->mmio.len, (uint32_t)sizeof(val)));
	switch (addr - vm->mmio_gpa) {
	case ZDG_MMIO_READY:
		vm->guest_ready = true;
		zd_debug("guest up (ABI %llu) at CPL3", (unsigned long long)val);
		return true;
	case ZDG_MMIO_IDLE:
		guest_idle(vm, val);
		return true;
	case ZDG_MMIO_ANSWER:
		guest_answered(vm, val);
		return true;
	case ZDG_MMIO_EXIT:
		die(vm, "guest: stopped with code %llu", (unsigned long long)val);
		return false;
	case ZDG_MMIO_DISK:
		zd_vm_disk_mmio(vm);
		return true;
	default:
		zd_debug("guest: write %#llx to unknown MMIO register %#llx",
			 (unsigned long long)val, (unsigned long long)(addr - vm->mmio_gpa));
		return true;
	}
}

static bool handle_exit(struct zd_vm *vm)
{
	struct kvm_run *run = vm->run;

	switch (run->exit_reason) {
	case KVM_EXIT_MMIO:
		return handle_mmio(vm);
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		die(vm, "guest: shut down (triple fault) at rip %#llx",
		    (unsigned long long)guest_rip(vm));
		return false;
	case KVM_EXIT_IO:
		/* kvm_pvm turns port I/O from CPL3 into a shutdown; hardware
		 * KVM gets here. Either way the guest must not do it. */
		die(vm, "guest: port I/O to %#x (rip %#llx)", run->io.port,
		    (unsigned long long)guest_rip(vm));
		return false;
	case KVM_EXIT_HLT:
		die(vm, "guest: halted at rip %#llx", (unsigned long long)guest_rip(vm));
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		die(vm, "guest: entry failed, hardware reason %#llx",
		    (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		die(vm, "guest: KVM internal error, suberror %u (rip %#llx)",
		    run->internal.suberror, (unsigned long long)guest_rip(vm));
		return false;
	default:
		die(vm, "guest: unexpected KVM exit reason %u (rip %#llx)", run->exit_reason,
		    (unsigned long long)guest_rip(vm));
		return false;
	}
}

/* Under mu: complete a half-done MMIO instruction (immediate_exit is
 * set: KVM finishes it and returns EINTR without running the guest
 * further), so that registers and memory are never mid-instruction. */
static void complete_mmio(struct zd_vm *vm, bool *mid_exit)
{
	if (!*mid_exit)
		return;
	pthread_mutex_unlock(&vm->mu);
	if (ioctl(vm->vcpu_fd, KVM_RUN, 0) == 0)
		zd_debug("KVM_RUN with immediate_exit ran (exit %u)", vm->run->exit_reason);
	pthread_mutex_lock(&vm->mu);
	*mid_exit = false;
}

/* Under mu: the job of zd_vm_vcpu_call, run without mu (it may take it). */
static void run_job(struct zd_vm *vm, bool *mid_exit)
{
	void (*fn)(struct zd_vm *, void *) = vm->job;

	complete_mmio(vm, mid_exit);
	pthread_mutex_unlock(&vm->mu);
	fn(vm, vm->job_arg);
	pthread_mutex_lock(&vm->mu);
	vm->job = NULL;
	vm->job_done = true;
	pthread_cond_broadcast(&vm->cv);
}

/* Under mu: complete a half-done MMIO instruction, then park until the
 * pause is over (running any job asked meanwhile). */
static void park(struct zd_vm *vm, bool *mid_exit)
{
	complete_mmio(vm, mid_exit);
	vm->paused = true;
	pthread_cond_broadcast(&vm->cv);
	while (vm->pause_req && !vm->stop) {
		if (vm->job)
			run_job(vm, mid_exit);
		else
			pthread_cond_wait(&vm->cv, &vm->mu);
	}
	vm->paused = false;
	pthread_cond_broadcast(&vm->cv);
}

static void *vcpu_thread(void *arg)
{
	struct zd_vm *vm = arg;
	bool mid_exit = false;
	sigset_t ss;

	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &ss, NULL);
	for (;;) {
		int r;

		/* A write-protected mailbox page blocks its writer until zd-swap
		 * has saved it: take that fault here, not under mu (the main
		 * thread needs mu). A racing re-protect needs a pause, which
		 * needs this thread: none comes before feed_mailbox. */
		if (vm->uffd >= 0 && vm->rq_head && !vm->inflight)
			__atomic_fetch_add(&((struct zdg_mbox *)(vm->ram + ZDG_MBOX_GPA))->req_len, 0,
					   __ATOMIC_RELAXED);
		pthread_mutex_lock(&vm->mu);
		if (vm->job && !vm->stop)
			run_job(vm, &mid_exit);
		if (vm->pause_req)
			park(vm, &mid_exit);
		if (vm->stop || vm->dead) {
			pthread_mutex_unlock(&vm->mu);
			break;
		}
		vm->run->immediate_exit = 0;
		feed_mailbox(vm);
		pthread_mutex_unlock(&vm->mu);

		r = ioctl(vm->vcpu_fd, KVM_RUN, 0);
		/* Every return, EINTR too, stored the sync regs. */
		vm->regs_synced = vm->sync_regs;
		mid_exit = false;
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die(vm, "KVM_RUN: %s", strerror(errno));
			break;
		}
		vm->n_exits++;
		mid_exit = vm->run->exit_reason == KVM_EXIT_MMIO ||
			   vm->run->exit_reason == KVM_EXIT_IO;
		if (!handle_exit(vm))
			break;
	}
	/* Anyone waiting for a pause or a job must not wait forever. */
	pthread_mutex_lock(&vm->mu);
	vm->paused = true;
	pthread_cond_broadcast(&vm->cv);
	pthread_mutex_unlock(&vm->mu);
	return NULL;
}

int zd_vm_start(struct zd_vm *vm, char *msg, size_t msglen)
{
	struct sigaction sa;
	sigset_t ss, old;
	int r;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;	/* no SA_RESTART: KVM_RUN must return */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	/* Only the vCPU thread takes SIGUSR1. */
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &ss, &old);
	r = pthread_create(&vm->thr, NULL, vcpu_thread, vm);
	if (r) {
		snprintf(msg, msglen, "vCPU thread: %s", strerror(r));
		return -1;
	}
	vm->thr_started = true;
	return 0;
}

void zd_vm_stop_vcpu(struct zd_vm *vm)
{
	if (!vm->thr_started)
		return;
	pthread_mutex_lock(&vm->mu);
	vm->stop = true;
	vm->run->immediate_exit = 1;
	pthread_cond_broadcast(&vm->cv);
	pthread_mutex_unlock(&vm->mu);
	pthread_kill(vm->thr, SIGUSR1);
	pthread_join(vm->thr, NULL);
	vm->thr_started = false;
}

int64_t zd_vm_pause(struct zd_vm *vm, uint64_t epoch)
{
	uint64_t t0 = zd_now_ns();
	bool dead;

	pthread_mutex_lock(&vm->mu);
	if (!vm->pause_req) {
		vm->pause_req = true;
		vm->run->immediate_exit = 1;
		pthread_cond_broadcast(&vm->cv);
		pthread_mutex_unlock(&vm->mu);
		pthread_kill(vm->thr, SIGUSR1);
		pthread_mutex_lock(&vm->mu);
		while (!vm->paused && !vm->dead)
			pthread_cond_wait(&vm->cv, &vm->mu);
		vm->n_pauses++;
		vm->paused_at_ns = zd_now_ns();
	}
	/* A tracker protects the VM now: output waits for its backup. */
	vm->unprotected = false;
	/* From here on the guest's output belongs to the next epoch. */
	if (epoch > vm->last_pause_epoch)
		vm->last_pause_epoch = epoch;
	dead = vm->dead;
	pthread_mutex_unlock(&vm->mu);
	return dead ? -1 : (int64_t)(zd_now_ns() - t0);
}

int zd_vm_vcpu_call(struct zd_vm *vm, void (*fn)(struct zd_vm *vm, void *arg), void *arg)
{
	bool ran;

	pthread_mutex_lock(&vm->mu);
	if (vm->dead || vm->stop || !vm->thr_started) {
		pthread_mutex_unlock(&vm->mu);
		return -1;
	}
	vm->job = fn;
	vm->job_arg = arg;
	vm->job_done = false;
	vm->run->immediate_exit = 1;
	pthread_cond_broadcast(&vm->cv);
	pthread_mutex_unlock(&vm->mu);
	pthread_kill(vm->thr, SIGUSR1);
	pthread_mutex_lock(&vm->mu);
	/* (stop: the thread is leaving, or has left, without the job) */
	while (!vm->job_done && !vm->dead && !vm->stop)
		pthread_cond_wait(&vm->cv, &vm->mu);
	ran = vm->job_done;
	vm->job = NULL;
	pthread_mutex_unlock(&vm->mu);
	return ran ? 0 : -1;
}

int64_t zd_vm_resume(struct zd_vm *vm)
{
	uint64_t t0 = zd_now_ns();
	bool dead;

	pthread_mutex_lock(&vm->mu);
	vm->pause_req = false;
	pthread_cond_broadcast(&vm->cv);
	dead = vm->dead;
	pthread_mutex_unlock(&vm->mu);
	return dead ? -1 : (int64_t)(zd_now_ns() - t0);
}

bool zd_vm_is_paused(struct zd_vm *vm)
{
	bool p;

	pthread_mutex_lock(&vm->mu);
	p = vm->pause_req && vm->paused;
	pthread_mutex_unlock(&vm->mu);
	return p;
}

/* A request was queued: a guest that never leaves KVM_RUN by itself (it
 * spins on its workload, and a restored VM has no tracker pausing it)
 * would otherwise get it only at the next pause, or never. Make KVM_RUN
 * return so the loop feeds the mailbox; an idle vCPU is woken by the
 * queue's broadcast instead. */
void zd_vm_kick_for_request(struct zd_vm *vm)
{
	bool kick;

	pthread_mutex_lock(&vm->mu);
	kick = vm->thr_started && !vm->inflight && !vm->paused && !vm->stop;
	if (kick)
		vm->run->immediate_exit = 1;
	pthread_mutex_unlock(&vm->mu);
	if (kick)
		pthread_kill(vm->thr, SIGUSR1);
}
