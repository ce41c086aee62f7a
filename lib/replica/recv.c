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
 *   COMMIT      verify, commit point; ACK(epoch, commit wall ns); apply;
 *               then STAT "recv": where the epoch's time went here
 *   END         the primary stopped cleanly; END back, session over
 *   STAT "heartbeat"  nothing to do: any record is a sign of life
 *
 * The wire (zd/wire.h): with a key the connection starts with the key
 * handshake and every record in and out passes a sealing relay (lib/net/
 * link.c); after its HEADER zd-recv announces in a STAT "wire" record the
 * PAGES encodings it takes, and compressed PAGES are decoded here, XOR
 * deltas against the replica's committed page (zd_replica_base) or, for a
 * page pre-copied earlier in the open epoch, that staged copy (the overlay
 * below) — the newest copy the stream delivered, as the sender's shadow.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include "zd/net.h"
#include "zd/replica.h"
#include "zd/status.h"
#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

/* Pages pre-copied in the open epoch, by pfn: a later copy of the same
 * page in the epoch may be a delta against them. Where each one's staged
 * copy is in journal.tmp, not a copy of it: the pre-copy set can be the
 * whole guest, and a copy of every pre-copied page in memory (four of
 * them, with the table's slack) let a small stream of compressed
 * pre-copies claim gigabytes. Open addressing. */
struct overlay {
	uint64_t epoch;		/* the epoch the pages belong to, 0 = none */
	size_t n, slots;	/* pages held; table size (power of two) */
	uint64_t *pfn;		/* per slot, UINT64_MAX = empty */
	uint64_t *off;		/* per slot: the page's offset in journal.tmp */
	const uint8_t *jmap;	/* journal.tmp mapped for the decode under way */
};

static void overlay_free(struct overlay *o)
{
	free(o->pfn);
	free(o->off);
	memset(o, 0, sizeof(*o));
}

static size_t overlay_find(const struct overlay *o, uint64_t pfn)
{
	size_t i = (size_t)(zd_hash64(&pfn, sizeof(pfn)) & (o->slots - 1));

	while (o->pfn[i] != pfn && o->pfn[i] != UINT64_MAX)
		i = (i + 1) & (o->slots - 1);
	return i;
}

/* The journal offset of pfn's pre-copy in epoch, or UINT64_MAX. */
static uint64_t overlay_get(const struct overlay *o, uint64_t epoch, uint64_t pfn)
{
	if (!o->n || o->epoch != epoch)
		return UINT64_MAX;
	size_t i = overlay_find(o, pfn);
	return o->pfn[i] == pfn ? o->off[i] : UINT64_MAX;
}

static void overlay_grow(struct overlay *o, size_t want)
{
	struct overlay b = { .epoch = o->epoch, .slots = 64 };

	while (b.slots < 2 * want)
		b.slots *= 2;
	if (b.slots <= o->slots)
		return;
	b.pfn = zd_xmalloc(b.slots * sizeof(*b.pfn));
	memset(b.pfn, 0xff, b.slots * sizeof(*b.pfn));
	b.off = zd_xmalloc(b.slots * sizeof(*b.off));
	for (size_t i = 0; i < o->slots; i++) {
		if (o->pfn[i] == UINT64_MAX)
			continue;
		size_t j = overlay_find(&b, o->pfn[i]);
		b.pfn[j] = o->pfn[i];
		b.off[j] = o->off[i];
		b.n++;
	}
	overlay_free(o);
	*o = b;
}

/* Remember a pre-copy record, its pages staged in journal.tmp from offset
 * at on. */
