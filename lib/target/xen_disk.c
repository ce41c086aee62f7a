/* SPDX-License-Identifier: MIT */
/*
 * A Xen guest's disk, replicated through a device-mapper log-writes
 * target (xen:NAME,disk=DEV; man zd-track, XEN DISKS; zd-xen-disk(1)
 * builds DEV). Linux's dm-log-writes appends every write that reaches
 * DEV to its log device, data included, and a MARK entry when told
 * ("dmsetup message DEV 0 mark TEXT").
 *
 * Which writes belong to epoch N. dm-log-writes logs a write when it is
 * flushed, not when it completes (a FUA write at once): a write the guest
 * saw complete but never flushed would land in the log after a later
 * mark. So at the pause zd-track first flushes DEV itself (fsync: an
 * empty flush bio, which moves every completed write into the log ahead
 * of it), then marks the log "zd-RUN-N". The guest is stopped, so what
 * is logged before the mark is exactly the writes that completed before
 * the pause. The log from where the last checkpoint stopped up to that
 * mark is read later, once the guest runs again (zd_xdisk_read): what the
 * log holds before a mark never changes, and the guest's new writes go
 * after it. So the pause costs the flush and the mark's ioctl, not the
 * wait for the log thread to write the entries nor their read. A write still in flight in dom0's blkback at the
 * pause completes later and is logged after the mark: it belongs to the
 * next epoch, and the guest's memory at this checkpoint still has it
 * outstanding (its blkfront issues it again when a standby resumes it).
 *
 * Reading a log the kernel writes: the log thread writes each entry and
 * its data with bios it does not wait for, and rewrites the super block
 * (nr_entries) after each MARK, waiting for that one. Entries are read
 * only up to the super block's count; on a loop device (zd-xen-disk's)
 * bios complete in order, so those entries are on the device. O_DIRECT:
 * the block device's page cache does not see bios. Entries are read
 * READ_AHEAD bytes at a time, and what was read ahead is dropped at each
 * read of the super block.
 */
#include "target/xen_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>
#include <linux/dm-ioctl.h>
#include <linux/fs.h>

#define ALIGN 4096u
#define POLL_NS 200000u			/* between two reads of the super block */
#define READ_AHEAD (256u << 10)		/* of the log's entries, per pread */

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int log_size(struct zd_lwlog *lw, char *err, size_t errlen)
{
	struct stat st;
	uint64_t b;

	if (fstat(lw->fd, &st) < 0)
		return fail(err, errlen, "%s: %s", lw->path, strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(lw->fd, BLKGETSIZE64, &b) < 0)
			return fail(err, errlen, "%s: size: %s", lw->path, strerror(errno));
		lw->log_bytes = b;
	} else {
		lw->log_bytes = (uint64_t)st.st_size;
	}
	return 0;
}

int zd_lwlog_open(struct zd_lwlog *lw, const char *path, uint64_t dev_bytes, char *err, size_t errlen)
{
	struct stat st;

	memset(lw, 0, sizeof(*lw));
	lw->fd = -1;
	snprintf(lw->path, sizeof(lw->path), "%s", path);
	lw->dev_bytes = dev_bytes;
	if (stat(path, &st) < 0)
		return fail(err, errlen, "log %s: %s", path, strerror(errno));
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
		return fail(err, errlen, "log %s: neither a block device nor a file", path);
	lw->direct = S_ISBLK(st.st_mode);
	lw->fd = open(path, O_RDONLY | O_CLOEXEC | (lw->direct ? O_DIRECT : 0));
	if (lw->fd < 0)
		return fail(err, errlen, "log %s: %s", path, strerror(errno));
	if (log_size(lw, err, errlen) < 0) {
		zd_lwlog_close(lw);
		return -1;
	}
	return 0;
}

void zd_lwlog_close(struct zd_lwlog *lw)
{
	if (lw->fd >= 0)
		close(lw->fd);
	lw->fd = -1;
	free(lw->buf);
	lw->buf = NULL;
	lw->buf_cap = 0;
}

