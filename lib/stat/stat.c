/* SPDX-License-Identifier: MIT */
/* Per-epoch figures from a stream's records (zd/stat.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stat_int.h"
#include "zd/util.h"

struct zd_stat *zd_stat_new(void)
{
	struct zd_stat *s = zd_xcalloc(1, sizeof(*s));

	for (size_t i = 0; i < ZD_ARRAY_SIZE(s->acc); i++)
		zd_pageset_init(&s->acc[i].set);
	zd_pageset_init(&s->tmp);
	return s;
}

void zd_stat_free(struct zd_stat *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < ZD_ARRAY_SIZE(s->acc); i++)
		zd_pageset_free(&s->acc[i].set);
	zd_pageset_free(&s->tmp);
	free(s->rows);
	free(s->delay);
	free(s->resp);
	free(s->mode);
	free(s->target);
	free(s);
}

size_t zd_stat_rows(const struct zd_stat *s, const struct zd_stat_row **rows)
{
	*rows = s->rows;
	return s->nrows;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double zd_stat_percentile(double *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	rank = (size_t)ceil(p / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

/* The row of epoch e: an existing one, or a new one for a CHECKPOINT
 * (create) or for the epoch right after the last (pre-copy, STANDBY).
 * NULL for any other epoch: a record naming an epoch the stream never
 * opened counts in the totals only. */
static struct zd_stat_row *row(struct zd_stat *s, uint64_t e, bool create)
{
	size_t lo = 0, hi = s->nrows;
	uint64_t last = s->nrows ? s->rows[s->nrows - 1].epoch : 0;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (s->rows[mid].epoch < e)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < s->nrows && s->rows[lo].epoch == e)
		return &s->rows[lo];
	if (!(create && e > last) && !(s->last_ckpt && e == s->last_ckpt + 1 && e > last))
		return NULL;
	if (s->nrows == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 256;
		s->rows = zd_xrealloc(s->rows, s->cap * sizeof(*s->rows));
	}
	memset(&s->rows[s->nrows], 0, sizeof(s->rows[0]));
	s->rows[s->nrows].epoch = e;
	return &s->rows[s->nrows++];
}

/* An epoch's pages: DIRTY ∪ pre-copied, gathered until the epoch is two
 * behind (a pre-copy of e+1 may arrive while e is open). */
static void settle(struct zd_stat *s, struct acc *a)
{
	struct zd_stat_row *r;

	if (!a->used)
		return;
	r = row(s, a->epoch, false);
	if (r)
		r->dirty = zd_pageset_count(&a->set);
	a->used = false;
	zd_pageset_clear(&a->set);
}

static void gather(struct zd_stat *s, uint64_t e, const struct zd_pageset *set)
{
	struct acc *a = NULL, *oldest = &s->acc[0];

	for (size_t i = 0; i < ZD_ARRAY_SIZE(s->acc); i++) {
		if (s->acc[i].used && s->acc[i].epoch == e)
			a = &s->acc[i];
		if (!s->acc[i].used || (oldest->used && s->acc[i].epoch < oldest->epoch))
			oldest = &s->acc[i];
	}
	if (!a) {
		if (oldest->used && oldest->epoch > e)
			return;		/* older than anything open: settled already */
		settle(s, oldest);
		a = oldest;
		a->used = true;
		a->epoch = e;
	}
	zd_pageset_union(&s->tmp, &a->set, set);
	zd_pageset_swap(&s->tmp, &a->set);
}

void zd_stat_push(double **v, size_t *n, size_t *cap, double x)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 256;
		*v = zd_xrealloc(*v, *cap * sizeof(**v));
	}
	(*v)[(*n)++] = x;
}

static void push_delay(struct zd_stat *s, double v)
{
	zd_stat_push(&s->delay, &s->ndelay, &s->capdelay, v);
}

