/* SPDX-License-Identifier: MIT */
/*
 * The guest's disk in the checkpoint round. At the pause, with
 * the vCPU state: the writes the guest issued since the last resume, each
 * copied with the bytes it wrote (the target's write log), or the whole
 * disk on the run's first epoch and on a FULL one (a backup that starts
 * or resyncs has no disk to apply writes to). A target whose log keeps
 * the pause's writes apart by itself (xen: a mark in dm-log-writes' log)
 * only marks it at the pause and gives the writes when they are sent
 * (disk_writes_late), the guest running again. After the epoch's pages:
 * one DISK record per write (split at ZD_DISK_PER_RECORD, zstd-packed
 * when that is smaller), then a STAT "disk". The copy while paused is a
 * memcpy; packing happens as the records are sent.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "track_int.h"
#include "zd/util.h"

/* Packing costs CPU on the tracker and saves wire bytes; the level of
 * zd-send --compress's default. */
#define DISK_ZSTD_LEVEL 1

struct collect {
	struct track_round *rd;
	uint64_t epoch, size;
};

static int add_write(void *arg, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct collect *c = arg;
	struct track_round *rd = c->rd;

	while (len) {
		uint32_t n = len < ZD_DISK_PER_RECORD ? len : ZD_DISK_PER_RECORD;
		struct zd_record *r;

		if (rd->ndisk == rd->disk_cap) {
			rd->disk_cap = rd->disk_cap ? 2 * rd->disk_cap : 16;
			rd->disk = zd_xrealloc(rd->disk, rd->disk_cap * sizeof(*rd->disk));
		}
		r = &rd->disk[rd->ndisk++];
		zd_record_init(r, ZD_REC_DISK);
		r->u.disk.epoch = c->epoch;
		r->u.disk.disk_size = c->size;
		r->u.disk.offset = off;
		r->u.disk.len = n;
		r->u.disk.flags = rd->disk_full ? ZD_DISK_FULL : 0;
		r->u.disk.enc = ZD_DENC_RAW;
		r->u.disk.data_len = n;
		r->u.disk.data = zd_xmalloc(n);
		memcpy(r->u.disk.data, data, n);
		rd->disk_bytes += n;
		off += n;
		data += n;
		len -= n;
	}
	rd->disk_writes++;
	return 0;
}

int zd__track_collect_disk(struct zd_track *k, struct track_round *rd)
{
	const struct zd_target_ops *ops = k->t->ops;
	struct collect c = { rd, k->epoch, 0 };
	uint64_t size = 0;
	int r;

	if (!ops->disk_writes)
		return 0;
	rd->disk_full = !k->disk_synced || (rd->c.flags & ZD_CKPT_FULL);
	pthread_mutex_lock(&k->tlock);
	/* the size first: the records carry it */
	r = ops->disk_writes(k->t, false, &size, NULL, NULL);
	c.size = rd->disk_size = size;
	if (r == 0 && size)
		r = ops->disk_writes(k->t, rd->disk_full, &size, add_write, &c);
	if (r == 0 && size && k->o->verify && ops->disksum) {
		r = ops->disksum(k->t, &rd->commit.u.commit.disksum, &size);
		rd->commit.u.commit.flags |= ZD_COMMIT_HAS_DISKSUM;
	}
	pthread_mutex_unlock(&k->tlock);
	if (r < 0) {
		zd__track_disk_free(rd);
		return zd__track_fail(k, ZD_EXIT_TARGET, "%s: disk writes: %s", k->t->spec, k->t->err);
	}
	if (size)
		k->disk_synced = true;
	return 0;
}

/* The writes the target gives after the pause (xen: its log read to the
 * pause's mark), into rd after those of the pause. */
static int collect_late(struct zd_track *k, struct track_round *rd)
{
	struct collect c = { rd, k->epoch, rd->disk_size };
	bool sum_void = false;
	int r;

	if (!rd->disk_size || !k->t->ops->disk_writes_late)
		return 0;
	pthread_mutex_lock(&k->tlock);
	r = k->t->ops->disk_writes_late(k->t, add_write, &c, &sum_void);
	pthread_mutex_unlock(&k->tlock);
	if (r < 0)
		return zd__track_fail(k, ZD_EXIT_TARGET, "%s: disk writes: %s", k->t->spec, k->t->err);
	if (sum_void && (rd->commit.u.commit.flags & ZD_COMMIT_HAS_DISKSUM)) {
		/* A checksum that may hold the next epoch's writes would fail a
		 * replica that is right: this epoch goes without one. */
		rd->commit.u.commit.flags &= ~(uint32_t)ZD_COMMIT_HAS_DISKSUM;
		zd_debug("epoch %" PRIu64 ": no disk checksum in its COMMIT: a write completed while the disk was "
			 "read for it", k->epoch);
	}
	return 0;
}

int zd__track_send_disk(struct zd_track *k, struct track_round *rd)
{
	static const char *const keys[] = { "writes", "bytes", "records", "wire_bytes", "full" };
	uint64_t wire = 0;

	if (collect_late(k, rd) < 0)
		return -1;
	if (!rd->ndisk)
		return 0;
	for (size_t i = 0; i < rd->ndisk; i++) {
		struct zd_record r = rd->disk[i];	/* borrowed raw data */
		uint8_t *raw = r.u.disk.data;

		zd_disk_pack(&r.u.disk, raw, r.u.disk.len, DISK_ZSTD_LEVEL);
		wire += r.u.disk.data_len;
		int rc = zd__emit_record(k, &r);

		free(r.u.disk.data);
		if (rc < 0)
			return -1;
	}
	{
		struct zd_record r;
		const double vals[] = { (double)rd->disk_writes, (double)rd->disk_bytes, (double)rd->ndisk,
					(double)wire, rd->disk_full ? 1.0 : 0.0 };

		zd_record_init(&r, ZD_REC_STAT);
		r.u.stat.epoch = k->epoch;
		snprintf(r.u.stat.source, sizeof(r.u.stat.source), "disk");
		for (unsigned i = 0; i < ZD_ARRAY_SIZE(keys); i++) {
			snprintf(r.u.stat.kv[i].key, sizeof(r.u.stat.kv[i].key), "%s", keys[i]);
			r.u.stat.kv[i].value = vals[i];
		}
		r.u.stat.n = ZD_ARRAY_SIZE(keys);
		return zd__emit_record(k, &r);
	}
}

void zd__track_disk_free(struct track_round *rd)
{
	for (size_t i = 0; i < rd->ndisk; i++)
		zd_record_free(&rd->disk[i]);
	free(rd->disk);
	rd->disk = NULL;
	rd->ndisk = rd->disk_cap = 0;
}
