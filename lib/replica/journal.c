/* SPDX-License-Identifier: MIT */
/*
 * One epoch, staged in DIR/journal.tmp, verified, committed by rename,
 * applied to memory.img. The functions appear in the order they run; the
 * layout of the journal is in replica_int.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "zd/replica.h"
#include "zd/util.h"
#include "replica_int.h"

/* Where each staged page's bytes are in the journal; seq orders copies
 * of a page sent twice (a pre-copied page sent again at the checkpoint). */
struct jidx {
	uint64_t pfn;
	uint64_t off;
	uint64_t seq;
};

struct zd_stage {
	uint64_t epoch;
	int fd;			/* journal.tmp */
	XXH3_state_t *h;	/* over every byte written so far */
	uint64_t off;
	uint64_t data_off;	/* where the pages of the PAGES being staged start */
	uint8_t *jmap;		/* journal.tmp mapped read-only (zd_replica_stage_map) */
	size_t jmap_len;
	struct zd_pageset dirty;	/* union of the epoch's DIRTY records */
	struct zd_pageset covered;	/* union of its PAGES */
	struct zd_pageset final_set;	/* PAGES not marked pre-copy: sent for good */
	struct zd_pageset precopied;	/* PAGES marked pre-copy */
	struct jidx *idx;
	size_t nidx, cap;
	bool have_state;
	bool verified;
	/* The epoch's pages also kept in memory as decoded (stage_pages_keep),
	 * so the apply after the commit copies them from there instead of
	 * mapping the journal back in and reading it again. Only while every
	 * PAGES of the epoch is kept and they fit in KEEP_MAX. */
	struct kept { uint8_t *buf; const uint8_t *pages; struct zd_pageset set; } *kept;
	size_t nkept, kept_cap, npages_recs;
	uint64_t kept_bytes;
	uint8_t *state;		/* the last STATE, as staged */
	uint32_t state_kind, state_len;
	/* The epoch's disk writes, in stream order: where each one's bytes
	 * are in the journal (overlay_disksum). */
	struct jdisk { uint64_t off, len, joff; } *disk;
	size_t ndisk, disk_cap;
	uint64_t disk_bytes, disk_size;
	uint32_t jflags;	/* of JE_COMMIT, and the rest of it */
	uint64_t memsum, commit_wall_ns;
};

#define KEEP_MAX (256ull << 20)

static void drop_kept(struct zd_stage *st)
{
	for (size_t i = 0; i < st->nkept; i++) {
		free(st->kept[i].buf);
		zd_pageset_free(&st->kept[i].set);
	}
	free(st->kept);
	st->kept = NULL;
	st->nkept = st->kept_cap = 0;
	st->kept_bytes = KEEP_MAX + 1;	/* and no more */
}

static void stage_free(struct zd_stage *st)
{
	if (!st)
		return;
	if (st->fd >= 0)
		close(st->fd);
	if (st->jmap)
		munmap(st->jmap, st->jmap_len);
	XXH3_freeState(st->h);
	zd_pageset_free(&st->dirty);
	zd_pageset_free(&st->covered);
	zd_pageset_free(&st->final_set);
	zd_pageset_free(&st->precopied);
	free(st->idx);
	drop_kept(st);
	free(st->state);
	free(st->disk);
	free(st);
}

static int jwrite(struct zd_replica *rep, const void *buf, size_t len)
{
	struct zd_stage *st = rep->st;

	if (zd_write_full(st->fd, buf, len) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal.tmp: write: %s", rep->dir, strerror(errno));
	zd_hash64_update(st->h, buf, len);
	st->off += len;
	return 0;
}

static int jentry(struct zd_replica *rep, uint32_t type, uint32_t flags, uint64_t a, uint64_t b)
{
	uint8_t e[ZD_JENT_HDR];

	zd_put_u32(e, type);
	zd_put_u32(e + 4, flags);
	zd_put_u64(e + 8, a);
	zd_put_u64(e + 16, b);
	return jwrite(rep, e, sizeof(e));
}

static int no_stage(struct zd_replica *rep, const char *what, uint64_t epoch)
{
	if (!rep->st)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "%s of epoch %" PRIu64 " outside an epoch", what, epoch);
	return zd__rep_fail(rep, ZD_EXIT_DATA, "%s of epoch %" PRIu64 " inside epoch %" PRIu64,
			    what, epoch, rep->st->epoch);
}

uint64_t zd_replica_open_epoch(const struct zd_replica *rep)
{
	return rep->st ? rep->st->epoch : 0;
}

const struct zd_pageset *zd_replica_stage_covered(const struct zd_replica *rep)
{
	return rep->st ? &rep->st->covered : NULL;
}

