/* SPDX-License-Identifier: MIT */
/*
 * trace:FILE — replays a recorded zd-stream (either encoding) as a VM:
 * each recorded epoch's pages (its DIRTY set, and the pages pre-copied for
 * it in a zddspt recording) become what the next harvest reports,
 * and the contents of any recorded PAGES become the page image, so
 * read_pages works when the trace carries them (and fails clearly when it
 * does not). The replay ends at the trace's END or end of file.
 *
 * Attached (a downstream stage reading pages), the file is read forward as
 * the stage asks for later epochs, building the same image.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "zd/stream.h"
#include "zd/target.h"
#include "zd/util.h"

struct trace {
	int fd;
	struct zd_reader rd;
	char *path;
	uint8_t **page;		/* recorded contents per pfn, NULL = none */
	uint64_t *armed_dirty;	/* bitmap: dirtied since re-armed */
	uint64_t *ever_dirty;	/* bitmap: dirtied at some point */
	uint64_t epoch;		/* epochs loaded so far */
	bool loaded;		/* this epoch's records are in */
	bool ended;		/* END or EOF seen */
	struct zd_record pending; /* first record of the next epoch, read ahead */
	bool have_pending;
};

static struct trace *T(struct zd_target *t)
{
	return t->priv;
}

static void set_bits(uint64_t *bm, const struct zd_pageset *s)
{
	for (size_t i = 0; i < s->n; i++)
		for (uint64_t p = s->r[i].first; p < s->r[i].first + s->r[i].count; p++)
			bm[p / 64] |= 1ull << (p % 64);
}

static int store_pages(struct zd_target *t, const struct zd_rec_pages *pg)
{
	struct trace *tr = T(t);
	struct zd_pageset_iter it;
	const uint8_t *src = pg->data;
	uint64_t pfn;

	/* The codec hands PAGES over decoded (raw); anything else is a
	 * record this replay cannot use. */
	if (pg->enc != ZD_PENC_RAW ||
	    (uint64_t)pg->data_len != zd_pageset_count(&pg->set) * t->page_size) {
		snprintf(t->err, sizeof(t->err), "%s: PAGES of epoch %llu not decoded to raw pages",
			 tr->path, (unsigned long long)pg->epoch);
		return -1;
	}
	zd_pageset_iter_init(&it, &pg->set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		if (!tr->page[pfn])
			tr->page[pfn] = zd_xmalloc(t->page_size);
		memcpy(tr->page[pfn], src, t->page_size);
		src += t->page_size;
	}
	return 0;
}

static int read_rec(struct zd_target *t, struct zd_record *r)
{
	struct trace *tr = T(t);
	int rc;

	if (tr->have_pending) {
		*r = tr->pending;
		tr->have_pending = false;
		return 1;
	}
	rc = zd_reader_next(&tr->rd, r);
	if (rc < 0)
		snprintf(t->err, sizeof(t->err), "%s", tr->rd.msg);
	return rc;
}

/* Read one recorded epoch: everything up to its COMMIT (or the next
 * CHECKPOINT, for a trace without COMMITs). Returns 1 with an epoch, 0 at
 * the end of the trace, -1 on a bad trace. */
static int load_epoch(struct zd_target *t)
{
	struct trace *tr = T(t);
	struct zd_record r;
	bool in_epoch = false, any = false;
	int rc;

	for (;;) {
		rc = read_rec(t, &r);
		if (rc <= 0) {
			if (rc == 0)
				tr->ended = true;
			return rc < 0 ? -1 : any ? 1 : 0;
		}
		switch (r.type) {
		case ZD_REC_CHECKPOINT:
			if (in_epoch) {
				tr->pending = r;
				tr->have_pending = true;
				return 1;
			}
			in_epoch = any = true;
			break;
		case ZD_REC_DIRTY:
			set_bits(tr->armed_dirty, &r.u.dirty.set);
			set_bits(tr->ever_dirty, &r.u.dirty.set);
			any = true;
			break;
		case ZD_REC_PAGES:
			if (store_pages(t, &r.u.pages) < 0) {
				zd_record_free(&r);
				return -1;
			}
			/* A zddspt recording names pre-copied pages only here:
			 * the VM wrote them in this epoch all the same. */
			if (r.u.pages.flags & ZD_PAGES_PRECOPY) {
				set_bits(tr->armed_dirty, &r.u.pages.set);
				set_bits(tr->ever_dirty, &r.u.pages.set);
			}
			any = true;
			break;
		case ZD_REC_COMMIT:
			zd_record_free(&r);
			return 1;
		case ZD_REC_END:
			tr->ended = true;
			zd_record_free(&r);
			return any ? 1 : 0;
		default:
			break;
		}
		zd_record_free(&r);
	}
}

