/* SPDX-License-Identifier: MIT */
/*
 * Disk replication below the tools: the DISK record in both
 * encodings and its refusals (a write past the disk, a length that
 * overflows, a bad frame), and the replica's disk.img committed with the
 * epoch's pages: applied at the commit point, in order, replayed after a
 * crash between journal and apply (also half applied), never touched by
 * an epoch that did not commit or that carried a bad record.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/replica.h"
#include "zd/stream.h"
#include "zd/util.h"
#include "replica/replica_int.h"

#define PS 4096u
#define NPAGES 16u
#define DISK (64u * 1024)

static const struct zd_rec_header hdr = { .major = ZD_STREAM_MAJOR, .page_size = PS, .page_count = NPAGES };

static struct zd_record disk_rec(uint64_t epoch, uint64_t off, uint32_t len, uint8_t byte)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_DISK);
	r.u.disk.epoch = epoch;
	r.u.disk.disk_size = DISK;
	r.u.disk.offset = off;
	r.u.disk.len = len;
	r.u.disk.enc = ZD_DENC_RAW;
	r.u.disk.data_len = len;
	r.u.disk.data = zd_xmalloc(len);
	memset(r.u.disk.data, byte, len);
	return r;
}

static void roundtrip(const struct zd_record *r, struct zd_record *out)
{
	uint8_t *b = NULL;
	char *j = NULL, msg[256];
	size_t n;
	struct zd_record r2;

	assert_int_equal(zd_encode_binary(r, PS, &b, &n), 0);
	assert_int_equal(zd_decode_binary(b, n, &hdr, out, msg, sizeof(msg)), 0);
	assert_int_equal(zd_encode_json(r, PS, &j, &n), 0);
	assert_int_equal(zd_decode_json(j, n, &hdr, &r2, msg, sizeof(msg)), 0);
	assert_int_equal(r2.u.disk.offset, out->u.disk.offset);
	assert_int_equal(r2.u.disk.data_len, out->u.disk.data_len);
	assert_memory_equal(r2.u.disk.data, out->u.disk.data, out->u.disk.data_len);
	zd_record_free(&r2);
	free(b);
	free(j);
}

static void test_codec(void **state)
{
	struct zd_record r = disk_rec(3, 8192, 4096, 0x5a), d;
	uint8_t *raw = zd_xmalloc(4096), *out;
	char msg[256];

	(void)state;
	roundtrip(&r, &d);
	assert_int_equal(d.type, ZD_REC_DISK);
	assert_int_equal(d.u.disk.epoch, 3);
	assert_int_equal(d.u.disk.disk_size, DISK);
	assert_int_equal(d.u.disk.len, 4096);
	assert_memory_equal(d.u.disk.data, r.u.disk.data, 4096);
	assert_string_equal(zd_rec_type_name(ZD_REC_DISK), "DISK");
	zd_record_free(&d);
	/* zstd-packed: smaller, and expands to the bytes */
	memcpy(raw, r.u.disk.data, 4096);
	free(r.u.disk.data);
	zd_disk_pack(&r.u.disk, raw, 4096, 1);
	assert_int_equal(r.u.disk.enc, ZD_DENC_ZSTD);
	assert_true(r.u.disk.data_len < 4096);
	roundtrip(&r, &d);
	assert_int_equal(zd_disk_expand(&d.u.disk, &out, msg, sizeof(msg)), 0);
	assert_memory_equal(out, raw, 4096);
	free(out);
	/* a damaged frame is refused, whole */
	d.u.disk.data[d.u.disk.data_len / 2] ^= 0xff;
	assert_int_equal(zd_disk_expand(&d.u.disk, &out, msg, sizeof(msg)), -1);
	assert_null(out);
	zd_record_free(&d);
	zd_record_free(&r);
	free(raw);
}