static void overlay_add(struct overlay *o, uint32_t page_size, const struct zd_rec_pages *p, uint64_t at)
{
	struct zd_pageset_iter it;
	uint64_t pfn;

	if (o->epoch != p->epoch) {
		if (o->n)
			memset(o->pfn, 0xff, o->slots * sizeof(*o->pfn));
		o->n = 0;
		o->epoch = p->epoch;
	}
	overlay_grow(o, o->n + p->set.pages);
	zd_pageset_iter_init(&it, &p->set);
	while (zd_pageset_iter_next(&it, &pfn)) {
		size_t i = overlay_find(o, pfn);
		if (o->pfn[i] != pfn) {
			o->pfn[i] = pfn;
			o->n++;
		}
		o->off[i] = at;
		at += page_size;
	}
}

static int zd__recv_fail(struct zd_replica *rep, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int zd__recv_fail(struct zd_replica *rep, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rep->err, sizeof(rep->err), fmt, ap);
	va_end(ap);
	return ZD_EXIT_DATA;
}

struct session {
	struct zd_replica *rep;
	const struct zd_recv_opts *opts;
	struct zd_reader rd;
	struct zd_writer ack;
	bool ack_ok;		/* the peer can take ACKs (rfd of zd-send) */
	bool acks_lost;		/* an ACK write failed: the peer is gone */
	uint64_t unacked_skipped;	/* whole epochs read after that, not applied */
	bool have_header;
	bool back_started;	/* our HEADER went back */
	bool vm_died;		/* END status 3: the primary's VM died */
	struct zd_rec_checkpoint ckpt;	/* of the open epoch, echoed before its ACK */
	char *msg;
	size_t msglen;
	struct zd_conn *conn;
	uint64_t last_rx_ns;	/* CLOCK_MONOTONIC of the last record in */
	struct zd_wire_dec *dec;	/* from the HEADER on */
	struct overlay ov;
	/* The heartbeat thread shares the back direction. */
	pthread_mutex_t lock;	/* ack writer, last_tx_ns, hb_stop */
	pthread_cond_t wake;
	uint64_t last_tx_ns;
	bool hb_running, hb_stop;
	pthread_t hb;
	/* Until the HEADER: the watchdog cuts a peer that has not sent one
	 * by opts->hello_by_ns (it would hold the accept loop). */
	int raw_fd;		/* the TCP socket itself, under any key relay */
	bool hello_done, hello_expired, wd_running;
	pthread_t wd;
	uint64_t notified_ns;	/* last STATUS= to a service manager */
	/* The open epoch's time here, CLOCK_MONOTONIC ns, for its STAT
	 * "recv": its first record read (0: none yet), the time spent on its
	 * records (staging them), and in that the PAGES' decoding and their
	 * writes to journal.tmp. */
	uint64_t ep_first_ns, ep_stage_ns, ep_decode_ns, ep_journal_ns;
};

