/* SPDX-License-Identifier: MIT */
/*
 * /init of the PVH guest that tests/xen/ protects: keep writing memory.
 * Sweeps a working set of WS pages, stamping each page with a sweep
 * counter, and naps briefly every few pages so dom0 gets the CPU too.
 * Says once on the console that it writes (the harness waits for that).
 *
 * With ZD_PROGRESS=1 in its environment (the kernel passes an unknown
 * "NAME=VALUE" of its command line to init: bench/xen_dom0.sh sets
 * XEN_GUEST_EXTRA) it also says how far it got: once a second
 * "ZD-PROGRESS <realtime ms> <pages written>", and "ZD-GAP <ms>" for every
 * stretch of more than GAP_MS between two page writes (the guest was
 * stopped: a checkpoint's pause). CLOCK_REALTIME, not MONOTONIC: under
 * xl remus the guest is suspended, and its monotonic clock hides part of
 * each suspension.
 * The service (tests/xen/service.sh, netbuf.sh): a child process listens
 * on TCP port ZD_SERVE_PORT (7777) and answers each request line with
 * "seq N", N counting up from its own counter, as zd-vm's guest service
 * does (zd-client is the client). The counter lives in the guest's
 * memory, so a replica taken at a checkpoint holds it. The guest's /init
 * (a busybox script xenhost.sh writes) configures eth0 when the domain
 * has a vif; without one the service listens anyway, unreachable.
 * With ZD_DISK=1 (tests/xen/disk.sh) a third process writes a counter to
 * the guest's disk and to its memory in one step, over and over: it
 * writes block 1 + n % 255 (4 KiB, every byte n's low byte, n in its first
 * 8 bytes), then sector 0 ("ZDDISK1\0", n), O_DIRECT|O_SYNC, then
 * counts n in memory. Before each step it reads both back and checks
 * them against its memory's count: a disk and a memory taken at one
 * checkpoint always agree so (a write that completed before the
 * checkpoint, the count not yet in memory, is written again by the same
 * step after a takeover). It says "ZD-DISK-READY", once a second
 * "ZD-DISK <realtime ms> <n>" and "ZD-MEM <MemAvailable kB>" (the guest
 * is small: a test sees memory run short before the OOM killer ends a
 * writer), and "ZD-DISK-BAD ..." on a disagreement.
 * Static, no libc beyond what -static brings: the guest has nothing else.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS (8u << 20)		/* 8 MiB, as in our xl remus runs */
#define GAP_MS 10

#define SERVE_PORT 7777
#define MAX_CLIENTS 16

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One client's unfinished request line. */
struct svc_client {
	int fd;
	size_t len;		/* bytes of it read so far */
};

/* Answer every request line "seq N"; never returns. Requests of all the
 * clients share one counter, as zd-vm's guest does. */
static void serve(unsigned port)
{
	static uint64_t counter;	/* the N of "seq N": in guest memory */
	struct svc_client cl[MAX_CLIENTS];
	struct pollfd pfd[MAX_CLIENTS + 1];
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int lfd, one = 1, ncl = 0;

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0) {
		perror("zd-guest: service");
		_exit(1);
	}
	printf("ZD-GUEST-SERVING %u\n", port);
	fflush(stdout);
	for (;;) {
		pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		for (int i = 0; i < ncl; i++)
			pfd[i + 1] = (struct pollfd){ .fd = cl[i].fd, .events = POLLIN };
		if (poll(pfd, (nfds_t)ncl + 1, -1) < 0)
			continue;
		for (int i = ncl - 1; i >= 0; i--) {
			char buf[512];
			ssize_t n;

			if (!pfd[i + 1].revents)
				continue;
			n = read(cl[i].fd, buf, sizeof(buf));
			for (ssize_t j = 0; j < n; j++) {
				char ans[64];
				int len;

				if (buf[j] != '\n') {
					cl[i].len++;	/* the text itself does not matter */
					continue;
				}
				cl[i].len = 0;
				counter++;
				len = snprintf(ans, sizeof(ans), "seq %llu\n", (unsigned long long)counter);
				if (write(cl[i].fd, ans, (size_t)len) != len)
					break;
			}
			if (n <= 0) {
				close(cl[i].fd);
				cl[i] = cl[--ncl];
			}
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept(lfd, NULL, NULL);

			if (fd >= 0 && ncl == MAX_CLIENTS) {
				close(fd);
			} else if (fd >= 0) {
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
				cl[ncl++] = (struct svc_client){ .fd = fd };
			}
		}
	}
}

