/* SPDX-License-Identifier: MIT */
/*
 * The replica's atomic epochs on a real directory: stage, verify, commit,
 * apply, and recovery after a "crash" between any two steps (the step
 * functions are called one by one and the replica is dropped without
 * cleaning up, as a SIGKILL would leave it). The expected memory is kept
 * in a plain buffer beside it and compared byte for byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zd/replica.h"
#include "zd/util.h"
#include "replica/replica_int.h"

#define PS 4096u
#define NPAGES 64u

struct fixture {
	char dir[64];
	uint8_t *mem;		/* what memory.img must hold */
	uint64_t run;
};

static int setup(void **state)
{
	struct fixture *f = zd_xcalloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/zd-test-replica.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	f->mem = zd_xcalloc(NPAGES, PS);
	f->run = 1234567;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f->mem);
	free(f);
	return 0;
}

static struct zd_replica *open_bound(struct fixture *f)
{
	struct zd_rec_header h = { .page_size = PS, .page_count = NPAGES, .start_ns = f->run,
				   .target = "synth:test", .control = "" };
	struct zd_replica *rep;
	char msg[256];

	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), 0);
	assert_int_equal(zd_replica_bind(rep, &h), 0);
	return rep;
}

/* Page contents that differ by pfn, epoch and copy. */
static void fill(uint8_t *p, uint64_t pfn, uint64_t epoch, int copy)
{
	for (unsigned i = 0; i < PS; i++)
		p[i] = (uint8_t)(pfn * 7 + epoch * 13 + (uint64_t)copy * 31 + i);
}

/* Stage PAGES for [first, first+count) of epoch; update f->mem unless the
 * copy is one the test expects to be overridden or discarded. */
static int stage_pages(struct zd_replica *rep, struct fixture *f, uint64_t epoch, uint64_t first,
		       uint64_t count, uint8_t flags, int copy, bool track)
{
	struct zd_rec_pages p = { .epoch = epoch, .enc = ZD_PENC_RAW, .flags = flags };
	int rc;

	zd_pageset_init(&p.set);
	zd_pageset_add_range(&p.set, first, count);
	p.data_len = (uint32_t)(count * PS);
	p.data = zd_xmalloc(p.data_len);
	for (uint64_t i = 0; i < count; i++) {
		fill(p.data + i * PS, first + i, epoch, copy);
		if (track)
			memcpy(f->mem + (first + i) * PS, p.data + i * PS, PS);
	}
	rc = zd_replica_stage_pages(rep, &p);
	zd_pageset_free(&p.set);
	free(p.data);
	return rc;
}

static void stage_dirty(struct zd_replica *rep, uint64_t first, uint64_t count)
{
	struct zd_pageset s = ZD_PAGESET_INIT;

	zd_pageset_add_range(&s, first, count);
	assert_int_equal(zd_replica_stage_dirty(rep, &s), 0);
	zd_pageset_free(&s);
}

static struct zd_rec_commit commit_of(struct fixture *f, uint64_t epoch, uint64_t pages)
{
	struct zd_rec_commit c = { .epoch = epoch, .pages = pages, .flags = ZD_COMMIT_HAS_MEMSUM,
				   .memsum = zd_hash64(f->mem, (size_t)NPAGES * PS) };
	return c;
}

/* The replica in f->dir, reopened, is at epoch with f->mem as memory. */
static void assert_replica(struct fixture *f, uint64_t epoch)
{
	struct zd_replica *rep;
	char msg[256];
	uint64_t sum;
	uint8_t *img = zd_xmalloc((size_t)NPAGES * PS);
	int fd;

	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), 0);
	assert_int_equal(rep->meta.epoch, epoch);
	assert_int_equal(zd_replica_memsum(rep, &sum), 0);
	assert_int_equal(sum, zd_hash64(f->mem, (size_t)NPAGES * PS));
	zd_replica_close(rep);
	fd = openat(AT_FDCWD, f->dir, O_RDONLY | O_DIRECTORY);
	assert_true(fd >= 0);
	int mfd = openat(fd, "memory.img", O_RDONLY);
	assert_int_equal(pread(mfd, img, (size_t)NPAGES * PS, 0), (ssize_t)NPAGES * PS);
	assert_memory_equal(img, f->mem, (size_t)NPAGES * PS);
	assert_int_equal(faccessat(fd, "journal", F_OK, 0), -1);
	close(mfd);
	close(fd);
	free(img);
}