/* 1. Open journal.tmp for the epoch. */
int zd_replica_stage_begin(struct zd_replica *rep, uint64_t epoch)
{
	struct zd_stage *st;
	uint8_t h[ZD_JOURNAL_HDR];
	int rc;

	if (!rep->initialised)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 " before HEADER", epoch);
	if (rep->st)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 " begins before COMMIT of epoch %" PRIu64,
				    epoch, rep->st->epoch);
	if (rep->run == rep->meta.run && epoch <= rep->meta.epoch)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 " is already committed (replica at epoch %" PRIu64 ")",
				    epoch, rep->meta.epoch);
	st = zd_xcalloc(1, sizeof(*st));
	st->fd = -1;
	st->epoch = epoch;
	zd_pageset_init(&st->dirty);
	zd_pageset_init(&st->covered);
	zd_pageset_init(&st->final_set);
	zd_pageset_init(&st->precopied);
	st->h = XXH3_createState();
	if (!st->h) {
		stage_free(st);
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "out of memory");
	}
	XXH3_64bits_reset(st->h);
	/* journal.tmp is the last epoch's journal, renamed back after it was
	 * applied: overwriting its blocks is several times faster than
	 * allocating new ones. commit_mark cuts it to this epoch's length. */
	if ((rc = zd_replica_open_file(rep, "journal.tmp", O_RDWR | O_CREAT, &st->fd))) {
		stage_free(st);
		return rc;
	}
	rep->st = st;
	memcpy(h, ZD_JOURNAL_MAGIC, 4);
	zd_put_u32(h + 4, rep->meta.page_size);
	zd_put_u64(h + 8, rep->meta.page_count);
	zd_put_u64(h + 16, epoch);
	zd_put_u64(h + 24, rep->run);
	return jwrite(rep, h, sizeof(h));
}

/* 2. What the epoch must contain. */
int zd_replica_stage_dirty(struct zd_replica *rep, const struct zd_pageset *set)
{
	struct zd_pageset u = ZD_PAGESET_INIT;

	if (!rep->st)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "DIRTY outside an epoch");
	if (zd_pageset_end(set) > rep->meta.page_count)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "DIRTY pfn %" PRIu64 " beyond page count %" PRIu64,
				    zd_pageset_end(set) - 1, rep->meta.page_count);
	zd_pageset_union(&u, &rep->st->dirty, set);
	zd_pageset_swap(&u, &rep->st->dirty);
	zd_pageset_free(&u);
	return 0;
}

/* 3. Page contents, appended range by range. A page may come twice only if
 * its first copy was pre-copied (ZD_PAGES_PRECOPY): the later copy wins.
 * That is all a sender does (zddspt pre-copies a page once, at T0, and
 * sends it again at T1 if it was written since), and it bounds an epoch:
 * at most two copies of each of the run's pages reach the journal, so a
 * stream that repeats pre-copies (tiny when compressed) cannot fill the
 * disk or the apply window. Checked before a byte of the record is
 * decoded or written.
 * In three steps, so a decoder can write the pages as they come out
 * (zd-recv: zd_wire_decode_to): the entry's header and ranges, the pages
 * in pieces, then the index. p->data is not read by begin and end. */
int zd_replica_stage_pages_begin(struct zd_replica *rep, const struct zd_rec_pages *p)
{
	struct zd_stage *st = rep->st;
	struct zd_pageset u = ZD_PAGESET_INIT;
	uint64_t ps = rep->meta.page_size;
	int rc;

	if (!st || p->epoch != st->epoch)
		return no_stage(rep, "PAGES", p->epoch);
	if (p->enc != ZD_PENC_RAW)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "PAGES encoding %u not supported", p->enc);
	if ((uint64_t)p->data_len != p->set.pages * ps)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "PAGES carry %u bytes for %" PRIu64 " pages of %" PRIu64,
				    p->data_len, p->set.pages, ps);
	if (zd_pageset_end(&p->set) > rep->meta.page_count)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "PAGES pfn %" PRIu64 " beyond page count %" PRIu64,
				    zd_pageset_end(&p->set) - 1, rep->meta.page_count);
	if (zd_pageset_intersect_count(&p->set, &st->final_set)) {
		zd_pageset_intersect(&u, &p->set, &st->final_set);
		rc = zd__rep_fail(rep, ZD_EXIT_DATA, "PAGES repeat pfn %" PRIu64 " in epoch %" PRIu64,
				  u.r[0].first, st->epoch);
		zd_pageset_free(&u);
		return rc;
	}
	if ((p->flags & ZD_PAGES_PRECOPY) && zd_pageset_intersect_count(&p->set, &st->precopied)) {
		zd_pageset_intersect(&u, &p->set, &st->precopied);
		rc = zd__rep_fail(rep, ZD_EXIT_DATA, "PAGES pre-copy pfn %" PRIu64 " again in epoch %" PRIu64
				  " (a page is pre-copied at most once an epoch)", u.r[0].first, st->epoch);
		zd_pageset_free(&u);
		return rc;
	}
	/* Nothing to keep: no entry, so that empty records cannot grow the
	 * journal (or the apply window's list) either. */
	if (!p->set.pages) {
		st->data_off = st->off;
		return 0;
	}
	/* One entry per record: header and range list in one write. */
	size_t hlen = ZD_JENT_HDR + p->set.n * 16;
	uint8_t *h = zd_xmalloc(hlen);

	zd_put_u32(h, JE_PAGES);
	zd_put_u32(h + 4, 0);
	zd_put_u64(h + 8, p->set.n);
	zd_put_u64(h + 16, p->set.pages);
	for (size_t i = 0; i < p->set.n; i++) {
		zd_put_u64(h + ZD_JENT_HDR + 16 * i, p->set.r[i].first);
		zd_put_u64(h + ZD_JENT_HDR + 16 * i + 8, p->set.r[i].count);
	}
	rc = jwrite(rep, h, hlen);
	free(h);
	st->data_off = st->off;
	return rc;
}