/* Bytes [off, off + len) of the log, in lw->buf (aligned reads for
 * O_DIRECT), from the bytes read ahead if they hold them; else read with
 * up to ahead bytes more. NULL with err filled if they are not all there. */
static const uint8_t *rd(struct zd_lwlog *lw, uint64_t off, uint64_t len, uint64_t ahead, const char *what,
			 char *err, size_t errlen)
{
	uint64_t a = off & ~(uint64_t)(ALIGN - 1), end = off + len, n, got = 0;

	if (end > lw->log_bytes) {
		fail(err, errlen, "log %s is truncated: %s at byte %" PRIu64 " (%" PRIu64 " bytes) past its end "
		     "(%" PRIu64 " bytes)", lw->path, what, off, len, lw->log_bytes);
		return NULL;
	}
	if (lw->win_len && off >= lw->win_off && end <= lw->win_off + lw->win_len)
		return lw->buf + (off - lw->win_off);
	lw->win_len = 0;
	if (end + ahead > lw->log_bytes)
		ahead = lw->log_bytes - end;
	n = (end + ahead - a + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
	if (n > lw->buf_cap) {
		void *p;

		if (posix_memalign(&p, ALIGN, n)) {
			fail(err, errlen, "log %s: no memory for %" PRIu64 " bytes", lw->path, n);
			return NULL;
		}
		free(lw->buf);
		lw->buf = p;
		lw->buf_cap = n;
	}
	while (got < end - a) {
		ssize_t r = pread(lw->fd, lw->buf + got, (size_t)(n - got), (off_t)(a + got));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fail(err, errlen, "log %s: read at byte %" PRIu64 ": %s", lw->path, a + got,
			     r ? strerror(errno) : "unexpected end");
			return NULL;
		}
		got += (uint64_t)r;
		lw->reads++;
	}
	lw->win_off = a;
	lw->win_len = got;
	return lw->buf + (off - a);
}

/* The super block's entry count; 0 for a log nothing was written to yet
 * (all zeros: the kernel writes it at the first MARK or FUA write). */
static int read_super(struct zd_lwlog *lw, uint64_t *nr, char *err, size_t errlen)
{
	const uint8_t *s;
	uint64_t magic, version;
	uint32_t ss;

	if (log_size(lw, err, errlen) < 0)
		return -1;
	if (lw->log_bytes < 512)
		return fail(err, errlen, "log %s: %" PRIu64 " bytes, not even a super block", lw->path, lw->log_bytes);
	lw->win_len = 0;
	if (!(s = rd(lw, 0, 512, 0, "the super block", err, errlen)))
		return -1;
	/* Read again from the log after this: the entries it now counts may
	 * have been written since the bytes read ahead were read. (s stays
	 * valid: nothing reads until it is parsed.) */
	lw->win_len = 0;
	magic = le64(s);
	version = le64(s + 8);
	ss = le32(s + 24);
	if (magic == 0 && version == 0 && le64(s + 16) == 0) {
		*nr = 0;
		return 0;
	}
	if (magic != ZD_LW_MAGIC)
		return fail(err, errlen, "log %s: bad magic %#" PRIx64 " (a dm-log-writes log has %#llx)", lw->path,
			    magic, (unsigned long long)ZD_LW_MAGIC);
	if (version != ZD_LW_VERSION)
		return fail(err, errlen, "log %s: version %" PRIu64 ", this zd reads version %u", lw->path, version,
			    ZD_LW_VERSION);
	if (ss < 512 || ss > 65536 || (ss & (ss - 1)))
		return fail(err, errlen, "log %s: sector size %u", lw->path, ss);
	if (lw->sectorsize && lw->sectorsize != ss)
		return fail(err, errlen, "log %s: sector size changed from %u to %u (a new log on the device?)",
			    lw->path, lw->sectorsize, ss);
	if (!lw->sectorsize) {
		lw->sectorsize = ss;
		lw->off = ss;
	}
	*nr = le64(s + 16);
	if (*nr < lw->consumed)
		return fail(err, errlen, "log %s: %" PRIu64 " entries, %" PRIu64 " were read already (a new log "
			    "on the device?)", lw->path, *nr, lw->consumed);
	return 0;
}

