/* SPDX-License-Identifier: MIT */
/*
 * zd-recv --standby: a VM kept at the replica's committed epoch, so that a
 * takeover starts it instead of building one from the replica's files.
 *
 *   zd_standby_new       --standby SCHEME:ARGS parsed, what can be checked
 *   zd_standby_bind      HEADER: the VM is created stopped (once)
 *   zd_standby_state     first STATE: its memory checked and mapped
 *   zd_standby_note      each COMMIT: the epoch's pages are due
 *   zd_standby_fill      after the ACK: those pages copied from memory.img
 *   zd_standby_takeover  after the fence: the rest of the fill, --verify,
 *                        the committed state loaded, the VM started
 *
 * --standby-at takeover (lazy): nothing is created before the loss; the
 * takeover runs the same steps at once, from the replica's files: create,
 * attach (state.bin's layout), a full fill from memory.img, verify,
 * start. Slower (a copy of the whole memory on the critical path), but
 * no second guest's memory is held while the primary runs.
 *
 * The fill runs in the session's thread after the epoch's ACK went out:
 * off the primary's critical path, and a takeover (the same thread)
 * always finds the fill of the last committed epoch done or redoes it
 * (a failed fill marks every page due): the standby never starts with
 * a torn epoch. memory.img holds exactly the committed epoch once
 * zd_replica_commit returned, so copying from it is always right; what
 * is due is only a matter of cost.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/replica.h"
#include "zd/util.h"
#include "replica_int.h"
#include "standby_int.h"

static const struct zd_standby_ops *const kinds[] = {
#ifdef ZD_HAVE_XEN
	&zd_standby_xen,	/* lib/target/xen.mk: where libxen-dev is installed */
#endif
	NULL,
};

void zd__standby_err(struct zd_standby *sb, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sb->err, sizeof(sb->err), fmt, ap);
	va_end(ap);
}

int zd_standby_new(struct zd_standby **out, const char *spec, bool lazy, char *msg, size_t msglen)
{
	const char *colon = strchr(spec, ':');
	size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
	const struct zd_standby_ops *ops = NULL;
	struct zd_standby *sb;

	for (size_t i = 0; kinds[i]; i++)
		if (strlen(kinds[i]->scheme) == n && !strncmp(spec, kinds[i]->scheme, n))
			ops = kinds[i];
	if (!ops || !colon || !colon[1]) {
		size_t off = (size_t)snprintf(msg, msglen, "--standby %s: want ", spec);

		for (size_t i = 0; kinds[i] && off < msglen; i++)
			off += (size_t)snprintf(msg + off, msglen - off, "%s%s", i ? " or " : "", kinds[i]->usage);
		if (!kinds[0])
			snprintf(msg + off, msglen - off, "nothing: this zd-recv was built without a kind of "
				 "standby (xen: needs libxen-dev)");
		return ZD_EXIT_USAGE;
	}
	sb = zd_xcalloc(1, sizeof(*sb));
	sb->ops = ops;
	sb->lazy = lazy;
	sb->args = zd_xstrdup(colon + 1);
	zd_pageset_init(&sb->pending);
	if (ops->check(sb) < 0) {
		snprintf(msg, msglen, "--standby %s: %s", spec, sb->err);
		zd_standby_free(sb);
		return ZD_EXIT_USAGE;
	}
	*out = sb;
	return 0;
}

static int refuse(struct zd_replica *rep, struct zd_standby *sb)
{
	snprintf(rep->err, sizeof(rep->err), "standby %s:%.200s: %.280s", sb->ops->scheme, sb->args, sb->err);
	return ZD_EXIT_TARGET;
}

int zd_standby_bind(struct zd_standby *sb, struct zd_replica *rep, const struct zd_rec_header *hdr)
{
	const char *colon = strchr(hdr->target, ':');
	size_t n = colon ? (size_t)(colon - hdr->target) : strlen(hdr->target);

	if (sb->running) {
		zd__standby_err(sb, "taken over already");
		return refuse(rep, sb);
	}
	if (strlen(sb->ops->scheme) != n || strncmp(hdr->target, sb->ops->scheme, n)) {
		zd__standby_err(sb, "takes over %s: targets, not %s", sb->ops->scheme, hdr->target);
		return refuse(rep, sb);
	}
	if (!sb->made && !sb->lazy) {
		uint64_t t0 = zd_now_ns();

		if (sb->ops->create(sb, hdr) < 0)
			return refuse(rep, sb);
		sb->made = true;
		zd_debug("standby %s:%s created (stopped) in %.0f ms", sb->ops->scheme, sb->args,
			 (double)(zd_now_ns() - t0) / 1e6);
	}
	/* A new session: whatever the replica holds now is filled at its
	 * first commit; its layout is checked again at its first STATE. */
	sb->attached = false;
	sb->full = true;
	return 0;
}