uint64_t zd_replica_stage_pages_at(const struct zd_replica *rep)
{
	return rep->st ? rep->st->data_off : 0;
}

/* A mapping, not a read into a buffer: the pages come straight from the
 * page cache the writes just filled. It may reach past the end of the
 * file (grown by doubling, so a long epoch maps a few times, not once
 * per record); only the bytes staged are ever read through it. */
int zd_replica_stage_map(struct zd_replica *rep, const uint8_t **map)
{
	struct zd_stage *st = rep->st;

	if (!st)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "journal mapped outside an epoch");
	if (st->off > st->jmap_len) {
		size_t len = (size_t)ZD_MAX(st->off, 2 * (uint64_t)st->jmap_len);
		void *m;

		if (st->jmap)
			munmap(st->jmap, st->jmap_len);
		st->jmap = NULL;
		st->jmap_len = 0;
		m = mmap(NULL, len, PROT_READ, MAP_SHARED, st->fd, 0);
		if (m == MAP_FAILED)
			return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal.tmp: mmap: %s", rep->dir, strerror(errno));
		st->jmap = m;
		st->jmap_len = len;
	}
	*map = st->jmap;
	return 0;
}

int zd_replica_stage_pages_data(struct zd_replica *rep, const uint8_t *data, size_t len)
{
	if (!rep->st)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "PAGES data outside an epoch");
	return jwrite(rep, data, len);
}

int zd_replica_stage_pages_end(struct zd_replica *rep, const struct zd_rec_pages *p)
{
	struct zd_stage *st = rep->st;
	struct zd_pageset u = ZD_PAGESET_INIT;
	uint64_t ps = rep->meta.page_size, pos = 0;

	if (!st)
		return no_stage(rep, "PAGES", p->epoch);
	if (st->off - st->data_off != p->data_len)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "PAGES of epoch %" PRIu64 ": %" PRIu64 " of %u bytes staged",
				    st->epoch, st->off - st->data_off, p->data_len);
	if (!p->set.pages)
		return 0;
	if (st->nidx + p->set.pages > st->cap) {
		st->cap = ZD_MAX(st->cap * 2, st->nidx + p->set.pages);
		st->idx = zd_xrealloc(st->idx, st->cap * sizeof(*st->idx));
	}
	for (size_t i = 0; i < p->set.n; i++) {
		const struct zd_range *r = &p->set.r[i];

		for (uint64_t k = 0; k < r->count; k++) {
			st->idx[st->nidx] = (struct jidx){ r->first + k, st->data_off + pos, st->nidx };
			st->nidx++;
			pos += ps;
		}
	}
	st->npages_recs++;
	zd_pageset_union(&u, &st->covered, &p->set);
	zd_pageset_swap(&u, &st->covered);
	zd_pageset_clear(&u);
	if (!(p->flags & ZD_PAGES_PRECOPY)) {
		zd_pageset_union(&u, &st->final_set, &p->set);
		zd_pageset_swap(&u, &st->final_set);
	} else {
		zd_pageset_union(&u, &st->precopied, &p->set);
		zd_pageset_swap(&u, &st->precopied);
	}
	zd_pageset_free(&u);
	return 0;
}

int zd_replica_stage_pages(struct zd_replica *rep, const struct zd_rec_pages *p)
{
	int rc;

	if ((rc = zd_replica_stage_pages_begin(rep, p)) ||
	    (rc = zd_replica_stage_pages_data(rep, p->data, p->data_len)))
		return rc;
	return zd_replica_stage_pages_end(rep, p);
}

void zd_replica_stage_pages_keep(struct zd_replica *rep, uint8_t *buf, const struct zd_rec_pages *p)
{
	struct zd_stage *st = rep->st;
	uint64_t len = p->set.pages * rep->meta.page_size;

	if (st && !p->set.pages) {	/* staged nothing (stage_pages_begin) */
		free(buf);
		return;
	}
	if (!st || st->nkept + 1 != st->npages_recs || st->kept_bytes + len > KEEP_MAX) {
		free(buf);
		if (st)
			drop_kept(st);
		return;
	}
	if (st->nkept == st->kept_cap) {
		st->kept_cap = st->kept_cap ? 2 * st->kept_cap : 16;
		st->kept = zd_xrealloc(st->kept, st->kept_cap * sizeof(*st->kept));
	}
	struct kept *k = &st->kept[st->nkept++];

	k->buf = buf;
	k->pages = p->data;
	zd_pageset_init(&k->set);
	zd_pageset_copy(&k->set, &p->set);
	st->kept_bytes += len;
}

/* 4. Device state, once an epoch (a sender captures it once, at the
 * pause): more would grow the journal without bound. */