/* Open epoch on rep and stage DIRTY and PAGES of the count pages from
 * first (track: as stage_pages's). */
static void stage_epoch(struct zd_replica *rep, struct fixture *f, uint64_t epoch,
			uint64_t first, uint64_t count, bool track)
{
	assert_int_equal(zd_replica_stage_begin(rep, epoch), 0);
	stage_dirty(rep, first, count);
	assert_int_equal(stage_pages(rep, f, epoch, first, count, 0, 0, track), 0);
}

/* One whole epoch the normal way. */
static void good_epoch(struct fixture *f, uint64_t epoch, uint64_t first, uint64_t count)
{
	struct zd_replica *rep = open_bound(f);
	struct zd_rec_commit c;

	stage_epoch(rep, f, epoch, first, count, true);
	c = commit_of(f, epoch, count);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_ALWAYS), 0);
	assert_int_equal(rep->meta.epoch, epoch);
	/* what zd-recv's STAT "recv" reports of the commit: the checksum
	 * and the journal's fsync took time */
	assert_true(rep->sum_ns > 0 && rep->fsync_ns > 0);
	zd_replica_close(rep);
}

static void test_commit_and_reopen(void **state)
{
	struct fixture *f = *state;
	struct zd_rec_state st = { .epoch = 2, .kind = 3, .len = 5, .data = (uint8_t *)"hello" };
	struct zd_replica *rep;
	struct zd_rec_commit c;
	char path[128], buf[16] = { 0 };
	FILE *fp;

	good_epoch(f, 1, 0, 10);
	assert_replica(f, 1);
	/* Epoch 2, in two PAGES records and with a STATE blob. */
	rep = open_bound(f);
	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	stage_dirty(rep, 5, 3);
	stage_dirty(rep, 40, 2);
	assert_int_equal(stage_pages(rep, f, 2, 5, 3, 0, 0, true), 0);
	assert_int_equal(zd_replica_stage_state(rep, &st), 0);
	assert_int_equal(stage_pages(rep, f, 2, 40, 2, 0, 0, true), 0);
	c = commit_of(f, 2, 5);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_AUTO), 0);
	assert_true(rep->meta.have_memsum);
	assert_int_equal(rep->meta.state_kind, 3);
	zd_replica_close(rep);
	assert_replica(f, 2);
	snprintf(path, sizeof(path), "%s/state.bin", f->dir);
	fp = fopen(path, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(buf, 1, sizeof(buf), fp), 5);
	fclose(fp);
	assert_string_equal(buf, "hello");
}

/* A crash while staging (before the commit point) loses the epoch. */
static void test_crash_before_commit(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep;
	struct zd_rec_commit c;

	good_epoch(f, 1, 0, 8);
	rep = open_bound(f);
	stage_epoch(rep, f, 2, 3, 4, false);
	zd__replica_crash(rep);
	assert_replica(f, 1);

	/* Verified but not yet renamed: still not committed. */
	rep = open_bound(f);
	stage_epoch(rep, f, 2, 3, 4, false);
	uint8_t *save = zd_xmalloc((size_t)NPAGES * PS);
	memcpy(save, f->mem, (size_t)NPAGES * PS);
	for (uint64_t p = 3; p < 7; p++)
		fill(f->mem + p * PS, p, 2, 0);
	c = commit_of(f, 2, 4);
	memcpy(f->mem, save, (size_t)NPAGES * PS);
	free(save);
	assert_int_equal(zd_replica_stage_verify(rep, &c, ZD_VERIFY_ALWAYS), 0);
	zd__replica_crash(rep);
	assert_replica(f, 1);
}

/* A crash after the commit point: the epoch is applied on reopen, however
 * much of memory.img the interrupted apply had written. */