int zd_standby_state(struct zd_standby *sb, struct zd_replica *rep, const struct zd_rec_state *st)
{
	if (sb->attached || sb->lazy)
		return 0;
	if (sb->ops->attach(sb, rep, st->data, st->len) < 0)
		return refuse(rep, sb);
	if (sb->pages != rep->meta.page_count || sb->page_size != rep->meta.page_size) {
		zd__standby_err(sb, "maps %" PRIu64 " pages of %u bytes, the replica has %" PRIu64 " of %u",
				sb->pages, sb->page_size, rep->meta.page_count, rep->meta.page_size);
		return refuse(rep, sb);
	}
	sb->attached = true;
	return 0;
}

void zd_standby_note(struct zd_standby *sb, const struct zd_replica *rep)
{
	const struct zd_pageset *cov = zd_replica_stage_covered(rep);
	struct zd_pageset u = ZD_PAGESET_INIT;

	if (!cov || sb->full || sb->lazy)
		return;
	zd_pageset_union(&u, &sb->pending, cov);
	zd_pageset_swap(&u, &sb->pending);
	zd_pageset_free(&u);
}

/* Copy the due pages from memory.img (a hole reads as zeros, as the
 * replica holds it). */
static int fill(struct zd_standby *sb, struct zd_replica *rep)
{
	uint64_t ps = sb->page_size;

	if (!sb->attached || !sb->mem) {
		zd__standby_err(sb, "no committed STATE has described its memory yet");
		return -1;
	}
	if (sb->full) {
		zd_pageset_clear(&sb->pending);
		zd_pageset_add_range(&sb->pending, 0, sb->pages);
	}
	for (size_t i = 0; i < sb->pending.n; i++) {
		uint64_t first = sb->pending.r[i].first, count = sb->pending.r[i].count;
		uint8_t *dst = sb->mem + first * ps;
		uint64_t len = count * ps, done = 0;

		if (first + count > sb->pages) {
			zd__standby_err(sb, "page %" PRIu64 " beyond its %" PRIu64, first + count - 1, sb->pages);
			sb->full = true;
			return -1;
		}
		while (done < len) {
			ssize_t r = pread(rep->memfd, dst + done, (size_t)ZD_MIN(len - done, (uint64_t)(64u << 20)),
					  (off_t)(first * ps + done));

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				zd__standby_err(sb, "reading memory.img: %s", r ? strerror(errno) : "short file");
				sb->full = true;
				return -1;
			}
			done += (uint64_t)r;
		}
	}
	zd_pageset_clear(&sb->pending);
	sb->full = false;
	return 0;
}

void zd_standby_fill(struct zd_standby *sb, struct zd_replica *rep)
{
	uint64_t n = sb->full ? sb->pages : zd_pageset_count(&sb->pending), t0 = zd_now_ns();

	if (sb->running || !sb->attached || sb->lazy)
		return;
	if (fill(sb, rep) < 0)
		zd_warnx("standby %s:%s: %s (the takeover fills it again)", sb->ops->scheme, sb->args, sb->err);
	else
		zd_debug("standby: epoch %" PRIu64 ": %" PRIu64 " pages filled in %.1f ms", rep->meta.epoch, n,
			 (double)(zd_now_ns() - t0) / 1e6);
}

static int read_state(struct zd_replica *rep, uint8_t **buf, uint32_t *len, char *why, size_t whylen)
{
	int fd = -1, rc;
	off_t sz;

	*buf = NULL;
	if ((rc = zd_replica_open_file(rep, "state.bin", O_RDONLY, &fd))) {
		snprintf(why, whylen, "the replica has no state.bin: %s", rep->err);
		return -1;
	}
	sz = lseek(fd, 0, SEEK_END);
	if (sz <= 0 || sz > (off_t)(64u << 20)) {
		snprintf(why, whylen, "state.bin: %s", sz < 0 ? strerror(errno) : "empty or too big");
		close(fd);
		return -1;
	}
	*buf = zd_xmalloc((size_t)sz);
	if (pread(fd, *buf, (size_t)sz, 0) != sz) {
		snprintf(why, whylen, "reading state.bin: %s", strerror(errno));
		close(fd);
		free(*buf);
		*buf = NULL;
		return -1;
	}
	close(fd);
	*len = (uint32_t)sz;
	return 0;
}