int zd_replica_stage_state(struct zd_replica *rep, const struct zd_rec_state *s)
{
	int rc;

	if (!rep->st || s->epoch != rep->st->epoch)
		return no_stage(rep, "STATE", s->epoch);
	if (rep->st->have_state)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "a second STATE in epoch %" PRIu64 " (one an epoch)",
				    s->epoch);
	if ((rc = jentry(rep, JE_STATE, 0, s->kind, s->len)) || (rc = jwrite(rep, s->data, s->len)))
		return rc;
	rep->st->have_state = true;
	free(rep->st->state);
	rep->st->state = zd_xmalloc(s->len ? s->len : 1);
	memcpy(rep->st->state, s->data, s->len);
	rep->st->state_kind = s->kind;
	rep->st->state_len = s->len;
	return 0;
}

/* 4b. The guest's disk writes, expanded and journaled in the order they
 * came (a later write of the epoch wins where two overlap). An epoch
 * carries at most disk_size + ZD_DISK_EPOCH_EXTRA bytes of them (the
 * whole-disk copy of a first epoch plus zd-vm's bounded write log), so a
 * stream cannot fill the journal's file system with rewrites of one
 * sector. Checked before a byte is written. */
#define ZD_DISK_EPOCH_EXTRA ((uint64_t)512 << 20)
int zd_replica_stage_disk(struct zd_replica *rep, const struct zd_rec_disk *d)
{
	struct zd_stage *st = rep->st;
	uint8_t *data = NULL, sz[8];
	char m[160];
	int rc;

	if (!st || d->epoch != st->epoch)
		return no_stage(rep, "DISK", d->epoch);
	if (zd_disk_expand(d, &data, m, sizeof(m)) < 0)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "DISK of epoch %" PRIu64 ": %s", d->epoch, m);
	if (st->disk_size && st->disk_size != d->disk_size) {
		rc = zd__rep_fail(rep, ZD_EXIT_DATA, "DISK of epoch %" PRIu64 " says the disk is %" PRIu64
				  " bytes, an earlier one %" PRIu64, d->epoch, d->disk_size, st->disk_size);
		goto out;
	}
	if (st->disk_bytes + d->len > d->disk_size + ZD_DISK_EPOCH_EXTRA) {
		rc = zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 " writes more than %" PRIu64
				  " bytes to a disk of %" PRIu64, d->epoch, d->disk_size + ZD_DISK_EPOCH_EXTRA,
				  d->disk_size);
		goto out;
	}
	if ((rc = zd__rep_disk_open(rep, d->disk_size)))
		goto out;
	zd_put_u64(sz, d->disk_size);
	if ((rc = jentry(rep, JE_DISK, 0, d->offset, d->len)) || (rc = jwrite(rep, sz, 8)))
		goto out;
	if (st->ndisk == st->disk_cap) {
		st->disk_cap = st->disk_cap ? 2 * st->disk_cap : 16;
		st->disk = zd_xrealloc(st->disk, st->disk_cap * sizeof(*st->disk));
	}
	st->disk[st->ndisk++] = (struct jdisk){ d->offset, d->len, st->off };
	if ((rc = jwrite(rep, data, d->len)))
		goto out;
	st->disk_size = d->disk_size;
	st->disk_bytes += d->len;
out:
	free(data);
	return rc;
}

/* zd_hash64 of disk.img as the journal will leave it, disk.img untouched:
 * chunk by chunk, the image's bytes with the epoch's writes laid over
 * them in order. */
static int overlay_disksum(struct zd_replica *rep, uint64_t *sum)
{
	struct zd_stage *st = rep->st;
	uint64_t size = st->disk_size ? st->disk_size : rep->meta.disk_size;
	uint8_t *buf = zd_xmalloc(ZD_REP_HASH_BUF);
	XXH3_state_t *h = XXH3_createState();
	int rc = 0;

	XXH3_64bits_reset(h);
	for (uint64_t at = 0; at < size;) {
		uint64_t n = ZD_MIN(size - at, (uint64_t)ZD_REP_HASH_BUF);
		ssize_t r = pread(rep->diskfd, buf, (size_t)n, (off_t)at);

		if (r != (ssize_t)n) {
			rc = zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/disk.img: read: %s", rep->dir,
					  r < 0 ? strerror(errno) : "unexpected end of file");
			goto out;
		}
		for (size_t i = 0; i < st->ndisk; i++) {
			const struct jdisk *w = &st->disk[i];
			uint64_t from = ZD_MAX(at, w->off), to = ZD_MIN(at + n, w->off + w->len);

			if (from >= to)
				continue;
			if (pread(st->fd, buf + (from - at), (size_t)(to - from),
				  (off_t)(w->joff + (from - w->off))) != (ssize_t)(to - from)) {
				rc = zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal.tmp: read: %s", rep->dir,
						  strerror(errno));
				goto out;
			}
		}
		zd_hash64_update(h, buf, (size_t)n);
		at += n;
	}
	*sum = XXH3_64bits_digest(h);
out:
	XXH3_freeState(h);
	free(buf);
	return rc;
}

