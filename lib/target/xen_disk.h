/* SPDX-License-Identifier: MIT */
/*
 * A Xen guest's disk as zd-track replicates it (xen:NAME,disk=DEV): DEV
 * is a device-mapper log-writes target (Linux's dm-log-writes) over the
 * guest's backing device, and its log device is read up to the mark each
 * checkpoint puts in it. xen_disk.c; the log reader is plain file I/O
 * (tests/unit/test_lwlog.c runs it on files it writes), the device-mapper
 * part needs Linux and root.
 */
#ifndef ZD_XEN_DISK_H
#define ZD_XEN_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The log's format (drivers/md/dm-log-writes.c, little-endian): a super
 * block in sector 0, then per entry one sector holding the entry (a
 * MARK's text after it), followed by the entry's data sectors. */
#define ZD_LW_MAGIC 0x6a736677736872ull
#define ZD_LW_VERSION 1u
#define ZD_LW_FLUSH (1u << 0)
#define ZD_LW_FUA (1u << 1)
#define ZD_LW_DISCARD (1u << 2)
#define ZD_LW_MARK (1u << 3)
#define ZD_LW_METADATA (1u << 4)

struct zd_lw_super {
	uint64_t magic, version, nr_entries;
	uint32_t sectorsize;
} __attribute__((packed));

struct zd_lw_entry {
	uint64_t sector, nr_sectors, flags, data_len;
};

/* A reader of one log, from its start. */
struct zd_lwlog {
	int fd;
	bool direct;			/* O_DIRECT (a block device) */
	char path[256];
	uint64_t dev_bytes;		/* the logged device's size */
	uint32_t sectorsize;		/* from the super block */
	uint64_t log_bytes;		/* the log device's size */
	uint64_t off;			/* the next entry's byte offset */
	uint64_t consumed;		/* entries read so far */
	uint8_t *buf;			/* aligned, buf_cap bytes */
	size_t buf_cap;
	/* buf holds the log's bytes [win_off, win_off + win_len), read ahead
	 * since the last read of the super block (entries are parsed only up
	 * to its count, which the kernel writes after them). */
	uint64_t win_off, win_len;
	/* Figures of the last zd_lwlog_until: */
	uint64_t writes, bytes, discards, flushes, polls, reads;
};

/* A write of the log: data NULL for a discard (len zero bytes). */
typedef int (*zd_lw_fn)(void *arg, uint64_t off, const uint8_t *data, uint64_t len);

/* Open the log at path (a block device is read with O_DIRECT, so what the
 * kernel wrote is what is read) for a device of dev_bytes. 0, or -1 with
 * err filled. The super block need not be written yet (a fresh log). */
int zd_lwlog_open(struct zd_lwlog *lw, const char *path, uint64_t dev_bytes, char *err, size_t errlen);
void zd_lwlog_close(struct zd_lwlog *lw);

/* Read the entries after the last one read up to the MARK whose text is
 * mark (and it), calling fn for each write and discard in log order
 * (flushes and other marks are skipped; fn NULL: the writes are skipped,
 * their data not read). The log is written by the
 * kernel behind us: entries are read only up to the super block's count,
 * which the kernel updates after each MARK; until the mark is there the
 * super block is read again, until timeout_ns (0: once). Returns 0; 1
 * the mark is not in the log (timeout_ns passed, or the log ended);
 * -1 with err filled (bad magic, an entry past the device or past the
 * log, a truncated log, an I/O error, fn's -1). */
int zd_lwlog_until(struct zd_lwlog *lw, const char *mark, uint64_t timeout_ns, zd_lw_fn fn, void *arg,
		   char *err, size_t errlen);

/* The device-mapper side (Linux, root). */
struct zd_xdisk {
	int fd;				/* the dm device, O_RDONLY|O_DIRECT */
	char path[256];
	uint32_t dev;			/* its dev_t, kernel encoding */
	uint64_t bytes;
	char run[24];			/* this run's id, in its marks */
	char mark[64];			/* the last mark put, "" once read to */
	char sum_mark[80];		/* put after a checksum read of DEV, "" once read to */
	struct zd_lwlog log;
	/* The last checkpoint's: */
	uint64_t flush_ns, mark_ns, read_ns;
};

/* Open DEV, check that its table is one log-writes target and open its
 * log device. -1 with err filled (-2: not a log-writes device). */
int zd_xdisk_open(struct zd_xdisk *d, const char *dev, char *err, size_t errlen);
void zd_xdisk_close(struct zd_xdisk *d);
/* At a checkpoint's pause: flush DEV (so that every completed write is
 * logged) and put the mark "zd-RUN-EPOCH" in its log. */
int zd_xdisk_mark(struct zd_xdisk *d, uint64_t epoch, char *err, size_t errlen);
/* Then, the guest running again or not: call fn for each write logged
 * since the mark read to last up to the last zd_xdisk_mark's (fn NULL:
 * skip them). What the log holds before a mark never changes, and what
 * the guest writes after the pause is logged after the mark. 0 at once
 * when there is no mark to read to. late: see zd_xdisk_mark_sum (NULL:
 * not wanted). */
int zd_xdisk_read(struct zd_xdisk *d, zd_lw_fn fn, void *arg, uint64_t *late, char *err, size_t errlen);
/* A checksum of DEV read in the pause, after zd_xdisk_mark, is of the disk
 * at that mark only if no write completed while it was read: a write in
 * flight in dom0's blkback at the pause can complete then, and it is
 * logged after the mark. zd_xdisk_mark_sum, after the read, flushes DEV
 * and marks the log again ("zd-RUN-EPOCH-sum"); the next zd_xdisk_read
 * then also counts the writes and discards logged between the two marks
 * into *late, without consuming them (they are the next epoch's).
 * *late 0: the checksum is the disk at the mark. */
int zd_xdisk_mark_sum(struct zd_xdisk *d, uint64_t epoch, char *err, size_t errlen);
/* The whole disk as it reads now (pread of DEV), in pieces of at most
 * chunk bytes. */
int zd_xdisk_read_all(struct zd_xdisk *d, uint32_t chunk, zd_lw_fn fn, void *arg, char *err, size_t errlen);

#endif
