/* SPDX-License-Identifier: MIT */
/*
 * synth: a deterministic stand-in for a VM, for tests and benchmarks of
 * every stage without one.
 *
 *   synth:pages=N,dirty=D[,hot=H][,seed=S][,write=W][,drift=R]
 *         [,hotset=K][,pagesize=P][,protect_fail=N]
 *
 * Each epoch writes D distinct pages: round(H*D) from a hot window of K
 * pages (default 2*D) whose start moves R pages per epoch, the rest
 * uniformly from the whole space. Memory starts all zero. After a write
 * in epoch e, page p holds content(seed, p, e): a pseudo-random base page
 * of p with W words overwritten at places derived from (seed, p, e), so
 * two versions of a page differ in a few words — delta compression has
 * something to find — and any process can regenerate the contents of
 * DIRTY(e) from the spec and e alone. That is how attach works.
 *
 * Within an epoch the first SYNTH_EARLY of the writes happen before the
 * first deadline (zddspt's T0); the rest before the next deadline or the
 * pause, whichever comes first.
 *
 * Since any epoch's pages can be regenerated, zddspt neither protects nor
 * copies synth's frozen set (t->replays_pages). protect_fail=N makes synth
 * a stand-in for zd-vm's write-protect guard instead, so the guarded path
 * runs without KVM: protect succeeds, protecting nothing (regeneration
 * still gives zd-swap the checkpoint's pages), except the Nth call, which
 * fails as a broken guard would.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "target/synth.h"
#include "zd/target.h"
#include "zd/util.h"

#define SYNTH_EARLY 0.8
#define SYNTH_MAX_PAGES (1ull << 26)
/* Above this the whole image is not kept in memory for memsum; it is
 * regenerated page by page instead. */
#define SYNTH_IMAGE_MAX (1ull << 30)

struct synth {
	struct zd_synth_params p;
	uint64_t epoch;		/* epoch being written (last paused + 1) */
	uint32_t *last;		/* epoch of the last write per page, 0 = never */
	uint32_t *mark;		/* pick stamp, to keep an epoch's pages distinct */
	uint64_t *armed_dirty;	/* bitmap: written since re-armed */
	uint64_t *list;		/* this epoch's writes, in the order they happen */
	uint64_t nlist, applied;
	int runs;		/* run_until calls this epoch */
	uint8_t *image;		/* whole memory, once memsum asked for it */
	bool tracker;		/* opened (not attached) */
	uint64_t protects;	/* protect calls, for protect_fail= */
};

/* splitmix64's finaliser: a good 64-bit mixer. */
static inline uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t below(uint64_t *state, uint64_t n)
{
	*state += 0x9e3779b97f4a7c15ull;
	return (uint64_t)(((unsigned __int128)mix64(*state) * n) >> 64);
}

void zd_synth_page(const struct zd_synth_params *p, uint64_t pfn, uint64_t epoch,
		   uint8_t *out)
{
	size_t nw = p->page_size / 8;
	uint64_t hp = mix64(p->seed ^ mix64(pfn + 0x5851f42d4c957f2dull));
	uint64_t he = mix64(hp ^ mix64(epoch * 0xd1342543de82ef95ull + 1));
	uint64_t w;

	if (epoch == 0) {
		memset(out, 0, p->page_size);
		return;
	}
	for (size_t i = 0; i < nw; i++) {
		w = mix64(hp + i);
		memcpy(out + 8 * i, &w, 8);
	}
	for (uint32_t j = 0; j < p->write; j++) {
		uint64_t r = mix64(he + j);

		w = mix64(r ^ 0xa0761d6478bd642full);
		memcpy(out + 8 * (size_t)(r % nw), &w, 8);
	}
}

static int bad(char *msg, size_t len, const char *fmt, const char *key, const char *val)
{
	snprintf(msg, len, fmt, key, val);
	return -1;
}