static void test_crash_after_commit(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep;
	struct zd_rec_commit c;
	char path[128];
	int fd;

	good_epoch(f, 1, 0, 8);
	rep = open_bound(f);
	stage_epoch(rep, f, 2, 2, 20, true);
	c = commit_of(f, 2, 20);
	assert_int_equal(zd_replica_stage_verify(rep, &c, ZD_VERIFY_ALWAYS), 0);
	assert_int_equal(zd_replica_commit_mark(rep), 0);
	assert_int_equal(rep->meta.epoch, 1);
	zd__replica_crash(rep);
	/* Half-applied: garbage where some of the epoch's pages go. */
	snprintf(path, sizeof(path), "%s/memory.img", f->dir);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "garbage", 7, 5 * PS + 100), 7);
	close(fd);
	assert_replica(f, 2);
}

/* Consecutive epochs over the same pages, each reopening the replica. */
static void test_epochs_in_a_row(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep;
	struct zd_rec_commit c;

	good_epoch(f, 1, 0, 8);
	for (int round = 0; round < 2; round++) {
		rep = open_bound(f);
		stage_epoch(rep, f, 2 + round, 4, 4, true);
		c = commit_of(f, 2 + round, 4);
		assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_ALWAYS), 0);
		zd_replica_close(rep);
	}
	assert_replica(f, 3);
}

/* Epoch 2 staged as DIRTY of ndirty pages and PAGES of npages, both from
 * pfn 10, then a COMMIT counting ncommit pages: refused (ZD_EXIT_DATA),
 * saying why where why is given, and the epoch dropped. */
static void commit_refused(struct zd_replica *rep, struct fixture *f, uint64_t ndirty,
			   uint64_t npages, uint64_t ncommit, enum zd_verify verify,
			   const char *why)
{
	struct zd_rec_commit c;

	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	stage_dirty(rep, 10, ndirty);
	assert_int_equal(stage_pages(rep, f, 2, 10, npages, 0, 0, false), 0);
	c = commit_of(f, 2, ncommit);
	assert_int_equal(zd_replica_commit(rep, &c, verify), ZD_EXIT_DATA);
	if (why)
		assert_non_null(strstr(rep->err, why));
	zd_replica_stage_abort(rep);
}

static void test_coverage_refused(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep;

	good_epoch(f, 1, 0, 8);
	rep = open_bound(f);
	commit_refused(rep, f, 5, 4, 5, ZD_VERIFY_NEVER, "PAGES miss 1 of 5 DIRTY pages (first pfn 14)");
	commit_refused(rep, f, 2, 3, 2, ZD_VERIFY_NEVER, "beyond the 2 DIRTY ones (first pfn 12)");
	/* COMMIT's count disagrees with DIRTY. */
	commit_refused(rep, f, 2, 2, 3, ZD_VERIFY_NEVER, NULL);
	/* A page sent twice for good. */
	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	assert_int_equal(stage_pages(rep, f, 2, 10, 2, 0, 0, false), 0);
	assert_int_equal(stage_pages(rep, f, 2, 11, 1, 0, 1, false), ZD_EXIT_DATA);
	zd_replica_stage_abort(rep);
	/* Wrong memory checksum: commit_of's is of f->mem, which lacks the
	 * pages. */
	commit_refused(rep, f, 2, 2, 2, ZD_VERIFY_AUTO, "differs from the primary's");
	/* A pfn beyond the page count. */
	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	assert_int_equal(stage_pages(rep, f, 2, NPAGES - 1, 2, 0, 0, false), ZD_EXIT_DATA);
	zd_replica_close(rep);
	assert_replica(f, 1);
}

/* Pre-copied pages may be sent again at the checkpoint; the later copy wins. */
static void test_precopy_override(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep = open_bound(f);
	struct zd_rec_commit c;

	/* PAGES may open the epoch before its CHECKPOINT (pre-copy at T0). */
	assert_int_equal(zd_replica_stage_begin(rep, 1), 0);
	assert_int_equal(stage_pages(rep, f, 1, 20, 4, ZD_PAGES_PRECOPY, 0, true), 0);
	stage_dirty(rep, 20, 6);
	assert_int_equal(stage_pages(rep, f, 1, 22, 4, 0, 1, true), 0);
	/* Pre-copied and not written again: not in DIRTY, applied all the same. */
	assert_int_equal(stage_pages(rep, f, 1, 40, 2, ZD_PAGES_PRECOPY, 0, true), 0);
	c = commit_of(f, 1, 6);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_ALWAYS), 0);
	zd_replica_close(rep);
	assert_replica(f, 1);
}

