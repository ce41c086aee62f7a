/* SPDX-License-Identifier: MIT */
/*
 * The capture filter of zd/capture.h: follow each epoch's DIRTY sets and
 * PAGES, and before its COMMIT emit PAGES for whatever is still missing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/capture.h"
#include "zd/fb.h"
#include "zd/target.h"
#include "zd/util.h"

struct zd_capture {
	zd_capture_emit emit;
	void *arg;
	int fb_fd;
	struct zd_rec_header hdr;	/* deep copy */
	bool have_hdr;
	bool guard_owner;		/* zd_capture_own_guard */
	uint64_t drain_delay_ns;	/* zd_capture_set_drain_delay */
	const struct zd_drain_ops *drain;
	void *drain_state;
	struct zd_target *t;
	uint64_t epoch;			/* the open epoch, 0 = none */
	bool inline_pages;		/* the tracker sends this epoch's pages */
	bool wp_exact;			/* ZD_CKPT_WP_EXACT */
	bool drained;			/* the open epoch was drained at its DIRTY */
	struct zd_pageset dirty;
	struct zd_pageset covered;
	struct zd_capture_stats stats;
	char err[512];
};

struct zd_capture *zd_capture_new(zd_capture_emit emit, void *arg, int fb_fd)
{
	struct zd_capture *c = zd_xcalloc(1, sizeof(*c));

	c->emit = emit;
	c->arg = arg;
	c->fb_fd = fb_fd;
	zd_pageset_init(&c->dirty);
	zd_pageset_init(&c->covered);
	return c;
}

void zd_capture_set_fb(struct zd_capture *c, int fb_fd)
{
	c->fb_fd = fb_fd;
}

void zd_capture_own_guard(struct zd_capture *c)
{
	c->guard_owner = true;
}

void zd_capture_set_drain_delay(struct zd_capture *c, uint64_t ns)
{
	c->drain_delay_ns = ns;
}

uint64_t zd_capture_drain_delay(const struct zd_capture *c)
{
	return c->drain_delay_ns;
}

int zd_fb_join(const struct zd_rec_header *hdr, int role)
{
	int fd;

	if (!hdr->control || !*hdr->control) {
		zd_warnx("stream has no control socket: running open loop (no feedback to zd-track)");
		return -1;
	}
	fd = zd_fb_connect(hdr->control, (enum zd_fb_role)role);
	if (fd < 0)
		zd_warn("%s: running open loop (no feedback to zd-track)", hdr->control);
	return fd;
}

void zd_capture_free(struct zd_capture *c)
{
	if (!c)
		return;
	if (c->drain && c->drain->stop)
		c->drain->stop(c);
	if (c->t)
		zd_target_close(c->t);
	free(c->hdr.target);
	free(c->hdr.control);
	zd_pageset_free(&c->dirty);
	zd_pageset_free(&c->covered);
	free(c);
}

int zd_capture_fail(struct zd_capture *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return code;
}

const char *zd_capture_error(const struct zd_capture *c) { return c->err; }
const struct zd_capture_stats *zd_capture_stats(const struct zd_capture *c) { return &c->stats; }
struct zd_target *zd_capture_target(struct zd_capture *c) { return c->t; }
bool zd_capture_vm_died(const struct zd_capture *c) { return c->t && c->t->vm_died; }
void **zd_capture_drain_state(struct zd_capture *c) { return &c->drain_state; }
struct zd_capture_stats *zd_capture_stats_mut(struct zd_capture *c) { return &c->stats; }
const struct zd_pageset *zd_capture_dirty(const struct zd_capture *c) { return &c->dirty; }
bool zd_capture_wp_exact(const struct zd_capture *c) { return c->wp_exact; }

int zd_capture_emit_stat(struct zd_capture *c, uint64_t epoch, const char *const *keys,
			 const double *vals, unsigned n)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_STAT);
	r.u.stat.epoch = epoch;
	snprintf(r.u.stat.source, sizeof(r.u.stat.source), "swap");
	for (unsigned i = 0; i < n && i < ZD_STAT_MAX_KV; i++) {
		snprintf(r.u.stat.kv[i].key, sizeof(r.u.stat.kv[i].key), "%s", keys[i]);
		r.u.stat.kv[i].value = vals[i];
	}
	r.u.stat.n = n;
	if (c->emit(c->arg, &r) < 0)
		return zd_capture_fail(c, ZD_EXIT_FAIL, "writing STAT of epoch %" PRIu64, epoch);
	return 0;
}

/* zddspt on kvm: the frozen table is drained while the VM runs, with
 * pre-images from userfaultfd write faults (drain_uffd, which falls back
 * to reading when zd-vm has no guard: then zd-track copies while paused
 * and no epoch reaches the drain). Everything else is read as it is. */
const struct zd_drain_ops *zd_capture_drain_for(const struct zd_rec_header *hdr)
{
	if (hdr->mode == ZD_MODE_ZDDSPT && hdr->target && !strncmp(hdr->target, "kvm:", 4) &&
	    hdr->control && *hdr->control)
		return &zd_drain_uffd;
	return &zd_drain_read;
}

static int attach(struct zd_capture *c)
{
	char msg[256];

	if (c->t)
		return 0;
	/* kvm: attach asks the tracker for guest RAM (MEMORY) itself. */
	if (zd_target_attach(&c->t, &c->hdr, msg, sizeof(msg)) < 0)
		return zd_capture_fail(c, ZD_EXIT_TARGET, "%s", msg);
	return 0;
}