static void *hello_watchdog(void *arg)
{
	struct session *s = arg;
	struct timespec ts = zd_cond_deadline(s->opts->hello_by_ns - ZD_MIN(zd_now_ns(), s->opts->hello_by_ns));

	pthread_mutex_lock(&s->lock);
	while (!s->hello_done && !s->hb_stop)
		if (pthread_cond_timedwait(&s->wake, &s->lock, &ts) == ETIMEDOUT)
			break;
	if (!s->hello_done && !s->hb_stop) {
		s->hello_expired = true;
		/* Both ways: the key handshake and the reader see the end. */
		shutdown(s->raw_fd, SHUT_RDWR);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void hello_watchdog_stop(struct session *s)
{
	if (!s->wd_running)
		return;
	pthread_mutex_lock(&s->lock);
	s->hello_done = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->wd, NULL);
	s->wd_running = false;
}

/* Only the session that owns the replica — it bound the replica's own
 * run, whose primary has not said END, and at least one of whose epochs
 * is committed — may have its loss taken for the primary's. */
static bool owns_replica(const struct session *s)
{
	const struct zd_replica *rep = s->rep;

	return s->have_header && rep->run && rep->run == rep->meta.run && rep->meta.epoch > 0 && !rep->meta.ended;
}

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
		struct timespec ts = zd_cond_deadline(due - now);

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

static void threads_stop(struct session *s)
{
	heartbeat_stop(s);
	if (s->wd_running) {
		pthread_mutex_lock(&s->lock);
		s->hb_stop = true;
		pthread_cond_broadcast(&s->wake);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->wd, NULL);
		s->wd_running = false;
	}
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
	char t[128], u[96] = "";
	int rc = ZD_EXIT_PEER;

	tail(s, t, sizeof(t));
	if (s->unacked_skipped)
		snprintf(u, sizeof(u), " (%" PRIu64 " whole epoch%s after the last ACK not applied)",
			 s->unacked_skipped, s->unacked_skipped == 1 ? "" : "s");
	zd_replica_stage_abort(s->rep);
	threads_stop(s);
	if (!owns_replica(s)) {
		/* A scanner, a stray client, a late or forged stream: nothing
		 * of it was applied, and its end is no sign of the primary. */
		snprintf(s->msg, s->msglen, "%s: %s; replica stays at epoch %" PRIu64 ", no takeover",
			 what, !s->have_header ? "no HEADER" : s->rep->meta.ended ? "its run had ended"
			 : "not the replica's owner", s->rep->meta.epoch);
		return ZD_EXIT_PEER;
	}
	snprintf(s->msg, s->msglen, "%s%s%s", what, t, u);
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
		/* The primary is gone (or no longer reads us). Read on to the
		 * end of the input, which decides the loss, once (declaring it
		 * here, mid-stream, ran the fence again at the input's end);
		 * what is read from here on is not applied (on_record). */
		zd_debug("%s: sending %s: %s: no more ACKs; reading what is left", s->rd.name,
			 zd_rec_type_name(r->type), strerror(s->ack.err));
		s->ack_ok = false;
		s->acks_lost = true;
	}
	return 0;
}

/* Live status: who feeds the replica, and how far behind the backup is —
 * bytes already in the socket but not yet read, epochs announced but not
 * committed. */
static void status_bound(struct session *s, const struct zd_rec_header *h)
{
	struct zd_status *st = s->opts->status;

	zd_status_set(st, "role", json_string("backup"));
	zd_status_set(st, "replica", json_string(s->rep->dir));
	zd_status_set(st, "peer", json_string(strncmp(s->conn->name, "peer ", 5) ? s->conn->name : s->conn->name + 5));
	zd_status_set(st, "target", json_string(h->target ? h->target : ""));
	zd_status_set(st, "mode", json_string(zd_mode_name((enum zd_mode)h->mode)));
	zd_status_set(st, "epoch", json_integer((json_int_t)s->rep->meta.epoch));
	zd_status_mark(st, "connected");
}

static void status_committed(struct session *s, uint64_t epoch)
{
	struct zd_status *st = s->opts->status;
	int queued = 0;

	if (!st)
		return;
	zd_status_set(st, "epoch", json_integer((json_int_t)epoch));
	zd_status_mark(st, "last_commit");
	if (s->raw_fd >= 0 && ioctl(s->raw_fd, FIONREAD, &queued) == 0)
		zd_status_set(st, "lag_bytes", json_integer(queued));
	zd_status_set(st, "lag_epochs", json_integer((json_int_t)(s->ckpt.epoch > epoch ? s->ckpt.epoch - epoch : 0)));
}

