/* SPDX-License-Identifier: MIT */
/*
 * zd-recv's loop over one connection: records in, epochs staged and
 * committed into the replica, ACKs out on the same connection.
 *
 *   HEADER      bind the replica; answer with a HEADER (the ACK stream is
 *               itself a zd-stream) — page size and count must match
 *   CHECKPOINT  stage_begin (an epoch also opens at its first PAGES, which
 *               pre-copy sends before the CHECKPOINT)
 *   DIRTY, PAGES, STATE   staged
 *   COMMIT      verify, commit, apply; then ACK(epoch, commit wall ns)
 *   END         the primary stopped cleanly; END back, session over
 *   STAT "heartbeat"  nothing to do: any record is a sign of life
 *
 * Heartbeats (TCP, from the HEADER on): a thread sends a STAT "heartbeat"
 * back whenever nothing else went for heartbeat_ms, and a read that waits
 * timeout_ms (SO_RCVTIMEO) declares the primary dead.
 *
 * Anything wrong discards the open epoch: the replica stays at the last
 * committed one. Bad data ends the session with ZD_EXIT_DATA; the input
 * ending without END (peer died, connection reset) with ZD_EXIT_PEER after
 * the failover hook.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "zd/net.h"
#include "zd/replica.h"
#include "zd/stream.h"
#include "zd/util.h"

struct session {
	struct zd_replica *rep;
	const struct zd_recv_opts *opts;
	struct zd_reader rd;
	struct zd_writer ack;
	bool ack_ok;		/* the peer can take ACKs (rfd of zd-send) */
	bool have_header;
	bool back_started;	/* our HEADER went back */
	struct zd_rec_checkpoint ckpt;	/* of the open epoch, echoed before its ACK */
	char *msg;
	size_t msglen;
	struct zd_conn *conn;
	uint64_t last_rx_ns;	/* CLOCK_MONOTONIC of the last record in */
	/* The heartbeat thread shares the back direction. */
	pthread_mutex_t lock;	/* ack writer, last_tx_ns, hb_stop */
	pthread_cond_t wake;
	uint64_t last_tx_ns;
	bool hb_running, hb_stop;
	pthread_t hb;
};

