/* SPDX-License-Identifier: MIT */
/*
 * The 2-thread pipeline: capture puts records, one worker compresses PAGES
 * and emits everything in order. One worker, not more: a delta depends on
 * the shadows every earlier record left, so records encode in stream order.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zd/util.h"
#include "zd/wire.h"

struct zd_wire_pipe {
	struct zd_wire_enc *enc;
	zd_wire_emit emit;
	void *arg;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t more, room;
	struct zd_record *q;	/* ring of depth */
	uint8_t **buf;		/* per ring slot: PAGES data, reused (a fresh
				 * 16 MiB malloc is an mmap: a page fault per page) */
	size_t *cap;
	bool *taken;		/* per ring slot: the data is the putter's
				 * buffer (zd_wire_pipe_take), freed when done */
	unsigned depth, head, count;
	bool busy;		/* the worker holds a record out of the ring */
	bool stop, failed;
	char err[256];
};

/* A deep copy of r: PAGES directly (the big one), others through the
 * binary codec, which copies every type including unknown ones. */
static int record_copy(struct zd_record *dst, const struct zd_record *r, uint8_t **slot_buf,
		       size_t *slot_cap, char *msg, size_t len)
{
	if (r->type == ZD_REC_PAGES) {
		*dst = *r;
		zd_pageset_init(&dst->u.pages.set);
		zd_pageset_copy(&dst->u.pages.set, &r->u.pages.set);
		if (*slot_cap < r->u.pages.data_len || !*slot_buf) {
			free(*slot_buf);
			*slot_cap = r->u.pages.data_len;
			*slot_buf = zd_xmalloc(*slot_cap ? *slot_cap : 1);
		}
		dst->u.pages.data = *slot_buf;
		memcpy(dst->u.pages.data, r->u.pages.data, r->u.pages.data_len);
		return 0;
	}
	uint8_t *buf;
	size_t n;
	if (zd_encode_binary(r, 0, &buf, &n) < 0) {
		snprintf(msg, len, "cannot copy a %s record", zd_rec_type_name(r->type));
		return -1;
	}
	zd_record_init(dst, 0);
	int rc = zd_decode_binary(buf, n, NULL, dst, msg, len);
	free(buf);
	return rc < 0 ? -1 : 0;
}

static void *worker(void *arg)
{
	struct zd_wire_pipe *p = arg;
	struct zd_record r, enc;
	char msg[256];

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->count && !p->stop)
			pthread_cond_wait(&p->more, &p->lock);
		if (!p->count)
			break;
		/* the record stays in its slot until done: the slot's buffer
		 * is its data */
		r = p->q[p->head];
		p->busy = true;
		bool failed = p->failed;
		pthread_mutex_unlock(&p->lock);

		int rc = 0;
		msg[0] = 0;
		if (!failed) {
			enc = r;
			if (r.type == ZD_REC_PAGES && r.u.pages.enc == ZD_PENC_RAW)
				rc = zd_wire_encode(p->enc, &r.u.pages, &enc.u.pages, msg, sizeof(msg));
			if (!rc && (rc = p->emit(p->arg, &enc)))
				snprintf(msg, sizeof(msg), "emit failed on a %s record", zd_rec_type_name(r.type));
		}
		/* the slot's own buffer is kept; a taken one goes */
		if (r.type == ZD_REC_PAGES && !p->taken[p->head])
			r.u.pages.data = NULL;
		zd_record_free(&r);

		pthread_mutex_lock(&p->lock);
		if (rc && !p->failed) {
			p->failed = true;
			snprintf(p->err, sizeof(p->err), "%s", msg);
		}
		p->head = (p->head + 1) % p->depth;
		p->count--;
		p->busy = false;
		pthread_cond_broadcast(&p->room);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int zd_wire_pipe_new(struct zd_wire_pipe **pp, struct zd_wire_enc *e, unsigned depth,
		     zd_wire_emit emit, void *arg, char *msg, size_t len)
{
	struct zd_wire_pipe *p = zd_xcalloc(1, sizeof(*p));
	int rc;

	p->enc = e;
	p->emit = emit;
	p->arg = arg;
	p->depth = depth ? depth : 1;
	p->q = zd_xcalloc(p->depth, sizeof(*p->q));
	p->buf = zd_xcalloc(p->depth, sizeof(*p->buf));
	p->cap = zd_xcalloc(p->depth, sizeof(*p->cap));
	p->taken = zd_xcalloc(p->depth, sizeof(*p->taken));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->more, NULL);
	pthread_cond_init(&p->room, NULL);
	if ((rc = pthread_create(&p->thread, NULL, worker, p))) {
		snprintf(msg, len, "wire pipeline: cannot start its thread: %s", strerror(rc));
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->more);
		pthread_cond_destroy(&p->room);
		free(p->taken);
		free(p->cap);
		free(p->buf);
		free(p->q);
		free(p);
		*pp = NULL;
		return -1;
	}
	*pp = p;
	return 0;
}