const char *const zd_lat_keys[ZD_LAT_MAX] = {
	[ZD_LAT_TO_CKPT] = "to_ckpt_ns",
	[ZD_LAT_TO_COMMIT] = "to_commit_ns",
	[ZD_LAT_TO_WIRE] = "to_wire_ns",
	[ZD_LAT_TO_ACK] = "to_ack_ns",
	[ZD_LAT_NET] = "net_ns",
	[ZD_LAT_RECV_TOTAL] = "recv_total_ns",
	[ZD_LAT_RECV_VERIFY] = "recv_verify_ns",
	[ZD_LAT_RECV_CHECKSUM] = "recv_checksum_ns",
	[ZD_LAT_RECV_FSYNC] = "recv_fsync_ns",
	[ZD_LAT_RECV_COMMIT] = "recv_commit_ns",
	[ZD_LAT_RECV_APPLY] = "recv_apply_ns",
	[ZD_LAT_RECV_ACK] = "recv_ack_ns",
	[ZD_LAT_RECV_RECEIVE] = "recv_receive_ns",
	[ZD_LAT_RECV_STAGE] = "recv_stage_ns",
	[ZD_LAT_RECV_DECODE] = "recv_decode_ns",
	[ZD_LAT_RECV_JOURNAL] = "recv_journal_ns",
};
_Static_assert(ZD_LAT_MAX <= 32, "has_lat is a 32-bit mask");

static void add_latency(struct zd_stat_row *r, const char *k, double v)
{
	if (!(v >= 0))
		return;
	for (int p = 0; p < ZD_LAT_MAX; p++) {
		if (!strcmp(k, zd_lat_keys[p])) {
			r->lat[p] = v;
			r->has_lat |= 1u << p;
			return;
		}
	}
}

static void add_stat(struct zd_stat *s, const struct zd_rec_stat *st, struct zd_stat_row *r)
{
	for (uint32_t i = 0; i < st->n && i < ZD_STAT_MAX_KV; i++) {
		const char *k = st->kv[i].key;
		double v = st->kv[i].value;

		if (!strcmp(st->source, "vm") && !strcmp(k, "output_delay_ns")) {
			push_delay(s, v);
			continue;
		}
		if (!r)
			continue;
		if (!strcmp(st->source, "latency")) {
			add_latency(r, k, v);
		} else if (!strcmp(st->source, "mru")) {
			if (!strcmp(k, "standby")) {
				r->standby = v;
				r->has_standby = r->has_mru_standby = true;
			} else if (!strcmp(k, "precision")) {
				r->precision = v;
				r->has_precision = true;
			} else if (!strcmp(k, "recall")) {
				r->recall = v;
				r->has_recall = true;
			}
		} else if (!strcmp(st->source, "track") && !strcmp(k, "pause_ns")) {
			r->pause_ns = v;
			r->has_pause = true;
		} else if (!strcmp(st->source, "track") && !strcmp(k, "precopy")) {
			r->track_precopy = v;
			r->has_track_precopy = true;
		} else if (!strcmp(st->source, "track") && !strcmp(k, "precopy_redirtied")) {
			r->track_redirtied = v;
		} else if (!strcmp(st->source, "swap") && !strcmp(k, "cow_faults")) {
			r->cow_faults = v;
			r->has_cow = true;
		} else if (!strcmp(st->source, "swap") && !strcmp(k, "cow_block_ns")) {
			r->cow_block_ns = v;
			r->has_cow = true;
		} else if (!strcmp(st->source, "guest")) {
			if (!strcmp(k, "lost_ns")) {
				r->guest_lost_ns = v;
				r->has_guest = true;
			} else if (!strcmp(k, "stall_ns")) {
				r->guest_stall_ns = v;
				r->has_guest = true;
			} else if (!strcmp(k, "wfault_ns")) {
				r->guest_wfault_ns = v;
				r->has_wfault = true;
			}
		} else if (!strcmp(st->source, "send") && !strcmp(k, "wire_bytes")) {
			r->wire_bytes += v;
			r->has_wire = true;
		} else if (!strcmp(st->source, "send") && !strcmp(k, "pages") && v >= 0) {
			/* What zd-send put on the wire, captured pages included;
			 * its log has no PAGES to count. It wins over PAGES
			 * records of the same epoch (the stream zd-send read). */
			if (!r->has_send_pages)
				r->pages_sent = 0;
			r->pages_sent += (uint64_t)v;
			r->has_send_pages = true;
		}
	}
}