/* One entry at lw->off: its writes to fn. 1 if it is the mark. */
static int one_entry(struct zd_lwlog *lw, const char *mark, zd_lw_fn fn, void *arg, char *err, size_t errlen)
{
	uint32_t ss = lw->sectorsize;
	const uint8_t *e;
	struct zd_lw_entry ent;
	char what[64];
	uint64_t at = lw->off, len;

	snprintf(what, sizeof(what), "entry %" PRIu64, lw->consumed + 1);
	if (!(e = rd(lw, at, ss, READ_AHEAD, what, err, errlen)))
		return -1;
	ent.sector = le64(e);
	ent.nr_sectors = le64(e + 8);
	ent.flags = le64(e + 16);
	ent.data_len = le64(e + 24);
	if (ent.flags & ~(uint64_t)(ZD_LW_FLUSH | ZD_LW_FUA | ZD_LW_DISCARD | ZD_LW_MARK | ZD_LW_METADATA))
		return fail(err, errlen, "log %s: %s at byte %" PRIu64 " has unknown flags %#" PRIx64, lw->path, what,
			    at, ent.flags);
	if (ent.flags & ZD_LW_MARK) {
		bool is;

		if (ent.data_len >= ss - 32)
			return fail(err, errlen, "log %s: %s at byte %" PRIu64 ": a mark of %" PRIu64 " bytes", lw->path,
				    what, at, ent.data_len);
		is = strlen(mark) == ent.data_len && !memcmp(e + 32, mark, ent.data_len);
		lw->off += ss;
		lw->consumed++;
		return is ? 1 : 0;
	}
	if (ent.data_len)
		return fail(err, errlen, "log %s: %s at byte %" PRIu64 " has %" PRIu64 " bytes of inline data "
			    "(a DAX device's log): not supported", lw->path, what, at, ent.data_len);
	if (ent.nr_sectors > lw->dev_bytes / ss || ent.sector > lw->dev_bytes / ss - ent.nr_sectors)
		return fail(err, errlen, "log %s: %s at byte %" PRIu64 " writes sectors %" PRIu64 "+%" PRIu64
			    " of %u bytes, past the device's end (%" PRIu64 " bytes)", lw->path, what, at, ent.sector,
			    ent.nr_sectors, ss, lw->dev_bytes);
	len = ent.nr_sectors * ss;
	if (ent.flags & ZD_LW_DISCARD) {
		/* No data in the log. The replica gets zeros: what a discard
		 * leaves on a loop device over a file (a hole). */
		lw->off += ss;
		lw->consumed++;
		lw->discards++;
		return len && fn && fn(arg, ent.sector * ss, NULL, len) < 0 ? -1 : 0;
	}
	if (!len) {			/* a flush */
		lw->off += ss;
		lw->consumed++;
		lw->flushes++;
		return 0;
	}
	if (!fn) {
		/* Skipped (a whole-disk copy replaces them): not read. */
		if (at + ss + len > lw->log_bytes)
			return fail(err, errlen, "log %s is truncated: %s at byte %" PRIu64 " (%" PRIu64 " bytes) past "
				    "its end (%" PRIu64 " bytes)", lw->path, what, at + ss, len, lw->log_bytes);
		lw->off += ss + len;
		lw->consumed++;
		lw->writes++;
		lw->bytes += len;
		return 0;
	}
	if (!(e = rd(lw, at + ss, len, READ_AHEAD, what, err, errlen)))
		return -1;
	lw->off += ss + len;
	lw->consumed++;
	lw->writes++;
	lw->bytes += len;
	return fn(arg, ent.sector * ss, e, len) < 0 ? -1 : 0;
}

