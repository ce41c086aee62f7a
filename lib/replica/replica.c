/* SPDX-License-Identifier: MIT */
/*
 * The replica directory: open, lock, recognise, meta.json, memory.img.
 * The epoch journal is in journal.c, the receive loop in recv.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include <xxhash.h>

#include "zd/replica.h"
#include "zd/util.h"
#include "replica_int.h"

int zd__rep_fail(struct zd_replica *rep, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rep->err, sizeof(rep->err), fmt, ap);
	va_end(ap);
	return code;
}

int zd__rep_fsync_dir(struct zd_replica *rep)
{
	if (rep->sync && fsync(rep->dirfd) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s: fsync: %s", rep->dir, strerror(errno));
	return 0;
}

/* Guest memory and vCPU state are the owner's alone (0600), and a name in
 * DIR is the file itself: zd-recv runs as root, so a symbolic link or a
 * second hard link planted there would have it write, or truncate, a file
 * anywhere. Hence O_NOFOLLOW and no O_TRUNC here (the check comes first;
 * callers that want the file empty cut it after). O_NONBLOCK: a FIFO
 * planted under the name must not hang the open. A file left more open
 * by an older zd-recv (0644) is closed to others when it is opened for
 * writing (a file only read may not be a replica's yet: meta.json is read
 * before DIR is known to be one). */
int zd_replica_open_file(struct zd_replica *rep, const char *name, int flags, int *fdp)
{
	struct stat st;
	int fd, e, rc;

	*fdp = -1;
	fd = openat(rep->dirfd, name, (flags & ~O_TRUNC) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
	if (fd < 0) {
		e = errno;
		rc = e == ELOOP || e == ENOENT ? ZD_EXIT_TARGET : ZD_EXIT_FAIL;
		if (e == ELOOP)
			zd__rep_fail(rep, rc, "%s/%s: a symbolic link: refusing to follow it", rep->dir, name);
		else
			zd__rep_fail(rep, rc, "%s/%s: %s", rep->dir, name, strerror(e));
		errno = e;
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/%s: %s", rep->dir, name, strerror(e));
	}
	if (!S_ISREG(st.st_mode) || st.st_nlink > 1) {
		close(fd);
		if (!S_ISREG(st.st_mode))
			return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/%s: not a regular file: refusing it", rep->dir, name);
		return zd__rep_fail(rep, ZD_EXIT_TARGET,
				    "%s/%s: has %ju hard links: refusing it (the others could be anywhere)",
				    rep->dir, name, (uintmax_t)st.st_nlink);
	}
	if ((flags & O_ACCMODE) != O_RDONLY && (st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) < 0) {
		e = errno;
		close(fd);
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/%s: mode %04o, cannot make it private: %s", rep->dir, name,
				    (unsigned)(st.st_mode & 07777), strerror(e));
	}
	*fdp = fd;
	return 0;
}

/* Is name in DIR, as itself: a symbolic link counts (opening it is then
 * refused with its name) instead of reading as absent. */
