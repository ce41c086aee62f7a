/* SPDX-License-Identifier: MIT */
/*
 * zd-send: ships the stream to zd-recv and relays its ACKs to zd-track.
 *
 *   main thread  stdin → capture (pages the stream lacks) → the encoder
 *   wire worker  (--compress zstd|delta, lib/wire/pipe.c) PAGES compressed
 *                while capture goes on → emit() → the wire; per epoch a
 *                STAT "send" record on the log (stdout). Without
 *                compression the main thread emits itself.
 *   ack thread   the wire's back direction → ZD_FB_ACK to zd-track and an
 *                ACK record (with T1 → ACK latency) on the log, then a
 *                STAT "latency": where that time went, this stage's parts
 *                and zd-recv's (its STAT "recv", right behind the ACK)
 *   heartbeat    a STAT "heartbeat" whenever the wire was quiet
 *   link thread  --reconnect: a lost link is reconnected and the epochs
 *                the backup lost are sent again (relink.c)
 *
 * The log is the stream minus page contents and state blobs, plus STAT and
 * ACK, so `… | zd-send host:port | zd-stat` reports the whole run.
 */
#include <errno.h>
#include <poll.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "send_int.h"
#include "zd/capture.h"
#include "zd/fb.h"
#include "zd/util.h"

int zd__send_failed(const struct sender *s)
{
	return __atomic_load_n(&s->fail_code, __ATOMIC_ACQUIRE);
}

bool zd__send_stopped(const struct sender *s)
{
	return __atomic_load_n(&s->stopped, __ATOMIC_ACQUIRE);
}

/* The first error is the run's; true if stop was set now, not before. */
static bool record_error(struct sender *s, bool stop, int code, const char *fmt, va_list ap)
{
	bool first_stop;

	pthread_mutex_lock(&s->fail_lock);
	if (!s->fail_code) {
		vsnprintf(s->fail_msg, sizeof(s->fail_msg), fmt, ap);
		__atomic_store_n(&s->fail_code, code, __ATOMIC_RELEASE);
	}
	first_stop = stop && !s->stopped;
	if (stop)
		__atomic_store_n(&s->stopped, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&s->fail_lock);
	return first_stop;
}

void zd__send_error(struct sender *s, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	record_error(s, false, code, fmt, ap);
	va_end(ap);
}

int zd__send_fail(struct sender *s, int code, const char *fmt, ...)
{
	uint64_t one = 1;
	va_list ap;
	bool first;

	va_start(ap, fmt);
	first = record_error(s, true, code, fmt, ap);
	va_end(ap);
	if (!first)
		return -1;
	/* Each wait below re-checks zd__send_stopped() under its own lock, and
	 * stopped is set before these broadcasts: no wake-up is lost. */
	if (write(s->stop_fd, &one, sizeof(one)) < 0)
		zd_debug("stop eventfd: %s", strerror(errno));
	pthread_mutex_lock(&s->conn_lock);
	zd_conn_abort(&s->conn);
	pthread_mutex_unlock(&s->conn_lock);
	pthread_mutex_lock(&s->wlock);
	s->hb_stop = true;
	s->link_stop = true;
	pthread_cond_broadcast(&s->wake);
	pthread_cond_broadcast(&s->link_cv);
	pthread_mutex_unlock(&s->wlock);
	pthread_mutex_lock(&s->lock);
	pthread_cond_broadcast(&s->wire_cv);
	pthread_mutex_unlock(&s->lock);
	return -1;
}

static bool log_type(uint16_t t)
{
	return t != ZD_REC_PAGES && t != ZD_REC_STATE && t != ZD_REC_DISK;
}

void zd__send_log_put(struct sender *s, const struct zd_record *r)
{
	if (!s->have_log)
		return;
	pthread_mutex_lock(&s->lock);
	if (zd_writer_put(&s->log, r) < 0 ||
	    (r->type != ZD_REC_CHECKPOINT && r->type != ZD_REC_DIRTY && zd_writer_flush(&s->log) < 0)) {
		/* A reader of the log that went away must not stop replication. */
		zd_warnx("stdout: %s: log stream stopped", strerror(s->log.err));
		s->have_log = false;
	}
	pthread_mutex_unlock(&s->lock);
}