int zd_standby_takeover(struct zd_standby *sb, struct zd_replica *rep, bool verify, uint64_t lost_wall_ns)
{
	const char *what = sb->ops->scheme;
	uint64_t t0 = zd_now_ns(), w0 = zd_wall_ns(), t_made, t_fill, t_verify;
	uint8_t *state = NULL;
	uint32_t slen = 0;
	char why[600];

	if (sb->lazy && read_state(rep, &state, &slen, why, sizeof(why)) == 0) {
		/* --standby-at takeover: made now, from the replica's files. */
		struct zd_rec_header hdr = { .target = rep->meta.target };
		uint64_t tc = zd_now_ns();

		if (!sb->made && sb->ops->create(sb, &hdr) == 0)
			sb->made = true;
		if (sb->made && sb->ops->attach(sb, rep, state, slen) == 0)
			sb->attached = true;
		free(state);
		state = NULL;
		if (!sb->attached) {
			zd_warnx("standby %s:%s: %s: not started", what, sb->args, sb->err);
			return ZD_EXIT_STANDBY;
		}
		sb->full = true;
		zd_debug("standby created and attached at the takeover in %.0f ms", (double)(zd_now_ns() - tc) / 1e6);
	}
	if (!sb->made || !sb->attached) {
		zd_warnx("standby %s:%s: never received a committed epoch: not started", what, sb->args);
		return ZD_EXIT_STANDBY;
	}
	t_made = zd_now_ns();
	/* The last commit's fill ran before this (same thread); this only
	 * does something if it failed. */
	if ((sb->full || sb->pending.n) && fill(sb, rep) < 0) {
		zd_warnx("standby %s:%s: %s: not started", what, sb->args, sb->err);
		return ZD_EXIT_STANDBY;
	}
	t_fill = zd_now_ns();
	if (verify) {
		uint64_t want, have = zd_hash64(sb->mem, sb->pages * sb->page_size);
		int rc = 0;

		if (rep->meta.have_memsum)
			want = rep->meta.memsum;
		else if ((rc = zd_replica_memsum(rep, &want)))
			snprintf(why, sizeof(why), "%s", rep->err);
		if (rc || have != want) {
			if (!rc)
				snprintf(why, sizeof(why), "its memory hashes 0x%016" PRIx64 ", the replica's epoch %" PRIu64
					 " 0x%016" PRIx64, have, rep->meta.epoch, want);
			zd_warnx("standby %s:%s: --verify: %s: not started", what, sb->args, why);
			return ZD_EXIT_STANDBY;
		}
		zd_debug("standby: --verify: memory = the replica's epoch %" PRIu64 " (0x%016" PRIx64 ")",
			 rep->meta.epoch, have);
	}
	t_verify = zd_now_ns();
	if (read_state(rep, &state, &slen, why, sizeof(why)) < 0) {
		zd_warnx("standby %s:%s: %s: not started", what, sb->args, why);
		return ZD_EXIT_STANDBY;
	}
	if (sb->ops->start(sb, state, slen) < 0) {
		free(state);
		zd_warnx("standby %s:%s: %s: not started", what, sb->args, sb->err);
		return ZD_EXIT_STANDBY;
	}
	free(state);
	sb->running = true;
	{
		uint64_t now = zd_now_ns(), wall = zd_wall_ns();

		zd_warnx("standby %s:%s running at epoch %" PRIu64 ": %.1f ms after the loss was declared "
			 "(fence %.1f ms, make %.1f ms, fill %.1f ms, verify %.1f ms, start %.1f ms)", what, sb->args,
			 rep->meta.epoch, wall > lost_wall_ns ? (double)(wall - lost_wall_ns) / 1e6 : 0.0,
			 w0 > lost_wall_ns ? (double)(w0 - lost_wall_ns) / 1e6 : 0.0,
			 (double)(t_made - t0) / 1e6, (double)(t_fill - t_made) / 1e6, (double)(t_verify - t_fill) / 1e6,
			 (double)(now - t_verify) / 1e6);
	}
	if (sb->ops->after_start)
		sb->ops->after_start(sb);
	return 0;
}

void zd_standby_free(struct zd_standby *sb)
{
	if (!sb)
		return;
	if (sb->ops->release)
		sb->ops->release(sb, sb->made && !sb->running);
	zd_pageset_free(&sb->pending);
	free(sb->args);
	free(sb);
}
