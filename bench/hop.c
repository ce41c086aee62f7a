/* SPDX-License-Identifier: MIT */
/*
 * bench/hop: what one epoch's page data costs to move on this host, the
 * floor under T1->ACK (issue 15's 3 ms target). An epoch of 1024 dirty
 * pages is 4 MiB; on its way from the guest to the backup's journal it
 * is copied, checksummed and carried through pipes and a TCP socket by
 * separate processes. Each case moves one such epoch and is timed from
 * the first byte's send to the last byte's arrival:
 *
 *   copy           memcpy of 4 MiB (the source rotating over 64 MiB, so
 *                  not from the cache, as a guest's pages are not)
 *   crc            zd_crc32c over 4 MiB
 *   wakeup         a 1-byte round trip between two processes over pipes
 *                  (half of it is one wake-up of a blocked reader)
 *   pipe           4 MiB written into a pipe and read out by another
 *                  process (64 KiB pipes, Linux's default; and 1 MiB)
 *   chain          zd-track -> zd-mru -> zd-swap -> zd-send's shape:
 *                  4 MiB through 3 pipes, the 2 middle processes moving
 *                  it on with splice(2) as zd-mru and zd-swap do
 *   tcp            4 MiB over a loopback TCP connection
 *
 * Every case runs twice a round: with both cores free, and with a
 * process spinning beside it, as a guest's vCPU that writes 60000 pages a
 * second does (each write a dirty-log fault: its thread never sleeps).
 * Rounds interleave every case; a figure is the median of the rounds, with
 * the lowest and highest.
 *
 *   bench/hop [ROUNDS [CSV]]   default 40 rounds (make bench-hop: 200),
 *                              bench/results/hop.csv
 */
#include <err.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zd/stream.h"
#include "zd/util.h"

#define EPOCH_BYTES (4u << 20)	/* 1024 pages of 4 KiB */
#define SOURCE_BYTES (64u << 20)
#define CHAIN_PIPES 3

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Timestamps the processes of a case share: the sender's first byte, the
 * receiver's last. */
struct stamps {
	volatile uint64_t sent, arrived;
};
static struct stamps *st;

static void full_write(int fd, const uint8_t *p, size_t n)
{
	if (zd_write_full(fd, p, n) < 0)
		err(1, "write");
}

static void full_read(int fd, uint8_t *p, size_t n)
{
	if (zd_read_full(fd, p, n) != (ssize_t)n)
		err(1, "read");
}

/* One process of a case, forked; it exits when its job is done. */
static pid_t spawn(void (*fn)(int, int, size_t), int in, int out, size_t arg)
{
	pid_t pid = fork();
	if (pid < 0)
		err(1, "fork");
	if (pid == 0) {
		fn(in, out, arg);
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	int status;
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		errx(1, "a process of the benchmark failed");
}

static void sender(int in, int out, size_t off)
{
	(void)in;
	uint8_t *src = malloc(EPOCH_BYTES);
	if (!src)
		err(1, "malloc");
	memset(src, (int)off, EPOCH_BYTES);
	st->sent = now_ns();
	full_write(out, src, EPOCH_BYTES);
	free(src);
}

static void receiver(int in, int out, size_t unused)
{
	(void)out, (void)unused;
	uint8_t *dst = malloc(EPOCH_BYTES);
	if (!dst)
		err(1, "malloc");
	memset(dst, 0, EPOCH_BYTES); /* a tool's buffer is mapped already */
	full_read(in, dst, EPOCH_BYTES);
	st->arrived = now_ns();
	free(dst);
}

/* zd-mru's and zd-swap's way with page data (lib/stream/reader.c,
 * zd_reader_pass_out): splice from one pipe into the next. */
static void splicer(int in, int out, size_t unused)
{
	(void)unused;
	size_t left = EPOCH_BYTES;
	while (left) {
		ssize_t n = splice(in, NULL, out, NULL, left, SPLICE_F_MOVE);
		if (n <= 0)
			err(1, "splice");
		left -= (size_t)n;
	}
}

static void new_pipe(int fd[2], int size)
{
	if (pipe(fd) < 0)
		err(1, "pipe");
	if (size && fcntl(fd[1], F_SETPIPE_SZ, size) < 0)
		err(1, "F_SETPIPE_SZ %d", size);
}

/* PIPES pipes in a row, a splicer between each two: us from the sender's
 * first byte to the receiver's last. */
static double case_pipes(int pipes, int size)
{
	int fd[CHAIN_PIPES][2];
	pid_t pid[CHAIN_PIPES + 1];
	int i;

	for (i = 0; i < pipes; i++)
		new_pipe(fd[i], size);
	pid[0] = spawn(receiver, fd[pipes - 1][0], -1, 0);
	for (i = pipes - 1; i > 0; i--)
		pid[pipes - i] = spawn(splicer, fd[i - 1][0], fd[i][1], 0);
	for (i = 0; i < pipes; i++)
		close(fd[i][0]), close(i ? fd[i][1] : -1);
	sender(-1, fd[0][1], 1);
	close(fd[0][1]);
	for (i = 0; i < pipes; i++)
		reap(pid[i]);
	return (double)(st->arrived - st->sent) / 1e3;
}

static double case_tcp(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int l, c, s, one = 1;
	pid_t pid;

	l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &alen) < 0)
		err(1, "loopback listener");
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		err(1, "connect");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s = accept(l, NULL, NULL);
	if (s < 0)
		err(1, "accept");
	close(l);
	pid = spawn(receiver, s, -1, 0);
	close(s);
	sender(-1, c, 2);
	close(c);
	reap(pid);
	return (double)(st->arrived - st->sent) / 1e3;
}