bool zd__rep_exists(struct zd_replica *rep, const char *name)
{
	struct stat st;

	return fstatat(rep->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Write name atomically: NAME.tmp, fsync, rename over NAME. The caller
 * fsyncs the directory once after all renames of a step. */
int zd__rep_write_atomic(struct zd_replica *rep, const char *name, const void *buf, size_t len)
{
	char tmp[64];
	int fd, e, rc;

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	if ((rc = zd_replica_open_file(rep, tmp, O_WRONLY | O_CREAT, &fd)))
		return rc;
	if (ftruncate(fd, 0) < 0 || zd_write_full(fd, buf, len) < 0 || (rep->sync && fsync(fd) < 0)) {
		e = errno;
		close(fd);
		unlinkat(rep->dirfd, tmp, 0);
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/%s: %s", rep->dir, tmp, strerror(e));
	}
	close(fd);
	if (renameat(rep->dirfd, tmp, rep->dirfd, name) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/%s: rename: %s", rep->dir, name, strerror(errno));
	return 0;
}

/* --- meta.json --- */

int zd__rep_write_meta(struct zd_replica *rep, const struct zd_replica_meta *m)
{
	json_t *o = json_object();
	char sum[24];
	char *text;
	int rc;

	json_object_set_new(o, "format", json_string("zd-replica"));
	json_object_set_new(o, "version", json_integer(1));
	json_object_set_new(o, "epoch", json_integer((json_int_t)m->epoch));
	json_object_set_new(o, "run", json_integer((json_int_t)m->run));
	json_object_set_new(o, "page_size", json_integer(m->page_size));
	json_object_set_new(o, "page_count", json_integer((json_int_t)m->page_count));
	json_object_set_new(o, "target", json_string(m->target));
	json_object_set_new(o, "mode", json_string(m->mode));
	if (m->have_memsum) {
		snprintf(sum, sizeof(sum), "0x%016" PRIx64, m->memsum);
		json_object_set_new(o, "memsum", json_string(sum));
	} else {
		json_object_set_new(o, "memsum", json_null());
	}
	json_object_set_new(o, "state_kind", json_integer(m->state_kind));
	json_object_set_new(o, "commit_wall_ns", json_integer((json_int_t)m->commit_wall_ns));
	if (m->disk_size)
		json_object_set_new(o, "disk_size", json_integer((json_int_t)m->disk_size));
	if (m->ended)
		json_object_set_new(o, "ended", json_true());
	text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "meta.json: out of memory");
	size_t len = strlen(text);

	text = zd_xrealloc(text, len + 2);
	text[len++] = '\n';
	rc = zd__rep_write_atomic(rep, "meta.json", text, len);
	free(text);
	return rc;
}

static int get_u64(json_t *o, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int read_meta(struct zd_replica *rep)
{
	json_error_t jerr;
	json_t *o = NULL, *v;
	struct zd_replica_meta *m = &rep->meta;
	uint64_t ps, ver, kind;
	int fd, rc = ZD_EXIT_TARGET;

	if ((rc = zd_replica_open_file(rep, "meta.json", O_RDONLY, &fd)))
		return rc;
	rc = ZD_EXIT_TARGET;
	o = json_loadfd(fd, 0, &jerr);
	close(fd);
	if (!o)
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/meta.json: line %d: %s (not a zd replica?)",
				    rep->dir, jerr.line, jerr.text);
	v = json_object_get(o, "format");
	if (!json_is_string(v) || strcmp(json_string_value(v), "zd-replica")) {
		zd__rep_fail(rep, rc, "%s/meta.json: not a zd replica (format is not \"zd-replica\")", rep->dir);
		goto out;
	}
	if (get_u64(o, "version", &ver) < 0 || ver != 1) {
		zd__rep_fail(rep, rc, "%s/meta.json: unknown replica version", rep->dir);
		goto out;
	}
	memset(m, 0, sizeof(*m));
	if (get_u64(o, "epoch", &m->epoch) < 0 || get_u64(o, "run", &m->run) < 0 ||
	    get_u64(o, "page_size", &ps) < 0 || get_u64(o, "page_count", &m->page_count) < 0 ||
	    ps < 512 || ps > (1u << 21) || (ps & (ps - 1)) || m->page_count == 0 ||
	    m->page_count > UINT64_MAX / ps) {
		zd__rep_fail(rep, rc, "%s/meta.json: missing or bad epoch, run, page_size or page_count", rep->dir);
		goto out;
	}
	m->page_size = (uint32_t)ps;
	m->ended = json_is_true(json_object_get(o, "ended"));
	if ((v = json_object_get(o, "target")) && json_is_string(v))
		snprintf(m->target, sizeof(m->target), "%s", json_string_value(v));
	if ((v = json_object_get(o, "mode")) && json_is_string(v))
		snprintf(m->mode, sizeof(m->mode), "%s", json_string_value(v));
	v = json_object_get(o, "memsum");
	if (json_is_string(v)) {
		char *end;

		errno = 0;
		m->memsum = strtoull(json_string_value(v), &end, 16);
		if (errno || *end) {
			zd__rep_fail(rep, rc, "%s/meta.json: bad memsum", rep->dir);
			goto out;
		}
		m->have_memsum = true;
	}
	if (get_u64(o, "state_kind", &kind) == 0)
		m->state_kind = (uint32_t)kind;
	get_u64(o, "commit_wall_ns", &m->commit_wall_ns);
	if (json_object_get(o, "disk_size") &&
	    (get_u64(o, "disk_size", &m->disk_size) < 0 || m->disk_size > ZD_DISK_MAX)) {
		zd__rep_fail(rep, rc, "%s/meta.json: bad disk_size", rep->dir);
		goto out;
	}
	rc = 0;
out:
	json_decref(o);
	return rc;
}

/* --- open / close --- */

static bool known_file(const char *name)
{
	static const char *const names[] = {
		"meta.json", "memory.img", "state.bin", "journal", "journal.tmp",
		"meta.json.tmp", "state.bin.tmp", "disk.img",
	};

	for (size_t i = 0; i < ZD_ARRAY_SIZE(names); i++)
		if (!strcmp(name, names[i]))
			return true;
	return false;
}

/* A directory without meta.json is a new replica only if it holds nothing
 * but a leftover meta.json.tmp; anything else is someone's data. */
static int check_fresh(struct zd_replica *rep)
{
	int fd = dup(rep->dirfd);
	DIR *d;
	struct dirent *de;
	int rc = 0;

	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s: %s", rep->dir, strerror(errno));
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (!strcmp(de->d_name, "meta.json.tmp")) {
			unlinkat(rep->dirfd, de->d_name, 0);
			continue;
		}
		rc = zd__rep_fail(rep, ZD_EXIT_TARGET, "%s: not a zd replica (no meta.json, holds '%s'%s)",
				  rep->dir, de->d_name, known_file(de->d_name) ? ", damaged?" : "");
		break;
	}
	closedir(d);
	return rc;
}

static int open_memory(struct zd_replica *rep)
{
	struct stat st;
	uint64_t size = rep->meta.page_count * rep->meta.page_size;
	int rc;

	/* Created only at epoch 0: a committed replica without its image is
	 * damaged, not new. */
	if ((rc = zd_replica_open_file(rep, "memory.img", O_RDWR | (rep->meta.epoch == 0 ? O_CREAT : 0),
				       &rep->memfd)))
		return rc;
	if (fstat(rep->memfd, &st) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/memory.img: %s", rep->dir, strerror(errno));
	if ((uint64_t)st.st_size != size) {
		if (st.st_size != 0 && rep->meta.epoch > 0)
			return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s/memory.img: %jd bytes, meta.json says %" PRIu64,
					    rep->dir, (intmax_t)st.st_size, size);
		/* Sparse: a fresh replica costs no disk until pages arrive. */
		if (ftruncate(rep->memfd, (off_t)size) < 0)
			return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/memory.img: %s", rep->dir, strerror(errno));
	}
	return 0;
}

/* DIR holds guest memory: its owner's alone. One that others can enter
 * (made so by hand, or by an older zd-recv, which made it 0755) is closed
 * to them with a warning rather than refused: refusing would stop the
 * standby over a mode bit, and what others could read before is beyond
 * repair either way. A DIR owned by someone else is refused: its owner
 * can swap the files under zd-recv whatever the mode. Run only on a DIR
 * known to be a replica, or an empty one about to become a replica (at
 * bind): someone else's directory, or an empty one only looked at (zd-vm
 * --restore, --status), is left as it is. */
static int check_dir_access(struct zd_replica *rep)
{
	struct stat st;

	if (fstat(rep->dirfd, &st) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s: %s", rep->dir, strerror(errno));
	if (st.st_uid != geteuid())
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s: owned by uid %ju, not by this user (uid %ju): "
				    "its owner could change the replica under zd-recv", rep->dir,
				    (uintmax_t)st.st_uid, (uintmax_t)geteuid());
	if (!(st.st_mode & 077))
		return 0;
	if (fchmod(rep->dirfd, st.st_mode & 07700) < 0)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s: mode %04o lets other users read guest memory, "
				    "and it cannot be made 0700: %s", rep->dir, (unsigned)(st.st_mode & 07777),
				    strerror(errno));
	zd_warnx("%s: mode %04o let other users read guest memory: now %04o", rep->dir,
		 (unsigned)(st.st_mode & 07777), (unsigned)(st.st_mode & 07700));
	return 0;
}