int zd__send_fb(struct sender *s, enum zd_fb_op op, uint64_t a)
{
	struct zd_fb_msg m = { .op = op, .a = a };
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	if (s->fb >= 0)
		rc = zd_fb_send(s->fb, &m, NULL, NULL, 0);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void zd__send_relay_ack(struct sender *s, uint64_t e, uint64_t wall_ns)
{
	struct zd_fb_msg m = { .op = ZD_FB_ACK, .epoch = e, .a = wall_ns };

	s->acked = e;
	if (s->fb < 0)
		return;
	if (zd_fb_send(s->fb, &m, NULL, NULL, 0) < 0) {
		/* A tracker that died is the stream's to report (it ends
		 * without END); only a live one matters. */
		if (errno == EPIPE || errno == ECONNRESET)
			zd_debug("control socket: ACK: %s", strerror(errno));
		else
			zd_warn("control socket: ACK: continuing open loop");
		close(s->fb);
		s->fb = -1;
	}
}

/* Bytes on the wire so far, over every connection (wlock held). */
static uint64_t wire_pos(const struct sender *s)
{
	return s->wire_prev + s->wire.bytes + s->wire.buf_len;
}

/* A write to the wire of generation gen failed: to the link thread with
 * --reconnect, else the run's end. */
static void wire_failed(struct sender *s, unsigned gen, int err)
{
	char m[300];

	snprintf(m, sizeof(m), "write: %s", strerror(err));
	if (s->resend) {
		zd__send_link_lost(s, gen, m);
		return;
	}
	/* A peer that closed on us usually said why on the way back (a
	 * refusal, a key it wants): give the ACK thread 2 s to report it. */
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&s->lock);
		bool over = s->ack_over || s->conn.rfd < 0;
		pthread_mutex_unlock(&s->lock);
		if (over)
			break;
		zd_sleep_ns(10000000);
	}
	zd__send_fail(s, ZD_EXIT_PEER, "%s: %s", s->conn.name, m);
}

static const char *const enc_names[] = { "none", "zstd", "delta" };
_Static_assert(ZD_ARRAY_SIZE(enc_names) == ZD_PENC_DELTA + 1, "enc_names");

/* zd-recv took our HEADER and announced what it decodes: can it take
 * what we send? */
int zd__send_check_accept(struct sender *s, int pw, int acc)
{
	if (pw == 1 && acc >= (int)s->wopts.enc)
		return 0;
	if (pw == 1)
		return zd__send_fail(s, ZD_EXIT_PEER, "%s: zd-recv takes PAGES compressed at most as %s (its --compress): "
				     "run zd-send with --compress %s", s->conn.name,
				     acc >= 0 && acc <= ZD_PENC_DELTA ? enc_names[acc] : "?",
				     acc >= 0 && acc <= ZD_PENC_DELTA ? enc_names[acc] : "none");
	return zd__send_fail(s, ZD_EXIT_PEER, "%s: zd-recv does not announce compressed pages (an older zd-recv?): "
			     "run zd-send with --compress none", s->conn.name);
}

static bool link_is_down(struct sender *s)
{
	return s->resend && __atomic_load_n(&s->link_down, __ATOMIC_ACQUIRE);
}

/* Before the first record after the HEADER: zd-recv announced (STAT "wire", right
 * behind its HEADER) that it decodes what we send. 0 or -1 (failed). */
static int check_peer_wire(struct sender *s)
{
	/* As long as an ACK may take (--timeout 0: until the connection
	 * ends, as under emulation), at least 10 s. */
	uint64_t ms = s->to_ms ? ZD_MAX((uint64_t)ZD_AUTH_TIMEOUT_MS, 5 * (uint64_t)s->to_ms) : 0;
	uint64_t deadline = ms ? zd_now_ns() + ms * 1000000u : UINT64_MAX;

	pthread_mutex_lock(&s->lock);
	while (!s->peer_wire && zd_now_ns() < deadline && !link_is_down(s) && !zd__send_stopped(s)) {
		struct timespec ts = zd_cond_deadline(50000000u);

		pthread_cond_timedwait(&s->wire_cv, &s->lock, &ts);
	}
	int pw = s->peer_wire, acc = s->peer_accept;
	pthread_mutex_unlock(&s->lock);
	if (zd__send_stopped(s))
		return -1;
	/* Lost before it answered: the link thread checks the next peer. */
	if (!link_is_down(s) && zd__send_check_accept(s, pw, acc) < 0)
		return -1;
	s->wire_checked = true;
	return 0;
}

static void epoch_stat(struct sender *s, uint64_t epoch);

/* Records as they go on the wire (PAGES encoded): from the wire worker,
 * or from the main thread without compression. raw_bytes counts what the
 * records would take with raw pages, wire_bytes what they take. 0, or
 * -1 once the run failed. */