static void *heartbeat_thread(void *arg)
{
	struct session *s = arg;
	uint64_t period = (uint64_t)s->opts->heartbeat_ms * 1000000u;

	pthread_mutex_lock(&s->lock);
	while (!s->hb_stop) {
		uint64_t now = zd_now_ns(), due = s->last_tx_ns + period;

		if (now >= due) {
			struct zd_record r;

			zd_record_init(&r, ZD_REC_STAT);
			r.u.stat.epoch = s->rep->meta.epoch;
			snprintf(r.u.stat.source, sizeof(r.u.stat.source), "heartbeat");
			/* A failed write is the main thread's to report (its
			 * next ACK fails too, or the read times out). */
			if (zd_writer_put(&s->ack, &r) < 0 || zd_writer_flush(&s->ack) < 0)
				break;
			s->last_tx_ns = now;
			due = now + period;
		}
		struct timespec ts;
		uint64_t wall = zd_wall_ns() + (due - now);

		/* cond clocks are CLOCK_REALTIME by default */
		ts.tv_sec = (time_t)(wall / 1000000000u);
		ts.tv_nsec = (long)(wall % 1000000000u);
		pthread_cond_timedwait(&s->wake, &s->lock, &ts);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void heartbeat_stop(struct session *s)
{
	if (!s->hb_running)
		return;
	pthread_mutex_lock(&s->lock);
	s->hb_stop = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->hb, NULL);
	s->hb_running = false;
}

/* "discarded epoch 7, replica stays at epoch 6" */
static void tail(struct session *s, char *buf, size_t len)
{
	uint64_t open = zd_replica_open_epoch(s->rep);

	if (open)
		snprintf(buf, len, "; epoch %" PRIu64 " discarded, replica stays at epoch %" PRIu64,
			 open, s->rep->meta.epoch);
	else
		snprintf(buf, len, "; replica at epoch %" PRIu64, s->rep->meta.epoch);
}

static int bad_record(struct session *s, int rc, uint64_t off, const struct zd_record *r)
{
	char t[128];

	tail(s, t, sizeof(t));
	snprintf(s->msg, s->msglen, "%s: byte %" PRIu64 ": record %" PRIu64 " (%s): %s%s",
		 s->rd.name, off, s->rd.nrec, zd_rec_type_name(r->type), s->rep->err, t);
	zd_replica_stage_abort(s->rep);
	return rc;
}

/* what: the whole reason, starting with the connection's name. */
static int peer_lost(struct session *s, const char *what)
{
	char t[128];
	int rc = ZD_EXIT_PEER;

	tail(s, t, sizeof(t));
	snprintf(s->msg, s->msglen, "%s%s", what, t);
	zd_replica_stage_abort(s->rep);
	heartbeat_stop(s);
	if (s->opts->on_peer_lost)
		rc = s->opts->on_peer_lost(s->rep, s->opts->arg);
	return rc;
}

static int send_back(struct session *s, const struct zd_record *r)
{
	int bad;

	if (!s->ack_ok)
		return 0;
	pthread_mutex_lock(&s->lock);
	bad = zd_writer_put(&s->ack, r) < 0 || zd_writer_flush(&s->ack) < 0;
	s->last_tx_ns = zd_now_ns();
	pthread_mutex_unlock(&s->lock);
	if (bad) {
		char why[256];

		snprintf(why, sizeof(why), "%s: sending %s: %s", s->rd.name, zd_rec_type_name(r->type),
			 strerror(s->ack.err));
		return peer_lost(s, why);
	}
	return 0;
}

static int on_header(struct session *s, struct zd_record *r, uint64_t off)
{
	struct zd_record back;
	int rc;

	if (s->have_header) {
		snprintf(s->rep->err, sizeof(s->rep->err), "second HEADER in one stream");
		return bad_record(s, ZD_EXIT_DATA, off, r);
	}
	/* The HEADER goes back first, so that a refusal can follow as END. */
	back = *r;		/* shallow: the strings stay r's */
	if ((rc = send_back(s, &back)))
		return rc;
	s->back_started = true;
	if ((rc = zd_replica_bind(s->rep, &r->u.header)))
		return bad_record(s, rc, off, r);
	s->have_header = true;
	/* Armed only now: zd-send connects before its input has started, and
	 * nothing may precede the HEADER in either direction. */
	if (s->opts->timeout_ms && (!s->opts->arm_timeout || s->opts->arm_timeout(s->rep, s->opts->arg)) &&
	    zd_conn_set_timeout(s->conn, s->opts->timeout_ms) < 0)
		zd_debug("%s: no heartbeat timeout here (%s)", s->rd.name, strerror(errno));
	if (s->opts->heartbeat_ms && s->ack_ok && s->conn->rfd == s->conn->wfd) {
		if (pthread_create(&s->hb, NULL, heartbeat_thread, s) == 0)
			s->hb_running = true;
		else
			zd_warnx("%s: cannot start the heartbeat thread", s->rd.name);
	}
	return 0;
}

static int on_commit(struct session *s, struct zd_record *r, uint64_t off)
{
	struct zd_record ack;
	int rc;

	if ((rc = zd_replica_commit(s->rep, &r->u.commit, s->opts->verify)))
		return bad_record(s, rc, off, r);
	zd_debug("epoch %" PRIu64 " committed (%" PRIu64 " pages)", r->u.commit.epoch, r->u.commit.pages);
	/* The back stream is a zd-stream any tool can read: each ACK
	 * follows the CHECKPOINT it acknowledges. */
	zd_record_init(&ack, ZD_REC_CHECKPOINT);
	ack.u.ckpt = s->ckpt;
	ack.u.ckpt.epoch = r->u.commit.epoch;
	if ((rc = send_back(s, &ack)))
		return rc;
	zd_record_init(&ack, ZD_REC_ACK);
	ack.u.ack.epoch = r->u.commit.epoch;
	ack.u.ack.commit_wall_ns = s->rep->meta.commit_wall_ns;
	ack.u.ack.status = 0;
	return send_back(s, &ack);
}

/* An epoch opens at its CHECKPOINT, or at a PAGES for a later epoch than the
 * one committed (pre-copied pages arrive before their CHECKPOINT). */
static int ensure_open(struct session *s, uint64_t epoch)
{
	if (zd_replica_open_epoch(s->rep) == epoch)
		return 0;
	memset(&s->ckpt, 0, sizeof(s->ckpt));
	return zd_replica_stage_begin(s->rep, epoch);
}

static int on_record(struct session *s, struct zd_record *r, uint64_t off, bool *end)
{
	struct zd_replica *rep = s->rep;
	int rc = 0;

	if (!s->have_header && r->type != ZD_REC_HEADER) {
		snprintf(rep->err, sizeof(rep->err), "stream does not start with HEADER");
		return bad_record(s, ZD_EXIT_DATA, off, r);
	}
	switch (r->type) {
	case ZD_REC_HEADER:
		return on_header(s, r, off);
	case ZD_REC_CHECKPOINT:
		if (!(rc = ensure_open(s, r->u.ckpt.epoch)))
			s->ckpt = r->u.ckpt;
		break;
	case ZD_REC_DIRTY:
		if (r->u.dirty.epoch != zd_replica_open_epoch(rep)) {
			snprintf(rep->err, sizeof(rep->err), "DIRTY of epoch %" PRIu64 " outside its epoch",
				 r->u.dirty.epoch);
			rc = ZD_EXIT_DATA;
			break;
		}
		rc = zd_replica_stage_dirty(rep, &r->u.dirty.set);
		break;
	case ZD_REC_PAGES:
		if (!(rc = ensure_open(s, r->u.pages.epoch)))
			rc = zd_replica_stage_pages(rep, &r->u.pages);
		break;
	case ZD_REC_STATE:
		rc = zd_replica_stage_state(rep, &r->u.state);
		break;
	case ZD_REC_COMMIT:
		return on_commit(s, r, off);
	case ZD_REC_END:
		if (zd_replica_open_epoch(rep)) {
			snprintf(rep->err, sizeof(rep->err), "END inside epoch %" PRIu64, zd_replica_open_epoch(rep));
			rc = ZD_EXIT_DATA;
			break;
		}
		*end = true;
		return send_back(s, r);
	default:
		/* STANDBY, STAT, ACK and types we do not know carry nothing
		 * the replica keeps. */
		break;
	}
	if (rc)
		return bad_record(s, rc, off, r);
	return 0;
}

int zd_recv_session(struct zd_replica *rep, struct zd_conn *conn,
		    const struct zd_recv_opts *opts, char *msg, size_t msglen)
{
	struct session s = { .rep = rep, .opts = opts, .msg = msg, .msglen = msglen, .conn = conn,
			     .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };
	struct zd_record r;
	bool end = false;
	int rc = 0;

	zd_reader_init(&s.rd, conn->rfd, conn->name);
	s.ack_ok = conn->wfd >= 0;
	zd_writer_init(&s.ack, conn->wfd, zd_output_encoding(conn->wfd, false));
	msg[0] = '\0';
	rep->last_heard_wall_ns = 0;
	s.last_rx_ns = zd_now_ns();
	while (!end && !rc) {
		uint64_t off = s.rd.offset;
		int n;

		zd_record_init(&r, 0);
		n = zd_reader_next(&s.rd, &r);
		if (n < 0) {
			/* EOF inside a record or a reset is the peer dying, not
			 * bad data: only those are grounds for failover. */
			if (s.rd.err == ZD_RERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				char why[256];

				snprintf(why, sizeof(why), "%s: byte %" PRIu64 ": no record or heartbeat for %" PRIu64
					 " ms (--timeout %u)", s.rd.name, s.rd.offset,
					 (zd_now_ns() - s.last_rx_ns) / 1000000u, opts->timeout_ms);
				rc = peer_lost(&s, why);
			} else if (s.rd.err == ZD_RERR_TRUNCATED || s.rd.err == ZD_RERR_IO) {
				rc = peer_lost(&s, s.rd.msg);
			} else {
				char t[128];

				tail(&s, t, sizeof(t));
				snprintf(msg, msglen, "%s%s", s.rd.msg, t);
				zd_replica_stage_abort(rep);
				rc = ZD_EXIT_DATA;
			}
			break;
		}
		if (n == 0) {
			char why[192];

			snprintf(why, sizeof(why), "%s: byte %" PRIu64 ": input ended %s", s.rd.name, off,
				 s.have_header ? "without END" : "before HEADER");
			rc = peer_lost(&s, why);
			break;
		}
		s.last_rx_ns = zd_now_ns();
		rep->last_heard_wall_ns = zd_wall_ns();
		rc = on_record(&s, &r, off, &end);
		zd_record_free(&r);
	}
	heartbeat_stop(&s);
	/* Tell zd-send why it is cut off, if it can still hear us. */
	if (rc == ZD_EXIT_DATA && s.back_started && s.ack_ok) {
		zd_record_init(&r, ZD_REC_END);
		r.u.end.status = 2;
		if (zd_writer_put(&s.ack, &r) == 0)
			zd_writer_flush(&s.ack);
	}
	zd_reader_free(&s.rd);
	zd_writer_free(&s.ack);
	return rc;
}