static void ponger(int in, int out, size_t rounds)
{
	uint8_t b;
	for (size_t i = 0; i < rounds; i++) {
		full_read(in, &b, 1);
		full_write(out, &b, 1);
	}
}

/* One wake-up of a blocked reader: half a round trip, the mean of 200. */
static double case_wakeup(void)
{
	enum { TRIPS = 200 };
	int ab[2], ba[2];
	uint8_t b = 0;
	uint64_t t0;
	pid_t pid;

	new_pipe(ab, 0);
	new_pipe(ba, 0);
	pid = spawn(ponger, ab[0], ba[1], TRIPS);
	close(ab[0]), close(ba[1]);
	t0 = now_ns();
	for (int i = 0; i < TRIPS; i++) {
		full_write(ab[1], &b, 1);
		full_read(ba[0], &b, 1);
	}
	st->arrived = now_ns();
	close(ab[1]), close(ba[0]);
	reap(pid);
	return (double)(st->arrived - t0) / 1e3 / (2 * TRIPS);
}

static uint8_t *source, *dest;
static size_t source_off;

static double case_copy(void)
{
	uint64_t t0 = now_ns();
	memcpy(dest, source + source_off, EPOCH_BYTES);
	__asm__ volatile("" : : "r"(dest) : "memory");
	source_off = (source_off + EPOCH_BYTES) % SOURCE_BYTES;
	return (double)(now_ns() - t0) / 1e3;
}

static double case_crc(void)
{
	uint64_t t0 = now_ns();
	volatile uint32_t c = zd_crc32c(0, source + source_off, EPOCH_BYTES);
	(void)c;
	source_off = (source_off + EPOCH_BYTES) % SOURCE_BYTES;
	return (double)(now_ns() - t0) / 1e3;
}

static double c_pipe64k(void) { return case_pipes(1, 0); }
static double c_pipe1m(void) { return case_pipes(1, 1 << 20); }
static double c_chain(void) { return case_pipes(CHAIN_PIPES, 0); }
static double c_chain1m(void) { return case_pipes(CHAIN_PIPES, 1 << 20); }

static const struct hop_case {
	const char *name, *what;
	double (*run)(void);
} cases[] = {
	{ "copy", "memcpy of 4 MiB", case_copy },
	{ "crc", "crc32c of 4 MiB", case_crc },
	{ "wakeup", "one wake-up of a process blocked on a pipe", case_wakeup },
	{ "pipe64k", "4 MiB through one 64 KiB pipe", c_pipe64k },
	{ "pipe1m", "4 MiB through one 1 MiB pipe", c_pipe1m },
	{ "chain", "4 MiB through 3 pipes, spliced between them", c_chain },
	{ "chain1m", "the same through 1 MiB pipes", c_chain1m },
	{ "tcp", "4 MiB over loopback TCP", case_tcp },
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static pid_t spinner(void)
{
	pid_t pid = fork();
	if (pid < 0)
		err(1, "fork");
	if (pid == 0)
		for (;;)
			__asm__ volatile("pause");
	return pid;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 40;
	const char *csv = argc > 2 ? argv[2] : "bench/results/hop.csv";
	double (*t)[2][NCASES];
	FILE *f;

	if (rounds < 3 || rounds > 10000)
		errx(2, "ROUNDS: want 3..10000, not '%s'", argv[1]);
	st = mmap(NULL, sizeof(*st), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	source = mmap(NULL, SOURCE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dest = mmap(NULL, EPOCH_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t = calloc((size_t)rounds, sizeof(*t));
	if (st == MAP_FAILED || source == MAP_FAILED || dest == MAP_FAILED || !t)
		err(1, "memory");
	/* Not shared copy-on-write with the forked cases: a write to them
	 * would then fault on every page. */
	if (madvise(source, SOURCE_BYTES, MADV_DONTFORK) || madvise(dest, EPOCH_BYTES, MADV_DONTFORK))
		err(1, "madvise");
	memset(source, 0x5a, SOURCE_BYTES);
	memset(dest, 0, EPOCH_BYTES);
	signal(SIGPIPE, SIG_IGN);

	for (int r = 0; r < rounds; r++)
		for (int busy = 0; busy < 2; busy++) {
			pid_t spin = busy ? spinner() : 0;
			if (busy)
				usleep(2000); /* let it take its core */
			for (size_t c = 0; c < NCASES; c++)
				t[r][busy][c] = cases[c].run();
			if (spin)
				kill(spin, SIGKILL), waitpid(spin, NULL, 0);
		}

	if (!(f = fopen(csv, "w")))
		err(1, "%s", csv);
	fprintf(f, "case,cores_free,rounds,p50_us,min_us,max_us,what\n");
	printf("%-8s %-11s %9s %9s %9s  %s\n", "case", "cores free", "p50 us", "min", "max", "what");
	for (size_t c = 0; c < NCASES; c++)
		for (int busy = 0; busy < 2; busy++) {
			double v[10000];
			for (int r = 0; r < rounds; r++)
				v[r] = t[r][busy][c];
			qsort(v, (size_t)rounds, sizeof(v[0]), cmp_double);
			fprintf(f, "%s,%d,%d,%.1f,%.1f,%.1f,%s\n", cases[c].name, 2 - busy, rounds,
				v[rounds / 2], v[0], v[rounds - 1], cases[c].what);
			printf("%-8s %-11d %9.1f %9.1f %9.1f  %s\n", cases[c].name, 2 - busy,
			       v[rounds / 2], v[0], v[rounds - 1], cases[c].what);
		}
	if (fclose(f))
		err(1, "%s", csv);
	free(t);
	munmap(source, SOURCE_BYTES), munmap(dest, EPOCH_BYTES);
	return 0;
}