static int emit(void *arg, const struct zd_record *r)
{
	struct sender *s = arg;
	uint64_t before, grew;
	bool bulk = r->type == ZD_REC_CHECKPOINT || r->type == ZD_REC_DIRTY || r->type == ZD_REC_PAGES ||
		    r->type == ZD_REC_STATE || r->type == ZD_REC_STANDBY || r->type == ZD_REC_DISK;
	int now = 1;
	unsigned gen;
	int err = 0;

	if (zd__send_stopped(s))
		return -1;
	/* Before anything follows the HEADER: an epoch must not start that
	 * the backup cannot decode. */
	if (r->type != ZD_REC_HEADER && s->wopts.enc != ZD_PENC_RAW && !s->wire_checked && s->conn.rfd >= 0 &&
	    check_peer_wire(s) < 0)
		return -1;
	pthread_mutex_lock(&s->wlock);
	if (r->type == ZD_REC_HEADER && !s->have_header) {
		/* a deep copy: each new connection starts with it */
		uint8_t *b = NULL;
		size_t n;
		char m[128];
		int rc = zd_encode_binary(r, 0, &b, &n) < 0 ? -1 : zd_decode_binary(b, n, NULL, &s->header, m, sizeof(m));

		free(b);
		if (rc < 0) {
			pthread_mutex_unlock(&s->wlock);
			return zd__send_fail(s, ZD_EXIT_FAIL, "cannot keep a copy of the HEADER");
		}
		s->have_header = true;
	}
	if (s->resend && (now = zd__send_link_admit(s, r)) < 0) {
		pthread_mutex_unlock(&s->wlock);
		return zd__send_fail(s, ZD_EXIT_FAIL, "resend log: cannot copy a %s record", zd_rec_type_name(r->type));
	}
	gen = s->link_gen;
	before = wire_pos(s);
	/* The COMMIT's time is when its write begins: from then the backup
	 * may read it, even while this thread has not run again. */
	uint64_t t_out = r->type == ZD_REC_COMMIT ? zd_now_ns() : 0;
	if (now && (zd_writer_put(&s->wire, r) < 0 || (!bulk && zd_writer_flush(&s->wire) < 0)))
		err = s->wire.err ? s->wire.err : EIO;
	if (!bulk)
		s->last_tx = zd_now_ns();
	grew = wire_pos(s) - before;
	if (r->type == ZD_REC_HEADER)
		s->header_out = true;
	pthread_mutex_unlock(&s->wlock);
	if (err)
		wire_failed(s, gen, err);
	if (r->type == ZD_REC_COMMIT && now && !err) {
		uint64_t e = r->u.commit.epoch;

		pthread_mutex_lock(&s->lock);
		if (s->t1[e % T1_RING].epoch == e && !s->t1[e % T1_RING].commit_out)
			s->t1[e % T1_RING].commit_out = t_out;
		pthread_mutex_unlock(&s->lock);
	}
	if (zd__send_stopped(s))
		return -1;
	s->ep_raw += grew;
	if (r->type == ZD_REC_PAGES) {
		s->ep_pages += r->u.pages.set.pages;
		s->ep_raw += r->u.pages.set.pages * s->wire.page_size - (grew ? r->u.pages.data_len : 0);
	}
	/* END goes on the log after the last ACK, in zd_send_run(); the ACKs
	 * on the log are the ones this stage relays (with their latency),
	 * not an upstream copy. */
	if (log_type(r->type) && r->type != ZD_REC_END && r->type != ZD_REC_ACK)
		zd__send_log_put(s, r);
	else if (r->type == ZD_REC_END)
		s->end = r->u.end;
	if (r->type == ZD_REC_COMMIT)
		epoch_stat(s, r->u.commit.epoch);
	return 0;
}

/* The capture filter's output: to the wire worker (compression), or
 * straight on the wire. */
static int ship(void *arg, const struct zd_record *r)
{
	struct sender *s = arg;
	char m[256];

	if (r->type == ZD_REC_HEADER && s->wopts.enc != ZD_PENC_RAW && !s->pipe) {
		s->wopts.page_size = r->u.header.page_size;
		if (zd_wire_enc_new(&s->enc, &s->wopts, m, sizeof(m)) < 0) {
			/* EINVAL: the HEADER asks for what the encoder cannot do */
			if (errno == EINVAL)
				return zd__send_fail(s, ZD_EXIT_DATA, "stdin: HEADER: %s", m);
			return zd__send_fail(s, ZD_EXIT_FAIL, "%s", m);
		}
		/* depth 4: capture runs up to four records ahead of the
		 * encoder, a few 16 MiB buffers */
		if (zd_wire_pipe_new(&s->pipe, s->enc, 4, emit, s, m, sizeof(m)) < 0)
			return zd__send_fail(s, ZD_EXIT_FAIL, "%s", m);
	}
	if (!s->pipe)
		return emit(s, r);
	/* The record read from stdin is ours to give away: its pages move
	 * to the worker instead of being copied (captured ones are copied). */
	if (r == s->cur ? zd_wire_pipe_take(s->pipe, s->cur) < 0 : zd_wire_pipe_put(s->pipe, r) < 0)
		return zd__send_fail(s, ZD_EXIT_FAIL, "wire: %s", zd_wire_pipe_error(s->pipe));
	return 0;
}

/* STAT "send" of an epoch, from the emitting thread at its COMMIT. */
static void epoch_stat(struct sender *s, uint64_t epoch)
{
	struct zd_record st;
	uint64_t wire, now_bytes;
	const struct zd_wire_stats *ws = s->enc ? zd_wire_enc_stats(s->enc) : NULL;

	pthread_mutex_lock(&s->wlock);
	now_bytes = wire_pos(s);
	pthread_mutex_unlock(&s->wlock);
	/* what went on the wire since the last COMMIT, heartbeats included */
	wire = now_bytes - s->wire_mark;
	zd_record_init(&st, ZD_REC_STAT);
	st.u.stat.epoch = epoch;
	snprintf(st.u.stat.source, sizeof(st.u.stat.source), "send");
	zd_stat_put(&st.u.stat, "pages", (double)s->ep_pages);
	zd_stat_put(&st.u.stat, "raw_bytes", (double)s->ep_raw);
	zd_stat_put(&st.u.stat, "wire_bytes", (double)wire);
	zd_stat_put(&st.u.stat, "ratio", wire ? (double)s->ep_raw / (double)wire : 1.0);
	if (ws) {
		zd_stat_put(&st.u.stat, "delta_pages", (double)(ws->delta_pages - s->ep_delta));
		zd_stat_put(&st.u.stat, "miss_pages", (double)(ws->miss_pages - s->ep_miss));
		s->ep_delta = ws->delta_pages;
		s->ep_miss = ws->miss_pages;
	}
	zd__send_log_put(s, &st);
	zd_debug("epoch %" PRIu64 ": %" PRIu64 " pages, %" PRIu64 " bytes raw, %" PRIu64 " on the wire",
		 epoch, s->ep_pages, s->ep_raw, wire);
	s->ep_pages = s->ep_raw = 0;
	s->wire_mark = now_bytes;
}

