/* SPDX-License-Identifier: MIT */
/*
 * The reader of a dm-log-writes log (lib/target/xen_disk.c), on log
 * files written here in the kernel's format (drivers/md/dm-log-writes.c):
 * the writes up to a mark, in log order, flushes and other marks skipped,
 * a discard as zeros; the next call goes on from there; a mark not yet in
 * the log (or a log the kernel has not written to yet) is "not yet";
 * entries written where the reader read ahead are read again; --verify's
 * second mark counts what lies between without consuming it; and
 * the refusals, each naming what is wrong: bad magic, an entry past the
 * device, a log truncated inside an entry's data, unknown flags.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target/xen_disk.h"

#define SS 512u
#define DEV (64u * 1024)

static char path[64];
static uint8_t logbuf[1 << 20];
static size_t loglen;
static uint64_t nentries;

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void log_start(void)
{
	memset(logbuf, 0, sizeof(logbuf));
	loglen = SS;
	nentries = 0;
}

/* An entry; data of nr sectors, each sector filled with fill + i. */
static void log_entry(uint64_t sector, uint64_t nr, uint64_t flags, const char *mark, uint8_t fill)
{
	uint8_t *e = logbuf + loglen;

	put64(e, sector);
	put64(e + 8, nr);
	put64(e + 16, flags);
	put64(e + 24, mark ? strlen(mark) : 0);
	if (mark)
		memcpy(e + 32, mark, strlen(mark));
	loglen += SS;
	if (!(flags & (ZD_LW_MARK | ZD_LW_DISCARD)))
		for (uint64_t i = 0; i < nr; i++, loglen += SS)
			memset(logbuf + loglen, fill + (int)i, SS);
	nentries++;
}

/* The file: super block (count nr), the first len bytes of the log. */
static void log_write(uint64_t magic, uint64_t nr, size_t len)
{
	FILE *f;

	memset(logbuf, 0, 32);
	put64(logbuf, magic);
	put64(logbuf + 8, ZD_LW_VERSION);
	put64(logbuf + 16, nr);
	logbuf[24] = SS & 0xff;
	logbuf[25] = SS >> 8;
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(logbuf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

struct seen {
	uint8_t disk[DEV];
	unsigned calls;
	uint64_t off[16], len[16];
	bool discard[16];
};

static int apply(void *arg, uint64_t off, const uint8_t *data, uint64_t len)
{
	struct seen *s = arg;

	assert_true(off + len <= DEV);
	if (s->calls < 16) {
		s->off[s->calls] = off;
		s->len[s->calls] = len;
		s->discard[s->calls] = !data;
	}
	s->calls++;
	if (data)
		memcpy(s->disk + off, data, len);
	else
		memset(s->disk + off, 0, len);
	return 0;
}

static int setup(void **state)
{
	snprintf(path, sizeof(path), "/tmp/zd-lwlog.%d", (int)getpid());
	return 0;
}

static int teardown(void **state)
{
	unlink(path);
	return 0;
}

static void test_until_marks(void **state)
{
	static struct seen s;
	struct zd_lwlog lw;
	char err[256];

	memset(&s, 0, sizeof(s));
	memset(s.disk, 0xee, sizeof(s.disk));
	log_start();
	log_entry(2, 1, 0, NULL, 0xa0);			/* A: bytes 1024..1535 */
	log_entry(0, 0, ZD_LW_FLUSH, NULL, 0);
	log_entry(4, 2, ZD_LW_DISCARD, NULL, 0);	/* zeros at 2048..3071 */
	log_entry(0, 0, ZD_LW_MARK, "someone-else", 0);
	log_entry(0, 2, ZD_LW_FUA | ZD_LW_METADATA, NULL, 0xb0);	/* B: 0..1023 */
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_entry(3, 1, 0, NULL, 0xc0);			/* C: after the mark */
	log_entry(0, 0, ZD_LW_MARK, "zd-r-2", 0);
	log_write(ZD_LW_MAGIC, nentries, loglen);

	assert_int_equal(zd_lwlog_open(&lw, path, DEV, err, sizeof(err)), 0);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 3);
	assert_int_equal(s.off[0], 1024);
	assert_int_equal(s.len[0], 512);
	assert_false(s.discard[0]);
	assert_int_equal(s.off[1], 2048);
	assert_int_equal(s.len[1], 1024);
	assert_true(s.discard[1]);
	assert_int_equal(s.off[2], 0);
	assert_int_equal(s.len[2], 1024);
	assert_int_equal(lw.writes, 2);
	assert_int_equal(lw.discards, 1);
	assert_int_equal(lw.flushes, 1);
	assert_int_equal(s.disk[0], 0xb0);
	assert_int_equal(s.disk[512], 0xb1);
	assert_int_equal(s.disk[1024], 0xa0);
	assert_int_equal(s.disk[1536], 0xee);		/* C not yet */
	assert_int_equal(s.disk[2048], 0);
	assert_int_equal(s.disk[3071], 0);
	assert_int_equal(s.disk[3072], 0xee);

	/* The next mark: only what came after the first. */
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-2", 0, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 4);
	assert_int_equal(s.off[3], 1536);
	assert_int_equal(s.disk[1536], 0xc0);

	/* Not in the log yet: "not yet", nothing applied. */
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-3", 0, apply, &s, err, sizeof(err)), 1);
	assert_int_equal(s.calls, 4);

	/* The kernel appends and updates the count: found then. */
	log_entry(5, 1, 0, NULL, 0xd0);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-3", 0);
	log_write(ZD_LW_MAGIC, nentries, loglen);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-3", 1000000, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 5);
	assert_int_equal(s.disk[2560], 0xd0);
	zd_lwlog_close(&lw);
}

/* A log the kernel has not written yet (its super block comes with the
 * first mark), and entries beyond the super block's count: not read. */
static void test_not_yet(void **state)
{
	static struct seen s;
	struct zd_lwlog lw;
	char err[256];

	memset(&s, 0, sizeof(s));
	log_start();
	log_entry(1, 1, 0, NULL, 0x11);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_write(0, 0, loglen);
	memset(logbuf, 0, SS);
	{
		FILE *f = fopen(path, "r+");

		assert_non_null(f);
		assert_int_equal(fwrite(logbuf, 1, SS, f), SS);
		fclose(f);
	}
	assert_int_equal(zd_lwlog_open(&lw, path, DEV, err, sizeof(err)), 0);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, apply, &s, err, sizeof(err)), 1);
	assert_int_equal(s.calls, 0);
	/* Counted up to the write only: the mark is not there yet. */
	log_write(ZD_LW_MAGIC, 1, loglen);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, apply, &s, err, sizeof(err)), 1);
	assert_int_equal(s.calls, 1);
	log_write(ZD_LW_MAGIC, 2, loglen);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 1);
	zd_lwlog_close(&lw);
}