static int cmp_jidx(const void *a, const void *b)
{
	const struct jidx *x = a, *y = b;

	if (x->pfn != y->pfn)
		return x->pfn < y->pfn ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* zd_hash64 of memory.img as it will be once the journal is applied,
 * without touching memory.img: hash the image between staged pages and the
 * staged copy (the last one of each pfn) in their place. */
static int overlay_memsum(struct zd_replica *rep, uint64_t *sum)
{
	struct zd_stage *st = rep->st;
	uint64_t ps = rep->meta.page_size;
	uint64_t size = rep->meta.page_count * ps;
	uint8_t *jr = MAP_FAILED, *buf = NULL;
	XXH3_state_t *h = NULL;
	uint64_t cur = 0;
	int rc = 0;

	/* (qsort wants a non-null array even for none) */
	if (st->nidx)
		qsort(st->idx, st->nidx, sizeof(*st->idx), cmp_jidx);
	jr = mmap(NULL, st->off, PROT_READ, MAP_SHARED, st->fd, 0);
	if (jr == MAP_FAILED) {
		rc = zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal.tmp: mmap: %s", rep->dir, strerror(errno));
		goto out;
	}
	h = XXH3_createState();
	buf = zd_xmalloc(ZD_REP_HASH_BUF);
	XXH3_64bits_reset(h);
	for (size_t i = 0; i < st->nidx; i++) {
		if (i + 1 < st->nidx && st->idx[i + 1].pfn == st->idx[i].pfn)
			continue;	/* a later copy of this page follows */
		uint64_t at = st->idx[i].pfn * ps;

		if ((rc = zd__rep_hash_file(rep, rep->memfd, h, buf, cur, at - cur)))
			goto out;
		zd_hash64_update(h, jr + st->idx[i].off, ps);
		cur = at + ps;
	}
	if ((rc = zd__rep_hash_file(rep, rep->memfd, h, buf, cur, size - cur)))
		goto out;
	*sum = XXH3_64bits_digest(h);
out:
	free(buf);
	XXH3_freeState(h);
	if (jr != MAP_FAILED)
		munmap(jr, st->off);
	return rc;
}

/* 5. On COMMIT: the PAGES cover exactly the DIRTY set, and the memory the
 * epoch leaves has the primary's checksum. Then the JE_COMMIT entry. */
int zd_replica_stage_verify(struct zd_replica *rep, const struct zd_rec_commit *c,
			    enum zd_verify verify)
{
	struct zd_stage *st = rep->st;
	struct zd_pageset d = ZD_PAGESET_INIT;
	uint64_t sum = 0;
	uint32_t jflags = 0;
	uint8_t tail[16];
	int rc;

	if (!st || c->epoch != st->epoch)
		return no_stage(rep, "COMMIT", c->epoch);
	if (c->pages != st->dirty.pages)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "COMMIT of epoch %" PRIu64 " counts %" PRIu64
				    " pages, its DIRTY set has %" PRIu64, st->epoch, c->pages, st->dirty.pages);
	/* Every DIRTY page has PAGES; a page outside DIRTY is allowed only as
	 * a pre-copy (zddspt: copied at T0, not written again before T1). */
	zd_pageset_subtract(&d, &st->dirty, &st->covered);
	if (d.pages) {
		rc = zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 ": PAGES miss %" PRIu64 " of %" PRIu64
				  " DIRTY pages (first pfn %" PRIu64 ")", st->epoch, d.pages, st->dirty.pages, d.r[0].first);
		zd_pageset_free(&d);
		return rc;
	}
	zd_pageset_subtract(&d, &st->final_set, &st->dirty);
	if (d.pages) {
		rc = zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 ": PAGES carry %" PRIu64
				  " pages beyond the %" PRIu64 " DIRTY ones (first pfn %" PRIu64 ")",
				  st->epoch, d.pages, st->dirty.pages, d.r[0].first);
		zd_pageset_free(&d);
		return rc;
	}
	zd_pageset_free(&d);
	rep->sum_ns = 0;
	if (verify == ZD_VERIFY_ALWAYS && !(c->flags & ZD_COMMIT_HAS_MEMSUM))
		return zd__rep_fail(rep, ZD_EXIT_DATA, "COMMIT of epoch %" PRIu64
				    " has no memory checksum (--verify wants zd-track --verify)", st->epoch);
	if (verify != ZD_VERIFY_NEVER && (c->flags & ZD_COMMIT_HAS_MEMSUM)) {
		uint64_t t0 = zd_now_ns();

		rc = overlay_memsum(rep, &sum);
		rep->sum_ns += zd_now_ns() - t0;
		if (rc)
			return rc;
		if (sum != c->memsum)
			return zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 ": replica memory checksum 0x%016" PRIx64
					    " differs from the primary's 0x%016" PRIx64, st->epoch, sum, c->memsum);
		jflags |= JC_MEMSUM;
	}
	/* The disk the epoch leaves, likewise (zd-track --verify on a guest
	 * with a disk). */
	if (verify != ZD_VERIFY_NEVER && (c->flags & ZD_COMMIT_HAS_DISKSUM)) {
		uint64_t dsum = 0;

		if (rep->diskfd < 0)
			return zd__rep_fail(rep, ZD_EXIT_DATA, "COMMIT of epoch %" PRIu64
					    " has a disk checksum, the replica no disk", st->epoch);
		uint64_t t0 = zd_now_ns();

		rc = overlay_disksum(rep, &dsum);
		rep->sum_ns += zd_now_ns() - t0;
		if (rc)
			return rc;
		if (dsum != c->disksum)
			return zd__rep_fail(rep, ZD_EXIT_DATA, "epoch %" PRIu64 ": replica disk checksum 0x%016" PRIx64
					    " differs from the primary's 0x%016" PRIx64, st->epoch, dsum, c->disksum);
	}
	/* Before the commit point, not after: the blocks of memory.img the
	 * epoch's pages go to. A sparse image grows as pages arrive, and a disk
	 * that fills up while a committed journal is applied would leave a
	 * replica that cannot even recover (every retry fails the same way);
	 * here a full disk only discards this epoch. Blocks once reserved
	 * stay (nothing punches holes in memory.img), so only pages this
	 * process has not reserved yet are: a fallocate per range of every
	 * epoch was a third of zd-recv's CPU time on ext4. */
	bool reserved = true;

	zd_pageset_subtract(&d, &st->covered, &rep->reserved);
	for (size_t i = 0; i < d.n; i++) {
		const struct zd_range *r = &d.r[i];

		if (fallocate(rep->memfd, 0, (off_t)(r->first * rep->meta.page_size),
			      (off_t)(r->count * rep->meta.page_size)) < 0) {
			if (errno == EOPNOTSUPP || errno == ENOSYS) {
				/* nothing reserved: asked again next epoch */
				reserved = false;
				break;
			}
			rc = zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/memory.img: reserving epoch %" PRIu64 "'s pages: %s",
					  rep->dir, st->epoch, strerror(errno));
			zd_pageset_free(&d);
			return rc;
		}
	}
	if (d.pages && reserved) {
		zd_pageset_union(&d, &rep->reserved, &st->covered);
		zd_pageset_swap(&d, &rep->reserved);
	}
	zd_pageset_free(&d);
	if ((rc = jentry(rep, JE_COMMIT, 0, jflags, sum)))
		return rc;
	st->jflags = jflags;
	st->memsum = sum;
	st->commit_wall_ns = zd_wall_ns();
	zd_put_u64(tail, st->commit_wall_ns);
	if ((rc = jwrite(rep, tail, 8)))
		return rc;
	/* The digest covers everything before it and is not part of itself. */
	zd_put_u64(tail + 8, XXH3_64bits_digest(st->h));
	if (zd_write_full(st->fd, tail + 8, 8) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal.tmp: write: %s", rep->dir, strerror(errno));
	st->off += 8;
	st->verified = true;
	return 0;
}