/* Everything written so far is on its way: at the end of the input. With
 * --reconnect a lost link is waited out (the link thread resends). */
static void final_flush(struct sender *s)
{
	for (;;) {
		unsigned gen;
		int rc, err;

		pthread_mutex_lock(&s->wlock);
		while (s->resend && s->link_down && !zd__send_stopped(s))
			pthread_cond_wait(&s->link_cv, &s->wlock);
		if (zd__send_stopped(s)) {
			pthread_mutex_unlock(&s->wlock);
			return;
		}
		gen = s->link_gen;
		rc = zd_writer_flush(&s->wire);
		err = s->wire.err ? s->wire.err : EIO;
		s->last_tx = zd_now_ns();
		pthread_mutex_unlock(&s->wlock);
		if (rc == 0)
			return;
		wire_failed(s, gen, err);
	}
}

/* A STAT "heartbeat" whenever the wire was quiet for hb_ms: zd-recv's
 * --timeout tells a dead primary from one between epochs by it. Only
 * after the HEADER (nothing may precede it), before END, and while the
 * link is up. */
static void *heartbeat_thread(void *arg)
{
	struct sender *s = arg;
	uint64_t period = (uint64_t)s->hb_ms * 1000000u;

	pthread_mutex_lock(&s->wlock);
	while (!s->hb_stop) {
		uint64_t now = zd_now_ns(), due = s->last_tx + period;
		struct timespec ts;

		if (now >= due) {
			if (s->header_out && !s->link_down) {
				struct zd_record r;

				zd_record_init(&r, ZD_REC_STAT);
				r.u.stat.epoch = 0;	/* s->sent is s->lock's */
				snprintf(r.u.stat.source, sizeof(r.u.stat.source), "heartbeat");
				/* A failed write is the main thread's to report,
				 * or the link thread's to mend. */
				if (zd_writer_put(&s->wire, &r) < 0 || zd_writer_flush(&s->wire) < 0) {
					if (!s->resend)
						break;
					unsigned gen = s->link_gen;
					pthread_mutex_unlock(&s->wlock);
					zd__send_link_lost(s, gen, "heartbeat: write failed");
					pthread_mutex_lock(&s->wlock);
				}
			}
			s->last_tx = now;
			due = now + period;
		}
		ts = zd_cond_deadline(due - now);
		pthread_cond_timedwait(&s->wake, &s->wlock, &ts);
	}
	pthread_mutex_unlock(&s->wlock);
	return NULL;
}

/* An ACK's parts of T1 → ACK (CLOCK_MONOTONIC ns, this host), kept
 * until zd-recv's STAT "recv" of the epoch, which comes right behind
 * its ACK; a zd-recv that sends none (an older one) is known by the next
 * ACK, or the end of the connection. */
struct lat {
	bool have;
	uint64_t epoch, latency, t1, ckpt_in, commit_in, commit_out, ack_in;
};

/* part: b - a when both are known and in order */
static void lat_part(struct zd_rec_stat *st, const char *key, uint64_t a, uint64_t b)
{
	if (a && b && b >= a)
		zd_stat_put(st, key, (double)(b - a));
}

/* The epoch's STAT "latency" on the log: this stage's parts of T1 → ACK
 * and, from recv (NULL: none came), zd-recv's, each key as "recv_KEY". */
static void latency_stat(struct sender *s, struct lat *l, const struct zd_rec_stat *recv)
{
	struct zd_record st;
	double to_ack = -1;

	if (!l->have)
		return;
	l->have = false;
	zd_record_init(&st, ZD_REC_STAT);
	st.u.stat.epoch = l->epoch;
	snprintf(st.u.stat.source, sizeof(st.u.stat.source), "latency");
	zd_stat_put(&st.u.stat, "latency_ns", (double)l->latency);
	lat_part(&st.u.stat, "to_ckpt_ns", l->t1, l->ckpt_in);
	lat_part(&st.u.stat, "to_commit_ns", l->ckpt_in, l->commit_in);
	lat_part(&st.u.stat, "to_wire_ns", l->commit_in, l->commit_out);
	if (l->commit_out && l->ack_in >= l->commit_out) {
		to_ack = (double)(l->ack_in - l->commit_out);
		zd_stat_put(&st.u.stat, "to_ack_ns", to_ack);
	}
	for (uint32_t i = 0; recv && i < recv->n && i < ZD_STAT_MAX_KV && st.u.stat.n < ZD_STAT_MAX_KV - 1; i++) {
		char k[sizeof(st.u.stat.kv[0].key)];

		if (snprintf(k, sizeof(k), "recv_%s", recv->kv[i].key) >= (int)sizeof(k) ||
		    !(recv->kv[i].value >= 0))
			continue;
		zd_stat_put(&st.u.stat, k, recv->kv[i].value);
		/* The rest of COMMIT written → ACK read is the way there and
		 * back, and the backup's backlog before it read the COMMIT:
		 * each a difference on one host's clock. */
		if (!strcmp(recv->kv[i].key, "total_ns") && to_ack >= 0)
			zd_stat_put(&st.u.stat, "net_ns", to_ack - ZD_MIN(to_ack, recv->kv[i].value));
	}
	zd__send_log_put(s, &st);
}