static void test_bind_and_order(void **state)
{
	struct fixture *f = *state;
	struct zd_rec_header other = { .page_size = PS, .page_count = NPAGES * 2, .start_ns = f->run,
				       .target = "", .control = "" };
	struct zd_replica *rep;

	good_epoch(f, 1, 0, 4);
	rep = open_bound(f);
	assert_int_equal(zd_replica_stage_begin(rep, 1), ZD_EXIT_DATA);	/* already committed */
	assert_int_equal(zd_replica_bind(rep, &other), ZD_EXIT_DATA);
	other.page_count = NPAGES;
	other.start_ns = f->run + 1;
	assert_int_equal(zd_replica_bind(rep, &other), ZD_EXIT_DATA);	/* another run */
	assert_non_null(strstr(rep->err, "holds another run"));
	zd_replica_close(rep);
	assert_replica(f, 1);
}

static void test_not_a_replica(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep, *rep2;
	char path[128], msg[256];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/notes.txt", f->dir);
	fp = fopen(path, "w");
	fputs("mine\n", fp);
	fclose(fp);
	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), ZD_EXIT_TARGET);
	assert_non_null(strstr(msg, "not a zd replica"));
	unlink(path);
	/* Two zd-recv on one replica: the second is refused. */
	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), 0);
	assert_int_equal(zd_replica_open(&rep2, f->dir, msg, sizeof(msg)), ZD_EXIT_FAIL);
	assert_non_null(strstr(msg, "in use"));
	zd_replica_close(rep);
}

/* A committed journal that was damaged on disk is not applied blindly. */
static void test_damaged_journal(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep;
	struct zd_rec_commit c;
	char path[128], msg[256];
	int fd;

	good_epoch(f, 1, 0, 4);
	rep = open_bound(f);
	stage_epoch(rep, f, 2, 4, 2, false);
	c = commit_of(f, 2, 2);
	assert_int_equal(zd_replica_stage_verify(rep, &c, ZD_VERIFY_NEVER), 0);
	assert_int_equal(zd_replica_commit_mark(rep), 0);
	zd__replica_crash(rep);
	snprintf(path, sizeof(path), "%s/journal", f->dir);
	fd = open(path, O_WRONLY);
	assert_int_equal(pwrite(fd, "X", 1, ZD_JOURNAL_HDR + ZD_JENT_HDR + 10), 1);
	close(fd);
	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), ZD_EXIT_TARGET);
	assert_non_null(strstr(msg, "checksum mismatch (damaged replica)"));
}

/* Stage like zd-recv: the pages kept for the apply (or not: keep false),
 * the buffer handed to the replica. */
static void stage_kept(struct zd_replica *rep, struct fixture *f, uint64_t epoch, uint64_t first,
		       uint64_t count, uint8_t flags, int copy, bool keep)
{
	struct zd_rec_pages p = { .epoch = epoch, .enc = ZD_PENC_RAW, .flags = flags };
	uint8_t *buf = zd_xmalloc(count * PS + 8);

	zd_pageset_init(&p.set);
	zd_pageset_add_range(&p.set, first, count);
	p.data_len = (uint32_t)(count * PS);
	p.data = buf + 8;	/* the pages need not start the buffer */
	for (uint64_t i = 0; i < count; i++) {
		fill(p.data + i * PS, first + i, epoch, copy);
		memcpy(f->mem + (first + i) * PS, p.data + i * PS, PS);
	}
	assert_int_equal(zd_replica_stage_pages(rep, &p), 0);
	if (keep)
		zd_replica_stage_pages_keep(rep, buf, &p);
	else
		free(buf);
	zd_pageset_free(&p.set);
}

/* An epoch applied from the pages held in memory is the one the journal
 * would give: a pre-copied page overridden by its later copy, STATE, the
 * meta; one record not kept sends the epoch back to the journal; a crash
 * between commit and apply recovers from the journal. */
