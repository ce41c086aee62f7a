/* SPDX-License-Identifier: MIT */
/*
 * zd-send --reconnect: a lost link to zd-recv is not the end of the run.
 *
 *   the link drops (a failed write, the peer's close, no heartbeat for
 *   --timeout) → LINK 0 to zd-track (remus resumes on DRAINED; output stays
 *   held) → the old connection is torn down → connect again with backoff
 *   (50 ms doubling to 1 s) for up to --reconnect ms → our HEADER again →
 *   zd-recv answers with the epoch its replica committed last (STAT "wire"
 *   "committed") →
 *     the resend log holds every epoch after it: those go again, as they
 *     went, and the run goes on;
 *     it does not (the log overflowed, or the replica is older than the
 *     log): RESYNC to zd-track, whose next checkpoint is FULL (every
 *     page); records are dropped until that checkpoint comes through
 *   → LINK 1, and an ACK for the committed epoch if its own was lost.
 *
 * Meanwhile emit() keeps every epoch record in the resend log and writes
 * nothing: the VM and the pipeline upstream run on.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "send_int.h"
#include "zd/fb.h"
#include "zd/util.h"

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 1000
#define ATTEMPT_MAX_MS 2000	/* one connect + handshake + answer at most */

void zd__send_link_lost(struct sender *s, unsigned gen, const char *why)
{
	bool first;

	/* The first reason given is the one: a write blocked on the dead
	 * link (its send buffer full, emit() holding wlock) returns after
	 * this abort with EPIPE, which is not why. */
	pthread_mutex_lock(&s->conn_lock);
	first = gen == s->link_gen && s->lost_gen != gen;
	if (first) {
		s->lost_gen = gen;
		snprintf(s->down_why, sizeof(s->down_why), "%s", why);
		zd_conn_abort(&s->conn);
	}
	pthread_mutex_unlock(&s->conn_lock);
	if (!first)
		return;
	pthread_mutex_lock(&s->wlock);
	if (gen == s->link_gen && !s->link_down && !s->link_stop) {
		__atomic_store_n(&s->link_down, true, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&s->link_cv);
	}
	pthread_mutex_unlock(&s->wlock);
}

int zd__send_link_admit(struct sender *s, const struct zd_record *r)
{
	if (s->resync) {
		if (r->type == ZD_REC_CHECKPOINT && (r->u.ckpt.flags & ZD_CKPT_FULL)) {
			/* Every page follows: nothing before it is needed, and
			 * the backup's copies of pages are its replica's alone. */
			s->resync = false;
			zd_resend_restart(s->resend, r->u.ckpt.epoch);
			if (s->enc)
				zd_wire_enc_reset(s->enc);
			zd_warnx("epoch %" PRIu64 ": the full checkpoint goes to the backup", r->u.ckpt.epoch);
			/* remus may wait for ACKs again: they will come */
			zd__send_fb(s, ZD_FB_LINK, 1);
		} else if (r->type == ZD_REC_CHECKPOINT || r->type == ZD_REC_DIRTY || r->type == ZD_REC_PAGES ||
			   r->type == ZD_REC_STATE || r->type == ZD_REC_COMMIT || r->type == ZD_REC_DISK) {
			return 0;
		}
	}
	if (zd_resend_keep(s->resend, r, s->wire.page_size ? s->wire.page_size : s->header.u.header.page_size) < 0)
		return -1;
	return !s->link_down;
}

static int put_wire(void *arg, const struct zd_record *r)
{
	struct sender *s = arg;

	return zd_writer_put(&s->wire, r) < 0 ? -1 : 0;
}

/* Tear down s->conn (down already): its ack thread ends, it is closed. */
static void drop_conn(struct sender *s)
{
	pthread_mutex_lock(&s->conn_lock);
	zd_conn_abort(&s->conn);
	pthread_mutex_unlock(&s->conn_lock);
	zd__send_join_ack_thread(s);
	pthread_mutex_lock(&s->wlock);
	pthread_mutex_lock(&s->conn_lock);
	s->wire_prev += s->wire.bytes;
	zd_writer_free(&s->wire);
	zd_conn_close(&s->conn);
	pthread_mutex_unlock(&s->conn_lock);
	pthread_mutex_unlock(&s->wlock);
}

/* One attempt: connect, HEADER, zd-recv's answer, resend or ask for a
 * resync. 0 when the link is up again, -1 with msg (or the run stopped). */
