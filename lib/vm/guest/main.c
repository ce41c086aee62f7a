/* SPDX-License-Identifier: MIT */
/*
 * zd-vm's built-in guest: a freestanding program running at CPL3 in long
 * mode. It does two things in one loop:
 *
 *   - the workload: writes pages at dirty_rate pages per second, a fraction
 *     hot_frac of them in a small hot set, the rest anywhere in the span;
 *     each write changes a few words of the page, like a real program.
 *     Pacing uses rdtsc against the TSC frequency zd-vm measured.
 *   - the service: a request in the mailbox is answered "seq N" (N counts
 *     answers), logged in the ring, and announced with an MMIO store.
 *
 * With nothing due it tells zd-vm how long it may sleep (MMIO IDLE), so an
 * idle guest costs no host CPU; zd-vm wakes it early for a request.
 */
#include "abi.h"

#define PARAMS ((const volatile struct zdg_params *)ZDG_PARAM_GPA)
#define MBOX ((volatile struct zdg_mbox *)ZDG_MBOX_GPA)
#define SVC ((volatile struct zdg_svc *)ZDG_SVC_GPA)
#define RING ((volatile struct zdg_ring_ent *)ZDG_RING_GPA)

/* The compiler may emit calls to these even in freestanding code. */
void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
void guest_main(void);