/* Bad DISK records fail to decode (range), and no writer makes one. */
static void test_bad_records(void **state)
{
	static const struct { uint64_t off; uint32_t len; const char *why; } bad[] = {
		{ DISK, 1, "past the disk" },
		{ DISK - 4095, 4096, "past the disk" },
		{ UINT64_MAX - 100, 4096, "overflows" },
		{ 0, 0, "1.." },
		{ 0, ZD_DISK_PER_RECORD + 1, "1.." },
	};
	struct zd_record good = disk_rec(1, 0, 16, 1), r;
	uint8_t *b = NULL;
	size_t n;
	char msg[256];

	(void)state;
	assert_int_equal(zd_encode_binary(&good, PS, &b, &n), 0);
	for (size_t i = 0; i < ZD_ARRAY_SIZE(bad); i++) {
		uint8_t *c = zd_xmalloc(n);
		uint32_t len = bad[i].len, crc;

		/* the offset at body byte 16, len at 24 (zd-stream(5)) */
		memcpy(c, b, n);
		for (int k = 0; k < 8; k++)
			c[ZD_RECHDR_LEN + 16 + k] = (uint8_t)(bad[i].off >> (8 * k));
		for (int k = 0; k < 4; k++)
			c[ZD_RECHDR_LEN + 24 + k] = (uint8_t)(len >> (8 * k));
		crc = zd_crc32c(zd_crc32c(0, c, 8), c + ZD_RECHDR_LEN, n - ZD_RECHDR_LEN);
		for (int k = 0; k < 4; k++)
			c[8 + k] = (uint8_t)(crc >> (8 * k));
		int rc = zd_decode_binary(c, n, &hdr, &r, msg, sizeof(msg));
		assert_true(rc == -ZD_RERR_RANGE);
		assert_non_null(strstr(msg, bad[i].why));
		free(c);
		good.u.disk.offset = bad[i].off;
		good.u.disk.len = bad[i].len;
		good.u.disk.data_len = bad[i].len;
		uint8_t *e = NULL;
		size_t en;
		if (bad[i].len <= 16)
			assert_int_equal(zd_encode_binary(&good, PS, &e, &en), -1);
		free(e);
		good.u.disk.offset = 0;
		good.u.disk.len = good.u.disk.data_len = 16;
	}
	free(b);
	zd_record_free(&good);
}

struct fixture {
	char dir[64];
	uint8_t disk[DISK];	/* what disk.img must hold */
};

static int setup(void **state)
{
	struct fixture *f = zd_xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/zd-test-disk.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static struct zd_replica *open_bound(struct fixture *f)
{
	struct zd_rec_header h = { .page_size = PS, .page_count = NPAGES, .start_ns = 99,
				   .target = "synth:test", .control = "" };
	struct zd_replica *rep;
	char msg[256];

	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), 0);
	assert_int_equal(zd_replica_bind(rep, &h), 0);
	return rep;
}

/* Stage epoch: no pages, n overlapping writes (later ones win), tracked in
 * f->disk when track. */
static int stage_epoch(struct zd_replica *rep, struct fixture *f, uint64_t epoch, int n, bool track)
{
	int rc = zd_replica_stage_begin(rep, epoch);

	for (int i = 0; !rc && i < n; i++) {
		uint64_t off = (epoch * 4096 + (uint64_t)i * 1000) % (DISK - 8192);
		struct zd_record r = disk_rec(epoch, off, 8192, (uint8_t)(epoch * 16 + i));

		rc = zd_replica_stage_disk(rep, &r.u.disk);
		if (!rc && track)
			memcpy(f->disk + off, r.u.disk.data, 8192);
		zd_record_free(&r);
	}
	return rc;
}

static struct zd_rec_commit commit_of(struct fixture *f, uint64_t epoch)
{
	struct zd_rec_commit c = { .epoch = epoch, .flags = ZD_COMMIT_HAS_DISKSUM,
				   .disksum = zd_hash64(f->disk, DISK) };
	return c;
}

static void assert_disk(struct fixture *f, uint64_t epoch)
{
	struct zd_replica *rep;
	char msg[256], path[128];
	uint8_t *img = zd_xmalloc(DISK);
	uint64_t sum;
	int fd;

	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), 0);
	assert_int_equal(rep->meta.epoch, epoch);
	assert_int_equal(rep->meta.disk_size, DISK);
	assert_int_equal(zd_replica_disksum(rep, &sum), 0);
	assert_int_equal(sum, zd_hash64(f->disk, DISK));
	zd_replica_close(rep);
	snprintf(path, sizeof(path), "%s/disk.img", f->dir);
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, img, DISK, 0), (ssize_t)DISK);
	assert_memory_equal(img, f->disk, DISK);
	close(fd);
	free(img);
}