static int on_header(struct session *s, struct zd_record *r, uint64_t off)
{
	struct zd_record back;
	int rc;

	if (s->have_header) {
		snprintf(s->rep->err, sizeof(s->rep->err), "second HEADER in one stream");
		return bad_record(s, ZD_EXIT_DATA, off, r);
	}
	/* The HEADER is here: the watchdog's work is done, whatever binding
	 * the replica costs (creating memory.img and fsyncing it took more
	 * than hello_ms under an emulated dom0, and cut a punctual sender). */
	hello_watchdog_stop(s);
	if (s->hello_expired) {
		snprintf(s->rep->err, sizeof(s->rep->err), "HEADER came after the watchdog cut the connection");
		return bad_record(s, ZD_EXIT_PEER, off, r);
	}
	/* The HEADER goes back first, so that a refusal can follow as END. */
	back = *r;		/* shallow: the strings stay r's */
	if ((rc = send_back(s, &back)))
		return rc;
	s->back_started = true;
	if ((rc = zd_replica_bind(s->rep, &r->u.header)))
		return bad_record(s, rc, off, r);
	s->have_header = true;
	if (s->opts->on_bound)
		s->opts->on_bound(s->rep, s->conn->name, s->opts->bound_arg);
	status_bound(s, &r->u.header);
	/* What this end decodes, right behind the HEADER (before any
	 * heartbeat can come between): zd-send checks it before it sends a
	 * compressed page, so a zd-recv without it is told apart. */
	zd_record_init(&back, ZD_REC_STAT);
	snprintf(back.u.stat.source, sizeof(back.u.stat.source), "wire");
	zd_stat_put(&back.u.stat, "version", ZD_WIRE_VERSION);
	zd_stat_put(&back.u.stat, "accept", s->opts->accept_set ? s->opts->accept : ZD_PENC_DELTA);
	zd_stat_put(&back.u.stat, "key", s->conn->auth != NULL);
	/* A reconnecting zd-send resends what came after it. */
	zd_stat_put(&back.u.stat, "committed", (double)s->rep->meta.epoch);
	if ((rc = send_back(s, &back)))
		return rc;
	char m[256];
	if (zd_wire_dec_new(&s->dec, s->rep->meta.page_size, m, sizeof(m)) < 0) {
		snprintf(s->rep->err, sizeof(s->rep->err), "%s", m);
		return bad_record(s, ZD_EXIT_DATA, off, r);
	}
	/* Armed only now: zd-send connects before its input has started, and
	 * nothing may precede the HEADER in either direction. */
	if (s->opts->timeout_ms && (!s->opts->arm_timeout || s->opts->arm_timeout(s->rep, s->opts->arg)) &&
	    zd_conn_set_timeout(s->conn, s->opts->timeout_ms) < 0)
		zd_debug("%s: no heartbeat timeout here (%s)", s->rd.name, strerror(errno));
	if (s->opts->heartbeat_ms && s->ack_ok && s->conn->sock) {
		if (pthread_create(&s->hb, NULL, heartbeat_thread, s) == 0)
			s->hb_running = true;
		else
			zd_warnx("%s: cannot start the heartbeat thread", s->rd.name);
	}
	/* A standby that cannot follow this stream refuses it now, before
	 * any epoch is taken (zd-send hears END status 2). Last: making one
	 * (xl create) takes seconds, with the heartbeats already going. */
	if (s->opts->standby && (rc = zd_standby_bind(s->opts->standby, s->rep, &r->u.header)))
		return bad_record(s, rc, off, r);
	return 0;
}

/* Where an epoch's time went on this side: zd-send puts it beside its own
 * parts of T1 → ACK (its STAT "latency"). t holds the COMMIT read, the
 * ends of verify and commit mark, the start of the ACK's write and the
 * end of the apply after it (CLOCK_MONOTONIC ns); pre, what went before
 * the verify (the standby's note), counted with the ACK's part. */