/* The ack thread's end: the run's without --reconnect, else the link
 * thread's to mend. */
static void ack_lost(struct sender *s, unsigned gen, const char *m)
{
	if (!s->resend)
		zd__send_fail(s, ZD_EXIT_PEER, "%s", m);
	else
		zd__send_link_lost(s, gen, m);
}

/* The back direction: zd-recv's HEADER, ACKs, END. */
static void *ack_thread(void *arg)
{
	struct sender *s = arg;
	struct zd_reader rd;
	struct zd_record r;
	struct lat lat = { 0 };
	bool end = false;
	char name[128], m[400];
	unsigned gen;
	int n, rfd;

	pthread_mutex_lock(&s->wlock);
	gen = s->link_gen;
	rfd = s->conn.rfd;
	snprintf(name, sizeof(name), "%s", s->conn.name);
	pthread_mutex_unlock(&s->wlock);
	zd_reader_init(&rd, rfd, name);
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		/* zd-recv's HEADER came: from now on it heartbeats. */
		if (rd.nrec == 1 && s->to_ms && zd_conn_set_timeout(&s->conn, s->to_ms) < 0)
			zd_debug("%s: no heartbeat timeout (%s)", name, strerror(errno));
		/* The record right behind zd-recv's HEADER says what it decodes
		 * and, for a reconnect, which epoch it committed last. */
		if (rd.nrec == 2 && r.type != ZD_REC_END) {
			pthread_mutex_lock(&s->lock);
			s->peer_wire = -1;
			if (r.type == ZD_REC_STAT && !strcmp(r.u.stat.source, "wire")) {
				s->peer_wire = 1;
				s->peer_accept = 0;
				for (uint32_t i = 0; i < r.u.stat.n && i < ZD_STAT_MAX_KV; i++) {
					if (!strcmp(r.u.stat.kv[i].key, "accept"))
						s->peer_accept = (int)r.u.stat.kv[i].value;
					if (!strcmp(r.u.stat.kv[i].key, "committed"))
						s->peer_committed = (uint64_t)r.u.stat.kv[i].value;
				}
			}
			pthread_cond_broadcast(&s->wire_cv);
			pthread_mutex_unlock(&s->lock);
		}
		if (r.type == ZD_REC_ACK) {
			uint64_t now = zd_now_ns(), e = r.u.ack.epoch;

			/* the last epoch's zd-recv said nothing about it */
			latency_stat(s, &lat, NULL);
			pthread_mutex_lock(&s->lock);
			if (e > s->sent) {
				pthread_mutex_unlock(&s->lock);
				zd__send_fail(s, ZD_EXIT_PEER, "%s: ACK for an epoch never sent", name);
				goto fatal;
			}
			if (s->t1[e % T1_RING].epoch == e && s->t1[e % T1_RING].t1 &&
			    now >= s->t1[e % T1_RING].t1) {
				r.u.ack.latency_ns = now - s->t1[e % T1_RING].t1;
				lat = (struct lat){ .have = true, .epoch = e, .latency = r.u.ack.latency_ns,
						    .t1 = s->t1[e % T1_RING].t1, .ckpt_in = s->t1[e % T1_RING].ckpt_in,
						    .commit_in = s->t1[e % T1_RING].commit_in,
						    .commit_out = s->t1[e % T1_RING].commit_out, .ack_in = now };
			}
			zd__send_relay_ack(s, e, r.u.ack.commit_wall_ns);
			pthread_mutex_unlock(&s->lock);
			if (s->resend) {
				pthread_mutex_lock(&s->wlock);
				zd_resend_acked(s->resend, e);
				pthread_mutex_unlock(&s->wlock);
			}
			zd_debug("epoch %" PRIu64 " acknowledged", e);
			zd__send_log_put(s, &r);
		} else if (r.type == ZD_REC_STAT && !strcmp(r.u.stat.source, "recv")) {
			if (lat.have && lat.epoch == r.u.stat.epoch)
				latency_stat(s, &lat, &r.u.stat);
		} else if (r.type == ZD_REC_END) {
			latency_stat(s, &lat, NULL);
			end = true;
			/* zd-recv echoes the primary's END (status 1 when the
			 * VM was stopped); only status 2 is its refusal. */
			pthread_mutex_lock(&s->lock);
			bool echo = s->end_sent_status == 2;
			s->end_echoed = true;
			pthread_cond_broadcast(&s->wire_cv);
			pthread_mutex_unlock(&s->lock);
			/* The primary's own failed END (status 2, zd-track
			 * said why) comes back as it went: not a refusal. */
			if (r.u.end.status == 2 && echo)
				zd_debug("%s: the failed stream's END echoed", name);
			else if (r.u.end.status == 2) {
				zd__send_fail(s, ZD_EXIT_PEER, "%s: zd-recv refused the stream (see its log)", name);
				goto fatal;
			}
		}
		zd_record_free(&r);
	}
	pthread_mutex_lock(&s->lock);
	bool done = s->done;
	pthread_mutex_unlock(&s->lock);
	/* The link's opening relay stopped at a bad record: that is the reason. */
	if (n <= 0 && !end && s->conn.auth && (n == 0 || rd.err == ZD_RERR_TRUNCATED)) {
		int arc = zd_conn_auth_status(&s->conn, m, sizeof(m));

		if (arc == ZD_EXIT_DATA) {
			zd__send_fail(s, ZD_EXIT_PEER, "%s", m);
			zd_reader_free(&rd);
			goto over;
		}
		if (arc && !done) {
			zd_reader_free(&rd);
			ack_lost(s, gen, m);
			goto over;
		}
	}
	if (n < 0 && !end && (!done || s->resend)) {
		/* Nothing at all came back: the peer is not a zd-recv, or it
		 * died before answering the HEADER. */
		if (rd.nrec == 0 && rd.err == ZD_RERR_MAGIC && !s->keyed && rd.buf_len - rd.buf_pos >= ZD_AUTH_HELLO_ANY_LEN &&
		    !memcmp(rd.buf + rd.buf_pos, ZD_AUTH_HELLO_ANY, ZD_AUTH_HELLO_ANY_LEN)) {
			zd__send_fail(s, ZD_EXIT_PEER, "%s: zd-recv wants a key (--key) and this zd-send has none", name);
			zd_reader_free(&rd);
			goto over;
		} else if (rd.nrec == 0 && rd.err == ZD_RERR_TRUNCATED)
			snprintf(m, sizeof(m), "%s: connection closed before any reply", name);
		else if (rd.err == ZD_RERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK) && s->to_ms)
			snprintf(m, sizeof(m), "%s: no ACK or heartbeat for %u ms (--timeout): backup lost",
				 name, s->to_ms);
		else
			snprintf(m, sizeof(m), "%s", rd.msg);
		zd_reader_free(&rd);
		ack_lost(s, gen, m);
		goto over;
	}
	if (!end && (!done || s->resend)) {
		snprintf(m, sizeof(m), "%s: %s", name, rd.nrec ? "connection closed by zd-recv" :
			 "connection closed before any reply");
		zd_reader_free(&rd);
		ack_lost(s, gen, m);
		goto over;
	}
	zd_reader_free(&rd);
	goto over;