int zd_replica_open(struct zd_replica **out, const char *dir, char *msg, size_t msglen)
{
	struct zd_replica *rep = zd_xcalloc(1, sizeof(*rep));
	int rc;

	rep->dir = zd_xstrdup(dir);
	rep->dirfd = rep->memfd = rep->diskfd = -1;
	rep->sync = true;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = zd__rep_fail(rep, ZD_EXIT_FAIL, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	rep->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rep->dirfd < 0) {
		rc = zd__rep_fail(rep, errno == ENOTDIR ? ZD_EXIT_TARGET : ZD_EXIT_FAIL,
				  "%s: %s", dir, strerror(errno));
		goto fail;
	}
	if (flock(rep->dirfd, LOCK_EX | LOCK_NB) < 0) {
		rc = zd__rep_fail(rep, ZD_EXIT_FAIL, "%s: in use by another zd-recv", dir);
		goto fail;
	}
	if (!zd__rep_exists(rep, "meta.json")) {
		if ((rc = check_fresh(rep)))
			goto fail;
	} else {
		rep->initialised = true;
		if ((rc = read_meta(rep)) || (rc = check_dir_access(rep)) || (rc = open_memory(rep)) ||
		    (rc = zd__rep_disk_reopen(rep)) || (rc = zd_replica_recover(rep)))
			goto fail;
	}
	*out = rep;
	return 0;
fail:
	snprintf(msg, msglen, "%s", rep->err);
	zd_replica_close(rep);
	*out = NULL;
	return rc;
}