static int recv_stat(struct session *s, uint64_t epoch, const uint64_t t[5], uint64_t pre)
{
	const struct zd_replica *rep = s->rep;
	struct zd_record st;
	uint64_t verify = t[1] - t[0] - pre, mark = t[2] - t[1];

	zd_record_init(&st, ZD_REC_STAT);
	st.u.stat.epoch = epoch;
	snprintf(st.u.stat.source, sizeof(st.u.stat.source), "recv");
	if (s->ep_first_ns && s->ep_first_ns <= t[0]) {
		zd_stat_put(&st.u.stat, "receive_ns", t[0] - s->ep_first_ns);
		zd_stat_put(&st.u.stat, "stage_ns", s->ep_stage_ns);
		zd_stat_put(&st.u.stat, "decode_ns", s->ep_decode_ns);
		zd_stat_put(&st.u.stat, "journal_ns", s->ep_journal_ns);
	}
	zd_stat_put(&st.u.stat, "verify_ns", verify);
	zd_stat_put(&st.u.stat, "checksum_ns", ZD_MIN(rep->sum_ns, verify));
	zd_stat_put(&st.u.stat, "fsync_ns", ZD_MIN(rep->fsync_ns, mark));
	zd_stat_put(&st.u.stat, "commit_ns", mark - ZD_MIN(rep->fsync_ns, mark));
	zd_stat_put(&st.u.stat, "ack_ns", t[3] - t[2] + pre);
	zd_stat_put(&st.u.stat, "total_ns", t[3] - t[0]);
	zd_stat_put(&st.u.stat, "apply_ns", t[4] - t[3]);	/* after the ACK's write began */
	return send_back(s, &st);
}

