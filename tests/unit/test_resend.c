/* SPDX-License-Identifier: MIT */
/*
 * zd-send's resend log (lib/wire/resend.c): what a reconnect sends again.
 * Epoch records of unacknowledged epochs come back in order and byte for
 * byte; acknowledged ones, and records that are no epoch's, do not; an
 * overflow is a gap the log owns up to until it starts again.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

#define PS 4096u

static struct zd_rec_header hdr = { .major = ZD_STREAM_MAJOR, .minor = ZD_STREAM_MINOR, .page_size = PS,
				    .page_count = 1024 };

static void ckpt(struct zd_record *r, uint64_t e)
{
	zd_record_init(r, ZD_REC_CHECKPOINT);
	r->u.ckpt.epoch = e;
	r->u.ckpt.t1_ns = 1000 * e;
}

static uint8_t page[2 * PS];

/* Two pages at pfn 2e, 2e+1, filled with the epoch's byte. */
static void pages(struct zd_record *r, uint64_t e)
{
	zd_record_init(r, ZD_REC_PAGES);
	r->u.pages.epoch = e;
	zd_pageset_add_range(&r->u.pages.set, 2 * e, 2);
	memset(page, (int)e, sizeof(page));
	r->u.pages.data = page;
	r->u.pages.data_len = sizeof(page);
}

static void commit(struct zd_record *r, uint64_t e)
{
	zd_record_init(r, ZD_REC_COMMIT);
	r->u.commit.epoch = e;
	r->u.commit.pages = 2;
}

/* Keep CHECKPOINT, PAGES, COMMIT of epochs first..last; 1 if one overflowed. */
static int keep_epochs(struct zd_resend *l, uint64_t first, uint64_t last)
{
	int over = 0;

	for (uint64_t e = first; e <= last; e++) {
		struct zd_record r;

		ckpt(&r, e);
		over |= zd_resend_keep(l, &r, PS);
		pages(&r, e);
		over |= zd_resend_keep(l, &r, PS);
		zd_pageset_free(&r.u.pages.set);
		commit(&r, e);
		over |= zd_resend_keep(l, &r, PS);
	}
	return over;
}

struct seen {
	uint16_t type[64];
	uint64_t epoch[64];
	int n, stop_at;
	bool pages_ok;
};

static int collect(void *arg, const struct zd_record *r)
{
	struct seen *s = arg;

	if (s->n == s->stop_at)
		return 7;
	s->type[s->n] = r->type;
	switch (r->type) {
	case ZD_REC_CHECKPOINT: s->epoch[s->n] = r->u.ckpt.epoch; break;
	case ZD_REC_COMMIT: s->epoch[s->n] = r->u.commit.epoch; break;
	case ZD_REC_PAGES:
		s->epoch[s->n] = r->u.pages.epoch;
		/* the pages come back as they went */
		for (size_t i = 0; i < r->u.pages.data_len; i++)
			if (r->u.pages.data[i] != (uint8_t)r->u.pages.epoch)
				s->pages_ok = false;
		if (r->u.pages.data_len != 2 * PS || !zd_pageset_contains(&r->u.pages.set, 2 * r->u.pages.epoch + 1))
			s->pages_ok = false;
		break;
	default: s->epoch[s->n] = UINT64_MAX; break;
	}
	s->n++;
	return 0;
}

static void test_resend_after_ack(void **state)
{
	struct zd_resend *l = zd_resend_new(1 << 20);
	struct seen s = { .stop_at = -1, .pages_ok = true };
	struct zd_record r;
	char msg[128];
	size_t n;
	uint64_t bytes;

	(void)state;
	assert_int_equal(keep_epochs(l, 1, 3), 0);
	/* not epoch records: never resent */
	zd_record_init(&r, ZD_REC_STAT);
	snprintf(r.u.stat.source, sizeof(r.u.stat.source), "heartbeat");
	assert_int_equal(zd_resend_keep(l, &r, PS), 0);
	zd_record_init(&r, ZD_REC_HEADER);
	assert_int_equal(zd_resend_keep(l, &r, PS), 0);
	zd_resend_counts(l, &n, &bytes);
	assert_int_equal(n, 9);
	assert_true(bytes > 3 * 2 * PS);

	assert_true(zd_resend_covers(l, 0));
	zd_resend_acked(l, 1);
	assert_false(zd_resend_covers(l, 0));	/* epoch 1 is gone from the log */
	assert_true(zd_resend_covers(l, 1));
	assert_true(zd_resend_covers(l, 2));	/* the backup committed more than its ACKs said */
	zd_resend_acked(l, 2);
	zd_resend_counts(l, &n, &bytes);
	assert_int_equal(n, 3);
	assert_int_equal(zd_resend_replay(l, &hdr, collect, &s, msg, sizeof(msg)), 0);
	assert_int_equal(s.n, 3);
	assert_int_equal(s.type[0], ZD_REC_CHECKPOINT);
	assert_int_equal(s.type[1], ZD_REC_PAGES);
	assert_int_equal(s.type[2], ZD_REC_COMMIT);
	for (int i = 0; i < 3; i++)
		assert_int_equal(s.epoch[i], 3);
	assert_true(s.pages_ok);
	zd_resend_free(l);
}

static void test_end_stays_and_replay_stops(void **state)
{
	struct zd_resend *l = zd_resend_new(1 << 20);
	struct seen s = { .stop_at = 2, .pages_ok = true };
	struct zd_record r;
	char msg[128];

	(void)state;
	keep_epochs(l, 1, 1);
	zd_record_init(&r, ZD_REC_END);
	assert_int_equal(zd_resend_keep(l, &r, PS), 0);
	zd_resend_acked(l, 1);
	/* END is no epoch's to acknowledge: it goes again */
	assert_int_equal(zd_resend_replay(l, &hdr, collect, &s, msg, sizeof(msg)), 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.type[0], ZD_REC_END);
	zd_resend_free(l);

	l = zd_resend_new(1 << 20);
	keep_epochs(l, 1, 2);
	s.n = 0;
	assert_int_equal(zd_resend_replay(l, &hdr, collect, &s, msg, sizeof(msg)), 7);
	assert_int_equal(s.n, 2);
	zd_resend_free(l);
}

static void test_overflow_is_a_gap(void **state)
{
	/* room for about one epoch (two pages and two small records) */
	struct zd_resend *l = zd_resend_new(2 * PS + 600);
	struct zd_record r;
	size_t n;
	uint64_t bytes;

	(void)state;
	assert_int_equal(keep_epochs(l, 1, 1), 0);
	assert_int_equal(keep_epochs(l, 2, 2), 1);
	assert_true(zd_resend_lost(l));
	zd_resend_counts(l, &n, &bytes);
	assert_int_equal(n, 0);
	assert_int_equal(bytes, 0);
	assert_false(zd_resend_covers(l, 0));
	assert_false(zd_resend_covers(l, 2));
	/* the next epoch starts the log again: a backup at epoch 2 can be
	 * caught up, one at epoch 1 cannot */
	ckpt(&r, 3);
	assert_int_equal(zd_resend_keep(l, &r, PS), 0);
	assert_false(zd_resend_lost(l));
	assert_true(zd_resend_covers(l, 2));
	assert_false(zd_resend_covers(l, 1));
	/* a FULL checkpoint needs nothing before it */
	zd_resend_restart(l, 9);
	assert_true(zd_resend_covers(l, 8));
	assert_false(zd_resend_covers(l, 7));
	zd_resend_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resend_after_ack),
		cmocka_unit_test(test_end_stays_and_replay_stops),
		cmocka_unit_test(test_overflow_is_a_gap),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
