/* SPDX-License-Identifier: MIT */
/*
 * zd-stat's arithmetic: nearest-rank percentiles, and the per-epoch rows
 * built from a hand-written run of records (a zddspt epoch with pre-copy,
 * a remus epoch whose pause comes in STAT "track", ACK latency, zd-mru's
 * STAT, zd-send's STAT "latency"), then the JSON summary parsed back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zd/stat.h"

static void test_percentile(void **state)
{
	double v[100], w[3] = { 5, 1, 3 }, one[1] = { 42 };

	for (int i = 0; i < 100; i++)
		v[i] = 100 - i;	/* 100 … 1, unsorted on purpose */
	assert_true(zd_stat_percentile(v, 100, 50) == 50);
	assert_true(zd_stat_percentile(v, 100, 99) == 99);
	assert_true(zd_stat_percentile(v, 100, 100) == 100);
	assert_true(zd_stat_percentile(v, 100, 0) == 1);
	/* n = 3: p50 is the ceil(1.5) = 2nd smallest, p99 the 3rd */
	assert_true(zd_stat_percentile(w, 3, 50) == 3);
	assert_true(zd_stat_percentile(w, 3, 99) == 5);
	assert_true(zd_stat_percentile(one, 1, 50) == 42);
	assert_true(zd_stat_percentile(NULL, 0, 50) == 0);
}

static struct zd_record rec(uint16_t type)
{
	struct zd_record r;

	zd_record_init(&r, type);
	return r;
}

static void add_set(struct zd_stat *s, uint16_t type, uint64_t epoch, uint64_t first,
		    uint64_t count, uint8_t pflags)
{
	struct zd_record r = rec(type);

	if (type == ZD_REC_PAGES) {
		r.u.pages.epoch = epoch;
		r.u.pages.flags = pflags;
		zd_pageset_add_range(&r.u.pages.set, first, count);
	} else {
		r.u.dirty.epoch = epoch;
		zd_pageset_add_range(&r.u.dirty.set, first, count);
	}
	zd_stat_add(s, &r, 100);
	zd_record_free(&r);
}

static void add_stat(struct zd_stat *s, uint64_t epoch, const char *src, const char *k1,
		     double v1, const char *k2, double v2)
{
	struct zd_record r = rec(ZD_REC_STAT);

	r.u.stat.epoch = epoch;
	strcpy(r.u.stat.source, src);
	strcpy(r.u.stat.kv[0].key, k1);
	r.u.stat.kv[0].value = v1;
	r.u.stat.n = 1;
	if (k2) {
		strcpy(r.u.stat.kv[1].key, k2);
		r.u.stat.kv[1].value = v2;
		r.u.stat.n = 2;
	}
	zd_stat_add(s, &r, 10);
}

static void checkpoint(struct zd_stat *s, uint64_t epoch, uint64_t pause_ns)
{
	struct zd_record r = rec(ZD_REC_CHECKPOINT);

	r.u.ckpt.epoch = epoch;
	r.u.ckpt.pause_ns = pause_ns;
	zd_stat_add(s, &r, 50);
}

/* What print writes of s, as a string to free. */
static char *printed(void (*print)(struct zd_stat *, FILE *), struct zd_stat *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	print(s, f);
	fclose(f);
	return buf;
}

/* zd_stat_print_json's summary, parsed. */
static json_t *summary(struct zd_stat *s)
{
	char *buf = printed(zd_stat_print_json, s);
	json_error_t err;
	json_t *o = json_loads(buf, 0, &err);

	assert_non_null(o);
	free(buf);
	return o;
}