int zd_synth_parse(const char *args, struct zd_synth_params *p, char *msg, size_t len)
{
	char *dup = zd_xstrdup(args), *save = NULL, *kv;
	bool have_pages = false, have_dirty = false, have_hotset = false;
	uint64_t v;
	double d;
	int rc = 0;

	memset(p, 0, sizeof(*p));
	p->hot = 0.8;
	p->seed = 1;
	p->write = 8;
	p->drift = 1;
	p->page_size = 4096;

	for (kv = strtok_r(dup, ",", &save); kv && rc == 0; kv = strtok_r(NULL, ",", &save)) {
		char *val = strchr(kv, '=');

		if (!val) {
			rc = bad(msg, len, "'%s%s' is not key=value", kv, "");
			break;
		}
		*val++ = '\0';
		if (!strcmp(kv, "pages")) {
			if (zd_parse_size(val, &v) < 0 || v == 0 || v > SYNTH_MAX_PAGES)
				rc = bad(msg, len, "%s=%s: want 1 to 67108864", kv, val);
			p->pages = v;
			have_pages = true;
		} else if (!strcmp(kv, "dirty")) {
			if (zd_parse_size(val, &v) < 0)
				rc = bad(msg, len, "%s=%s: not a number", kv, val);
			p->dirty = v;
			have_dirty = true;
		} else if (!strcmp(kv, "hot")) {
			if (zd_parse_double(val, &d) < 0 || !(d >= 0.0 && d <= 1.0))
				rc = bad(msg, len, "%s=%s: want a fraction in [0,1]", kv, val);
			p->hot = d;
		} else if (!strcmp(kv, "seed")) {
			if (zd_parse_u64(val, &v) < 0)
				rc = bad(msg, len, "%s=%s: not a number", kv, val);
			p->seed = v;
		} else if (!strcmp(kv, "write")) {
			if (zd_parse_u64(val, &v) < 0 || v == 0 || v > 65536)
				rc = bad(msg, len, "%s=%s: want 1 to 65536 words", kv, val);
			p->write = (uint32_t)v;
		} else if (!strcmp(kv, "drift")) {
			if (zd_parse_u64(val, &v) < 0)
				rc = bad(msg, len, "%s=%s: not a number", kv, val);
			p->drift = v;
		} else if (!strcmp(kv, "hotset")) {
			if (zd_parse_size(val, &v) < 0 || v == 0)
				rc = bad(msg, len, "%s=%s: want a page count >= 1", kv, val);
			p->hotset = v;
			have_hotset = true;
		} else if (!strcmp(kv, "pagesize")) {
			if (zd_parse_size(val, &v) < 0 || v < 512 || v > 65536 || (v & (v - 1)))
				rc = bad(msg, len, "%s=%s: want a power of two from 512 to 64K", kv, val);
			p->page_size = (uint32_t)v;
		} else if (!strcmp(kv, "protect_fail")) {
			if (zd_parse_u64(val, &v) < 0)
				rc = bad(msg, len, "%s=%s: not a number", kv, val);
			p->protect_fail = v;
		} else {
			rc = bad(msg, len, "unknown key '%s'%s (want pages, dirty, hot, seed, write, drift, hotset, pagesize, protect_fail)", kv, "");
		}
	}
	free(dup);
	if (rc)
		return rc;
	if (!have_pages)
		return bad(msg, len, "missing pages=N%s%s", "", "");
	if (!have_dirty)
		return bad(msg, len, "missing dirty=D%s%s", "", "");
	if (p->dirty > p->pages) {
		snprintf(msg, len, "dirty=%llu is more than pages=%llu",
			 (unsigned long long)p->dirty, (unsigned long long)p->pages);
		return -1;
	}
	if (!have_hotset)
		p->hotset = p->dirty ? 2 * p->dirty : 1;
	if (p->hotset > p->pages)
		p->hotset = p->pages;
	p->drift %= p->pages;
	return 0;
}

/* The writes of epoch e, in the order they happen: a pure function of
 * (params, e). mark is scratch of p->pages stamps (values != e on entry). */
static uint64_t gen_epoch(const struct zd_synth_params *p, uint64_t e, uint32_t *mark,
			  uint64_t *list)
{
	uint64_t st = mix64(p->seed * 0x2545f4914f6cdd1dull ^ mix64(e));
	uint64_t nhot = (uint64_t)(p->hot * (double)p->dirty + 0.5);
	uint64_t start = (mix64(p->seed) % p->pages + p->drift * e) % p->pages;
	uint64_t n = 0;
	uint32_t stamp = (uint32_t)e;

	if (nhot > p->hotset)
		nhot = p->hotset;
	/* Floyd's sample: exactly nhot distinct offsets in the window. */
	for (uint64_t j = p->hotset - nhot; j < p->hotset; j++) {
		uint64_t t = below(&st, j + 1);
		uint64_t pfn = (start + t) % p->pages;

		if (mark[pfn] == stamp)
			pfn = (start + j) % p->pages;
		mark[pfn] = stamp;
		list[n++] = pfn;
	}
	/* The rest anywhere: rejection while it is cheap, then a scan from a
	 * random place so a nearly full space still ends. */
	for (uint64_t tries = 0; n < p->dirty; tries++) {
		uint64_t pfn = below(&st, p->pages);

		if (tries > 4 * p->dirty + 64) {
			while (mark[pfn] == stamp)
				pfn = (pfn + 1) % p->pages;
		}
		if (mark[pfn] == stamp)
			continue;
		mark[pfn] = stamp;
		list[n++] = pfn;
	}
	/* Hot and cold writes interleave in time, as in a real guest. */
	for (uint64_t i = n; i > 1; i--) {
		uint64_t j = below(&st, i);
		uint64_t tmp = list[i - 1];

		list[i - 1] = list[j];
		list[j] = tmp;
	}
	return n;
}