static int trace_common(struct zd_target *t, const char *path)
{
	struct trace *tr;
	struct zd_record r;
	int rc;

	if (!*path) {
		snprintf(t->err, sizeof(t->err), "want trace:FILE");
		return -1;
	}
	tr = zd_xcalloc(1, sizeof(*tr));
	tr->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (tr->fd < 0) {
		snprintf(t->err, sizeof(t->err), "%s: %s", path, strerror(errno));
		free(tr);
		return -1;
	}
	tr->path = zd_xstrdup(path);
	t->priv = tr;
	zd_reader_init(&tr->rd, tr->fd, tr->path);
	rc = zd_reader_next(&tr->rd, &r);
	if (rc <= 0) {
		snprintf(t->err, sizeof(t->err), "%s", rc < 0 ? tr->rd.msg : "empty trace");
		return -1;
	}
	if (r.type != ZD_REC_HEADER) {
		snprintf(t->err, sizeof(t->err), "%s: first record is %s, not HEADER",
			 path, zd_rec_type_name(r.type));
		zd_record_free(&r);
		return -1;
	}
	t->page_size = r.u.header.page_size;
	t->page_count = r.u.header.page_count;
	zd_record_free(&r);
	tr->page = zd_xcalloc(t->page_count, sizeof(*tr->page));
	tr->armed_dirty = zd_xcalloc((t->page_count + 63) / 64, 8);
	tr->ever_dirty = zd_xcalloc((t->page_count + 63) / 64, 8);
	return 0;
}

static void trace_close(struct zd_target *t)
{
	struct trace *tr = T(t);

	if (!tr)
		return;
	if (tr->have_pending)
		zd_record_free(&tr->pending);
	if (tr->page)
		for (uint64_t p = 0; p < t->page_count; p++)
			free(tr->page[p]);
	free(tr->page);
	free(tr->armed_dirty);
	free(tr->ever_dirty);
	zd_reader_free(&tr->rd);
	close(tr->fd);
	free(tr->path);
	free(tr);
	t->priv = NULL;
}

static int trace_open(struct zd_target *t, const char *args)
{
	if (trace_common(t, args) < 0) {
		trace_close(t);
		return -1;
	}
	t->replays_pages = true;	/* the trace recorded every epoch's pages */
	return 0;
}

static int trace_attach(struct zd_target *t, const struct zd_rec_header *hdr)
{
	const char *args = strchr(hdr->target, ':');

	if (trace_common(t, args ? args + 1 : "") < 0) {
		trace_close(t);
		return -1;
	}
	if (hdr->page_size != t->page_size || hdr->page_count != t->page_count) {
		snprintf(t->err, sizeof(t->err), "trace and HEADER disagree on the memory size");
		trace_close(t);
		return -1;
	}
	return 0;
}

static int trace_run_until(struct zd_target *t, uint64_t deadline_ns)
{
	struct trace *tr = T(t);
	uint64_t now = zd_now_ns();

	if (deadline_ns > now)
		zd_sleep_ns(deadline_ns - now);
	if (tr->loaded)
		return 0;
	if (tr->ended)
		return 1;
	int rc = load_epoch(t);

	if (rc < 0)
		return -1;
	if (rc == 0)
		return 1;
	tr->loaded = true;
	tr->epoch++;
	return 0;
}

