/* SPDX-License-Identifier: MIT */
/* Shared by the files of lib/replica/ only. */
#ifndef ZD_REPLICA_INT_H
#define ZD_REPLICA_INT_H

#include <stddef.h>
#include "zd/replica.h"

/*
 * Journal file layout (little-endian, one per epoch):
 *   header  "ZDJ1" u32 page_size u64 page_count u64 epoch u64 run   (32 bytes)
 *   entries {u32 type, u32 flags, u64 a, u64 b} (24 bytes) + payload:
 *     JE_PAGES   a = ranges, b = pages; payload a * {u64 first, u64 count}
 *                then b * page_size bytes, the pages in range order
 *     JE_STATE   a = kind, b = length, payload length bytes
 *     JE_DISK    a = byte offset, b = length (1..ZD_DISK_PER_RECORD),
 *                payload u64 disk size then the b bytes written
 *     JE_COMMIT  a = JC_* flags, b = memsum, payload u64 commit wall ns
 *                and u64 XXH3 of every byte before it; always last.
 * A journal without a valid JE_COMMIT at its end is never applied.
 */
#define ZD_JOURNAL_MAGIC "ZDJ1"
#define ZD_JOURNAL_HDR 32u
#define ZD_JENT_HDR 24u
enum { JE_PAGES = 1, JE_STATE = 2, JE_COMMIT = 3, JE_DISK = 4 };
#define JC_MEMSUM 0x1

int zd__rep_fail(struct zd_replica *rep, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int zd__rep_fsync_dir(struct zd_replica *rep);
bool zd__rep_exists(struct zd_replica *rep, const char *name);
int zd__rep_write_atomic(struct zd_replica *rep, const char *name, const void *buf, size_t len);
int zd__rep_write_meta(struct zd_replica *rep, const struct zd_replica_meta *m);
/* The largest guest memory a replica takes (a sparse memory.img of this
 * size is within every Linux file system's limits). */
#define ZD_REPLICA_MAX_BYTES (1ull << 40)
/* Map memory.img into rep->mem (once). */
int zd__rep_map(struct zd_replica *rep);
/* Feed bytes [off, off + len) of an image, fd rep->memfd (memory.img) or
 * rep->diskfd (disk.img), to h, with pread: a hole reads as zeros without
 * being allocated (through a mapping, tmpfs allocates a page for every
 * hole read, and a full tmpfs turns that into SIGBUS). buf:
 * ZD_REP_HASH_BUF bytes of scratch. */
#define ZD_REP_HASH_BUF (1u << 20)
int zd__rep_hash_file(struct zd_replica *rep, int fd, void *h, uint8_t *buf, uint64_t off,
		      uint64_t len);
/* The XXH3 of an image's first len bytes (fd as above) into *sum. */
int zd__rep_file_sum(struct zd_replica *rep, int fd, uint64_t len, uint64_t *sum);
/* lib/replica/disk.c: disk.img. open makes sure it is open and size bytes
 * (created, or grown from nothing, only while the replica has no disk);
 * write puts one journaled write in place; reopen opens the disk a
 * committed meta.json names. */
int zd__rep_disk_open(struct zd_replica *rep, uint64_t size);
int zd__rep_disk_write(struct zd_replica *rep, uint64_t off, const uint8_t *data, uint64_t len);
int zd__rep_disk_reopen(struct zd_replica *rep);
/* Tests only: drop rep without cleaning up, as a crash would. */
void zd__replica_crash(struct zd_replica *rep);
/* Unmap, close and free what an open replica holds, its stage already
 * gone (zd_replica_close, zd__replica_crash). */
void zd__replica_release(struct zd_replica *rep);

#endif
