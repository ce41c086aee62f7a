/*
 * kvm_probe — does this /dev/kvm do what zd needs?
 *
 * A tiny real-mode guest in one memfd memslot, driven phase by phase (each
 * phase ends in HLT). It checks, in the order zd-vm and zd-track use them:
 *
 *   run        the guest runs, writes its pages and halts (KVM_EXIT_HLT)
 *   mmio       stores outside every memslot come back as KVM_EXIT_MMIO
 *   dirty-log  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with INITIALLY_SET:
 *              GET_DIRTY_LOG shows exactly the pages the guest wrote, and
 *              CLEAR_DIRTY_LOG clears (and re-arms) only the pages chosen
 *   uffd-wp    userfaultfd write-protect on the memfd mapping
 *              (UFFD_FEATURE_WP_HUGETLBFS_SHMEM): a guest store to a
 *              protected page blocks KVM_RUN until another thread has copied
 *              the old contents and lifted the protection
 *
 * Prints one line per check ("kvm_probe: ok NAME ..." or
 * "kvm_probe: NAME: what is wrong") and exits 0 when all pass, 1 when one
 * fails, 77 when /dev/kvm is absent. tests/e2e/vmhost_smoke.sh runs it,
 * through tests/lib/vmhost.sh where this machine has no /dev/kvm.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096u
#define SLOT_PAGES 64u /* one bitmap word: CLEAR_DIRTY_LOG's granule */
#define SLOT_SIZE (SLOT_PAGES * PAGE)
#define CODE_GPA 0x1000u
#define MMIO_GPA 0x40000u /* just past the slot: no memslot there */
#define MMIO_EXITS 100u
#define BIT(n) (1ull << (n))
#define PROBE_TIMEOUT 120 /* seconds: generous for nested KVM under TCG */

/*
 * The guest, 16-bit real mode at CODE_GPA with every segment base 0.
 * Phase A writes pages 3 and 5; phase B counts ECX down; phase C stores AL
 * to MMIO_GPA ECX times; phase D writes pages 3 and 9. Each ends in HLT.
 */
static const uint8_t guest_code[] = {
	0xc6, 0x06, 0x00, 0x30, 0x11, /* A: mov byte [0x3000], 0x11 */
	0xc6, 0x06, 0x00, 0x50, 0x22, /*    mov byte [0x5000], 0x22 */
	0xf4,                         /*    hlt */
	0x66, 0x49,                   /* B: dec ecx */
	0x75, 0xfc,                   /*    jnz B */
	0xf4,                         /*    hlt */
	0xb8, 0x00, 0x40,             /* C: mov ax, 0x4000 */
	0x8e, 0xd8,                   /*    mov ds, ax */
	0xa2, 0x00, 0x00,             /* 1: mov [0], al  (gpa 0x40000) */
	0x66, 0x49,                   /*    dec ecx */
	0x75, 0xf9,                   /*    jnz 1b */
	0x31, 0xc0,                   /*    xor ax, ax */
	0x8e, 0xd8,                   /*    mov ds, ax */
	0xf4,                         /*    hlt */
	0xc6, 0x06, 0x00, 0x30, 0x33, /* D: mov byte [0x3000], 0x33 */
	0xc6, 0x06, 0x00, 0x90, 0x44, /*    mov byte [0x9000], 0x44 */
	0xf4,                         /*    hlt */
	0xf4, 0xeb, 0xfd,             /*    1: hlt; jmp 1b */
};

struct probe {
	int kvm, vm, vcpu, memfd, uffd;
	struct kvm_run *run;
	uint8_t *mem;
	int failed;
};