int zd_capture_emit_pages(struct zd_capture *c, uint64_t epoch, const struct zd_pageset *set,
			  uint8_t *data, uint8_t flags)
{
	struct zd_record r;

	zd_record_init(&r, ZD_REC_PAGES);
	r.u.pages.epoch = epoch;
	r.u.pages.enc = ZD_PENC_RAW;
	r.u.pages.flags = flags;
	r.u.pages.set = *set;	/* borrowed, not freed here */
	r.u.pages.data_len = (uint32_t)(set->pages * c->hdr.page_size);
	r.u.pages.data = data;
	if (c->emit(c->arg, &r) < 0)
		return zd_capture_fail(c, ZD_EXIT_FAIL, "writing PAGES of epoch %" PRIu64, epoch);
	c->stats.captured += set->pages;
	c->stats.bytes += r.u.pages.data_len;
	c->stats.total_pages += set->pages;
	return 0;
}

static void open_epoch(struct zd_capture *c, uint64_t epoch)
{
	c->epoch = epoch;
	c->inline_pages = false;
	c->wp_exact = false;
	c->drained = false;
	zd_pageset_clear(&c->dirty);
	zd_pageset_clear(&c->covered);
}

static void add_to(struct zd_pageset *acc, const struct zd_pageset *s)
{
	struct zd_pageset u = ZD_PAGESET_INIT;

	zd_pageset_union(&u, acc, s);
	zd_pageset_swap(&u, acc);
	zd_pageset_free(&u);
}

/* At COMMIT: read and emit what the epoch's DIRTY sets have and its PAGES
 * did not bring (unless drain_at_dirty did already). */
static int close_epoch(struct zd_capture *c, uint64_t epoch)
{
	struct zd_pageset missing = ZD_PAGESET_INIT;
	int rc = 0;

	if (c->epoch == epoch && c->drained)
		goto out;
	c->stats.epoch = epoch;
	c->stats.captured = c->stats.bytes = 0;
	if (c->epoch != epoch || c->inline_pages)
		goto out;
	zd_pageset_subtract(&missing, &c->dirty, &c->covered);
	if (zd_pageset_empty(&missing))
		goto out;
	if ((rc = attach(c)))
		goto out;
	rc = c->drain->drain(c, epoch, &missing);
out:
	zd_pageset_free(&missing);
	c->epoch = 0;
	return rc;
}

/*
 * WP_EXACT (zddspt's CHECKPOINT request): the tracker sends the pages it
 * copied at the pause before DIRTY, so at DIRTY what is missing is known,
 * and it is exactly what zd-vm protected. The drain starts there, not at
 * COMMIT: every record between them (STATE, a STAT, and on a loaded host
 * the hops through zd-mru) was time in which a guest write to a protected
 * page took a ~60 us fault. Only the guard's owner: its drain is the one
 * that un-protects.
 */
static int drain_at_dirty(struct zd_capture *c)
{
	uint64_t epoch = c->epoch;
	int rc;

	if (!c->wp_exact || !c->guard_owner || c->inline_pages || c->drained)
		return 0;
	rc = close_epoch(c, epoch);
	c->epoch = epoch;	/* still open: STATE and COMMIT follow */
	c->drained = true;
	return rc;
}

int zd_capture_feed(struct zd_capture *c, const struct zd_record *r)
{
	int rc;

	switch (r->type) {
	case ZD_REC_HEADER:
		free(c->hdr.target);
		free(c->hdr.control);
		c->hdr = r->u.header;
		c->hdr.target = zd_xstrdup(r->u.header.target ? r->u.header.target : "");
		c->hdr.control = zd_xstrdup(r->u.header.control ? r->u.header.control : "");
		c->have_hdr = true;
		if (c->drain && c->drain->stop)
			c->drain->stop(c);
		/* One guard, one fault handler: see zd_capture_own_guard. */
		c->drain = c->guard_owner ? zd_capture_drain_for(&c->hdr) : &zd_drain_read;
		if (c->drain->start && ((rc = attach(c)) || (rc = c->drain->start(c))))
			return rc;
		break;
	case ZD_REC_CHECKPOINT:
		/* Pre-copied PAGES may have opened this epoch already. */
		if (c->epoch != r->u.ckpt.epoch)
			open_epoch(c, r->u.ckpt.epoch);
		c->inline_pages = r->u.ckpt.flags & ZD_CKPT_PAGES_INLINE;
		c->wp_exact = r->u.ckpt.flags & ZD_CKPT_WP_EXACT;
		break;
	case ZD_REC_DIRTY:
		if (c->epoch && r->u.dirty.epoch == c->epoch) {
			add_to(&c->dirty, &r->u.dirty.set);
			if ((rc = drain_at_dirty(c)))
				return rc;
		}
		break;
	case ZD_REC_PAGES:
		if (r->u.pages.epoch != c->epoch && r->u.pages.epoch > c->stats.epoch)
			open_epoch(c, r->u.pages.epoch);
		/* A pre-copied page that was written again after T0 is in DIRTY
		 * and needs its checkpoint-time copy: pre-copies cover nothing. */
		if (r->u.pages.epoch == c->epoch && !(r->u.pages.flags & ZD_PAGES_PRECOPY))
			add_to(&c->covered, &r->u.pages.set);
		break;
	case ZD_REC_COMMIT:
		if (!c->have_hdr)
			break;
		if ((rc = close_epoch(c, r->u.commit.epoch)))
			return rc;
		break;
	default:
		break;
	}
	if (c->emit(c->arg, r) < 0)
		return zd_capture_fail(c, ZD_EXIT_FAIL, "writing %s", zd_rec_type_name(r->type));
	return 0;
}