static void test_commit_apply(void **state)
{
	struct fixture *f = *state;

	for (uint64_t e = 1; e <= 4; e++) {
		struct zd_replica *rep = open_bound(f);
		struct zd_rec_commit c;

		assert_int_equal(stage_epoch(rep, f, e, 5, true), 0);
		c = commit_of(f, e);
		assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_AUTO), 0);
		zd_replica_close(rep);
		assert_disk(f, e);
	}
}

/* The primary's checksum is not what the journal makes: refused at the
 * COMMIT, disk.img stays at the last epoch. */
static void test_disksum_mismatch(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep = open_bound(f);
	struct zd_rec_commit c;

	assert_int_equal(stage_epoch(rep, f, 1, 2, true), 0);
	c = commit_of(f, 1);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_AUTO), 0);
	assert_int_equal(stage_epoch(rep, f, 2, 2, false), 0);
	c = commit_of(f, 2);	/* f->disk untracked: the epoch-1 disk's sum */
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_AUTO), ZD_EXIT_DATA);
	assert_non_null(strstr(rep->err, "replica disk checksum"));
	zd_replica_close(rep);
	assert_disk(f, 1);
}

/* Crash after the commit point: before the apply, and half way through
 * it (garbage where the epoch writes). Reopening replays the journal. */
static void test_crash_after_commit(void **state)
{
	struct fixture *f = *state;
	char path[128];

	for (int half = 0; half < 2; half++) {
		struct zd_replica *rep = open_bound(f);
		uint64_t e = rep->meta.epoch + 1;
		struct zd_rec_commit c;

		assert_int_equal(stage_epoch(rep, f, e, 6, true), 0);
		c = commit_of(f, e);
		assert_int_equal(zd_replica_stage_verify(rep, &c, ZD_VERIFY_AUTO), 0);
		assert_int_equal(zd_replica_commit_mark(rep), 0);
		zd__replica_crash(rep);
		if (half) {
			snprintf(path, sizeof(path), "%s/disk.img", f->dir);
			int fd = open(path, O_WRONLY);
			assert_int_equal(pwrite(fd, "garbage", 7, 4096 * e + 10), 7);
			close(fd);
		}
		assert_disk(f, e);
	}
}

/* Crash before the commit point: the epoch's writes never reach disk.img. */
static void test_crash_before_commit(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep = open_bound(f);
	struct zd_rec_commit c;

	assert_int_equal(stage_epoch(rep, f, 1, 3, true), 0);
	c = commit_of(f, 1);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_AUTO), 0);
	assert_int_equal(stage_epoch(rep, f, 2, 3, false), 0);
	zd__replica_crash(rep);
	assert_disk(f, 1);
}

/* A DISK of another size than the replica's disk, or of another size than
 * an earlier record of the epoch: bad data, nothing of it staged. */
static void test_size_refused(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep = open_bound(f);
	struct zd_record r = disk_rec(2, 0, 16, 9);
	struct zd_rec_commit c;

	assert_int_equal(stage_epoch(rep, f, 1, 1, true), 0);
	c = commit_of(f, 1);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_AUTO), 0);
	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	r.u.disk.disk_size = 2 * DISK;
	assert_int_equal(zd_replica_stage_disk(rep, &r.u.disk), ZD_EXIT_DATA);
	assert_non_null(strstr(rep->err, "refusing to mix them"));
	zd_replica_stage_abort(rep);
	zd_record_free(&r);
	zd_replica_close(rep);
	assert_disk(f, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec),
		cmocka_unit_test(test_bad_records),
		cmocka_unit_test_setup_teardown(test_commit_apply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disksum_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_before_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_size_refused, setup, teardown),
	};

	zd_set_progname("test_disk");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