static void fail(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct probe *p, const char *fmt, ...)
{
	va_list ap;

	fputs("kvm_probe: ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	p->failed = 1;
}

/* A guest that never exits must fail the probe, not hang the test. */
static const char *volatile step = "setup";

static void on_alarm(int sig)
{
	char msg[160];
	int n = snprintf(msg, sizeof(msg), "kvm_probe: %s: no progress in %d s\n", step, PROBE_TIMEOUT);

	(void)sig;
	if (write(STDOUT_FILENO, msg, n) < 0)
		_exit(1);
	_exit(1);
}

static void die(const char *what)
{
	printf("kvm_probe: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Runs the vCPU to the next HLT; every MMIO exit on the way is counted. */
static int run_to_hlt(struct probe *p, unsigned *mmio)
{
	for (;;) {
		if (ioctl(p->vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			die("KVM_RUN");
		}
		switch (p->run->exit_reason) {
		case KVM_EXIT_HLT:
			return 0;
		case KVM_EXIT_MMIO:
			if (p->run->mmio.phys_addr != MMIO_GPA || !p->run->mmio.is_write ||
			    p->run->mmio.len != 1) {
				fail(p, "mmio: unexpected access at 0x%llx len %u write %u",
				     (unsigned long long)p->run->mmio.phys_addr, p->run->mmio.len,
				     p->run->mmio.is_write);
				return -1;
			}
			if (mmio)
				(*mmio)++;
			break;
		default:
			fail(p, "run: unexpected exit reason %u", p->run->exit_reason);
			return -1;
		}
	}
}

static uint64_t get_dirty(struct probe *p)
{
	uint64_t bits = 0;
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = &bits };

	if (ioctl(p->vm, KVM_GET_DIRTY_LOG, &log) < 0)
		die("KVM_GET_DIRTY_LOG");
	return bits;
}

static void clear_dirty(struct probe *p, uint64_t bits)
{
	struct kvm_clear_dirty_log c = {
		.slot = 0, .first_page = 0, .num_pages = SLOT_PAGES, .dirty_bitmap = &bits,
	};

	if (ioctl(p->vm, KVM_CLEAR_DIRTY_LOG, &c) < 0)
		die("KVM_CLEAR_DIRTY_LOG");
}

/*
 * Returns 1 when the dirty log differs from want. The code page is left
 * out: KVM maps a page writable on its first fault (here the instruction
 * fetch) when nothing write-protects it, and logs it dirty then.
 */
static int check_dirty(struct probe *p, const char *when, uint64_t want)
{
	uint64_t got = get_dirty(p) & ~BIT(CODE_GPA / PAGE);

	if (got == want)
		return 0;
	fail(p, "dirty-log: %s: dirty pages 0x%016llx, want 0x%016llx", when,
	     (unsigned long long)got, (unsigned long long)want);
	return 1;
}

static void setup(struct probe *p)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		.args = { KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET },
	};
	struct kvm_userspace_memory_region region = {
		.slot = 0, .flags = KVM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 0,
		.memory_size = SLOT_SIZE,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = CODE_GPA, .rflags = 2 };
	int r, mmap_size;

	p->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (p->kvm < 0) {
		printf("kvm_probe: /dev/kvm: %s\n", strerror(errno));
		exit(errno == ENOENT ? 77 : 1);
	}
	if (ioctl(p->kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
		die("KVM_GET_API_VERSION");
	p->vm = ioctl(p->kvm, KVM_CREATE_VM, 0);
	if (p->vm < 0)
		die("KVM_CREATE_VM");
	/* The manual protect mode must be on before the memslot exists. */
	r = ioctl(p->vm, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	if (r <= 0 || (r & cap.args[0]) != cap.args[0]) {
		printf("kvm_probe: dirty-log: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 gives %d\n", r);
		exit(1);
	}
	if (ioctl(p->vm, KVM_ENABLE_CAP, &cap) < 0)
		die("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)");

	p->memfd = memfd_create("kvm_probe", MFD_CLOEXEC);
	if (p->memfd < 0 || ftruncate(p->memfd, SLOT_SIZE) < 0)
		die("memfd");
	p->mem = mmap(NULL, SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, p->memfd, 0);
	if (p->mem == MAP_FAILED)
		die("mmap(memfd)");
	memcpy(p->mem + CODE_GPA, guest_code, sizeof(guest_code));
	region.userspace_addr = (uintptr_t)p->mem;
	if (ioctl(p->vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");

	p->vcpu = ioctl(p->vm, KVM_CREATE_VCPU, 0);
	if (p->vcpu < 0)
		die("KVM_CREATE_VCPU");
	mmap_size = ioctl(p->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < (int)sizeof(*p->run))
		die("KVM_GET_VCPU_MMAP_SIZE");
	p->run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, p->vcpu, 0);
	if (p->run == MAP_FAILED)
		die("mmap(vcpu)");
	if (ioctl(p->vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	sregs.ds = sregs.es = sregs.ss = sregs.cs;
	sregs.ds.type = sregs.es.type = sregs.ss.type = 3; /* data, read/write, accessed */
	if (ioctl(p->vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	if (ioctl(p->vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");
}

static void set_ecx(struct probe *p, uint32_t n)
{
	struct kvm_regs regs;

	if (ioctl(p->vcpu, KVM_GET_REGS, &regs) < 0)
		die("KVM_GET_REGS");
	regs.rcx = n;
	if (ioctl(p->vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");
}

/*
 * The copy-on-write guard of zd's tracker, in miniature: each write fault
 * on a protected page saves the page's old contents, then unprotects it.
 */
struct guard {
	struct probe *p;
	unsigned faults;
	uint64_t fault_pages;   /* bit n: page n faulted */
	uint8_t saved[SLOT_PAGES];
	int error;
};

static void *guard_thread(void *arg)
{
	struct guard *g = arg;
	struct probe *p = g->p;

	while (g->faults < 2) {
		struct pollfd pfd = { .fd = p->uffd, .events = POLLIN };
		struct uffd_msg msg;
		ssize_t n;

		if (poll(&pfd, 1, 60000) != 1) {
			g->error = ETIMEDOUT;
			return NULL;
		}
		n = read(p->uffd, &msg, sizeof(msg));
		if (n != sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT ||
		    !(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			g->error = EPROTO;
			return NULL;
		}
		uintptr_t off = (uintptr_t)msg.arg.pagefault.address - (uintptr_t)p->mem;
		unsigned page = off / PAGE;
		if (off >= SLOT_SIZE) {
			g->error = EFAULT;
			return NULL;
		}
		g->saved[page] = p->mem[page * PAGE];
		g->fault_pages |= BIT(page);
		g->faults++;
		struct uffdio_writeprotect wp = {
			.range = { .start = (uintptr_t)p->mem + page * PAGE, .len = PAGE },
			.mode = 0,
		};
		if (ioctl(p->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
			g->error = errno;
			return NULL;
		}
	}
	return NULL;
}

static int setup_uffd(struct probe *p)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)p->mem, .len = SLOT_SIZE },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	static const unsigned pages[] = { 3, 9 };

	p->uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (p->uffd < 0) {
		fail(p, "uffd-wp: userfaultfd: %s", strerror(errno));
		return -1;
	}
	if (ioctl(p->uffd, UFFDIO_API, &api) < 0) {
		fail(p, "uffd-wp: UFFDIO_API with WP_HUGETLBFS_SHMEM: %s", strerror(errno));
		return -1;
	}
	if (ioctl(p->uffd, UFFDIO_REGISTER, &reg) < 0) {
		fail(p, "uffd-wp: UFFDIO_REGISTER(WP) on the memfd: %s", strerror(errno));
		return -1;
	}
	for (unsigned i = 0; i < 2; i++) {
		struct uffdio_writeprotect wp = {
			.range = { .start = (uintptr_t)p->mem + pages[i] * PAGE, .len = PAGE },
			.mode = UFFDIO_WRITEPROTECT_MODE_WP,
		};
		if (ioctl(p->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
			fail(p, "uffd-wp: UFFDIO_WRITEPROTECT page %u: %s", pages[i], strerror(errno));
			return -1;
		}
	}
	return 0;
}

int main(void)
{
	struct probe p = { .kvm = -1, .uffd = -1 };
	unsigned mmio = 0;
	int dirty_bad = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGALRM, on_alarm);
	alarm(PROBE_TIMEOUT);
	setup(&p);

	/* INITIALLY_SET: every page starts dirty; clear them all to start clean. */
	dirty_bad += check_dirty(&p, "initially set", ~0ull & ~BIT(CODE_GPA / PAGE));
	clear_dirty(&p, ~0ull);
	dirty_bad += check_dirty(&p, "after clearing all", 0);

	step = "run";
	if (run_to_hlt(&p, &mmio) < 0)
		return 1;
	if (p.mem[0x3000] != 0x11 || p.mem[0x5000] != 0x22) {
		fail(&p, "run: guest stores missing (page 3: 0x%02x, page 5: 0x%02x)",
		     p.mem[0x3000], p.mem[0x5000]);
		return 1;
	}
	printf("kvm_probe: ok run: real-mode guest wrote its pages and halted\n");

	dirty_bad += check_dirty(&p, "after phase A", BIT(3) | BIT(5));
	clear_dirty(&p, BIT(3));
	dirty_bad += check_dirty(&p, "after clearing page 3 only", BIT(5));

	step = "loop";
	set_ecx(&p, 1000);
	if (run_to_hlt(&p, &mmio) < 0)
		return 1;
	step = "mmio";
	set_ecx(&p, MMIO_EXITS);
	if (run_to_hlt(&p, &mmio) < 0)
		return 1;
	if (mmio != MMIO_EXITS)
		fail(&p, "mmio: %u exits, want %u", mmio, MMIO_EXITS);
	else
		printf("kvm_probe: ok mmio: %u KVM_EXIT_MMIO at 0x%x\n", mmio, MMIO_GPA);

	/* Page 9 must exist before it is protected (6.1 cannot protect holes). */
	p.mem[0x9000] = 0x99;
	struct guard g = { .p = &p };
	pthread_t tid;
	step = "uffd-wp";
	int have_uffd = setup_uffd(&p) == 0;
	if (have_uffd && pthread_create(&tid, NULL, guard_thread, &g) != 0)
		die("pthread_create");
	if (run_to_hlt(&p, &mmio) < 0)
		return 1;
	if (have_uffd) {
		pthread_join(tid, NULL);
		if (g.error)
			fail(&p, "uffd-wp: fault handler: %s", strerror(g.error));
		else if (g.fault_pages != (BIT(3) | BIT(9)))
			fail(&p, "uffd-wp: faults on pages 0x%llx, want pages 3 and 9",
			     (unsigned long long)g.fault_pages);
		else if (g.saved[3] != 0x11 || g.saved[9] != 0x99)
			fail(&p, "uffd-wp: saved old contents 0x%02x 0x%02x, want 0x11 0x99",
			     g.saved[3], g.saved[9]);
		else if (p.mem[0x3000] != 0x33 || p.mem[0x9000] != 0x44)
			fail(&p, "uffd-wp: guest stores lost after unprotect (0x%02x 0x%02x)",
			     p.mem[0x3000], p.mem[0x9000]);
		else
			printf("kvm_probe: ok uffd-wp: guest stores to 2 protected memfd pages "
			       "faulted, old contents saved, guest resumed\n");
	}
	/* Page 3 was re-armed by the clear, page 9 never written before, 5 still set. */
	dirty_bad += check_dirty(&p, "after phase D", BIT(3) | BIT(5) | BIT(9));
	if (!dirty_bad)
		printf("kvm_probe: ok dirty-log: manual protect, selective clear re-arms only "
		       "the chosen pages\n");
	return p.failed ? 1 : 0;
}