/* A log device is larger than what the kernel wrote to it: the reader
 * reads ahead over zeros past the last entry counted, and entries the
 * kernel writes there later (the count going up with them) are read from
 * the log again, not taken from those zeros (an entry of zeros would
 * pass for a flush). */
static void test_read_ahead(void **state)
{
	static struct seen s;
	struct zd_lwlog lw;
	char err[256];
	const size_t size = 256u << 10;

	memset(&s, 0, sizeof(s));
	log_start();
	log_entry(1, 1, 0, NULL, 0x11);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_write(ZD_LW_MAGIC, nentries, size);
	assert_int_equal(zd_lwlog_open(&lw, path, DEV, err, sizeof(err)), 0);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 1);
	log_entry(2, 2, 0, NULL, 0x22);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-2", 0);
	log_write(ZD_LW_MAGIC, nentries, size);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-2", 0, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 2);
	assert_int_equal(s.off[1], 1024);
	assert_int_equal(s.len[1], 1024);
	assert_int_equal(s.disk[1024], 0x22);
	assert_int_equal(s.disk[1536], 0x23);
	assert_int_equal(lw.flushes, 0);
	zd_lwlog_close(&lw);
}

/* A whole-disk copy drops the writes up to its mark (fn NULL): skipped,
 * the next mark's writes come as usual. */
static void test_skip(void **state)
{
	static struct seen s;
	struct zd_lwlog lw;
	char err[256];

	memset(&s, 0, sizeof(s));
	log_start();
	log_entry(0, 4, 0, NULL, 0x10);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_entry(8, 1, 0, NULL, 0x20);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-2", 0);
	log_write(ZD_LW_MAGIC, nentries, loglen);
	assert_int_equal(zd_lwlog_open(&lw, path, DEV, err, sizeof(err)), 0);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(lw.writes, 1);
	assert_int_equal(lw.bytes, 4 * SS);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-2", 0, apply, &s, err, sizeof(err)), 0);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.off[0], 8 * SS);
	assert_int_equal(s.disk[8 * SS], 0x20);
	zd_lwlog_close(&lw);
}