void zd_replica_close(struct zd_replica *rep)
{
	if (!rep)
		return;
	zd_replica_stage_abort(rep);
	zd__replica_release(rep);
}

void zd__replica_release(struct zd_replica *rep)
{
	if (rep->mem)
		munmap(rep->mem, (size_t)(rep->meta.page_count * rep->meta.page_size));
	if (rep->wmem && rep->wmem != MAP_FAILED)
		munmap(rep->wmem, (size_t)(rep->meta.page_count * rep->meta.page_size));
	if (rep->memfd >= 0)
		close(rep->memfd);
	if (rep->diskfd >= 0)
		close(rep->diskfd);
	zd_pageset_free(&rep->reserved);
	if (rep->dirfd >= 0)
		close(rep->dirfd);	/* drops the flock */
	free(rep->dir);
	free(rep);
}

/* --- binding a stream --- */

int zd_replica_bind(struct zd_replica *rep, const struct zd_rec_header *hdr)
{
	struct zd_replica_meta *m = &rep->meta;
	int rc;

	if (rep->initialised) {
		if (hdr->page_size != m->page_size || hdr->page_count != m->page_count)
			return zd__rep_fail(rep, ZD_EXIT_DATA,
					    "stream has %" PRIu64 " pages of %u bytes, replica %s has %" PRIu64
					    " of %u: refusing to mix them",
					    hdr->page_count, hdr->page_size, rep->dir, m->page_count, m->page_size);
		/* Epochs of a run only carry what changed since the run began:
		 * applied over another run's image they would make a replica
		 * of neither. The same run (a reconnect) continues. */
		if (m->epoch > 0 && hdr->start_ns != m->run)
			return zd__rep_fail(rep, ZD_EXIT_DATA,
					    "replica %s holds another run (started %" PRIu64 " ns, at epoch %" PRIu64
					    "); a new run needs an empty replica directory",
					    rep->dir, m->run, m->epoch);
		/* Its primary said END: whoever sends that run's HEADER now
		 * is not that primary, and must not move the replica on. */
		if (m->ended)
			return zd__rep_fail(rep, ZD_EXIT_DATA,
					    "the run of replica %s ended (END after epoch %" PRIu64
					    "): its stream cannot continue",
					    rep->dir, m->epoch);
	} else {
		memset(m, 0, sizeof(*m));
		m->page_size = hdr->page_size;
		m->page_count = hdr->page_count;
		m->run = hdr->start_ns;
		/* Refused here, before meta.json exists: a replica written
		 * with them could not be opened again. */
		if (hdr->page_count > ZD_REPLICA_MAX_BYTES / hdr->page_size)
			return zd__rep_fail(rep, ZD_EXIT_DATA, "%" PRIu64 " pages of %u bytes: more than the %llu GiB a replica holds",
					    hdr->page_count, hdr->page_size, ZD_REPLICA_MAX_BYTES >> 30);
		if (hdr->start_ns > INT64_MAX)
			return zd__rep_fail(rep, ZD_EXIT_DATA, "HEADER start time %" PRIu64 " ns is out of range", hdr->start_ns);
	}
	snprintf(m->target, sizeof(m->target), "%s", hdr->target ? hdr->target : "");
	snprintf(m->mode, sizeof(m->mode), "%s", zd_mode_name((enum zd_mode)hdr->mode));
	rep->run = hdr->start_ns;
	if (!rep->initialised) {
		/* meta.json first: a crash before memory.img exists leaves a
		 * replica at epoch 0, which open_memory() completes. */
		if ((rc = check_dir_access(rep)) || (rc = zd__rep_write_meta(rep, m)) ||
		    (rc = zd__rep_fsync_dir(rep)) || (rc = open_memory(rep)) || (rc = zd__rep_fsync_dir(rep)))
			return rc;
		rep->initialised = true;
	}
	return 0;
}