static int attempt(struct sender *s, unsigned ms, uint64_t *committed, size_t *resent, uint64_t *bytes,
		   char *msg, size_t len)
{
	struct zd_conn nc;
	uint64_t deadline;
	int pw, acc, rc;

	if (zd__send_connect(s, &nc, ms, msg, len))
		return -1;
	/* Made as the run stopped: zd__send_fail() aborted the one before. */
	if (zd__send_stopped(s)) {
		zd_conn_close(&nc);
		return -1;
	}
	pthread_mutex_lock(&s->wlock);
	pthread_mutex_lock(&s->conn_lock);
	s->conn = nc;
	s->link_gen++;
	pthread_mutex_unlock(&s->conn_lock);
	zd_writer_init(&s->wire, nc.wfd, ZD_ENC_BINARY);
	rc = zd_writer_put(&s->wire, &s->header) < 0 || zd_writer_flush(&s->wire) < 0;
	pthread_mutex_unlock(&s->wlock);
	if (zd__send_start_ack_thread(s) < 0)
		goto fail;
	if (rc) {
		snprintf(msg, len, "%s: write: %s", nc.name, strerror(s->wire.err));
		goto fail;
	}
	/* zd-recv answers HEADER with its own and STAT "wire" at once, or is
	 * still busy with the old connection (until its --timeout). */
	deadline = zd_now_ns() + (uint64_t)ms * 1000000u;
	pthread_mutex_lock(&s->lock);
	while (!s->peer_wire && zd_now_ns() < deadline && !zd__send_stopped(s)) {
		struct timespec ts = zd_cond_deadline(20000000u);

		pthread_cond_timedwait(&s->wire_cv, &s->lock, &ts);
	}
	pw = s->peer_wire;
	acc = s->peer_accept;
	*committed = s->peer_committed;
	pthread_mutex_unlock(&s->lock);
	if (zd__send_stopped(s))
		goto fail;
	if (pw == 0) {
		snprintf(msg, len, "%s: no answer to the HEADER within %u ms", nc.name, ms);
		goto fail;
	}
	if (pw < 0) {
		snprintf(msg, len, "%s: closed before answering the HEADER", nc.name);
		goto fail;
	}
	if (s->wopts.enc != ZD_PENC_RAW && zd__send_check_accept(s, pw, acc) < 0)
		goto fail;

	pthread_mutex_lock(&s->wlock);
	if (!s->resync && zd_resend_covers(s->resend, *committed)) {
		char m[256];

		zd_resend_acked(s->resend, *committed);
		zd_resend_counts(s->resend, resent, bytes);
		rc = zd_resend_replay(s->resend, &s->header.u.header, put_wire, s, m, sizeof(m));
		if (rc == 0)
			rc = zd_writer_flush(&s->wire);
		if (rc) {
			pthread_mutex_unlock(&s->wlock);
			if (rc == -1 && !s->wire.err)
				zd__send_fail(s, ZD_EXIT_FAIL, "resend log: %s", m);
			snprintf(msg, len, "%s: resending: %s", nc.name, strerror(s->wire.err));
			goto fail;
		}
	} else {
		*resent = SIZE_MAX;
		if (s->done) {
			pthread_mutex_unlock(&s->wlock);
			zd__send_fail(s, ZD_EXIT_PEER, "%s: the input ended before the backup (at epoch %" PRIu64
				      ") could be resynced: it keeps that epoch", nc.name, *committed);
			goto fail;
		}
		if (!s->resync) {
			s->resync = true;
			zd_resend_restart(s->resend, 0);
		}
	}
	__atomic_store_n(&s->link_down, false, __ATOMIC_RELEASE);
	s->last_tx = zd_now_ns();
	pthread_cond_broadcast(&s->link_cv);
	pthread_mutex_unlock(&s->wlock);
	return 0;

fail:
	drop_conn(s);
	return -1;
}

static void link_stat(struct sender *s, uint64_t down_ms, uint64_t committed, size_t resent, uint64_t bytes)
{
	static const char *const keys[] = { "down_ms", "committed", "resent_records", "resent_bytes", "resync" };
	double vals[] = { (double)down_ms, (double)committed, resent == SIZE_MAX ? 0.0 : (double)resent,
			  (double)bytes, resent == SIZE_MAX ? 1.0 : 0.0 };
	struct zd_record st;

	zd_record_init(&st, ZD_REC_STAT);
	pthread_mutex_lock(&s->lock);
	st.u.stat.epoch = s->sent;
	pthread_mutex_unlock(&s->lock);
	snprintf(st.u.stat.source, sizeof(st.u.stat.source), "link");
	for (size_t i = 0; i < ZD_ARRAY_SIZE(keys); i++) {
		snprintf(st.u.stat.kv[i].key, sizeof(st.u.stat.kv[i].key), "%s", keys[i]);
		st.u.stat.kv[i].value = vals[i];
	}
	st.u.stat.n = ZD_ARRAY_SIZE(keys);
	zd__send_log_put(s, &st);
}