static void test_rows_and_summary(void **state)
{
	struct zd_stat *s = zd_stat_new();
	struct zd_record r = rec(ZD_REC_HEADER);
	const struct zd_stat_row *rows;
	char *buf;
	json_t *o;

	r.u.header.mode = ZD_MODE_ZDDSPT;
	r.u.header.target = "synth:pages=100,dirty=10";
	zd_stat_add(s, &r, 8);

	/* epoch 1: DIRTY 0..9, pause 1000 ns */
	checkpoint(s, 1, 1000);
	add_set(s, ZD_REC_DIRTY, 1, 0, 10, 0);
	/* epoch 2: pre-copied 0..4 before its CHECKPOINT, DIRTY 3..11
	 * (3 and 4 re-dirtied): the epoch's pages are 0..11 */
	add_set(s, ZD_REC_STANDBY, 2, 0, 6, 0);
	add_set(s, ZD_REC_PAGES, 2, 0, 5, ZD_PAGES_PRECOPY);
	checkpoint(s, 2, 3000);
	add_set(s, ZD_REC_DIRTY, 2, 3, 9, 0);
	add_stat(s, 2, "mru", "precision", 0.5, "recall", 0.25);
	/* epoch 3: remus-like, pause only in STAT "track"; an ACK */
	checkpoint(s, 3, 0);
	add_set(s, ZD_REC_DIRTY, 3, 50, 4, 0);
	add_stat(s, 3, "track", "pause_ns", 2000, NULL, 0);
	add_stat(s, 3, "mru", "precision", 1.0, "recall", 0.75);
	add_stat(s, 3, "send", "wire_bytes", 777, NULL, 0);
	add_stat(s, 3, "vm", "output_delay_ns", 5e6, "output_delay_ns", 7e6);
	r = rec(ZD_REC_ACK);
	r.u.ack.epoch = 2;
	r.u.ack.latency_ns = 9000;
	zd_stat_add(s, &r, 20);
	/* a STAT for an epoch never opened counts in bytes only */
	add_stat(s, 99, "mru", "precision", 0.0, NULL, 0);
	zd_stat_finish(s);

	assert_int_equal(zd_stat_rows(s, &rows), 3);
	assert_int_equal(rows[0].dirty, 10);
	assert_int_equal(rows[1].dirty, 12);
	assert_int_equal(rows[1].precopy, 5);
	assert_true(rows[1].has_standby && rows[1].standby == 6);
	assert_true(rows[1].has_latency && rows[1].latency_ns == 9000);
	assert_int_equal(rows[2].dirty, 4);
	assert_true(rows[2].has_pause && rows[2].pause_ns == 2000);
	assert_true(rows[0].has_pause && rows[0].pause_ns == 1000);

	buf = printed(zd_stat_print_json, s);
	assert_non_null(strchr(buf, '\n'));
	assert_true(strchr(buf, '\n') == buf + strlen(buf) - 1);	/* one line */
	free(buf);
	o = summary(s);
	assert_int_equal(json_integer_value(json_object_get(o, "epochs")), 3);
	assert_int_equal(json_integer_value(json_object_get(o, "dirty_total")), 26);
	assert_true(json_real_value(json_object_get(o, "standby_precision_mean")) == 0.75);
	assert_true(json_real_value(json_object_get(o, "standby_recall_mean")) == 0.5);
	json_t *p = json_object_get(o, "pause_ns");
	assert_int_equal(json_integer_value(json_object_get(p, "p50")), 2000);
	assert_int_equal(json_integer_value(json_object_get(p, "max")), 3000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "latency_ns"), "p99")), 9000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "output_delay_ns"), "p50")), 5000000);
	assert_int_equal(json_integer_value(json_object_get(o, "wire_bytes")), 777);
	assert_string_equal(json_string_value(json_object_get(o, "mode")), "zddspt");
	/* bytes: every record counted once */
	assert_int_equal(json_integer_value(json_object_get(o, "bytes")),
			 8 + 3 * 50 + 5 * 100 + 6 * 10 + 20);
	json_decref(o);

	/* CSV: a header and one row per epoch */
	buf = printed(zd_stat_print_csv, s);
	int lines = 0;
	for (char *c = buf; *c; c++)
		lines += *c == '\n';
	assert_int_equal(lines, 4);
	assert_non_null(strstr(buf, "\n2,12,5,6,0.5,0.25,3000,9000,5,"));
	free(buf);
	zd_stat_free(s);
}

/* A log after zd-send carries no PAGES: the pre-copy is known from zd-track's
 * STAT only, and the epoch's pages are pre-copied ∪ DIRTY all the same. */
static void test_precopy_from_track_stat(void **state)
{
	struct zd_stat *s = zd_stat_new();
	const struct zd_stat_row *rows;

	checkpoint(s, 1, 1000);
	add_set(s, ZD_REC_DIRTY, 1, 0, 10, 0);
	/* epoch 2: 8 pre-copied, 3 of them written again (in DIRTY's 5) */
	checkpoint(s, 2, 500);
	add_set(s, ZD_REC_DIRTY, 2, 20, 5, 0);
	add_stat(s, 2, "track", "precopy", 8, "precopy_redirtied", 3);
	/* epoch 3: PAGES seen: the set wins, the STAT is not added again */
	add_set(s, ZD_REC_PAGES, 3, 40, 4, ZD_PAGES_PRECOPY);
	checkpoint(s, 3, 500);
	add_set(s, ZD_REC_DIRTY, 3, 42, 4, 0);
	add_stat(s, 3, "track", "precopy", 4, "precopy_redirtied", 2);
	zd_stat_finish(s);
	assert_int_equal(zd_stat_rows(s, &rows), 3);
	assert_int_equal(rows[0].dirty, 10);
	assert_int_equal(rows[0].precopy, 0);
	assert_int_equal(rows[1].dirty, 5 + 8 - 3);
	assert_int_equal(rows[1].precopy, 8);
	assert_int_equal(rows[2].dirty, 6);	/* 40..45 */
	assert_int_equal(rows[2].precopy, 4);
	zd_stat_free(s);
}