fatal:
	zd_record_free(&r);
	zd_reader_free(&rd);
over:
	latency_stat(s, &lat, NULL);
	pthread_mutex_lock(&s->lock);
	s->ack_over = true;
	if (!s->peer_wire)
		s->peer_wire = -1;
	pthread_cond_broadcast(&s->wire_cv);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int zd__send_start_ack_thread(struct sender *s)
{
	pthread_mutex_lock(&s->lock);
	s->ack_over = false;
	s->peer_wire = 0;
	s->peer_committed = 0;	/* a zd-recv that does not say: nothing to resume */
	if (pthread_create(&s->ack_tid, NULL, ack_thread, s)) {
		s->ack_over = true;
		s->peer_wire = -1;
		pthread_mutex_unlock(&s->lock);
		return zd__send_fail(s, ZD_EXIT_FAIL, "cannot start the ACK thread");
	}
	s->ack_running = true;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

void zd__send_join_ack_thread(struct sender *s)
{
	pthread_t t;

	pthread_mutex_lock(&s->lock);
	if (!s->ack_running) {
		pthread_mutex_unlock(&s->lock);
		return;
	}
	t = s->ack_tid;
	s->ack_running = false;
	pthread_mutex_unlock(&s->lock);
	pthread_join(t, NULL);
}

/* Connect to o->dest (and prove the key): 0, or -1 with msg. */
int zd__send_connect(struct sender *s, struct zd_conn *c, unsigned timeout_ms, char *msg, size_t len)
{
	const struct zd_send_opts *o = s->o;
	char m[300];
	int rc;

	if (!strncmp(o->dest, ZD_SSH_PREFIX, strlen(ZD_SSH_PREFIX))) {
		/* the far zd-recv checks the same key file, at the same path */
		const char *args[] = { o->key_path ? "--key" : NULL, o->key_path, NULL };

		if (zd_net_ssh(o->dest, args, c, msg, len) < 0)
			return -1;
	} else if (zd_net_connect_within(o->dest, timeout_ms, c, msg, len) < 0) {
		return -1;
	}
	if (o->key && (rc = zd_conn_auth(c, o->key, false,
					 timeout_ms ? (int)timeout_ms : ZD_AUTH_TIMEOUT_MS, m, sizeof(m)))) {
		snprintf(msg, len, "%s: %s", c->name, m);
		zd_conn_close(c);
		return -rc;
	}
	return 0;
}

/* One per run: everything the threads share. */
static struct sender *sender_new(const struct zd_send_opts *o, char *err, size_t errlen)
{
	struct sender *s = zd_xcalloc(1, sizeof(*s));

	s->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (s->stop_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		free(s);
		return NULL;
	}
	s->o = o;
	s->wopts = o->wopts;
	s->hb_ms = o->hb_ms;
	s->to_ms = o->to_ms;
	s->keyed = o->key != NULL;
	s->fb = -1;
	s->end_sent_status = -1;
	s->lost_gen = ~0u;
	s->conn.rfd = s->conn.wfd = -1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->wlock, NULL);
	pthread_mutex_init(&s->conn_lock, NULL);
	pthread_mutex_init(&s->fail_lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	pthread_cond_init(&s->wire_cv, NULL);
	pthread_cond_init(&s->link_cv, NULL);
	return s;
}

static void sender_free(struct sender *s)
{
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->wlock);
	pthread_mutex_destroy(&s->conn_lock);
	pthread_mutex_destroy(&s->fail_lock);
	pthread_cond_destroy(&s->wake);
	pthread_cond_destroy(&s->wire_cv);
	pthread_cond_destroy(&s->link_cv);
	close(s->stop_fd);
	free(s);
}