static void relink(struct sender *s, const char *why)
{
	uint64_t t0 = zd_now_ns(), deadline = t0 + (uint64_t)s->o->reconnect_ms * 1000000u;
	unsigned delay = BACKOFF_FIRST_MS;
	char name[128], last[400] = "";

	snprintf(name, sizeof(name), "%s", s->conn.name);
	zd_warnx("%s: link lost: %s; reconnecting for up to %u ms (--reconnect)", name, why, s->o->reconnect_ms);
	if (zd__send_fb(s, ZD_FB_LINK, 0) < 0)
		zd_debug("control socket: LINK: %s", strerror(errno));
	drop_conn(s);
	for (unsigned n = 1;; n++) {
		uint64_t now = zd_now_ns(), committed = 0, bytes = 0;
		size_t resent = 0;

		pthread_mutex_lock(&s->wlock);
		bool stop = s->link_stop;
		pthread_mutex_unlock(&s->wlock);
		if (stop)
			return;
		if (now >= deadline) {
			zd__send_fail(s, ZD_EXIT_PEER, "%s: link lost (%s) and not back within %u ms (--reconnect); last try: %s",
				      name, why, s->o->reconnect_ms, last);
			return;
		}
		unsigned left = (unsigned)((deadline - now) / 1000000u) + 1;

		int rc = attempt(s, ZD_MIN(left, (unsigned)ATTEMPT_MAX_MS), &committed, &resent, &bytes,
				 last, sizeof(last));

		if (zd__send_stopped(s))
			return;
		if (rc == 0) {
			uint64_t down_ms = (zd_now_ns() - t0) / 1000000u;

			s->reconnects++;
			/* a resync: LINK 1 once the full checkpoint goes out
			 * (zd__send_link_admit), since no ACK comes before it */
			if (resent != SIZE_MAX)
				zd__send_fb(s, ZD_FB_LINK, 1);
			/* the backup committed it but its ACK was lost: relayed,
			 * and logged as the ACK it stands for (what zd-vm
			 * releases on it must show an ACK before it), at the
			 * time zd-send learned of it: the backup's went with
			 * the lost ACK */
			struct zd_record lost;

			zd_record_init(&lost, ZD_REC_ACK);
			lost.u.ack.epoch = committed;
			lost.u.ack.commit_wall_ns = zd_wall_ns();
			pthread_mutex_lock(&s->lock);
			bool relay = committed > s->acked;
			if (relay)
				zd__send_relay_ack(s, committed, 0);
			pthread_mutex_unlock(&s->lock);
			if (relay)
				zd__send_log_put(s, &lost);
			if (resent != SIZE_MAX) {
				zd_warnx("%s: reconnected after %" PRIu64 " ms (attempt %u): the backup is at epoch %" PRIu64
					 "; resent %zu records (%" PRIu64 " bytes)", name, down_ms, n, committed, resent, bytes);
			} else {
				zd_warnx("%s: reconnected after %" PRIu64 " ms (attempt %u): the backup is at epoch %" PRIu64
					 ", older than the resend log (--resend-buffer): asking zd-track for a full checkpoint",
					 name, down_ms, n, committed);
				if (zd__send_fb(s, ZD_FB_RESYNC, 0) < 0 || s->fb < 0) {
					zd__send_fail(s, ZD_EXIT_PEER, "%s: the backup needs a full resync and no zd-track is on the control socket to make one",
						      name);
					return;
				}
			}
			link_stat(s, down_ms, committed, resent, bytes);
			return;
		}
		zd_debug("%s: reconnect attempt %u: %s", name, n, last);
		now = zd_now_ns();
		if (now < deadline)
			zd_sleep_ns(ZD_MIN((uint64_t)delay * 1000000u, deadline - now));
		delay = ZD_MIN(delay * 2, (unsigned)BACKOFF_MAX_MS);
	}
}

static void *link_thread(void *arg)
{
	struct sender *s = arg;
	char why[300];

	pthread_mutex_lock(&s->wlock);
	for (;;) {
		while (!s->link_down && !s->link_stop)
			pthread_cond_wait(&s->link_cv, &s->wlock);
		if (s->link_stop)
			break;
		pthread_mutex_unlock(&s->wlock);
		pthread_mutex_lock(&s->conn_lock);
		snprintf(why, sizeof(why), "%s", s->down_why);
		pthread_mutex_unlock(&s->conn_lock);
		relink(s, why);
		pthread_mutex_lock(&s->wlock);
	}
	pthread_mutex_unlock(&s->wlock);
	return NULL;
}

int zd__send_link_start(struct sender *s)
{
	if (pthread_create(&s->link_tid, NULL, link_thread, s))
		return zd__send_fail(s, ZD_EXIT_FAIL, "cannot start the link thread");
	s->link_running = true;
	return 0;
}

void zd__send_link_stop(struct sender *s)
{
	if (!s->link_running)
		return;
	pthread_mutex_lock(&s->wlock);
	s->link_stop = true;
	pthread_cond_broadcast(&s->link_cv);
	pthread_mutex_unlock(&s->wlock);
	pthread_join(s->link_tid, NULL);
	s->link_running = false;
}