/* 6. The commit point: after this rename the epoch survives a crash. */
int zd_replica_commit_mark(struct zd_replica *rep)
{
	struct zd_stage *st = rep->st;
	uint64_t t0 = zd_now_ns();

	if (!st || !st->verified)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "commit of an unverified epoch");
	if (ftruncate(st->fd, (off_t)st->off) < 0 || (rep->sync && fsync(st->fd) < 0))
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal.tmp: %s", rep->dir, strerror(errno));
	rep->fsync_ns = zd_now_ns() - t0;
	if (renameat(rep->dirfd, "journal.tmp", rep->dirfd, "journal") < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal: rename: %s", rep->dir, strerror(errno));
	rep->marked_wall_ns = st->commit_wall_ns;
	rep->st = NULL;
	stage_free(rep->applying);
	rep->applying = NULL;
	/* The kept pages path knows no disk writes: an epoch with any
	 * applies from the journal. */
	if (st->nkept && st->nkept == st->npages_recs && !st->ndisk) {
		close(st->fd);
		st->fd = -1;
		rep->applying = st;	/* for zd_replica_apply */
	} else {
		stage_free(st);
	}
	return zd__rep_fsync_dir(rep);
}

/* Check a journal end to end before touching memory.img: header matches
 * the replica, entries in bounds, JE_COMMIT last, digest right. */