/* --verify's second mark (zd_xdisk_mark_sum): the writes logged between
 * an epoch's mark and its -sum mark are counted, and still come with the
 * next epoch; none between them: 0. */
static void test_sum_mark(void **state)
{
	static struct seen s;
	struct zd_xdisk d;
	uint64_t late = 99;
	char err[256];

	memset(&s, 0, sizeof(s));
	memset(&d, 0, sizeof(d));
	d.fd = -1;
	log_start();
	log_entry(1, 1, 0, NULL, 0x10);			/* epoch 1's */
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_entry(2, 1, 0, NULL, 0x20);			/* in flight at the pause */
	log_entry(0, 0, ZD_LW_FLUSH, NULL, 0);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1-sum", 0);
	log_entry(3, 1, 0, NULL, 0x30);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-2", 0);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-2-sum", 0);
	log_write(ZD_LW_MAGIC, nentries, loglen);
	assert_int_equal(zd_lwlog_open(&d.log, path, DEV, err, sizeof(err)), 0);

	snprintf(d.mark, sizeof(d.mark), "zd-r-1");
	snprintf(d.sum_mark, sizeof(d.sum_mark), "zd-r-1-sum");
	assert_int_equal(zd_xdisk_read(&d, apply, &s, &late, err, sizeof(err)), 0);
	assert_int_equal(late, 1);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.off[0], 1 * SS);
	assert_int_equal(d.log.writes, 1);
	assert_string_equal(d.sum_mark, "");

	snprintf(d.mark, sizeof(d.mark), "zd-r-2");
	snprintf(d.sum_mark, sizeof(d.sum_mark), "zd-r-2-sum");
	assert_int_equal(zd_xdisk_read(&d, apply, &s, &late, err, sizeof(err)), 0);
	assert_int_equal(late, 0);
	assert_int_equal(s.calls, 3);
	assert_int_equal(s.off[1], 2 * SS);
	assert_int_equal(s.disk[2 * SS], 0x20);
	assert_int_equal(s.off[2], 3 * SS);
	zd_lwlog_close(&d.log);
}

/* expect_refused(WANT): reading up to zd-r-1 fails, the message has WANT. */
static void expect_refused(const char *want)
{
	static struct seen s;
	struct zd_lwlog lw;
	char err[256] = "";

	memset(&s, 0, sizeof(s));
	assert_int_equal(zd_lwlog_open(&lw, path, DEV, err, sizeof(err)), 0);
	assert_int_equal(zd_lwlog_until(&lw, "zd-r-1", 0, apply, &s, err, sizeof(err)), -1);
	if (!strstr(err, want))
		fail_msg("error '%s' does not say '%s'", err, want);
	zd_lwlog_close(&lw);
}

static void test_bad_magic(void **state)
{
	log_start();
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_write(0x1234, nentries, loglen);
	expect_refused("bad magic 0x1234");
}

static void test_past_device(void **state)
{
	log_start();
	log_entry(DEV / SS - 1, 2, 0, NULL, 1);		/* its last sector is past the end */
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_write(ZD_LW_MAGIC, nentries, loglen);
	expect_refused("past the device's end (65536 bytes)");
}

static void test_truncated(void **state)
{
	log_start();
	log_entry(0, 1, 0, NULL, 1);
	log_entry(8, 4, 0, NULL, 2);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	/* The file ends inside entry 2's data. */
	log_write(ZD_LW_MAGIC, nentries, SS + 2 * SS + SS + 2 * SS);
	expect_refused("is truncated: entry 2");
}

static void test_unknown_flags(void **state)
{
	log_start();
	log_entry(0, 1, 1u << 9, NULL, 1);
	log_entry(0, 0, ZD_LW_MARK, "zd-r-1", 0);
	log_write(ZD_LW_MAGIC, nentries, loglen);
	expect_refused("unknown flags 0x200");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_until_marks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_yet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_ahead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_skip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sum_mark, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_past_device, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_flags, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
