/* SPDX-License-Identifier: MIT */
/*
 * DIR/disk.img: the replica of the guest's disk. The journal
 * (journal.c) stages an epoch's DISK records beside its pages; at the
 * commit point both are applied, the disk writes in the order the guest
 * issued them, so after a crash the replayed journal leaves disk.img and
 * memory.img at the same epoch. A write is a pwrite: replaying it is
 * harmless, and a full file system is an error, never a SIGBUS.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zd/replica.h"
#include "zd/util.h"
#include "replica_int.h"

int zd__rep_disk_open(struct zd_replica *rep, uint64_t size)
{
	struct stat st;
	int rc;

	if (size == 0 || size > ZD_DISK_MAX)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "disk of %" PRIu64 " bytes", size);
	if (rep->meta.disk_size && rep->meta.disk_size != size)
		return zd__rep_fail(rep, ZD_EXIT_DATA, "the stream's disk is %" PRIu64 " bytes, %s/disk.img %" PRIu64
				    ": refusing to mix them", size, rep->dir, rep->meta.disk_size);
	if (rep->diskfd >= 0)
		return 0;
	/* Created only while no epoch committed a disk: a replica whose
	 * meta.json names a disk and that lost disk.img is damaged. */
	if ((rc = zd_replica_open_file(rep, "disk.img", O_RDWR | (rep->meta.disk_size ? 0 : O_CREAT),
				       &rep->diskfd)))
		return rc;
	if (fstat(rep->diskfd, &st) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/disk.img: %s", rep->dir, strerror(errno));
	if ((uint64_t)st.st_size != size) {
		if (rep->meta.disk_size)
			return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/disk.img: %jd bytes, meta.json says %" PRIu64,
					    rep->dir, (intmax_t)st.st_size, size);
		/* Sparse until the first epoch's whole-disk copy lands. */
		if (ftruncate(rep->diskfd, (off_t)size) < 0)
			return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/disk.img: %s", rep->dir, strerror(errno));
	}
	return 0;
}

int zd__rep_disk_reopen(struct zd_replica *rep)
{
	return rep->meta.disk_size ? zd__rep_disk_open(rep, rep->meta.disk_size) : 0;
}

int zd__rep_disk_write(struct zd_replica *rep, uint64_t off, const uint8_t *data, uint64_t len)
{
	errno = 0;
	if (rep->diskfd < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/disk.img: not open", rep->dir);
	if (pwrite(rep->diskfd, data, (size_t)len, (off_t)off) != (ssize_t)len)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/disk.img: write: %s", rep->dir,
				    errno ? strerror(errno) : "short write");
	return 0;
}

int zd_replica_disksum(struct zd_replica *rep, uint64_t *sum)
{
	if (rep->diskfd < 0 || !rep->meta.disk_size)
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s: replica has no disk", rep->dir);
	return zd__rep_file_sum(rep, rep->diskfd, rep->meta.disk_size, sum);
}