static int journal_check(struct zd_replica *rep, const uint8_t *j, size_t len, uint64_t *epoch,
			 uint64_t *run, const uint8_t **commit)
{
	uint64_t ps = rep->meta.page_size, off = ZD_JOURNAL_HDR, end;
	const uint64_t np = rep->meta.page_count;

	if (len < ZD_JOURNAL_HDR + ZD_JENT_HDR + 16 || memcmp(j, ZD_JOURNAL_MAGIC, 4) ||
	    zd_get_u32(j + 4) != ps || zd_get_u64(j + 8) != np)
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/journal: bad header (damaged replica)", rep->dir);
	/* The digest first: after it, the entries are as zd-recv wrote them. */
	end = len - ZD_JENT_HDR - 16;
	if (zd_get_u32(j + end) != JE_COMMIT || zd_get_u64(j + len - 8) != zd_hash64(j, len - 8))
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/journal: checksum mismatch (damaged replica)", rep->dir);
	*epoch = zd_get_u64(j + 16);
	*run = zd_get_u64(j + 24);
	*commit = j + end;
	while (off + ZD_JENT_HDR <= end) {
		uint32_t type = zd_get_u32(j + off);
		uint64_t a = zd_get_u64(j + off + 8), b = zd_get_u64(j + off + 16), plen, sum = 0;
		bool ok = true;

		if (type == JE_PAGES) {
			/* a ranges holding b pages in all, each inside memory */
			ok = a <= (end - off) / 16 && b <= np;
			for (uint64_t i = 0; ok && i < a; i++) {
				uint64_t first = zd_get_u64(j + off + ZD_JENT_HDR + 16 * i);
				uint64_t count = zd_get_u64(j + off + ZD_JENT_HDR + 16 * i + 8);

				ok = first < np && count <= np - first;
				sum += count;
			}
			ok = ok && sum == b;
			plen = a * 16 + b * ps;
		} else if (type == JE_DISK) {
			/* a = offset, b = length, inside the disk the entry names,
			 * which is the replica's if it has one */
			uint64_t dsz = end - off - ZD_JENT_HDR >= 8 ? zd_get_u64(j + off + ZD_JENT_HDR) : 0;

			ok = dsz && dsz <= ZD_DISK_MAX && b && b <= ZD_DISK_PER_RECORD && a <= dsz &&
			     b <= dsz - a && (!rep->meta.disk_size || dsz == rep->meta.disk_size);
			plen = 8 + b;
		} else {
			ok = type == JE_STATE;
			plen = b;
		}
		if (!ok || plen > end - off - ZD_JENT_HDR)
			break;
		off += ZD_JENT_HDR + plen;
	}
	if (off != end)
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/journal: bad entry at byte %" PRIu64 " (damaged replica)",
				    rep->dir, off);
	return 0;
}

/* Write a range of pages into memory.img. Through a writable mapping
 * where the blocks are reserved (a memcpy: the pages of a guest's epoch
 * are scattered, and a pwrite per range was two thirds of zd-recv's CPU
 * on the zd-vm guest's workload); a store into a hole could meet a full
 * disk as SIGBUS, so anything else (recovery after a crash, a file system
 * without fallocate) goes by pwrite, where a full disk is an error. */
static int apply_range(struct zd_replica *rep, const uint8_t *data, uint64_t first, uint64_t count)
{
	uint64_t ps = rep->meta.page_size;
	bool reserved = zd_pageset_contains_range(&rep->reserved, first, count);

	if (!rep->wmem && reserved) {
		/* MAP_FAILED stays: a file system that cannot map is asked once */
		rep->wmem = mmap(NULL, (size_t)(rep->meta.page_count * ps), PROT_READ | PROT_WRITE, MAP_SHARED,
				 rep->memfd, 0);
	}
	if (reserved && rep->wmem != MAP_FAILED) {
		memcpy(rep->wmem + first * ps, data, count * ps);
		return 0;
	}
	errno = 0;
	if (pwrite(rep->memfd, data, count * ps, (off_t)(first * ps)) != (ssize_t)(count * ps))
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/memory.img: write: %s", rep->dir,
				    errno ? strerror(errno) : "short write");
	return 0;
}

/* After the pages: device state, meta.json at the new epoch, and the
 * journal renamed back to journal.tmp as applied. */