void *memset(void *d, int c, unsigned long n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
	unsigned char *p = d;
	const unsigned char *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static uint64_t mmio_base;

static inline void mmio_write(uint64_t reg, uint64_t val)
{
	/* A store to a guest-physical address outside every memslot: KVM
	 * stops the vCPU with KVM_EXIT_MMIO and zd-vm sees reg and val. */
	*(volatile uint64_t *)(mmio_base + reg) = val;
}

static uint64_t rng;

/*
 * The guest's own account of the time it lost (zdg_svc lost_*, stall_*,
 * wfault_*): `mark` is the TSC at the end of the last thing it did; each
 * step measures from there. Nothing but the guest's clock is trusted, so
 * the figure holds whatever stopped it — the cross-check of the stall
 * zd-stat adds up from the tools' own figures.
 */
static uint64_t mark, lost_min, stall_min;

/* The step that just ended took `gap` ticks of which `asked` were an idle
 * the guest asked for; returns the time lost. */
static uint64_t account(uint64_t now, uint64_t asked)
{
	volatile struct zdg_svc *s = (volatile struct zdg_svc *)ZDG_SVC_GPA;
	uint64_t gap = now - mark, lost = gap > asked ? gap - asked : 0;

	mark = now;
	if (lost < lost_min)
		return 0;
	s->lost_ticks += lost;
	s->lost_n++;
	if (lost >= stall_min) {
		s->stall_ticks += lost;
		s->stall_n++;
	}
	return lost;
}

static inline uint64_t next_rand(void)
{
	/* xorshift64*: cheap and good enough to scatter page writes. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1Dull;
}

static void write_page(void)
{
	const volatile struct zdg_params *p = PARAMS;
	uint64_t r = next_rand(), page;
	volatile uint64_t *w;
	uint64_t t;
	unsigned i, off;

	if ((r & 0xffffffffull) < p->hot_frac32 && p->hot_pages)
		page = (r >> 32) % p->hot_pages;
	else
		page = next_rand() % p->span_pages;
	w = (volatile uint64_t *)(p->span_gpa + page * ZDG_PAGE);
	/* A few words change, the rest of the page stays: delta compression
	 * downstream has something to find. */
	off = (unsigned)((r >> 20) % (ZDG_PAGE / 8 - 4));
	/* The first store is the one the dirty log or the copy-on-write
	 * guard may stop; time it alone. */
	account(rdtsc(), 0);
	w[off] = SVC->pages_written;
	t = rdtsc();
	if (t - mark >= lost_min && t - mark < stall_min) {
		SVC->wfault_ticks += t - mark;
		SVC->wfault_n++;
	}
	account(t, 0);
	for (i = 1; i < 4; i++)
		w[off + i] = SVC->pages_written + i;
	SVC->pages_written++;
}

/* One block write of the disk workload: the counter goes to the disk
 * and, by zd-vm in the same MMIO exit, to memory (zdg_disk.done). */
static void write_block(void)
{
	const volatile struct zdg_params *p = PARAMS;
	volatile struct zdg_disk *d = (volatile struct zdg_disk *)ZDG_DISK_GPA;
	volatile uint64_t *b = (volatile uint64_t *)ZDG_DISKBUF_GPA;
	uint64_t seq = d->done + 1, nblocks = p->disk_bytes / ZDG_DISK_BLOCK, i;

	b[0] = ZDG_DISK_MAGIC;
	b[1] = seq;
	for (i = 2; i < ZDG_DISK_BLOCK / 8; i++)
		b[i] = seq * 0x9E3779B97F4A7C15ull + i;
	d->offset = (seq % nblocks) * ZDG_DISK_BLOCK;
	d->len = ZDG_DISK_BLOCK;
	d->buf_gpa = ZDG_DISKBUF_GPA;
	d->seq = seq;
	__asm__ volatile("" ::: "memory");
	mmio_write(ZDG_MMIO_DISK, 1);
}

static void serve(void)
{
	volatile struct zdg_mbox *m = MBOX;
	volatile struct zdg_svc *s = SVC;
	uint64_t req = m->req_seq, len, slot, i;
	volatile struct zdg_ring_ent *e;

	if (req == m->ans_req)
		return;
	__asm__ volatile("" ::: "memory");
	len = m->req_len;
	if (len > ZDG_REQ_MAX)
		len = ZDG_REQ_MAX;
	s->counter++;
	slot = s->ring_head++ % ZDG_RING_ENTRIES;
	e = &RING[slot];
	e->seq = s->counter;
	e->tsc = rdtsc();
	e->len = (uint32_t)len;
	for (i = 0; i < len && i < sizeof(e->text); i++)
		e->text[i] = m->req[i];
	s->last_req = req;
	m->ans_seq = s->counter;
	m->ans_tsc = e->tsc;
	__asm__ volatile("" ::: "memory");
	m->ans_req = req;
	mmio_write(ZDG_MMIO_ANSWER, s->counter);
}

void guest_main(void)
{
	const volatile struct zdg_params *p = PARAMS;
	uint64_t hz = p->tsc_hz, rate = p->dirty_rate;
	uint64_t drate = p->disk_bytes >= ZDG_DISK_BLOCK ? p->disk_rate : 0;
	uint64_t last, credit = 0, dcredit = 0, max_gap = hz / 500;

	mmio_base = p->mmio_gpa;
	rng = p->seed ? p->seed : 0x9e3779b97f4a7c15ull;
	if (p->abi != ZDG_ABI_VERSION || !hz) {
		mmio_base = p->mmio_gpa;
		mmio_write(ZDG_MMIO_EXIT, 1);
	}
	mmio_write(ZDG_MMIO_READY, ZDG_ABI_VERSION);
	lost_min = hz * ZDG_LOST_MIN_NS / 1000000000ull;
	stall_min = hz * ZDG_STALL_MIN_NS / 1000000000ull;
	last = mark = rdtsc();
	for (;;) {
		uint64_t now = rdtsc(), delta = now - last, due, wait;

		last = now;
		account(now, 0);
		SVC->loops++;
		serve();
		if ((!rate || !p->span_pages) && !drate) {
			account(rdtsc(), 0);
			mmio_write(ZDG_MMIO_IDLE, p->idle_max_ticks);
			account(rdtsc(), p->idle_max_ticks);
			continue;
		}
		/* The rate is per second of running time: a gap much longer
		 * than the guest asked to idle means it was paused (a
		 * checkpoint) or descheduled, and a stopped program does not
		 * catch up on its writes afterwards. The clamp also keeps
		 * delta*rate (credit in units of 1/hz pages) far from overflow. */
		if (delta > max_gap)
			delta = max_gap;
		wait = p->idle_max_ticks;
		if (drate) {
			dcredit += delta * drate;
			due = dcredit / hz;
			dcredit -= due * hz;
			while (due--) {
				write_block();
				serve();
			}
			wait = (hz - dcredit + drate - 1) / drate;
		}
		if (!rate || !p->span_pages)
			goto idle;
		credit += delta * rate;
		due = credit / hz;
		credit -= due * hz;
		/* A request is answered between two page writes, as a real
		 * guest's network interrupt would preempt its workload: a
		 * batch of due writes, each a dirty-log fault of ~20 us under
		 * kvm_pvm, would otherwise hold it for milliseconds. */
		while (due--) {
			write_page();
			serve();
		}
		/* Ticks until the next page (or block) is due. */
		if ((hz - credit + rate - 1) / rate < wait)
			wait = (hz - credit + rate - 1) / rate;
idle:
		if (wait > p->idle_max_ticks)
			wait = p->idle_max_ticks;
		/* Short gaps are cheaper to spin than to exit for (an exit
		 * round trip is 12-25 us on kvm_pvm). */
		max_gap = 2 * wait > hz / 500 ? 2 * wait : hz / 500;
		if (wait > hz / 20000) {
			account(rdtsc(), 0);
			mmio_write(ZDG_MMIO_IDLE, wait);
			account(rdtsc(), wait);
		} else {
			__asm__ volatile("pause");
		}
	}
}