static int on_commit(struct session *s, struct zd_record *r, uint64_t off)
{
	struct zd_record ack;
	uint64_t t[5], pre;
	int rc;

	/* t[0]: the COMMIT read; what comes before the verify (the
	 * standby's note) counts with the ACK's part. */
	t[0] = s->last_rx_ns;
	if (s->opts->standby)
		zd_standby_note(s->opts->standby, s->rep);
	pre = zd_now_ns() - t[0];
	s->rep->sum_ns = s->rep->fsync_ns = 0;
	/* zd_replica_commit's three steps, timed one by one, the ACK between
	 * the last two: once the journal is renamed the epoch survives a crash
	 * (every start applies it again), so the primary need not wait for the
	 * apply too. */
	if ((rc = zd_replica_stage_verify(s->rep, &r->u.commit, s->opts->verify)))
		return bad_record(s, rc, off, r);
	t[1] = zd_now_ns();
	if ((rc = zd_replica_commit_mark(s->rep)))
		return bad_record(s, rc, off, r);
	t[2] = zd_now_ns();
	/* The back stream is a zd-stream any tool can read: each ACK
	 * follows the CHECKPOINT it acknowledges. */
	zd_record_init(&ack, ZD_REC_CHECKPOINT);
	ack.u.ckpt = s->ckpt;
	ack.u.ckpt.epoch = r->u.commit.epoch;
	if ((rc = send_back(s, &ack)))
		return rc;
	zd_record_init(&ack, ZD_REC_ACK);
	ack.u.ack.epoch = r->u.commit.epoch;
	ack.u.ack.commit_wall_ns = s->rep->marked_wall_ns;
	ack.u.ack.status = 0;
	/* Before the ACK's write, not after: on loopback the write wakes
	 * zd-send, which may read the ACK before this thread runs again, and
	 * a part of ours must end before T1 → ACK does. */
	t[3] = zd_now_ns();
	if ((rc = send_back(s, &ack)))
		return rc;
	if ((rc = zd_replica_apply(s->rep)))
		return bad_record(s, rc, off, r);
	t[4] = zd_now_ns();
	{
		bool checked = s->opts->verify != ZD_VERIFY_NEVER;
		uint32_t f = r->u.commit.flags;

		zd_debug("epoch %" PRIu64 " committed (%" PRIu64 " pages%s%s)", r->u.commit.epoch, r->u.commit.pages,
			 checked && (f & ZD_COMMIT_HAS_MEMSUM) ? "; memory checksum equal" : "",
			 checked && (f & ZD_COMMIT_HAS_DISKSUM) ? "; disk checksum equal" : "");
	}
	zd_notify_status(&s->notified_ns, "epoch %" PRIu64 " committed, from %s", r->u.commit.epoch,
			 s->conn->name);
	status_committed(s, r->u.commit.epoch);
	if (s->ack_ok && (rc = recv_stat(s, r->u.commit.epoch, t, pre)))
		return rc;
	s->ep_first_ns = s->ep_stage_ns = s->ep_decode_ns = s->ep_journal_ns = 0;
	/* After the ACK: the primary does not wait for the standby. */
	if (s->opts->standby)
		zd_standby_fill(s->opts->standby, s->rep);
	return 0;
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

/* The receiver's copy of pfn for an XOR delta. */
static const uint8_t *delta_base(void *arg, uint64_t pfn)
{
	struct session *s = arg;
	uint64_t off = overlay_get(&s->ov, zd_replica_open_epoch(s->rep), pfn);

	return off != UINT64_MAX && s->ov.jmap ? s->ov.jmap + off : zd_replica_base(s->rep, pfn);
}

struct stage_sink {
	struct zd_replica *rep;
	int rc;		/* the replica's, when a write failed */
	uint64_t ns;	/* time spent writing (and hashing) into journal.tmp */
};

static int stage_data(void *arg, const uint8_t *pages, size_t len)
{
	struct stage_sink *k = arg;
	uint64_t t0 = zd_now_ns();

	k->rc = zd_replica_stage_pages_data(k->rep, pages, len);
	k->ns += zd_now_ns() - t0;
	return k->rc;
}

static const char *const enc_names[] = { "none", "zstd", "delta" };
_Static_assert(ZD_ARRAY_SIZE(enc_names) == ZD_PENC_DELTA + 1, "enc_names");

/* Decode (compressed, delta), stage, remember a pre-copied page. */
static int on_pages(struct session *s, struct zd_rec_pages *in)
{
	struct zd_replica *rep = s->rep;
	struct zd_rec_pages p;
	char m[256];
	int rc;

	if (in->enc != ZD_PENC_RAW && s->opts->accept_set && in->enc > s->opts->accept)
		return zd__recv_fail(rep, "PAGES encoded %s, refused here (--compress %s)",
				     in->enc <= ZD_PENC_DELTA ? enc_names[in->enc] : "?",
				     enc_names[s->opts->accept]);
	/* The journal entry around the decode, the pages written and hashed
	 * chunk by chunk as they come out of it (zd_wire_decode_to). */
	struct zd_rec_pages shape = *in;
	struct stage_sink k = { rep, 0, 0 };
	uint64_t t0;

	shape.enc = ZD_PENC_RAW;
	shape.data = NULL;
	shape.data_len = (uint32_t)ZD_MIN(in->set.pages * rep->meta.page_size, (uint64_t)UINT32_MAX);
	if ((rc = zd_replica_stage_pages_begin(rep, &shape)))
		return rc;
	uint64_t at = zd_replica_stage_pages_at(rep);

	s->ov.jmap = NULL;
	if (in->enc == ZD_PENC_DELTA && s->ov.n && s->ov.epoch == in->epoch &&
	    (rc = zd_replica_stage_map(rep, &s->ov.jmap)))
		return rc;
	t0 = zd_now_ns();
	rc = zd_wire_decode_to(s->dec, in, delta_base, s, stage_data, &k, &p, m, sizeof(m));
	t0 = zd_now_ns() - t0;
	s->ep_journal_ns += k.ns;
	s->ep_decode_ns += t0 - ZD_MIN(k.ns, t0);
	if (rc < 0)
		return k.rc ? k.rc : zd__recv_fail(rep, "%s", m);
	if ((rc = zd_replica_stage_pages_end(rep, &shape)))
		return rc;
	if (p.flags & ZD_PAGES_PRECOPY)
		overlay_add(&s->ov, rep->meta.page_size, &p, at);
	/* The pages stay for the apply after COMMIT: the decoder's buffer,
	 * or a raw record's own data, taken from it. */
	uint8_t *buf = zd_wire_dec_take(s->dec);

	if (!buf && in->enc == ZD_PENC_RAW) {
		buf = in->data;
		in->data = NULL;
	}
	zd_replica_stage_pages_keep(rep, buf, &p);
	return 0;
}

static int on_record(struct session *s, struct zd_record *r, uint64_t off, bool *end)
{
	struct zd_replica *rep = s->rep;
	int rc = 0;

	if (!s->have_header && r->type != ZD_REC_HEADER) {
		snprintf(rep->err, sizeof(rep->err), "stream does not start with HEADER");
		return bad_record(s, ZD_EXIT_DATA, off, r);
	}
	/* With the ACKs lost no epoch read from here on was acknowledged, so
	 * none released its output: taking over at the last acknowledged one
	 * is as correct. Applying them (decode, write, verify, fsync) held
	 * the takeover back by whatever the socket buffers had let the
	 * primary run ahead, seconds under load, and the clients waited that
	 * long. The rest is only read for its END (no takeover then). */
	if (s->acks_lost && r->type != ZD_REC_END && r->type != ZD_REC_HEADER) {
		if (r->type == ZD_REC_COMMIT)
			s->unacked_skipped++;
		return 0;
	}
	if (s->acks_lost && r->type == ZD_REC_END && r->u.end.status != ZD_END_VM_DIED &&
	    zd_replica_open_epoch(rep))
		zd_replica_stage_abort(rep);
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
			rc = on_pages(s, &r->u.pages);
		break;
	case ZD_REC_STATE:
		rc = zd_replica_stage_state(rep, &r->u.state);
		if (!rc && s->opts->standby)
			rc = zd_standby_state(s->opts->standby, rep, &r->u.state);
		break;
	case ZD_REC_DISK:	/* lib/replica/disk.c, journaled with the pages */
		rc = zd_replica_stage_disk(rep, &r->u.disk);
		break;
	case ZD_REC_COMMIT:
		return on_commit(s, r, off);
	case ZD_REC_END:
		/* The VM died on the primary: a loss, told rather than
		 * guessed from silence. The checkpoint it died in, if any,
		 * is discarded by peer_lost like one a dead sender cut. */
		if (r->u.end.status == ZD_END_VM_DIED) {
			s->vm_died = true;
			*end = true;
			return send_back(s, r);
		}
		if (zd_replica_open_epoch(rep)) {
			snprintf(rep->err, sizeof(rep->err), "END inside epoch %" PRIu64, zd_replica_open_epoch(rep));
			rc = ZD_EXIT_DATA;
			break;
		}
		/* Said at -v: whatever ended the primary's stream, its VM is
		 * alive or was stopped on purpose: no takeover. */
		zd_debug("%s: END from the primary (status %u, %" PRIu64 " epochs): not a failover",
			 s->rd.name, r->u.end.status, r->u.end.epochs);
		if ((rc = zd_replica_end_run(rep)))
			return bad_record(s, rc, off, r);
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

	msg[0] = '\0';
	/* Bound at its HEADER: until then the connection is nobody's. */
	rep->run = 0;
	s.raw_fd = conn->rfd;
	if (opts->hello_by_ns && conn->sock) {
		if (pthread_create(&s.wd, NULL, hello_watchdog, &s) == 0)
			s.wd_running = true;
		else
			zd_warnx("%s: cannot start the HEADER watchdog", conn->name);
	}
	if (opts->key) {
		char m[256];
		uint64_t now = zd_now_ns();
		int ms = opts->hello_by_ns ? (int)((opts->hello_by_ns - ZD_MIN(now, opts->hello_by_ns)) / 1000000u) + 1
			 : ZD_AUTH_TIMEOUT_MS;

		/* Before any record: a peer without the key gets nothing. */
		if ((rc = zd_conn_auth(conn, opts->key, true, ms, m, sizeof(m)))) {
			threads_stop(&s);
			if (s.hello_expired)
				snprintf(msg, msglen, "%s: no key handshake and HEADER within %u ms: dropped; replica stays at epoch %" PRIu64,
					 conn->name, opts->hello_ms, rep->meta.epoch);
			else
				snprintf(msg, msglen, "%s: %s", conn->name, m);
			return rc;
		}
	}
	zd_reader_init(&s.rd, conn->rfd, conn->name);
	s.ack_ok = conn->wfd >= 0;
	zd_writer_init(&s.ack, conn->wfd, zd_output_encoding(conn->wfd, false));
	rep->last_heard_wall_ns = 0;
	s.last_rx_ns = zd_now_ns();
	while (!end && !rc) {
		uint64_t off = s.rd.offset;
		int n;

		zd_record_init(&r, 0);
		n = zd_reader_next(&s.rd, &r);
		if ((n == 0 || (n < 0 && s.rd.err == ZD_RERR_TRUNCATED)) && conn->auth) {
			char m[300];
			int arc = zd_conn_auth_status(conn, m, sizeof(m));

			/* The relay stopped at a bad record: bad data, not a
			 * dead peer, whatever the reader saw after it. */
			if (arc == ZD_EXIT_DATA) {
				char t[128];

				tail(&s, t, sizeof(t));
				snprintf(msg, msglen, "%s%s", m, t);
				zd_replica_stage_abort(rep);
				rc = ZD_EXIT_DATA;
				break;
			}
			if (arc) {
				rc = peer_lost(&s, m);
				break;
			}
		}
		if (n < 0 && s.rd.err == ZD_RERR_MAGIC && s.rd.nrec == 0 && !opts->key &&
		    s.rd.buf_len - s.rd.buf_pos >= ZD_AUTH_HELLO_ANY_LEN &&
		    !memcmp(s.rd.buf + s.rd.buf_pos, ZD_AUTH_HELLO_ANY, ZD_AUTH_HELLO_ANY_LEN)) {
			snprintf(msg, msglen, "%s: the peer authenticates with a key (--key) and this zd-recv has none",
				 conn->name);
			rc = ZD_EXIT_PEER;
			break;
		}
		if (n <= 0 && s.hello_expired && !s.have_header) {
			snprintf(msg, msglen, "%s: no HEADER within %u ms: dropped; replica stays at epoch %" PRIu64,
				 conn->name, opts->hello_ms, rep->meta.epoch);
			rc = ZD_EXIT_PEER;
			break;
		}
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
		/* An epoch's records, for its STAT "recv": from the first one
		 * of its own read after the last COMMIT (a CHECKPOINT, or a
		 * pre-copy's PAGES, which come before it; not the STANDBY
		 * prediction zd-mru sends as the last epoch ends), the time
		 * spent on each up to its COMMIT. */
		bool part = r.type == ZD_REC_CHECKPOINT || r.type == ZD_REC_DIRTY || r.type == ZD_REC_PAGES ||
			    r.type == ZD_REC_STATE || r.type == ZD_REC_DISK;

		if (part && !s.ep_first_ns)
			s.ep_first_ns = s.last_rx_ns;
		rc = on_record(&s, &r, off, &end);
		if (part)
			s.ep_stage_ns += zd_now_ns() - s.last_rx_ns;
		zd_record_free(&r);
	}
	if (!rc && s.vm_died) {
		char why[192];

		snprintf(why, sizeof(why), "%s: the primary's VM died (END status 3 after epoch %" PRIu64 ")",
			 s.rd.name, rep->meta.epoch);
		rc = peer_lost(&s, why);
		if (zd_replica_end_run(rep) && !rc)
			snprintf(msg, msglen, "%s", rep->err), rc = ZD_EXIT_FAIL;
	}
	threads_stop(&s);
	/* Tell zd-send why it is cut off, if it can still hear us (bad data,
	 * or a standby that cannot follow the stream). */
	if ((rc == ZD_EXIT_DATA || rc == ZD_EXIT_TARGET) && s.back_started && s.ack_ok) {
		zd_record_init(&r, ZD_REC_END);
		r.u.end.status = 2;
		if (zd_writer_put(&s.ack, &r) == 0)
			zd_writer_flush(&s.ack);
	}
	zd_reader_free(&s.rd);
	zd_writer_free(&s.ack);
	zd_wire_dec_free(s.dec);
	overlay_free(&s.ov);
	return rc;
}