void zd_stat_add(struct zd_stat *s, const struct zd_record *rec, uint64_t bytes)
{
	struct zd_stat_row *r = NULL;

	s->bytes += bytes;
	switch (rec->type) {
	case ZD_REC_HEADER:
		free(s->mode);
		free(s->target);
		s->mode = zd_xstrdup(zd_mode_name((enum zd_mode)rec->u.header.mode));
		s->target = zd_xstrdup(rec->u.header.target ? rec->u.header.target : "");
		s->have_header = true;
		break;
	case ZD_REC_CHECKPOINT:
		r = row(s, rec->u.ckpt.epoch, true);
		if (r) {
			r->checkpointed = true;
			r->ckpt_pause_ns = (double)rec->u.ckpt.pause_ns;
			s->last_ckpt = rec->u.ckpt.epoch;
		}
		break;
	case ZD_REC_DIRTY:
		r = row(s, rec->u.dirty.epoch, false);
		gather(s, rec->u.dirty.epoch, &rec->u.dirty.set);
		break;
	case ZD_REC_STANDBY:
		r = row(s, rec->u.dirty.epoch, false);
		if (r && !r->has_mru_standby) {
			r->standby = (double)zd_pageset_count(&rec->u.dirty.set);
			r->has_standby = true;
		}
		break;
	case ZD_REC_PAGES:
		r = row(s, rec->u.pages.epoch, false);
		if (r) {
			if (!r->has_send_pages)
				r->pages_sent += zd_pageset_count(&rec->u.pages.set);
			if (rec->u.pages.flags & ZD_PAGES_PRECOPY)
				r->precopy += zd_pageset_count(&rec->u.pages.set);
		}
		if (rec->u.pages.flags & ZD_PAGES_PRECOPY)
			gather(s, rec->u.pages.epoch, &rec->u.pages.set);
		break;
	case ZD_REC_STATE:
		r = row(s, rec->u.state.epoch, false);
		break;
	case ZD_REC_COMMIT:
		r = row(s, rec->u.commit.epoch, false);
		break;
	case ZD_REC_ACK:
		r = row(s, rec->u.ack.epoch, false);
		if (r && rec->u.ack.latency_ns) {
			r->latency_ns = (double)rec->u.ack.latency_ns;
			r->has_latency = true;
		}
		break;
	case ZD_REC_STAT:
		r = row(s, rec->u.stat.epoch, false);
		add_stat(s, &rec->u.stat, r);
		break;
	case ZD_REC_DISK:
		r = row(s, rec->u.disk.epoch, false);
		s->disk_records++;
		s->disk_bytes += rec->u.disk.len;
		s->disk_data_bytes += rec->u.disk.data_len;
		break;
	default:
		break;
	}
	if (r)
		r->bytes += bytes;
}

bool zd_stat_row_stall(const struct zd_stat_row *r, double *ns)
{
	/* what zd_stat_finish() makes pause_ns: --follow looks before */
	double v = r->ckpt_pause_ns > 0 ? r->ckpt_pause_ns : r->pause_ns;

	if (!(r->ckpt_pause_ns > 0) && !r->has_pause)
		return false;
	if (r->has_cow)
		v += r->cow_block_ns;
	/* No guest figure, no price: an unmeasured cost is left out, not
	 * guessed (synth:, xen:). */
	if (r->has_wfault && r->track_redirtied > 0)
		v += r->track_redirtied * r->guest_wfault_ns;
	*ns = v;
	return true;
}

void zd_stat_finish(struct zd_stat *s)
{
	for (size_t i = 0; i < ZD_ARRAY_SIZE(s->acc); i++)
		settle(s, &s->acc[i]);
	for (size_t i = 0; i < s->nrows; i++) {
		struct zd_stat_row *r = &s->rows[i];

		if (r->ckpt_pause_ns > 0) {
			r->pause_ns = r->ckpt_pause_ns;
			r->has_pause = true;
		}
		/* No pre-copied PAGES seen (a log after zd-send, which keeps
		 * no pages): DIRTY is only the frozen set; the pre-copied pages
		 * not written again belong to the epoch too. */
		if (!r->precopy && r->has_track_precopy && r->track_precopy > 0) {
			double extra = r->track_precopy - r->track_redirtied;

			r->precopy = (uint64_t)r->track_precopy;
			if (extra > 0)
				r->dirty += (uint64_t)extra;
		}
	}
}

void zd_stat_drop_before(struct zd_stat *s, uint64_t from)
{
	size_t k = 0;

	while (k < s->nrows && s->rows[k].epoch < from)
		k++;
	memmove(s->rows, s->rows + k, (s->nrows - k) * sizeof(*s->rows));
	s->nrows -= k;
}