/* zd-send's log: no PAGES, a STAT "send" per epoch with the pages it put
 * on the wire. Those are the pages sent (the "sent 0 with 11 MB on the
 * wire" bug); where both are seen, STAT "send" wins over PAGES. */
static void test_pages_from_send_stat(void **state)
{
	struct zd_stat *s = zd_stat_new();
	const struct zd_stat_row *rows;
	char *buf;

	checkpoint(s, 1, 1000);
	add_set(s, ZD_REC_DIRTY, 1, 0, 10, 0);
	add_stat(s, 1, "send", "pages", 10, "wire_bytes", 41000);
	checkpoint(s, 2, 1000);
	add_set(s, ZD_REC_DIRTY, 2, 0, 3, 0);
	add_stat(s, 2, "send", "pages", 3, "wire_bytes", 12300);
	/* epoch 3: PAGES before and after the STAT: only the STAT counts */
	checkpoint(s, 3, 1000);
	add_set(s, ZD_REC_PAGES, 3, 0, 2, 0);
	add_stat(s, 3, "send", "pages", 7, NULL, 0);
	add_set(s, ZD_REC_PAGES, 3, 5, 4, 0);
	/* epoch 4: PAGES only */
	checkpoint(s, 4, 1000);
	add_set(s, ZD_REC_PAGES, 4, 0, 6, 0);
	zd_stat_finish(s);
	assert_int_equal(zd_stat_rows(s, &rows), 4);
	assert_int_equal(rows[0].pages_sent, 10);
	assert_int_equal(rows[1].pages_sent, 3);
	assert_int_equal(rows[2].pages_sent, 7);
	assert_int_equal(rows[3].pages_sent, 6);

	buf = printed(zd_stat_print_table, s);
	assert_non_null(strstr(buf, "; sent 26\n"));
	free(buf);
	zd_stat_free(s);
}

/* The guest's stall: pause + blocked copy-on-write time + the re-armed
 * pages written again, each priced at the guest's mean dirty-log fault;
 * an epoch without a guard (buffered) stalls for its pause only; a row
 * without a guest figure prices nothing it did not measure. */
static void test_stall(void **state)
{
	struct zd_stat *s = zd_stat_new();
	const struct zd_stat_row *rows;
	char *buf;
	json_t *o;
	double v = -1;

	/* epoch 1: buffered-like, pause 600 us, the guest's clock only */
	checkpoint(s, 1, 600000);
	add_stat(s, 1, "guest", "stall_ns", 700000, "wfault_ns", 20000);
	add_stat(s, 1, "guest", "lost_ns", 5e6, NULL, 0);
	/* epoch 2: zddspt: pause 300 us, 35 faults blocked 2.1 ms in all,
	 * 10 pre-copied pages written again at 20 us each */
	checkpoint(s, 2, 300000);
	add_stat(s, 2, "track", "precopy", 100, "precopy_redirtied", 10);
	add_stat(s, 2, "swap", "cow_faults", 35, "cow_block_ns", 2.1e6);
	add_stat(s, 2, "guest", "stall_ns", 2.6e6, "wfault_ns", 20000);
	/* epoch 3: re-dirtied pages but no guest figure: not priced */
	checkpoint(s, 3, 400000);
	add_stat(s, 3, "track", "precopy", 5, "precopy_redirtied", 5);
	add_stat(s, 3, "swap", "cow_faults", 0, "cow_block_ns", 0);
	zd_stat_finish(s);
	assert_int_equal(zd_stat_rows(s, &rows), 3);
	assert_true(zd_stat_row_stall(&rows[0], &v) && v == 600000);
	assert_false(rows[0].has_cow);
	assert_true(zd_stat_row_stall(&rows[1], &v) && v == 300000 + 2.1e6 + 10 * 20000);
	assert_true(v >= rows[1].pause_ns && rows[1].cow_faults == 35);
	assert_true(zd_stat_row_stall(&rows[2], &v) && v == 400000);

	o = summary(s);
	json_t *st = json_object_get(o, "stall_ns");
	assert_non_null(st);
	assert_int_equal(json_integer_value(json_object_get(st, "p50")), 600000);
	assert_int_equal(json_integer_value(json_object_get(st, "max")), 2600000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "guest_stall_ns"), "max")),
			 2600000);
	assert_true(json_real_value(json_object_get(o, "cow_faults_mean")) == 17.5);
	json_decref(o);

	/* CSV: the stall and its parts after wire_bytes (then the 16
	 * columns of T1 → ACK's parts, empty here) */
	buf = printed(zd_stat_print_csv, s);
	assert_non_null(strstr(buf, ",stall_ns,cow_faults,cow_block_ns,guest_stall_ns,guest_lost_ns,to_ckpt_ns,"));
	assert_non_null(strstr(buf, ",2600000,35,2100000,2600000,0,,,,,,,,,,,,,,,,\n"));
	free(buf);
	zd_stat_free(s);
}