/* MemAvailable of /proc/meminfo in kB, -1 if unknown. */
static long mem_available(void)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

#define DISK_DEV "/dev/xvda"
#define DISK_MAGIC "ZDDISK1"

/* Never returns. */
static void disk_writer(void)
{
	static uint64_t count;		/* the memory's count: in guest memory */
	struct timespec nap = { 0, 20000000 };
	uint8_t *buf;
	int64_t said = 0;
	unsigned bad = 0;
	int fd = -1;

	for (int i = 0; i < 300 && fd < 0; i++) {
		fd = open(DISK_DEV, O_RDWR | O_DIRECT | O_SYNC);
		if (fd < 0)
			usleep(100000);
	}
	if (fd < 0 || posix_memalign((void **)&buf, 4096, 4096)) {
		perror("ZD-DISK-NONE " DISK_DEV);
		fflush(stdout);
		_exit(1);
	}
	puts("ZD-DISK-READY");
	fflush(stdout);
	for (;;) {
		uint64_t d = 0, n;
		off_t blk = (off_t)(1 + count % 255) * 4096;

		/* The disk as the memory's count says it must be. */
		if (pread(fd, buf, 4096, 0) == 4096 && !memcmp(buf, DISK_MAGIC, 8))
			memcpy(&d, buf + 8, 8);
		if (d != count && bad++ < 5)
			printf("ZD-DISK-BAD disk %llu memory %llu\n", (unsigned long long)d,
			       (unsigned long long)count);
		if (count && pread(fd, buf, 4096, blk) == 4096) {
			memcpy(&d, buf, 8);
			if ((d != count || buf[4095] != (uint8_t)count) && bad++ < 5)
				printf("ZD-DISK-BAD block %lld holds %llu, memory %llu\n", (long long)blk / 4096,
				       (unsigned long long)d, (unsigned long long)count);
		}
		n = count + 1;
		memset(buf, (int)(n & 0xff), 4096);
		memcpy(buf, &n, 8);
		if (pwrite(fd, buf, 4096, (off_t)(1 + n % 255) * 4096) != 4096)
			perror("ZD-DISK-BAD write");
		memset(buf, 0, 512);
		memcpy(buf, DISK_MAGIC, 8);
		memcpy(buf + 8, &n, 8);
		if (pwrite(fd, buf, 512, 0) != 512)
			perror("ZD-DISK-BAD write");
		count = n;
		if (now_ms() - said >= 1000) {
			said = now_ms();
			printf("ZD-DISK %lld %llu\nZD-MEM %ld\n", (long long)said, (unsigned long long)count,
			       mem_available());
			fflush(stdout);
		}
		nanosleep(&nap, NULL);
	}
}

int main(void)
{
	uint8_t *ws = malloc(WS);
	struct timespec nap = { 0, 200000 };
	uint64_t sweep = 0, pages = 0;
	int64_t last, said;
	int progress = getenv("ZD_PROGRESS") && !strcmp(getenv("ZD_PROGRESS"), "1");

	if (!ws) {
		puts("zd-guest: no memory");
		for (;;)
			pause();
	}
	memset(ws, 0x5a, WS);
	/* The service runs beside the writer, in its own process: the
	 * writer's naps do not delay the answers. */
	if (fork() == 0)
		serve(getenv("ZD_SERVE_PORT") ? (unsigned)atoi(getenv("ZD_SERVE_PORT")) : SERVE_PORT);
	if (getenv("ZD_DISK") && !strcmp(getenv("ZD_DISK"), "1") && fork() == 0)
		disk_writer();
	puts("ZD-GUEST-WRITING");
	fflush(stdout);
	last = said = now_ms();
	for (;;) {
		sweep++;
		for (size_t off = 0; off < WS; off += 4096) {
			int64_t t;

			memcpy(ws + off + (sweep % 64) * 8, &sweep, sizeof(sweep));
			pages++;
			if ((off / 4096) % 16 == 15)
				nanosleep(&nap, NULL);
			if (!progress)
				continue;
			t = now_ms();
			if (t - last > GAP_MS)
				printf("ZD-GAP %lld\n", (long long)(t - last));
			last = t;
			if (t - said >= 1000) {
				printf("ZD-PROGRESS %lld %llu\n", (long long)t, (unsigned long long)pages);
				fflush(stdout);
				said = t;
			}
		}
	}
}