/* Wait for a free slot; UINT_MAX once the worker failed. */
static unsigned slot_wait(struct zd_wire_pipe *p)
{
	unsigned slot = UINT_MAX;

	pthread_mutex_lock(&p->lock);
	while (p->count == p->depth && !p->failed)
		pthread_cond_wait(&p->room, &p->lock);
	/* the slot is free and only this thread fills slots: the caller
	 * fills it unlocked */
	if (!p->failed)
		slot = (p->head + p->count) % p->depth;
	pthread_mutex_unlock(&p->lock);
	return slot;
}

static void slot_fill(struct zd_wire_pipe *p, unsigned slot, const struct zd_record *c, bool taken)
{
	pthread_mutex_lock(&p->lock);
	p->q[slot] = *c;
	p->taken[slot] = taken;
	p->count++;
	pthread_cond_signal(&p->more);
	pthread_mutex_unlock(&p->lock);
}

int zd_wire_pipe_put(struct zd_wire_pipe *p, const struct zd_record *r)
{
	struct zd_record c;
	char msg[256];
	unsigned slot = slot_wait(p);

	if (slot == UINT_MAX)
		return -1;
	if (record_copy(&c, r, &p->buf[slot], &p->cap[slot], msg, sizeof(msg)) < 0) {
		pthread_mutex_lock(&p->lock);
		if (!p->failed) {
			p->failed = true;
			snprintf(p->err, sizeof(p->err), "%s", msg);
		}
		pthread_mutex_unlock(&p->lock);
		return -1;
	}
	slot_fill(p, slot, &c, false);
	return 0;
}

int zd_wire_pipe_take(struct zd_wire_pipe *p, struct zd_record *r)
{
	struct zd_record c;
	unsigned slot;

	if (r->type != ZD_REC_PAGES)
		return zd_wire_pipe_put(p, r);
	if ((slot = slot_wait(p)) == UINT_MAX)
		return -1;
	/* the page set and the data move: no copy of 16 MiB a record */
	c = *r;
	zd_pageset_init(&r->u.pages.set);
	r->u.pages.data = NULL;
	r->u.pages.data_len = 0;
	slot_fill(p, slot, &c, true);
	return 0;
}

int zd_wire_pipe_flush(struct zd_wire_pipe *p)
{
	pthread_mutex_lock(&p->lock);
	while ((p->count || p->busy) && !p->failed)
		pthread_cond_wait(&p->room, &p->lock);
	int rc = p->failed ? -1 : 0;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

const char *zd_wire_pipe_error(struct zd_wire_pipe *p)
{
	return p->failed ? p->err : NULL;
}

int zd_wire_pipe_finish(struct zd_wire_pipe *p, char *msg, size_t len)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->more);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	int rc = p->failed ? -1 : 0;
	if (rc && msg && len)
		snprintf(msg, len, "%s", p->err);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->more);
	pthread_cond_destroy(&p->room);
	for (unsigned i = 0; i < p->depth; i++)
		free(p->buf[i]);
	free(p->buf);
	free(p->cap);
	free(p->taken);
	free(p->q);
	free(p);
	return rc;
}