/* zd-send's STAT "latency": each part a distribution of its own, in
 * the text, the JSON and the CSV; a part an epoch lacks (an older
 * zd-recv: no recv_*) is left out of that part's figures, not taken for
 * 0; a negative value is no value. */
static void test_latency_parts(void **state)
{
	struct zd_stat *s = zd_stat_new();
	const struct zd_stat_row *rows;
	json_t *o, *parts;
	char *buf;

	for (uint64_t e = 1; e <= 4; e++) {
		struct zd_record a = rec(ZD_REC_ACK), r = rec(ZD_REC_STAT);
		const char *k[] = { "latency_ns", "to_ckpt_ns", "to_commit_ns", "to_wire_ns", "to_ack_ns",
				    "net_ns", "recv_total_ns", "recv_apply_ns", "recv_fsync_ns", "unknown_ns" };
		double v[] = { 10e6 * (double)e, 1e6, 2e6, 1e6, 10e6 * (double)e - 4e6, 1e6,
			       10e6 * (double)e - 5e6, 4e6 * (double)e, 1e6 };

		checkpoint(s, e, 1000);
		a.u.ack.epoch = e;
		a.u.ack.latency_ns = (uint64_t)v[0];
		zd_stat_add(s, &a, 40);
		r.u.stat.epoch = e;
		strcpy(r.u.stat.source, "latency");
		/* epoch 4: zd-send's parts only; epoch 3's fsync negative */
		for (size_t i = 0; i < (e == 4 ? 5 : 10); i++) {
			strcpy(r.u.stat.kv[r.u.stat.n].key, k[i]);
			r.u.stat.kv[r.u.stat.n++].value = i < 9 ? v[i] : 7;
		}
		if (e == 3)
			r.u.stat.kv[8].value = -1;
		zd_stat_add(s, &r, 200);
	}
	zd_stat_finish(s);
	assert_int_equal(zd_stat_rows(s, &rows), 4);
	assert_true(rows[0].has_lat & (1u << ZD_LAT_RECV_APPLY));
	assert_true(rows[0].lat[ZD_LAT_RECV_APPLY] == 4e6);
	assert_false(rows[3].has_lat & (1u << ZD_LAT_RECV_APPLY));
	assert_true(rows[3].has_lat & (1u << ZD_LAT_TO_ACK));
	assert_false(rows[2].has_lat & (1u << ZD_LAT_RECV_FSYNC));

	o = summary(s);
	parts = json_object_get(o, "latency_parts_ns");
	assert_non_null(parts);
	/* to_ack over 4 epochs: 6, 16, 26, 36 ms */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(parts, "to_ack_ns"), "p50")), 16000000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(parts, "to_ack_ns"), "p99")), 36000000);
	/* apply over the 3 epochs that have it: 4, 8, 12 ms */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(parts, "recv_apply_ns"), "p50")), 8000000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(parts, "recv_apply_ns"), "max")), 12000000);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(parts, "recv_fsync_ns"), "max")), 1000000);
	assert_null(json_object_get(parts, "recv_verify_ns"));
	assert_null(json_object_get(parts, "unknown_ns"));
	json_decref(o);

	buf = printed(zd_stat_print_table, s);
	assert_non_null(strstr(buf, "where T1 to ACK goes, us"));
	assert_non_null(strstr(buf, "apply (memory.img"));
	assert_non_null(strstr(buf, "8000.0"));
	assert_non_null(strstr(buf, "journal fsync"));
	assert_null(strstr(buf, "verify ("));
	free(buf);

	buf = printed(zd_stat_print_csv, s);
	assert_non_null(strstr(buf, ",to_ckpt_ns,to_commit_ns,to_wire_ns,to_ack_ns,net_ns,recv_total_ns,"));
	/* epoch 4: zd-send's four parts, then 12 empty columns */
	assert_non_null(strstr(buf, ",1000000,2000000,1000000,36000000,,,,,,,,,,,,\n"));
	free(buf);
	zd_stat_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percentile),
		cmocka_unit_test(test_rows_and_summary),
		cmocka_unit_test(test_precopy_from_track_stat),
		cmocka_unit_test(test_pages_from_send_stat),
		cmocka_unit_test(test_stall),
		cmocka_unit_test(test_latency_parts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
