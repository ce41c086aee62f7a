/* SPDX-License-Identifier: MIT */
/*
 * Small helpers every tool uses: diagnostics in the form
 * "zd-TOOL: what failed: why", full reads and writes that retry short I/O
 * and EINTR, a monotonic clock in nanoseconds, number parsing that rejects
 * garbage.
 */
#ifndef ZD_UTIL_H
#define ZD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#define ZD_VERSION "0.1.0"

/* Exit codes shared by every tool; documented in each man page. */
enum zd_exit {
	ZD_EXIT_OK = 0,
	ZD_EXIT_FAIL = 1,	/* runtime failure: I/O, peer, target */
	ZD_EXIT_USAGE = 2,	/* bad flags or arguments */
	ZD_EXIT_DATA = 3,	/* bad input stream: corrupt, truncated, hostile */
	ZD_EXIT_TARGET = 4,	/* the target (VM) is missing, died or refused */
	ZD_EXIT_PEER = 5,	/* the remote peer is unreachable or died */
};

/* Set once by main(): the prefix of every diagnostic, e.g. "zd-track". */
extern const char *zd_progname;

void zd_set_progname(const char *argv0);
/* For tools that pass PAGES records (up to 16 MiB each) from thread to
 * thread: freed buffers stay in the heap for the next record. */
void zd_malloc_keep_big(void);
void zd_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void zd_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An error line ("zd-TOOL: ...[: strerror(errnum)]", level err in the
 * journal): what a tool's zd_die prints before it exits (cmd/opt.c). */
void zd_verror(int errnum, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Write the reason into msg (msglen bytes) and return rc: the way a libzd
 * call hands its exit status and one-line reason to the tool. */
int zd_msg(int rc, char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Verbose log (enabled by -v / ZD_DEBUG=1): goes to stderr with a timestamp. */
extern int zd_verbose;
void zd_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* sd_notify(3) for a service manager: READY=1 with a status line; then a
 * STATUS= line, at most once a second (*last_ns: the caller's last one). */
void zd_notify_ready(const char *status);
void zd_notify_status(uint64_t *last_ns, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Read exactly len bytes. Returns len, 0 on EOF before any byte, or the
 * number of bytes read before EOF (short), or -1 with errno. */
ssize_t zd_read_full(int fd, void *buf, size_t len);
/* Write exactly len bytes; returns 0 or -1 with errno. */
int zd_write_full(int fd, const void *buf, size_t len);

uint64_t zd_now_ns(void);	/* CLOCK_MONOTONIC */
/* The time ns from now as pthread_cond_timedwait takes it for a condition
 * variable of the default clock (CLOCK_REALTIME). */
struct timespec zd_cond_deadline(uint64_t ns);
uint64_t zd_wall_ns(void);	/* CLOCK_REALTIME, for cross-host timestamps */
void zd_sleep_ns(uint64_t ns);

/* Strict parsers: return 0 on success, -1 if s is not entirely a number in
 * range. Sizes accept K, M, G suffixes (binary). Durations accept ns, us,
 * ms, s suffixes; a bare number is milliseconds. */
int zd_parse_u64(const char *s, uint64_t *out);
int zd_parse_double(const char *s, double *out);
int zd_parse_size(const char *s, uint64_t *out);
int zd_parse_duration_ns(const char *s, uint64_t *out);

/* 64-bit checksum of a buffer (XXH3, from libxxhash). */
uint64_t zd_hash64(const void *buf, size_t len);
struct XXH3_state_s;
void zd_hash64_update(struct XXH3_state_s *h, const void *buf, size_t len);
/* After vector code that leaves the upper halves of the registers dirty
 * (ISA-L's, libxxhash's dispatched XXH3): until this, every SSE
 * instruction pays for a merge, and code that uses them ran 4x slower. */
static inline void zd_vzeroupper(void)
{
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("avx"))
		__asm__ volatile("vzeroupper" ::: "memory");
#endif
}

void *zd_xmalloc(size_t n);
void *zd_xcalloc(size_t n, size_t size);
void *zd_xrealloc(void *p, size_t n);
char *zd_xstrdup(const char *s);

/* The little-endian fields of zd's formats (the stream, the feedback
 * socket, the replica's journal), whatever the host's byte order. */
static inline uint16_t zd_get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t zd_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t zd_get_u64(const uint8_t *p)
{
	return (uint64_t)zd_get_u32(p) | (uint64_t)zd_get_u32(p + 4) << 32;
}
static inline void zd_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void zd_put_u64(uint8_t *p, uint64_t v)
{
	zd_put_u32(p, (uint32_t)v);
	zd_put_u32(p + 4, (uint32_t)(v >> 32));
}

#define ZD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ZD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ZD_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
