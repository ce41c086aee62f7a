/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <math.h>
#include <xxhash.h>
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>

#include "zd/util.h"

const char *zd_progname = "zd";
int zd_verbose;

void zd_set_progname(const char *argv0)
{
	const char *s = strrchr(argv0, '/');

	zd_progname = s ? s + 1 : argv0;
	if (getenv("ZD_DEBUG") && strcmp(getenv("ZD_DEBUG"), "0") != 0)
		zd_verbose = 1;
}

/* Records of up to 16 MiB come and go every epoch: keep them on the heap
 * instead of a fresh mmap each time (glibc's default for a buffer this
 * big), whose page faults cost more than the copy (2x the throughput
 * under nested virtualisation). */
void zd_malloc_keep_big(void)
{
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

/* Under systemd, with stderr going to the journal (JOURNAL_STREAM names
 * its device and inode), a "<N>" in front of a line is its syslog level
 * (sd-daemon(3)); on a terminal or a file the lines stay as they are. */
static const char *level_prefix(const char *level)
{
	static int journal = -1;

	if (journal < 0) {
		const char *js = getenv("JOURNAL_STREAM");
		unsigned long long dev, ino;
		struct stat st;

		journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
			  (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
	}
	return journal ? level : "";
}

static void vwarn_common(const char *level, int errnum, const char *fmt, va_list ap)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "%s%s: ", level_prefix(level), zd_progname);

	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (errnum && (size_t)n < sizeof(line))
		snprintf(line + n, sizeof(line) - n, ": %s", strerror(errnum));
	/* One write, so lines from the stages of a pipeline do not interleave. */
	fprintf(stderr, "%s\n", line);
}

void zd_warn(const char *fmt, ...)
{
	int e = errno;
	va_list ap;

	va_start(ap, fmt);
	vwarn_common(SD_WARNING, e, fmt, ap);
	va_end(ap);
}

void zd_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarn_common(SD_WARNING, 0, fmt, ap);
	va_end(ap);
}

void zd_verror(int errnum, const char *fmt, va_list ap)
{
	vwarn_common(SD_ERR, errnum, fmt, ap);
}

int zd_msg(int rc, char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
	return rc;
}

void zd_debug(const char *fmt, ...)
{
	va_list ap;
	char line[1024];

	if (!zd_verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s%s: [%.6f] %s\n", level_prefix(SD_DEBUG), zd_progname, zd_now_ns() / 1e9, line);
}

ssize_t zd_read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = read(fd, (char *)buf + done, len - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

int zd_write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = write(fd, (const char *)buf + done, len - done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

static uint64_t clock_ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t zd_now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
uint64_t zd_wall_ns(void) { return clock_ns(CLOCK_REALTIME); }

void zd_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct timespec zd_cond_deadline(uint64_t ns)
{
	uint64_t wall = zd_wall_ns() + ns;

	return (struct timespec){ .tv_sec = (time_t)(wall / 1000000000u), .tv_nsec = (long)(wall % 1000000000u) };
}

int zd_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

int zd_parse_double(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !*s || *s == ' ')
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

/* Split "123ms" into 123 and "ms"; the number part must be non-empty. */
static int split_suffix(const char *s, uint64_t *num, const char **suffix)
{
	char *end;
	unsigned long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -1;
	*num = v;
	*suffix = end;
	return 0;
}

static int mul_checked(uint64_t v, uint64_t m, uint64_t *out)
{
	if (m && v > UINT64_MAX / m)
		return -1;
	*out = v * m;
	return 0;
}

int zd_parse_size(const char *s, uint64_t *out)
{
	uint64_t v;
	const char *suf;
	uint64_t m = 1;

	if (split_suffix(s, &v, &suf) < 0)
		return -1;
	if (!*suf)
		m = 1;
	else if (!strcmp(suf, "K") || !strcmp(suf, "k") || !strcmp(suf, "KiB"))
		m = 1ull << 10;
	else if (!strcmp(suf, "M") || !strcmp(suf, "MiB"))
		m = 1ull << 20;
	else if (!strcmp(suf, "G") || !strcmp(suf, "GiB"))
		m = 1ull << 30;
	else
		return -1;
	return mul_checked(v, m, out);
}

int zd_parse_duration_ns(const char *s, uint64_t *out)
{
	uint64_t v;
	const char *suf;
	uint64_t m;

	if (split_suffix(s, &v, &suf) < 0)
		return -1;
	if (!*suf || !strcmp(suf, "ms"))
		m = 1000000ull;
	else if (!strcmp(suf, "ns"))
		m = 1;
	else if (!strcmp(suf, "us"))
		m = 1000ull;
	else if (!strcmp(suf, "s"))
		m = 1000000000ull;
	else
		return -1;
	return mul_checked(v, m, out);
}

/* XXH3 with the widest vectors the CPU has (libxxhash's dispatcher):
 * 80 GB/s here against 19 for the library's SSE2 default, which made the
 * journal's digest a tenth of zd-recv's CPU time. Same hash either way. */
uint64_t zd_hash64(const void *buf, size_t len)
{
	uint64_t h = XXH3_64bits_dispatch(buf, len);

	zd_vzeroupper();
	return h;
}

void zd_hash64_update(XXH3_state_t *h, const void *buf, size_t len)
{
	XXH3_64bits_update_dispatch(h, buf, len);
	zd_vzeroupper();
}

/* Out of memory: no caller does better than to stop. The library does not
 * exit on its callers' behalf; abort() stops here and leaves a core that
 * shows where (as glib's g_malloc does). */
static _Noreturn void oom(size_t n)
{
	zd_warnx("out of memory allocating %zu bytes", n);
	abort();
}

void *zd_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		oom(n);
	return p;
}

void *zd_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		oom(n * size);
	return p;
}

void *zd_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q)
		oom(n);
	return q;
}

char *zd_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		oom(strlen(s) + 1);
	return p;
}