static int trace_pause(struct zd_target *t, uint64_t epoch)
{
	T(t)->loaded = false;
	return 0;
}

static int trace_resume(struct zd_target *t)
{
	return 0;
}

static int trace_harvest(struct zd_target *t, struct zd_pageset *dirty)
{
	zd_pageset_clear(dirty);
	zd_pageset_from_bitmap(dirty, T(t)->armed_dirty, t->page_count, 0);
	return 0;
}

static int trace_rearm(struct zd_target *t, const struct zd_pageset *set)
{
	struct trace *tr = T(t);

	if (!set) {
		memset(tr->armed_dirty, 0, (t->page_count + 63) / 64 * 8);
		return 0;
	}
	for (size_t i = 0; i < set->n; i++)
		for (uint64_t p = set->r[i].first;
		     p < set->r[i].first + set->r[i].count && p < t->page_count; p++)
			tr->armed_dirty[p / 64] &= ~(1ull << (p % 64));
	return 0;
}

/* Contents of one page as the trace knows them; -1 if it was dirtied but
 * the trace never carried it. */
static int page_at(struct zd_target *t, uint64_t pfn, uint8_t *out)
{
	struct trace *tr = T(t);

	if (tr->page[pfn]) {
		memcpy(out, tr->page[pfn], t->page_size);
		return 0;
	}
	if (tr->ever_dirty[pfn / 64] & (1ull << (pfn % 64))) {
		snprintf(t->err, sizeof(t->err), "%s: the trace has no PAGES for pfn %llu",
			 tr->path, (unsigned long long)pfn);
		return -1;
	}
	memset(out, 0, t->page_size);
	return 0;
}

static int trace_read_pages(struct zd_target *t, uint64_t epoch,
			    const struct zd_pageset *set, uint8_t *buf)
{
	struct trace *tr = T(t);
	struct zd_pageset_iter it;
	uint64_t pfn;

	if (zd_pageset_end(set) > t->page_count) {
		snprintf(t->err, sizeof(t->err), "pfn %llu beyond %llu pages",
			 (unsigned long long)zd_pageset_end(set) - 1,
			 (unsigned long long)t->page_count);
		return -1;
	}
	/* Attached: read forward until the trace has reached this epoch. */
	while (!tr->ended && tr->epoch < epoch) {
		int rc = load_epoch(t);

		if (rc < 0)
			return -1;
		if (rc > 0)
			tr->epoch++;
	}
	zd_pageset_iter_init(&it, set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		if (page_at(t, pfn, buf) < 0)
			return -1;
		buf += t->page_size;
	}
	return 0;
}

static int trace_get_state(struct zd_target *t, uint32_t *kind, uint8_t **data, uint32_t *len)
{
	uint64_t e = T(t)->epoch;
	uint8_t *b = zd_xmalloc(8);

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(e >> (8 * i));
	*kind = 3;
	*data = b;
	*len = 8;
	return 0;
}

static int trace_memsum(struct zd_target *t, uint64_t *sum)
{
	XXH3_state_t *st = XXH3_createState();
	uint8_t *page = zd_xmalloc(t->page_size);
	int rc = 0;

	XXH3_64bits_reset(st);
	for (uint64_t pfn = 0; pfn < t->page_count && rc == 0; pfn++) {
		rc = page_at(t, pfn, page);
		zd_hash64_update(st, page, t->page_size);
	}
	*sum = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	free(page);
	return rc;
}

const struct zd_target_ops zd_target_trace = {
	.scheme = "trace",
	.usage = "trace:FILE",
	.open = trace_open,
	.attach = trace_attach,
	.close = trace_close,
	.run_until = trace_run_until,
	.pause = trace_pause,
	.resume = trace_resume,
	.harvest = trace_harvest,
	.rearm = trace_rearm,
	.read_pages = trace_read_pages,
	.get_state = trace_get_state,
	.memsum = trace_memsum,
};