static void test_apply_from_memory(void **state)
{
	struct fixture *f = *state;
	struct zd_rec_state st = { .epoch = 1, .kind = 3, .len = 5, .data = (uint8_t *)"hello" };
	struct zd_replica *rep = open_bound(f);
	struct zd_rec_commit c;

	for (uint64_t e = 1; e <= 3; e++) {
		assert_int_equal(zd_replica_stage_begin(rep, e), 0);
		stage_kept(rep, f, e, 10, 2, ZD_PAGES_PRECOPY, 0, true);
		stage_dirty(rep, 0, 11);
		stage_kept(rep, f, e, 0, 8, 0, 1, true);
		stage_kept(rep, f, e, 8, 3, 0, 1, e != 2);	/* pfn 10 again, the copy that wins */
		st.epoch = e;
		assert_int_equal(zd_replica_stage_state(rep, &st), 0);
		c = commit_of(f, e, 11);
		assert_int_equal(zd_replica_stage_verify(rep, &c, ZD_VERIFY_ALWAYS), 0);
		assert_int_equal(zd_replica_commit_mark(rep), 0);
		/* kept whole in epochs 1 and 3, from the journal in 2 */
		assert_int_equal(rep->applying != NULL, e != 2);
		if (e == 3) {
			zd__replica_crash(rep);
			break;
		}
		assert_int_equal(zd_replica_apply(rep), 0);
		assert_int_equal(rep->meta.epoch, e);
		assert_int_equal(rep->meta.state_kind, 3);
		assert_null(rep->applying);
	}
	assert_replica(f, 3);
}

/* An epoch holds at most two copies of a page, a pre-copy and the final
 * one, and one STATE: what a stream can make the journal grow by is
 * bounded by the run's page count. Refused before anything is written. */
static void test_epoch_bounds(void **state)
{
	struct fixture *f = *state;
	struct zd_rec_state st = { .epoch = 2, .kind = 3, .len = 5, .data = (uint8_t *)"hello" };
	struct zd_rec_pages empty = { .epoch = 2, .enc = ZD_PENC_RAW, .flags = ZD_PAGES_PRECOPY };
	struct zd_replica *rep;
	struct zd_rec_commit c;
	struct stat sb;
	char path[128];
	off_t size;

	good_epoch(f, 1, 0, 8);
	rep = open_bound(f);
	snprintf(path, sizeof(path), "%s/journal.tmp", f->dir);
	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	assert_int_equal(stage_pages(rep, f, 2, 20, 4, ZD_PAGES_PRECOPY, 0, false), 0);
	assert_int_equal(stat(path, &sb), 0);
	size = sb.st_size;
	/* pfn 23 pre-copied again: refused, nothing of it in the journal */
	assert_int_equal(stage_pages(rep, f, 2, 23, 2, ZD_PAGES_PRECOPY, 1, false), ZD_EXIT_DATA);
	assert_non_null(strstr(rep->err, "PAGES pre-copy pfn 23 again in epoch 2"));
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, size);
	/* empty PAGES leave no entry either */
	zd_pageset_init(&empty.set);
	assert_int_equal(zd_replica_stage_pages(rep, &empty), 0);
	zd_replica_stage_pages_keep(rep, NULL, &empty);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, size);
	/* the final copy of a pre-copied page is the second, and the last */
	assert_int_equal(stage_pages(rep, f, 2, 22, 2, 0, 1, false), 0);
	assert_int_equal(stage_pages(rep, f, 2, 23, 1, ZD_PAGES_PRECOPY, 2, false), ZD_EXIT_DATA);
	assert_non_null(strstr(rep->err, "PAGES repeat pfn 23 in epoch 2"));
	assert_int_equal(stage_pages(rep, f, 2, 23, 1, 0, 2, false), ZD_EXIT_DATA);
	/* one STATE an epoch */
	assert_int_equal(zd_replica_stage_state(rep, &st), 0);
	assert_int_equal(zd_replica_stage_state(rep, &st), ZD_EXIT_DATA);
	assert_non_null(strstr(rep->err, "a second STATE in epoch 2"));
	zd_replica_stage_abort(rep);
	/* the same epoch again, whole: the bounds are the epoch's, not the run's */
	assert_int_equal(zd_replica_stage_begin(rep, 2), 0);
	assert_int_equal(stage_pages(rep, f, 2, 20, 4, ZD_PAGES_PRECOPY, 0, true), 0);
	stage_dirty(rep, 22, 2);
	assert_int_equal(stage_pages(rep, f, 2, 22, 2, 0, 1, true), 0);
	assert_int_equal(zd_replica_stage_state(rep, &st), 0);
	c = commit_of(f, 2, 2);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_ALWAYS), 0);
	zd_pageset_free(&empty.set);
	zd_replica_close(rep);
	assert_replica(f, 2);
}