uint64_t zd_synth_epoch_pages(const struct zd_synth_params *p, uint64_t epoch,
			      uint64_t *list)
{
	uint32_t *mark = zd_xcalloc(p->pages, sizeof(*mark));
	uint64_t n = gen_epoch(p, epoch, mark, list);

	free(mark);
	return n;
}

static struct synth *S(struct zd_target *t)
{
	return t->priv;
}

static void apply(struct zd_target *t, uint64_t upto)
{
	struct synth *s = S(t);

	for (; s->applied < upto; s->applied++) {
		uint64_t pfn = s->list[s->applied];

		s->last[pfn] = (uint32_t)s->epoch;
		s->armed_dirty[pfn / 64] |= 1ull << (pfn % 64);
		if (s->image)
			zd_synth_page(&s->p, pfn, s->epoch, s->image + pfn * s->p.page_size);
	}
}

static void start_epoch(struct synth *s)
{
	s->nlist = gen_epoch(&s->p, s->epoch, s->mark, s->list);
	s->applied = 0;
	s->runs = 0;
}

static int common_open(struct zd_target *t, const char *args, bool tracker)
{
	struct synth *s = zd_xcalloc(1, sizeof(*s));

	if (zd_synth_parse(args, &s->p, t->err, sizeof(t->err)) < 0) {
		free(s);
		errno = EINVAL;	/* the spec is wrong: a usage error */
		return -1;
	}
	t->priv = s;
	t->page_size = s->p.page_size;
	t->page_count = s->p.pages;
	s->tracker = tracker;
	t->replays_pages = s->p.protect_fail == 0;
	if (tracker) {
		s->last = zd_xcalloc(s->p.pages, sizeof(*s->last));
		s->mark = zd_xcalloc(s->p.pages, sizeof(*s->mark));
		s->armed_dirty = zd_xcalloc((s->p.pages + 63) / 64, 8);
		s->list = zd_xcalloc(s->p.dirty ? s->p.dirty : 1, sizeof(*s->list));
		s->epoch = 1;
		start_epoch(s);
	}
	return 0;
}

static int synth_open(struct zd_target *t, const char *args)
{
	return common_open(t, args, true);
}

static int synth_attach(struct zd_target *t, const struct zd_rec_header *hdr)
{
	const char *args = strchr(hdr->target, ':');

	if (common_open(t, args ? args + 1 : "", false) < 0)
		return -1;
	if (hdr->page_size != t->page_size || hdr->page_count != t->page_count) {
		snprintf(t->err, sizeof(t->err),
			 "HEADER says %llu pages of %u bytes, the spec %llu of %u",
			 (unsigned long long)hdr->page_count, hdr->page_size,
			 (unsigned long long)t->page_count, t->page_size);
		free(t->priv);
		t->priv = NULL;
		return -1;
	}
	return 0;
}

static void synth_close(struct zd_target *t)
{
	struct synth *s = S(t);

	if (!s)
		return;
	free(s->last);
	free(s->mark);
	free(s->armed_dirty);
	free(s->list);
	free(s->image);
	free(s);
	t->priv = NULL;
}

static int synth_run_until(struct zd_target *t, uint64_t deadline_ns)
{
	struct synth *s = S(t);
	uint64_t now = zd_now_ns();

	if (deadline_ns > now)
		zd_sleep_ns(deadline_ns - now);
	if (s->runs++ == 0)
		apply(t, (uint64_t)(SYNTH_EARLY * (double)s->nlist + 0.5));
	else
		apply(t, s->nlist);
	return 0;
}

static int synth_pause(struct zd_target *t, uint64_t epoch)
{
	struct synth *s = S(t);

	if (epoch != s->epoch) {
		snprintf(t->err, sizeof(t->err), "pause for epoch %llu, but epoch %llu is running",
			 (unsigned long long)epoch, (unsigned long long)s->epoch);
		return -1;
	}
	/* Everything the guest wrote before the pause belongs to the epoch. */
	apply(t, s->nlist);
	s->epoch++;
	start_epoch(s);
	return 0;
}

static int synth_resume(struct zd_target *t)
{
	return 0;
}