int zd_lwlog_until(struct zd_lwlog *lw, const char *mark, uint64_t timeout_ns, zd_lw_fn fn, void *arg,
		   char *err, size_t errlen)
{
	uint64_t deadline = now_ns() + timeout_ns, nr = 0;

	lw->writes = lw->bytes = lw->discards = lw->flushes = lw->polls = lw->reads = 0;
	for (;;) {
		if (read_super(lw, &nr, err, errlen) < 0)
			return -1;
		lw->polls++;
		while (lw->consumed < nr) {
			int r = one_entry(lw, mark, fn, arg, err, errlen);

			if (r)
				return r < 0 ? -1 : 0;
		}
		if (now_ns() >= deadline)
			return 1;
		{
			struct timespec ts = { 0, POLL_NS };

			nanosleep(&ts, NULL);
		}
	}
}

/* --- device-mapper --- */

/* dev_t as the dm ioctls take it (the kernel's huge_encode_dev). */
static uint32_t dm_dev(dev_t d)
{
	unsigned ma = major(d), mi = minor(d);

	return (mi & 0xffu) | (ma << 8) | ((mi & ~0xffu) << 12);
}

/* A dm ioctl on DEV: the reply in buf (len bytes). */
static int dm_ioctl(uint32_t dev, unsigned long cmd, uint32_t flags, const void *data, size_t dlen, void *buf,
		    size_t len, char *err, size_t errlen)
{
	struct dm_ioctl *io = buf;
	int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC), r;

	if (fd < 0)
		return fail(err, errlen, "/dev/mapper/control: %s (is dm-mod loaded? root?)", strerror(errno));
	memset(buf, 0, len);
	io->version[0] = DM_VERSION_MAJOR;
	io->data_size = (uint32_t)len;
	io->data_start = sizeof(*io);
	io->flags = flags;
	io->dev = dev;
	if (data)
		memcpy((char *)buf + sizeof(*io), data, dlen);
	r = ioctl(fd, cmd, io);
	close(fd);
	if (r < 0)
		return fail(err, errlen, "%s", strerror(errno));
	if (io->flags & DM_BUFFER_FULL_FLAG)
		return fail(err, errlen, "reply too long");
	return 0;
}

/* /dev/NAME of the block device MAJ:MIN, by sysfs. */
static int devpath(const char *majmin, char *out, size_t outlen)
{
	char p[96], line[128];
	FILE *f;
	int rc = -1;

	snprintf(p, sizeof(p), "/sys/dev/block/%s/uevent", majmin);
	if (!(f = fopen(p, "re")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "DEVNAME=", 8)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, outlen, "/dev/%.100s", line + 8);
			rc = 0;
		}
	fclose(f);
	return rc;
}