/* stdin to the wire until END or the run fails; true if END came. */
static bool ship_input(struct sender *s, struct zd_reader *rd, struct zd_capture *cap)
{
	struct zd_record r;
	bool ended = false;
	int n, rc;

	while ((n = zd_reader_next(rd, (zd_record_init(&r, 0), &r))) > 0) {
		uint64_t in_ns = zd_now_ns();

		if (r.type == ZD_REC_HEADER && s->fb < 0) {
			int fb = zd_fb_join(&r.u.header, ZD_ROLE_SEND);

			pthread_mutex_lock(&s->lock);
			s->fb = fb;
			pthread_mutex_unlock(&s->lock);
			zd_capture_set_fb(cap, fb);
			/* ACKs will come (zd-track's --window waits for them);
			 * a reconnecting link says so itself when it is up. */
			if (s->conn.rfd >= 0 && !__atomic_load_n(&s->link_down, __ATOMIC_ACQUIRE))
				zd__send_fb(s, ZD_FB_LINK, 1);
		}
		if (r.type == ZD_REC_CHECKPOINT) {
			pthread_mutex_lock(&s->lock);
			s->t1[r.u.ckpt.epoch % T1_RING].epoch = r.u.ckpt.epoch;
			s->t1[r.u.ckpt.epoch % T1_RING].t1 = r.u.ckpt.t1_ns;
			s->t1[r.u.ckpt.epoch % T1_RING].ckpt_in = in_ns;
			s->t1[r.u.ckpt.epoch % T1_RING].commit_in = 0;
			s->t1[r.u.ckpt.epoch % T1_RING].commit_out = 0;
			pthread_mutex_unlock(&s->lock);
		}
		if (r.type == ZD_REC_COMMIT) {
			/* Before the COMMIT can reach the wire (the capture
			 * filter or a full buffer may flush it): its ACK may
			 * come back before this thread runs again. */
			pthread_mutex_lock(&s->lock);
			s->sent = r.u.commit.epoch;
			if (s->t1[r.u.commit.epoch % T1_RING].epoch == r.u.commit.epoch)
				s->t1[r.u.commit.epoch % T1_RING].commit_in = in_ns;
			pthread_mutex_unlock(&s->lock);
		}
		if (r.type == ZD_REC_END) {
			pthread_mutex_lock(&s->lock);
			s->done = true;	/* the peer may answer END and close */
			s->end_sent_status = (int)r.u.end.status;
			pthread_mutex_unlock(&s->lock);
			/* No heartbeat after END: zd-recv --once closes on END and
			 * a late heartbeat would fail the run with EPIPE. */
			pthread_mutex_lock(&s->wlock);
			s->hb_stop = true;
			pthread_cond_signal(&s->wake);
			pthread_mutex_unlock(&s->wlock);
		}
		s->cur = &r;
		rc = zd_capture_feed(cap, &r);
		s->cur = NULL;
		if (rc) {
			/* a failed ship() said why first */
			zd__send_error(s, rc, "%s", zd_capture_error(cap));
			zd_record_free(&r);
			return false;
		}
		if (r.type == ZD_REC_COMMIT) {
			const struct zd_capture_stats *st = zd_capture_stats(cap);

			/* Without zd-swap upstream this stage drained the epoch
			 * (captured: the copy is ours, whatever the wire does). */
			if (st->captured) {
				struct zd_fb_msg m = { .op = ZD_FB_DRAINED, .epoch = st->epoch, .a = st->captured };

				pthread_mutex_lock(&s->lock);
				if (s->fb >= 0)
					zd_fb_send(s->fb, &m, NULL, NULL, 0);
				pthread_mutex_unlock(&s->lock);
			}
		}
		ended = r.type == ZD_REC_END;
		zd_record_free(&r);
	}
	/* a reader stopped by stop_fd: the failure is said already */
	if (n < 0)
		zd__send_error(s, rd->err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA, "%s", rd->msg);
	else if (!ended)
		zd__send_error(s, ZD_EXIT_DATA, "stdin: input ended without END: the backup keeps its last committed epoch");
	return ended;
}