static int apply_finish(struct zd_replica *rep, uint64_t epoch, uint64_t run, uint64_t jflags,
			uint64_t memsum, uint64_t wall_ns, const uint8_t *state, uint32_t state_kind,
			uint64_t state_len, uint64_t disk_size)
{
	struct zd_replica_meta m;
	int rc;

	if (rep->sync && fdatasync(rep->memfd) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/memory.img: fsync: %s", rep->dir, strerror(errno));
	/* disk_size: the journal wrote disk.img (an epoch without disk
	 * writes costs no second fsync) */
	if (rep->sync && disk_size && rep->diskfd >= 0 && fdatasync(rep->diskfd) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/disk.img: fsync: %s", rep->dir, strerror(errno));
	if (state && (rc = zd__rep_write_atomic(rep, "state.bin", state, state_len)))
		return rc;
	m = rep->meta;
	m.epoch = epoch;
	m.run = run;
	m.have_memsum = jflags & JC_MEMSUM;
	m.memsum = m.have_memsum ? memsum : 0;
	if (state)
		m.state_kind = state_kind;
	m.commit_wall_ns = wall_ns;
	if (disk_size)
		m.disk_size = disk_size;
	if ((rc = zd__rep_write_meta(rep, &m)) || (rc = zd__rep_fsync_dir(rep)))
		return rc;
	rep->meta = m;
	/* Done with it: journal.tmp is never applied, so renaming it back
	 * for reuse is as good as deleting it. */
	if (renameat(rep->dirfd, "journal", rep->dirfd, "journal.tmp") < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/journal: rename: %s", rep->dir, strerror(errno));
	return zd__rep_fsync_dir(rep);
}

/* Apply DIR/journal; idempotent, so recovery just runs it again. */
static int apply_journal(struct zd_replica *rep)
{
	uint64_t ps = rep->meta.page_size, epoch = 0, run = 0, off = ZD_JOURNAL_HDR;
	const uint8_t *commit = NULL, *state = NULL;
	uint32_t state_kind = 0;
	uint64_t state_len = 0, disk_size = 0;
	uint8_t *j = MAP_FAILED;
	struct stat sb;
	int fd, rc;

	if ((rc = zd_replica_open_file(rep, "journal", O_RDONLY, &fd)))
		return rc;
	if (fstat(fd, &sb) < 0 || sb.st_size == 0 ||
	    (j = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0)) == MAP_FAILED) {
		rc = zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/journal: %s", rep->dir,
				  sb.st_size == 0 ? "empty (damaged replica)" : strerror(errno));
		goto out;
	}
	if ((rc = journal_check(rep, j, (size_t)sb.st_size, &epoch, &run, &commit)))
		goto out;
	for (; j + off < commit;) {
		uint32_t type = zd_get_u32(j + off);
		uint64_t a = zd_get_u64(j + off + 8), b = zd_get_u64(j + off + 16);
		const uint8_t *payload = j + off + ZD_JENT_HDR;

		if (type == JE_PAGES) {
			const uint8_t *data = payload + a * 16;

			for (uint64_t i = 0; i < a; i++) {
				uint64_t first = zd_get_u64(payload + 16 * i), count = zd_get_u64(payload + 16 * i + 8);

				if ((rc = apply_range(rep, data, first, count)))
					goto out;
				data += count * ps;
			}
			off += ZD_JENT_HDR + a * 16 + b * ps;
		} else if (type == JE_DISK) {
			disk_size = zd_get_u64(payload);
			if ((rc = zd__rep_disk_open(rep, disk_size)) ||
			    (rc = zd__rep_disk_write(rep, a, payload + 8, b)))
				goto out;
			off += ZD_JENT_HDR + 8 + b;
		} else {
			state = payload;
			state_kind = (uint32_t)a;
			state_len = b;
			off += ZD_JENT_HDR + b;
		}
	}
	rc = apply_finish(rep, epoch, run, zd_get_u64(commit + 8), zd_get_u64(commit + 16),
			  zd_get_u64(commit + ZD_JENT_HDR), state, state_kind, state_len, disk_size);
out:
	if (j != MAP_FAILED)
		munmap(j, (size_t)sb.st_size);
	close(fd);
	return rc;
}

/* The same from the pages this process decoded and still holds: the
 * journal's contents, without reading it back. */
static int apply_kept(struct zd_replica *rep, const struct zd_stage *st)
{
	uint64_t ps = rep->meta.page_size;
	int rc;

	for (size_t k = 0; k < st->nkept; k++) {
		const uint8_t *data = st->kept[k].pages;
		const struct zd_pageset *set = &st->kept[k].set;

		for (size_t i = 0; i < set->n; i++) {
			if ((rc = apply_range(rep, data, set->r[i].first, set->r[i].count)))
				return rc;
			data += set->r[i].count * ps;
		}
	}
	return apply_finish(rep, st->epoch, rep->run, st->jflags, st->memsum, st->commit_wall_ns,
			    st->have_state ? st->state : NULL, st->state_kind, st->state_len, 0);
}

/* 7. Into memory.img and meta.json. */
int zd_replica_apply(struct zd_replica *rep)
{
	struct zd_stage *kept = rep->applying;
	int rc;

	if (rep->st)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "apply before commit of epoch %" PRIu64, rep->st->epoch);
	if (!kept)
		return apply_journal(rep);
	rep->applying = NULL;
	rc = apply_kept(rep, kept);
	stage_free(kept);
	return rc;
}

int zd_replica_commit(struct zd_replica *rep, const struct zd_rec_commit *c, enum zd_verify verify)
{
	int rc;

	if ((rc = zd_replica_stage_verify(rep, c, verify)) || (rc = zd_replica_commit_mark(rep)))
		return rc;
	return zd_replica_apply(rep);
}

void zd_replica_stage_abort(struct zd_replica *rep)
{
	stage_free(rep->applying);	/* committed: the journal has it */
	rep->applying = NULL;
	if (!rep->st)
		return;
	stage_free(rep->st);
	rep->st = NULL;
	/* Kept for reuse: journal.tmp is never applied. */
}

int zd_replica_recover(struct zd_replica *rep)
{
	/* journal.tmp was never committed: as if the epoch had not begun
	 * (its blocks are reused by the next stage_begin). */
	unlinkat(rep->dirfd, "meta.json.tmp", 0);
	unlinkat(rep->dirfd, "state.bin.tmp", 0);
	if (zd__rep_exists(rep, "journal"))
		return apply_journal(rep);
	return 0;
}

/* Tests only: forget the replica without cleaning up, as a crash would. */
void zd__replica_crash(struct zd_replica *rep)
{
	stage_free(rep->applying);
	if (rep->st) {
		stage_free(rep->st);
		rep->st = NULL;
	}
	zd__replica_release(rep);
}