int zd_xdisk_open(struct zd_xdisk *d, const char *path, char *err, size_t errlen)
{
	union {
		struct dm_ioctl io;
		char b[16384];
	} *u = NULL;
	struct dm_target_spec *ts;
	struct stat st;
	char e[160], data[64], logdev[64], logpath[160];
	const char *params;
	struct timespec now;
	int rc = -1;

	memset(d, 0, sizeof(*d));
	d->log.fd = -1;
	snprintf(d->path, sizeof(d->path), "%s", path);
	if (stat(path, &st) < 0) {
		fail(err, errlen, "disk=%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISBLK(st.st_mode)) {
		fail(err, errlen, "disk=%s: not a block device (want the log-writes device zd-xen-disk made)", path);
		rc = -2;
		goto out;
	}
	d->fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (d->fd < 0 || fstat(d->fd, &st) < 0) {
		fail(err, errlen, "disk=%s: %s", path, strerror(errno));
		goto out;
	}
	if (ioctl(d->fd, BLKGETSIZE64, &d->bytes) < 0 || !d->bytes) {
		fail(err, errlen, "disk=%s: size: %s", path, d->bytes ? strerror(errno) : "0 bytes");
		goto out;
	}
	d->dev = dm_dev(st.st_rdev);
	u = calloc(1, sizeof(*u));
	if (!u) {
		fail(err, errlen, "out of memory");
		goto out;
	}
	if (dm_ioctl(d->dev, DM_TABLE_STATUS, DM_STATUS_TABLE_FLAG, NULL, 0, u, sizeof(*u), e, sizeof(e)) < 0) {
		fail(err, errlen, "disk=%s: not a device-mapper device (%s); want the log-writes device "
		     "zd-xen-disk made", path, e);
		rc = -2;
		goto out;
	}
	ts = (struct dm_target_spec *)(void *)(u->b + u->io.data_start);
	params = (const char *)(ts + 1);
	if (u->io.target_count != 1 || strcmp(ts->target_type, "log-writes") || ts->sector_start != 0 ||
	    ts->length * 512 != d->bytes) {
		fail(err, errlen, "disk=%s: its table is %u target(s), the first '%.16s': want one log-writes "
		     "target over the whole device (zd-xen-disk builds it)", path, u->io.target_count,
		     u->io.target_count ? ts->target_type : "");
		rc = -2;
		goto out;
	}
	/* A queue without a write cache drops empty flushes before they reach
	 * the target, and dm-log-writes logs writes only at flushes: it
	 * would log none. */
	{
		char wc[96], line[32] = "";
		FILE *f;

		snprintf(wc, sizeof(wc), "/sys/dev/block/%u:%u/queue/write_cache", major(st.st_rdev), minor(st.st_rdev));
		if ((f = fopen(wc, "re"))) {
			if (!fgets(line, sizeof(line), f))
				line[0] = '\0';
			fclose(f);
		}
		if (!strncmp(line, "write through", 13)) {
			fail(err, errlen, "disk=%s: its queue has no write cache (%s: write through): no flush would "
			     "reach dm-log-writes, which logs writes only at flushes; echo 'write back' > %s "
			     "(zd-xen-disk create does)", path, wc, wc);
			rc = -2;
			goto out;
		}
	}
	if (sscanf(params, "%63s %63s", data, logdev) != 2 || devpath(logdev, logpath, sizeof(logpath)) < 0) {
		fail(err, errlen, "disk=%s: cannot find its log device from the table '%s'", path, params);
		goto out;
	}
	if (zd_lwlog_open(&d->log, logpath, d->bytes, err, errlen) < 0)
		goto out;
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(d->run, sizeof(d->run), "%x%04lx", (unsigned)getpid(), (unsigned long)(now.tv_nsec >> 10) & 0xffff);
	rc = 0;
out:
	free(u);
	if (rc < 0)
		zd_xdisk_close(d);
	return rc;
}

void zd_xdisk_close(struct zd_xdisk *d)
{
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	zd_lwlog_close(&d->log);
}

/* Flush DEV, so that every write that completed is logged, then put the
 * mark text in its log; what each took into *flush_ns and *mark_ns. */
static int flush_and_mark(struct zd_xdisk *d, const char *text, uint64_t *flush_ns, uint64_t *mark_ns,
			  char *err, size_t errlen)
{
	struct {
		struct dm_target_msg m;
		char text[96];
	} msg;
	char e[160], reply[sizeof(struct dm_ioctl) + sizeof(msg) + 64];
	uint64_t t0 = now_ns(), t1;

	if (fsync(d->fd) < 0)
		return fail(err, errlen, "disk=%s: flush: %s", d->path, strerror(errno));
	t1 = now_ns();
	memset(&msg, 0, sizeof(msg));
	snprintf(msg.text, sizeof(msg.text), "mark %s", text);
	if (dm_ioctl(d->dev, DM_TARGET_MSG, 0, &msg, sizeof(msg), reply, sizeof(reply), e, sizeof(e)) < 0)
		return fail(err, errlen, "disk=%s: mark %s: %s", d->path, text, e);
	*flush_ns = t1 - t0;
	*mark_ns = now_ns() - t1;
	return 0;
}

int zd_xdisk_mark(struct zd_xdisk *d, uint64_t epoch, char *err, size_t errlen)
{
	snprintf(d->mark, sizeof(d->mark), "zd-%s-%" PRIu64, d->run, epoch);
	d->sum_mark[0] = '\0';
	d->read_ns = 0;
	return flush_and_mark(d, d->mark, &d->flush_ns, &d->mark_ns, err, errlen);
}

int zd_xdisk_mark_sum(struct zd_xdisk *d, uint64_t epoch, char *err, size_t errlen)
{
	uint64_t flush_ns, mark_ns;	/* the checkpoint's figures are its own mark's */

	snprintf(d->sum_mark, sizeof(d->sum_mark), "zd-%s-%" PRIu64 "-sum", d->run, epoch);
	return flush_and_mark(d, d->sum_mark, &flush_ns, &mark_ns, err, errlen);
}

/* The writes and discards logged from where the log was read to up to the
 * mark text, counted and not consumed. */
static int count_to(struct zd_xdisk *d, const char *text, uint64_t *n, char *err, size_t errlen)
{
	struct zd_lwlog *lw = &d->log;
	struct zd_lwlog keep = *lw;
	int r = zd_lwlog_until(lw, text, 10000000000ull, NULL, NULL, err, errlen);

	*n = lw->writes + lw->discards;
	lw->off = keep.off;
	lw->consumed = keep.consumed;
	lw->win_len = 0;
	lw->writes = keep.writes;
	lw->bytes = keep.bytes;
	lw->discards = keep.discards;
	lw->flushes = keep.flushes;
	lw->polls += keep.polls;
	lw->reads += keep.reads;
	if (r == 1)
		return fail(err, errlen, "disk=%s: the mark %s is not in the log %s after 10 s", d->path, text,
			    lw->path);
	return r;
}

int zd_xdisk_read(struct zd_xdisk *d, zd_lw_fn fn, void *arg, uint64_t *late, char *err, size_t errlen)
{
	uint64_t t0 = now_ns();
	int r;

	if (late)
		*late = 0;
	if (!d->mark[0])
		return 0;
	/* The log thread writes the mark shortly; 10 s covers an emulated
	 * dom0. */
	r = zd_lwlog_until(&d->log, d->mark, 10000000000ull, fn, arg, err, errlen);
	if (r == 1)
		r = fail(err, errlen, "disk=%s: the mark %s is not in the log %s after 10 s (log full? dmsetup "
			 "status says 'logging_disabled' then)", d->path, d->mark, d->log.path);
	if (r == 0)
		d->mark[0] = '\0';
	if (r == 0 && d->sum_mark[0]) {
		uint64_t n = 0;

		r = count_to(d, d->sum_mark, &n, err, errlen);
		if (late)
			*late = n;
		d->sum_mark[0] = '\0';
	}
	d->read_ns = now_ns() - t0;
	return r;
}

int zd_xdisk_read_all(struct zd_xdisk *d, uint32_t chunk, zd_lw_fn fn, void *arg, char *err, size_t errlen)
{
	void *buf;
	int rc = 0;

	if (posix_memalign(&buf, ALIGN, chunk))
		return fail(err, errlen, "no memory for %u bytes", chunk);
	for (uint64_t off = 0; off < d->bytes && !rc;) {
		size_t n = (size_t)(d->bytes - off < chunk ? d->bytes - off : chunk);
		ssize_t r = pread(d->fd, buf, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = fail(err, errlen, "disk=%s: read at %" PRIu64 ": %s", d->path, off,
				  r ? strerror(errno) : "unexpected end");
			break;
		}
		rc = fn(arg, off, buf, (uint64_t)r);
		off += (uint64_t)r;
	}
	free(buf);
	return rc;
}