static int synth_harvest(struct zd_target *t, struct zd_pageset *dirty)
{
	struct synth *s = S(t);

	zd_pageset_clear(dirty);
	zd_pageset_from_bitmap(dirty, s->armed_dirty, s->p.pages, 0);
	return 0;
}

static int synth_rearm(struct zd_target *t, const struct zd_pageset *set)
{
	struct synth *s = S(t);

	if (!set) {
		memset(s->armed_dirty, 0, (s->p.pages + 63) / 64 * 8);
		return 0;
	}
	for (size_t i = 0; i < set->n; i++)
		for (uint64_t pfn = set->r[i].first; pfn < set->r[i].first + set->r[i].count; pfn++)
			if (pfn < s->p.pages)
				s->armed_dirty[pfn / 64] &= ~(1ull << (pfn % 64));
	return 0;
}

static int synth_read_pages(struct zd_target *t, uint64_t epoch,
			    const struct zd_pageset *set, uint8_t *buf)
{
	struct synth *s = S(t);
	struct zd_pageset_iter it;
	uint64_t pfn;

	if (zd_pageset_end(set) > s->p.pages) {
		snprintf(t->err, sizeof(t->err), "pfn %llu beyond %llu pages",
			 (unsigned long long)zd_pageset_end(set) - 1,
			 (unsigned long long)s->p.pages);
		return -1;
	}
	zd_pageset_iter_init(&it, set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		/* The tracker knows each page's last write; an attached stage
		 * only knows the set is the epoch's DIRTY set. */
		uint64_t e = s->tracker ? s->last[pfn] : epoch;

		if (s->image)
			memcpy(buf, s->image + pfn * s->p.page_size, s->p.page_size);
		else
			zd_synth_page(&s->p, pfn, e, buf);
		buf += s->p.page_size;
	}
	return 0;
}

static int synth_get_state(struct zd_target *t, uint32_t *kind, uint8_t **data, uint32_t *len)
{
	struct synth *s = S(t);
	uint8_t *b = zd_xmalloc(16);
	uint64_t epoch = s->epoch - 1, seed = s->p.seed;

	/* The generator has no vCPU; its whole state is where it is. */
	for (int i = 0; i < 8; i++) {
		b[i] = (uint8_t)(epoch >> (8 * i));
		b[8 + i] = (uint8_t)(seed >> (8 * i));
	}
	*kind = 3;
	*data = b;
	*len = 16;
	return 0;
}

static int synth_memsum(struct zd_target *t, uint64_t *sum)
{
	struct synth *s = S(t);
	uint64_t bytes = s->p.pages * s->p.page_size;

	if (!s->tracker) {
		snprintf(t->err, sizeof(t->err), "memsum needs the tracker's view");
		return -1;
	}
	if (!s->image && bytes <= SYNTH_IMAGE_MAX) {
		/* Materialise once; apply() keeps it current from now on. */
		s->image = malloc(bytes);
		if (s->image)
			for (uint64_t pfn = 0; pfn < s->p.pages; pfn++)
				zd_synth_page(&s->p, pfn, s->last[pfn],
					      s->image + pfn * s->p.page_size);
	}
	if (s->image) {
		*sum = zd_hash64(s->image, bytes);
		return 0;
	}
	XXH3_state_t *st = XXH3_createState();
	uint8_t *page = zd_xmalloc(s->p.page_size);

	XXH3_64bits_reset(st);
	for (uint64_t pfn = 0; pfn < s->p.pages; pfn++) {
		zd_synth_page(&s->p, pfn, s->last[pfn], page);
		zd_hash64_update(st, page, s->p.page_size);
	}
	*sum = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	free(page);
	return 0;
}

/* Only with protect_fail= (replays_pages is false then): see the top. */
static int synth_protect(struct zd_target *t, const struct zd_pageset *set)
{
	struct synth *s = S(t);

	if (++s->protects != s->p.protect_fail)
		return 0;
	snprintf(t->err, sizeof(t->err), "protect %llu fails (protect_fail=%llu)",
		 (unsigned long long)s->protects, (unsigned long long)s->p.protect_fail);
	return -1;
}

const struct zd_target_ops zd_target_synth = {
	.scheme = "synth",
	.usage = "synth:pages=N,dirty=D[,hot=H][,seed=S][,write=W][,drift=R][,hotset=K][,pagesize=P][,protect_fail=N]",
	.open = synth_open,
	.attach = synth_attach,
	.close = synth_close,
	.run_until = synth_run_until,
	.pause = synth_pause,
	.resume = synth_resume,
	.harvest = synth_harvest,
	.rearm = synth_rearm,
	.read_pages = synth_read_pages,
	.get_state = synth_get_state,
	.memsum = synth_memsum,
	.protect = synth_protect,
};