/* Connect, start the threads, ship stdin, wait for the last ACKs, stop
 * the threads. The first failure is in s. */
static void run(struct sender *s)
{
	const struct zd_send_opts *o = s->o;
	pthread_t hb_tid;
	bool have_hb = false, ended = false;
	struct zd_capture *cap = NULL;
	struct zd_reader rd;
	char msg[300];
	int rc;

	/* Connect once the input has begun, before reading it: a backup
	 * that is not there is the first thing to report, and zd-recv drops
	 * a connection whose HEADER has not come 2 s after it (a slow
	 * upstream, a stage started first by hand). */
	struct pollfd in = { .fd = STDIN_FILENO, .events = POLLIN };

	while (poll(&in, 1, -1) < 0 && errno == EINTR)
		;
	if ((rc = zd__send_connect(s, &s->conn, 0, msg, sizeof(msg)))) {
		zd__send_fail(s, rc < -1 ? -rc : ZD_EXIT_PEER, "%s", msg);
		return;
	}
	zd_writer_init(&s->wire, s->conn.wfd, s->conn.rfd >= 0 ? ZD_ENC_BINARY : zd_output_encoding(s->conn.wfd, false));
	s->have_log = strcmp(o->dest, "-") && (o->json_log || !isatty(STDOUT_FILENO));
	zd_writer_init(&s->log, STDOUT_FILENO, o->json_log ? ZD_ENC_JSON : ZD_ENC_BINARY);
	if (s->conn.rfd >= 0) {
		if (o->reconnect_ms) {
			s->resend = zd_resend_new(o->resend_bytes);
			zd__send_link_start(s);
		}
		zd__send_start_ack_thread(s);
		if (s->hb_ms && !zd__send_stopped(s)) {
			if (pthread_create(&hb_tid, NULL, heartbeat_thread, s))
				zd__send_fail(s, ZD_EXIT_FAIL, "cannot start the heartbeat thread");
			else
				have_hb = true;
		}
	}

	zd_reader_init(&rd, STDIN_FILENO, "stdin");
	rd.stop_fd = s->stop_fd;
	if (!zd__send_stopped(s)) {
		cap = zd_capture_new(ship, s, -1);
		ended = ship_input(s, &rd, cap);
	}
	if (s->pipe && zd_wire_pipe_finish(s->pipe, msg, sizeof(msg)) < 0)
		zd__send_fail(s, ZD_EXIT_FAIL, "wire: %s", msg);
	s->pipe = NULL;
	if (!zd__send_failed(s))
		final_flush(s);
	if (have_hb) {
		pthread_mutex_lock(&s->wlock);
		s->hb_stop = true;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->wlock);
		pthread_join(hb_tid, NULL);
	}
	pthread_mutex_lock(&s->lock);
	s->done = true;
	pthread_mutex_unlock(&s->lock);
	/* FIN forward, then wait for the last ACKs and zd-recv's END; with
	 * --reconnect through as many links as it takes. */
	pthread_mutex_lock(&s->wlock);
	zd_conn_shutdown_write(&s->conn);
	pthread_mutex_unlock(&s->wlock);
	if (s->resend && ended && !zd__send_failed(s)) {
		pthread_mutex_lock(&s->lock);
		while (!s->end_echoed && !zd__send_stopped(s))
			pthread_cond_wait(&s->wire_cv, &s->lock);
		pthread_mutex_unlock(&s->lock);
	}
	if (s->resend && s->resync)
		zd__send_error(s, ZD_EXIT_PEER,
			  "%s: the input ended before the backup's full resync: it keeps its last committed epoch",
			  s->conn.name);
	zd__send_link_stop(s);
	if (s->resend || zd__send_stopped(s)) {
		pthread_mutex_lock(&s->conn_lock);
		zd_conn_abort(&s->conn);
		pthread_mutex_unlock(&s->conn_lock);
	}
	zd__send_join_ack_thread(s);
	zd_capture_free(cap);
	zd_reader_free(&rd);
	/* The END goes on the log unless a failure cut the run short. */
	if (ended && !zd__send_stopped(s)) {
		struct zd_record e;

		zd_record_init(&e, ZD_REC_END);
		e.u.end = s->end;
		zd__send_log_put(s, &e);
	}
	if (s->have_log && zd_writer_flush(&s->log) < 0)
		zd__send_error(s, ZD_EXIT_FAIL, "stdout: write: %s", strerror(s->log.err));
}

int zd_send_run(const struct zd_send_opts *o, char *err, size_t errlen)
{
	struct sender *s = sender_new(o, err, errlen);
	int rc;

	if (!s)
		return ZD_EXIT_FAIL;
	run(s);
	pthread_mutex_lock(&s->lock);
	if (s->fb >= 0)
		close(s->fb);
	pthread_mutex_unlock(&s->lock);
	zd_writer_free(&s->log);
	zd_writer_free(&s->wire);
	zd_wire_enc_free(s->enc);
	zd_conn_close(&s->conn);
	zd_resend_free(s->resend);
	if (s->have_header)
		zd_record_free(&s->header);
	rc = zd__send_failed(s);
	snprintf(err, errlen, "%s", rc ? s->fail_msg : "");
	sender_free(s);
	return rc;
}