int zd_replica_end_run(struct zd_replica *rep)
{
	struct zd_replica_meta m = rep->meta;
	int rc;

	if (!rep->initialised || m.ended || m.epoch == 0)
		return 0;
	m.ended = true;
	if ((rc = zd__rep_write_meta(rep, &m)) || (rc = zd__rep_fsync_dir(rep)))
		return rc;
	rep->meta = m;
	return 0;
}

int zd__rep_map(struct zd_replica *rep)
{
	size_t size = (size_t)(rep->meta.page_count * rep->meta.page_size);
	void *p;

	if (rep->mem)
		return 0;
	if (!rep->initialised || rep->memfd < 0)
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s: replica has no memory yet", rep->dir);
	p = mmap(NULL, size, PROT_READ, MAP_SHARED, rep->memfd, 0);
	if (p == MAP_FAILED)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/memory.img: mmap: %s", rep->dir, strerror(errno));
	rep->mem = p;
	return 0;
}

int zd__rep_hash_file(struct zd_replica *rep, int fd, void *h, uint8_t *buf, uint64_t off,
		      uint64_t len)
{
	while (len) {
		size_t n = (size_t)ZD_MIN(len, (uint64_t)ZD_REP_HASH_BUF);
		ssize_t r = pread(fd, buf, n, (off_t)off);

		if (r <= 0)
			return zd__rep_fail(rep, ZD_EXIT_FAIL, "%s/%s: read: %s", rep->dir,
					    fd == rep->diskfd ? "disk.img" : "memory.img",
					    r < 0 ? strerror(errno) : "unexpected end of file");
		zd_hash64_update(h, buf, (size_t)r);
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	return 0;
}

int zd__rep_file_sum(struct zd_replica *rep, int fd, uint64_t len, uint64_t *sum)
{
	XXH3_state_t *h = XXH3_createState();
	uint8_t *buf;
	int rc;

	if (!h)
		return zd__rep_fail(rep, ZD_EXIT_FAIL, "out of memory");
	buf = zd_xmalloc(ZD_REP_HASH_BUF);
	XXH3_64bits_reset(h);
	rc = zd__rep_hash_file(rep, fd, h, buf, 0, len);
	if (!rc)
		*sum = XXH3_64bits_digest(h);
	free(buf);
	XXH3_freeState(h);
	return rc;
}

int zd_replica_memsum(struct zd_replica *rep, uint64_t *sum)
{
	if (!rep->initialised || rep->memfd < 0)
		return zd__rep_fail(rep, ZD_EXIT_TARGET, "%s: replica has no memory yet", rep->dir);
	return zd__rep_file_sum(rep, rep->memfd, rep->meta.page_count * rep->meta.page_size, sum);
}