static unsigned mode_of(const char *dir, const char *name)
{
	char path[160];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(lstat(path, &sb), 0);
	return sb.st_mode & 07777;
}

/* Guest memory is the owner's alone: DIR 0700, files 0600 whatever the
 * umask; a DIR left open to others is closed when opened. */
static void test_modes(void **state)
{
	struct fixture *f = *state;
	struct zd_rec_state st = { .epoch = 1, .kind = 3, .len = 5, .data = (uint8_t *)"hello" };
	static const char *const files[] = { "meta.json", "memory.img", "state.bin", "journal.tmp" };
	struct zd_replica *rep;
	struct zd_rec_commit c;
	char sub[96];
	mode_t old = umask(0);

	/* DIR made by zd_replica_open */
	assert_int_equal(rmdir(f->dir), 0);
	rep = open_bound(f);
	stage_epoch(rep, f, 1, 0, 4, true);
	assert_int_equal(zd_replica_stage_state(rep, &st), 0);
	c = commit_of(f, 1, 4);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_ALWAYS), 0);
	zd_replica_close(rep);
	assert_int_equal(mode_of(f->dir, "."), 0700);
	for (size_t i = 0; i < ZD_ARRAY_SIZE(files); i++)
		assert_int_equal(mode_of(f->dir, files[i]), 0600);
	/* as an older zd-recv left it */
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(sub, sizeof(sub), "%s/memory.img", f->dir);
	assert_int_equal(chmod(sub, 0644), 0);
	rep = open_bound(f);
	zd_replica_close(rep);
	assert_int_equal(mode_of(f->dir, "."), 0700);
	assert_int_equal(mode_of(f->dir, "memory.img"), 0600);
	umask(old);
	assert_replica(f, 1);
}

/* A link planted under a replica file's name is refused with the name,
 * never written through (zd-recv runs as root). */
static void test_links_refused(void **state)
{
	struct fixture *f = *state;
	struct zd_replica *rep;
	char lnk[128], target[128], msg[256];

	good_epoch(f, 1, 0, 8);
	snprintf(lnk, sizeof(lnk), "%s/journal.tmp", f->dir);
	snprintf(target, sizeof(target), "%s.target", f->dir);
	assert_int_equal(unlink(lnk), 0);
	assert_int_equal(symlink(target, lnk), 0);
	rep = open_bound(f);
	assert_int_equal(zd_replica_stage_begin(rep, 2), ZD_EXIT_TARGET);
	assert_non_null(strstr(rep->err, "journal.tmp: a symbolic link: refusing to follow it"));
	assert_int_equal(access(target, F_OK), -1);	/* not created through it */
	zd_replica_close(rep);
	/* meta.json: the replica is not opened at all */
	assert_int_equal(unlink(lnk), 0);
	snprintf(lnk, sizeof(lnk), "%s/meta.json", f->dir);
	assert_int_equal(rename(lnk, target), 0);
	assert_int_equal(symlink(target, lnk), 0);
	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), ZD_EXIT_TARGET);
	assert_non_null(strstr(msg, "meta.json: a symbolic link"));
	/* a second hard link */
	assert_int_equal(unlink(lnk), 0);
	assert_int_equal(link(target, lnk), 0);
	assert_int_equal(zd_replica_open(&rep, f->dir, msg, sizeof(msg)), ZD_EXIT_TARGET);
	assert_non_null(strstr(msg, "meta.json: has 2 hard links"));
	assert_int_equal(unlink(target), 0);
	assert_replica(f, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_and_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_before_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_epochs_in_a_row, setup, teardown),
		cmocka_unit_test_setup_teardown(test_coverage_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_precopy_override, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bind_and_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_replica, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_journal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apply_from_memory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_epoch_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_links_refused, setup, teardown),
	};

	zd_set_progname("test_replica");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
