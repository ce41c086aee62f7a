/* SPDX-License-Identifier: MIT */
/*
 * zd-send: ships the stream to zd-recv and relays its ACKs to zd-track.
 *
 *   main thread  stdin → capture (pages the stream lacks) → the encoder
 *   wire worker  (--compress zstd|delta, lib/wire/pipe.c) PAGES compressed
 *                while capture goes on → the wire; per epoch a STAT "send"
 *                record on the log (stdout). Without compression the main
 *                thread writes the wire itself.
 *   ack thread   the wire's back direction → ZD_FB_ACK to zd-track and an
 *                ACK record (with T1 → ACK latency) on the log
 *
 * The log is the stream minus page contents and state blobs, plus STAT and
 * ACK, so `… | zd-send host:port | zd-stat` reports the whole run.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "zd/capture.h"
#include "zd/fb.h"
#include "zd/net.h"
#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

#define USAGE "usage: zd-send [--compress none|zstd|delta] [--level N] [--delta-cache SIZE]\n" \
	      "               [--key FILE] [--json-log] [--heartbeat MS] [--timeout MS] [-v] DEST\n"

static void help(void)
{
	printf(USAGE
	       "\n"
	       "Ship a zd-stream(5) read on stdin to zd-recv at DEST and relay the backup's\n"
	       "acknowledgements to zd-track. Epochs whose pages are not in the stream are\n"
	       "captured from the target first (as zd-swap does).\n"
	       "\n"
	       "  DEST             HOST:PORT or [V6]:PORT (TCP); ssh:[USER@]HOST[:PATH]: run\n"
	       "                   zd-recv --stdio --replica PATH on HOST over ssh (PATH\n"
	       "                   default: zd-replica; $ZD_SSH, $ZD_REMOTE_RECV: the ssh\n"
	       "                   command and remote program); or - for stdout (no ACKs\n"
	       "                   come back then)\n"
	       "  -c, --compress ENC  PAGES as sent: none, zstd, or delta (XOR with the copy\n"
	       "                   the backup holds, then zstd; a page not in the cache goes\n"
	       "                   as zstd) (default: delta)\n"
	       "      --level N    zstd level, %d..%d (default: %d)\n"
	       "      --delta-cache SIZE  memory for the copies of pages sent that delta XORs\n"
	       "                   against, e.g. 512M, 2G; least recently sent dropped first\n"
	       "                   (default: 256M)\n"
	       "      --key FILE   pre-shared key (16..4096 bytes, mode 0600, the same file as\n"
	       "                   zd-recv's): challenge-response at connect and a MAC on\n"
	       "                   every record both ways (not with DEST -) (default: none)\n"
	       "  -j, --json-log   write the log stream on stdout as JSON lines, even on a\n"
	       "                   terminal (default: binary when stdout is not a terminal,\n"
	       "                   none on a terminal or with DEST -)\n"
	       "      --heartbeat MS  send a heartbeat when nothing else went for MS (TCP;\n"
	       "                   0 = never) (default: 100)\n"
	       "      --timeout MS  zd-recv is gone after MS without an ACK or heartbeat\n"
	       "                   from it (TCP; 0 = only when the connection ends)\n"
	       "                   (default: 2000: the primary only loses its backup by it,\n"
	       "                   so a stalled backup gets longer than a stalled primary)\n"
	       "  -v, --verbose    log each epoch on stderr\n"
	       "  -h, --help       this text\n"
	       "  -V, --version    print the version\n"
	       "\n"
	       "The log stream is the input without PAGES and STATE, plus per epoch a STAT\n"
	       "record (source \"send\": pages, raw_bytes, wire_bytes, ratio, delta_pages,\n"
	       "miss_pages) and the ACK records.\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime error, 2 usage, 3 bad input stream, 4 the target\n"
	       "cannot be read, 5 zd-recv unreachable, gone, refused the key or does not take\n"
	       "the compression.\n", ZSTD_minCLevel(), ZSTD_maxCLevel(), ZD_WIRE_LEVEL_DEFAULT);
}

#define T1_RING 4096

struct sender {
	struct zd_conn conn;
	struct zd_writer wire;
	struct zd_writer log;
	bool have_log;
	int fb;
	pthread_mutex_t lock;	/* log writer, t1 ring, done, fb */
	struct { uint64_t epoch, t1; } t1[T1_RING];
	bool done;		/* END sent: the peer may close now */
	struct zd_rec_end end;	/* the END to log last */
	int end_sent_status;	/* status of the END from stdin, -1 none yet */
	uint64_t acked;
	uint64_t sent;		/* highest COMMIT on the wire */
	/* per epoch, the emitting thread's */
	uint64_t ep_pages, ep_raw, ep_delta, ep_miss;
	uint64_t wire_mark;
	/* compression: the encoder is the worker's once the pipe runs */
	struct zd_wire_opts wopts;
	struct zd_wire_enc *enc;
	struct zd_wire_pipe *pipe;
	bool keyed;
	/* zd-recv's STAT "wire" (ack thread → emitter) */
	pthread_cond_t wire_cv;	/* with lock */
	int peer_wire;		/* 0 not yet, 1 announced, -1 not a wire peer */
	int peer_accept;
	bool ack_over;		/* the ack thread has returned */
	bool wire_checked;	/* the emitter's: peer_wire was fine */
	/* Heartbeats share the wire with the main thread. */
	pthread_mutex_t wlock;	/* wire, last_tx, header_out, hb_stop */
	pthread_cond_t wake;
	uint64_t last_tx;
	bool header_out, hb_stop;
	unsigned hb_ms, to_ms;
};

static pthread_mutex_t die_lock = PTHREAD_MUTEX_INITIALIZER;

/* From either thread: one line, exit. */
static _Noreturn void die_once(int code, const char *fmt, const char *a, const char *b)
{
	pthread_mutex_lock(&die_lock);
	zd_diex(code, fmt, a, b);
}

static bool log_type(uint16_t t)
{
	return t != ZD_REC_PAGES && t != ZD_REC_STATE;
}

static void log_put(struct sender *s, const struct zd_record *r)
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

static void wire_failed(struct sender *s)
{
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
	die_once(ZD_EXIT_PEER, "%s: write: %s", s->conn.name, strerror(s->wire.err));
}

static const char *const enc_names[] = { "none", "zstd", "delta" };
_Static_assert(ZD_ARRAY_SIZE(enc_names) == ZD_PENC_DELTA + 1, "enc_names");

/* Before the first record after the HEADER: zd-recv announced (STAT "wire", right
 * behind its HEADER) that it decodes what we send. */
static void check_peer_wire(struct sender *s)
{
	/* As long as an ACK may take (--timeout 0: until the connection
	 * ends, as under emulation), at least 10 s. */
	uint64_t ms = s->to_ms ? ZD_MAX((uint64_t)ZD_AUTH_TIMEOUT_MS, 5 * (uint64_t)s->to_ms) : 0;
	uint64_t deadline = ms ? zd_now_ns() + ms * 1000000u : UINT64_MAX;
	char m[300];

	pthread_mutex_lock(&s->lock);
	while (!s->peer_wire && zd_now_ns() < deadline) {
		struct timespec ts;
		uint64_t wall = zd_wall_ns() + 50000000u;

		ts.tv_sec = (time_t)(wall / 1000000000u);
		ts.tv_nsec = (long)(wall % 1000000000u);
		pthread_cond_timedwait(&s->wire_cv, &s->lock, &ts);
	}
	int pw = s->peer_wire, acc = s->peer_accept;
	pthread_mutex_unlock(&s->lock);
	if (pw == 1 && acc >= (int)s->wopts.enc) {
		s->wire_checked = true;
		return;
	}
	if (pw == 1)
		snprintf(m, sizeof(m), "%s: zd-recv takes PAGES compressed at most as %s (its --compress): "
			 "run zd-send with --compress %s", s->conn.name,
			 acc >= 0 && acc <= ZD_PENC_DELTA ? enc_names[acc] : "?",
			 acc >= 0 && acc <= ZD_PENC_DELTA ? enc_names[acc] : "none");
	else
		snprintf(m, sizeof(m), "%s: zd-recv does not announce compressed pages (an older zd-recv?): "
			 "run zd-send with --compress none", s->conn.name);
	die_once(ZD_EXIT_PEER, "%s%s", m, "");
}

static void epoch_stat(struct sender *s, uint64_t epoch);

/* Records as they go on the wire (PAGES encoded): from the wire worker,
 * or from the main thread without compression. raw_bytes counts what the
 * records would take with raw pages, wire_bytes what they take. */
static int emit(void *arg, const struct zd_record *r)
{
	struct sender *s = arg;
	uint64_t before, grew;
	bool bulk = r->type == ZD_REC_CHECKPOINT || r->type == ZD_REC_DIRTY || r->type == ZD_REC_PAGES ||
		    r->type == ZD_REC_STATE || r->type == ZD_REC_STANDBY;

	/* Before anything follows the HEADER: an epoch must not start that
	 * the backup cannot decode. */
	if (r->type != ZD_REC_HEADER && s->wopts.enc != ZD_PENC_RAW && !s->wire_checked && s->conn.rfd >= 0)
		check_peer_wire(s);
	pthread_mutex_lock(&s->wlock);
	before = s->wire.bytes + s->wire.buf_len;
	if (zd_writer_put(&s->wire, r) < 0 || (!bulk && zd_writer_flush(&s->wire) < 0))
		wire_failed(s);
	if (!bulk)
		s->last_tx = zd_now_ns();
	grew = s->wire.bytes + s->wire.buf_len - before;
	if (r->type == ZD_REC_HEADER)
		s->header_out = true;
	pthread_mutex_unlock(&s->wlock);
	s->ep_raw += grew;
	if (r->type == ZD_REC_PAGES) {
		s->ep_pages += r->u.pages.set.pages;
		s->ep_raw += r->u.pages.set.pages * s->wire.page_size - r->u.pages.data_len;
	}
	/* END goes on the log after the last ACK, in main(); the ACKs on the
	 * log are the ones this stage relays (with their latency), not an
	 * upstream copy. */
	if (log_type(r->type) && r->type != ZD_REC_END && r->type != ZD_REC_ACK)
		log_put(s, r);
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
		if (zd_wire_enc_new(&s->enc, &s->wopts, m, sizeof(m)) < 0)
			die_once(ZD_EXIT_DATA, "stdin: HEADER: %s%s", m, "");
		/* depth 4: capture runs up to four records ahead of the
		 * encoder, a few 16 MiB buffers */
		s->pipe = zd_wire_pipe_new(s->enc, 4, emit, s);
	}
	if (!s->pipe)
		return emit(s, r);
	if (zd_wire_pipe_put(s->pipe, r) < 0)
		die_once(ZD_EXIT_FAIL, "wire: %s%s", zd_wire_pipe_error(s->pipe), "");
	return 0;
}

static void stat_kv(struct zd_rec_stat *st, const char *key, double v)
{
	snprintf(st->kv[st->n].key, sizeof(st->kv[st->n].key), "%s", key);
	st->kv[st->n++].value = v;
}

/* STAT "send" of an epoch, from the emitting thread at its COMMIT. */
static void epoch_stat(struct sender *s, uint64_t epoch)
{
	struct zd_record st;
	uint64_t wire, now_bytes;
	const struct zd_wire_stats *ws = s->enc ? zd_wire_enc_stats(s->enc) : NULL;

	pthread_mutex_lock(&s->wlock);
	now_bytes = s->wire.bytes + s->wire.buf_len;
	pthread_mutex_unlock(&s->wlock);
	/* what went on the wire since the last COMMIT, heartbeats included */
	wire = now_bytes - s->wire_mark;
	zd_record_init(&st, ZD_REC_STAT);
	st.u.stat.epoch = epoch;
	snprintf(st.u.stat.source, sizeof(st.u.stat.source), "send");
	stat_kv(&st.u.stat, "pages", (double)s->ep_pages);
	stat_kv(&st.u.stat, "raw_bytes", (double)s->ep_raw);
	stat_kv(&st.u.stat, "wire_bytes", (double)wire);
	stat_kv(&st.u.stat, "ratio", wire ? (double)s->ep_raw / (double)wire : 1.0);
	if (ws) {
		stat_kv(&st.u.stat, "delta_pages", (double)(ws->delta_pages - s->ep_delta));
		stat_kv(&st.u.stat, "miss_pages", (double)(ws->miss_pages - s->ep_miss));
		s->ep_delta = ws->delta_pages;
		s->ep_miss = ws->miss_pages;
	}
	log_put(s, &st);
	zd_debug("epoch %" PRIu64 ": %" PRIu64 " pages, %" PRIu64 " bytes raw, %" PRIu64 " on the wire",
		 epoch, s->ep_pages, s->ep_raw, wire);
	s->ep_pages = s->ep_raw = 0;
	s->wire_mark = now_bytes;
}

static int wire_flush(struct sender *s)
{
	int rc;

	pthread_mutex_lock(&s->wlock);
	rc = zd_writer_flush(&s->wire);
	s->last_tx = zd_now_ns();
	pthread_mutex_unlock(&s->wlock);
	return rc;
}

/* A STAT "heartbeat" whenever the wire was quiet for hb_ms: zd-recv's
 * --timeout tells a dead primary from one between epochs by it. Only
 * after the HEADER (nothing may precede it) and before END. */
static void *heartbeat_thread(void *arg)
{
	struct sender *s = arg;
	uint64_t period = (uint64_t)s->hb_ms * 1000000u;

	pthread_mutex_lock(&s->wlock);
	while (!s->hb_stop) {
		uint64_t now = zd_now_ns(), due = s->last_tx + period;
		struct timespec ts;
		uint64_t wall;

		if (now >= due) {
			if (s->header_out) {
				struct zd_record r;

				zd_record_init(&r, ZD_REC_STAT);
				r.u.stat.epoch = 0;	/* s->sent is s->lock's */
				snprintf(r.u.stat.source, sizeof(r.u.stat.source), "heartbeat");
				/* A failed write is the main thread's to report. */
				if (zd_writer_put(&s->wire, &r) < 0 || zd_writer_flush(&s->wire) < 0)
					break;
			}
			s->last_tx = now;
			due = now + period;
		}
		wall = zd_wall_ns() + (due - now);
		ts.tv_sec = (time_t)(wall / 1000000000u);
		ts.tv_nsec = (long)(wall % 1000000000u);
		pthread_cond_timedwait(&s->wake, &s->wlock, &ts);
	}
	pthread_mutex_unlock(&s->wlock);
	return NULL;
}

/* The back direction: zd-recv's HEADER, ACKs, END. */
static void *ack_thread(void *arg)
{
	struct sender *s = arg;
	struct zd_reader rd;
	struct zd_record r;
	bool end = false;
	int n;

	zd_reader_init(&rd, s->conn.rfd, s->conn.name);
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		/* zd-recv's HEADER came: from now on it heartbeats. */
		if (rd.nrec == 1 && s->to_ms && zd_conn_set_timeout(&s->conn, s->to_ms) < 0)
			zd_debug("%s: no heartbeat timeout (%s)", s->conn.name, strerror(errno));
		/* The record right behind zd-recv's HEADER says what it decodes. */
		if (rd.nrec == 2 && r.type != ZD_REC_END) {
			pthread_mutex_lock(&s->lock);
			s->peer_wire = -1;
			if (r.type == ZD_REC_STAT && !strcmp(r.u.stat.source, "wire")) {
				s->peer_wire = 1;
				s->peer_accept = 0;
				for (uint32_t i = 0; i < r.u.stat.n && i < ZD_STAT_MAX_KV; i++)
					if (!strcmp(r.u.stat.kv[i].key, "accept"))
						s->peer_accept = (int)r.u.stat.kv[i].value;
			}
			pthread_cond_broadcast(&s->wire_cv);
			pthread_mutex_unlock(&s->lock);
		}
		if (r.type == ZD_REC_ACK) {
			uint64_t now = zd_now_ns(), e = r.u.ack.epoch;

			pthread_mutex_lock(&s->lock);
			if (e > s->sent) {
				pthread_mutex_unlock(&s->lock);
				zd_record_free(&r);
				zd_reader_free(&rd);
				die_once(ZD_EXIT_PEER, "%s: %s", s->conn.name, "ACK for an epoch never sent");
			}
			if (s->t1[e % T1_RING].epoch == e && s->t1[e % T1_RING].t1)
				r.u.ack.latency_ns = now - s->t1[e % T1_RING].t1;
			s->acked = e;
			if (s->fb >= 0) {
				struct zd_fb_msg m = { .op = ZD_FB_ACK, .epoch = e, .a = r.u.ack.commit_wall_ns };

				if (zd_fb_send(s->fb, &m, NULL, NULL, 0) < 0) {
					/* A tracker that died is the stream's to report
					 * (it ends without END); only a live one matters. */
					if (errno == EPIPE || errno == ECONNRESET)
						zd_debug("control socket: ACK: %s", strerror(errno));
					else
						zd_warn("control socket: ACK: continuing open loop");
					close(s->fb);
					s->fb = -1;
				}
			}
			pthread_mutex_unlock(&s->lock);
			zd_debug("epoch %" PRIu64 " acknowledged", e);
			log_put(s, &r);
		} else if (r.type == ZD_REC_END) {
			end = true;
			/* zd-recv echoes the primary's END (status 1 when the
			 * VM was stopped); only status 2 is its refusal. */
			pthread_mutex_lock(&s->lock);
			bool echo = s->end_sent_status == 2;
			pthread_mutex_unlock(&s->lock);
			/* The primary's own failed END (status 2, zd-track
			 * said why) comes back as it went: not a refusal. */
			if (r.u.end.status == 2 && echo) {
				zd_debug("%s: the failed stream's END echoed", s->conn.name);
			} else if (r.u.end.status == 2) {
				zd_record_free(&r);
				zd_reader_free(&rd);
				die_once(ZD_EXIT_PEER, "%s: %s", s->conn.name,
					 "zd-recv refused the stream (see its log)");
			}
		}
		zd_record_free(&r);
	}
	pthread_mutex_lock(&s->lock);
	bool done = s->done;
	pthread_mutex_unlock(&s->lock);
	/* The link's MAC relay stopped at a bad record: that is the reason. */
	if (n <= 0 && !done && s->conn.auth && (n == 0 || rd.err == ZD_RERR_TRUNCATED)) {
		char m[300];
		int arc = zd_conn_auth_status(&s->conn, m, sizeof(m));

		if (arc) {
			zd_reader_free(&rd);
			die_once(arc == ZD_EXIT_DATA ? ZD_EXIT_PEER : arc, "%s%s", m, "");
		}
	}
	if (n < 0 && !done) {
		char m[300];

		/* Nothing at all came back: the peer is not a zd-recv, or it
		 * died before answering the HEADER. */
		if (rd.nrec == 0 && rd.err == ZD_RERR_MAGIC && !s->keyed && rd.buf_len - rd.buf_pos >= 7 &&
		    !memcmp(rd.buf + rd.buf_pos, "ZDAUTH1", 7))
			snprintf(m, sizeof(m), "%s: zd-recv wants a key (--key) and this zd-send has none",
				 s->conn.name);
		else if (rd.nrec == 0 && rd.err == ZD_RERR_TRUNCATED)
			snprintf(m, sizeof(m), "%s: connection closed before any reply", s->conn.name);
		else if (rd.err == ZD_RERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK) && s->to_ms)
			snprintf(m, sizeof(m), "%s: no ACK or heartbeat for %u ms (--timeout): backup lost",
				 s->conn.name, s->to_ms);
		else
			snprintf(m, sizeof(m), "%s", rd.msg);
		zd_reader_free(&rd);
		die_once(ZD_EXIT_PEER, "%s%s", m, "");
	}
	if (!end && !done) {
		zd_reader_free(&rd);
		die_once(ZD_EXIT_PEER, "%s: %s", s->conn.name, rd.nrec ? "connection closed by zd-recv" :
			 "connection closed before any reply");
	}
	zd_reader_free(&rd);
	pthread_mutex_lock(&s->lock);
	s->ack_over = true;
	if (!s->peer_wire)
		s->peer_wire = -1;
	pthread_cond_broadcast(&s->wire_cv);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json-log", no_argument, NULL, 'j' },
		{ "compress", required_argument, NULL, 'c' },
		{ "level", required_argument, NULL, 'L' },
		{ "delta-cache", required_argument, NULL, 'D' },
		{ "key", required_argument, NULL, 'K' },
		{ "heartbeat", required_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static struct sender s = { .fb = -1, .end_sent_status = -1, .lock = PTHREAD_MUTEX_INITIALIZER, .wlock = PTHREAD_MUTEX_INITIALIZER,
				   .wake = PTHREAD_COND_INITIALIZER, .wire_cv = PTHREAD_COND_INITIALIZER,
				   .hb_ms = 100, .to_ms = 2000,
				   .wopts = { .enc = ZD_PENC_DELTA, .level = ZD_WIRE_LEVEL_DEFAULT,
					      .cache_bytes = ZD_WIRE_CACHE_DEFAULT } };
	static struct zd_auth_key key;
	const char *key_path = NULL;
	bool level_set = false, cache_set = false;
	int64_t lv;
	pthread_t hb_tid;
	bool have_hb = false;
	uint64_t v;
	struct zd_capture *cap;
	struct zd_reader rd;
	struct zd_record r;
	bool json_log = false, ended = false, have_thread = false;
	pthread_t tid;
	char msg[300];
	const char *dest;
	int c, n, rc = 0;

	zd_set_progname(argv[0]);
	/* Records of up to 16 MiB come and go every epoch: keep them on the
	 * heap instead of a fresh mmap each time, whose page faults cost more
	 * than the copy (2x the throughput under nested virtualisation). */
	mallopt(M_MMAP_THRESHOLD, 32 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	while ((c = getopt_long(argc, argv, "jc:vhV", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json_log = true; break;
		case 'c':
			if (zd_wire_enc_parse(optarg, &s.wopts.enc) < 0)
				zd_diex(ZD_EXIT_USAGE, "--compress: '%s' is not none, zstd or delta (see --help)", optarg);
			break;
		case 'L': {
			char *end;

			errno = 0;
			lv = strtoll(optarg, &end, 10);
			if (errno || !*optarg || *end || lv < ZSTD_minCLevel() || lv > ZSTD_maxCLevel())
				zd_diex(ZD_EXIT_USAGE, "--level: '%s' is not a zstd level in %d..%d (see --help)",
					optarg, ZSTD_minCLevel(), ZSTD_maxCLevel());
			s.wopts.level = (int)lv;
			level_set = true;
			break;
		}
		case 'D':
			if (zd_parse_size(optarg, &v) < 0 || v > (1ull << 40))
				zd_diex(ZD_EXIT_USAGE, "--delta-cache: '%s' is not a size up to 1T (e.g. 512M) (see --help)",
					optarg);
			s.wopts.cache_bytes = v;
			cache_set = true;
			break;
		case 'K': key_path = optarg; break;
		case 'H':
		case 'T':
			if (zd_parse_u64(optarg, &v) < 0 || v > 3600000)
				zd_diex(ZD_EXIT_USAGE, "--heartbeat/--timeout: '%s' is not a number of ms in 0..3600000 (see --help)",
					optarg);
			if (c == 'H')
				s.hb_ms = (unsigned)v;
			else
				s.to_ms = (unsigned)v;
			break;
		case 'v': zd_verbose = 1; break;
		case 'h': help(); return 0;
		case 'V': printf("zd-send " ZD_VERSION "\n"); return 0;
		default: fputs(USAGE, stderr); return ZD_EXIT_USAGE;
		}
	}
	if (argc - optind != 1)
		zd_diex(ZD_EXIT_USAGE, "%s (see --help)", optind < argc ? "too many arguments" : "DEST is required");
	dest = argv[optind];
	if (s.to_ms && s.hb_ms >= s.to_ms)
		zd_diex(ZD_EXIT_USAGE, "--heartbeat must be shorter than --timeout (or --timeout 0) (see --help)");
	if (level_set && s.wopts.enc == ZD_PENC_RAW)
		zd_diex(ZD_EXIT_USAGE, "--level goes with --compress zstd or delta (see --help)");
	if (cache_set && s.wopts.enc != ZD_PENC_DELTA)
		zd_diex(ZD_EXIT_USAGE, "--delta-cache goes with --compress delta (see --help)");
	if (key_path && !strcmp(dest, "-"))
		zd_diex(ZD_EXIT_USAGE, "--key needs a connection both ways: not with DEST - (see --help)");
	if (key_path) {
		if (zd_auth_key_load(&key, key_path, msg, sizeof(msg)) < 0)
			zd_diex(ZD_EXIT_USAGE, "--key %s", msg);
		s.keyed = true;
	}
	if (!strncmp(dest, ZD_SSH_PREFIX, strlen(ZD_SSH_PREFIX))) {
		char uh[256], path[1024];

		if (zd_net_ssh_split(dest, uh, sizeof(uh), path, sizeof(path), msg, sizeof(msg)) < 0)
			zd_diex(ZD_EXIT_USAGE, "%s", msg);
	} else if (strcmp(dest, "-")) {
		char h[256], p[16];

		if (zd_net_split(dest, h, sizeof(h), p, sizeof(p), msg, sizeof(msg)) < 0)
			zd_diex(ZD_EXIT_USAGE, "%s", msg);
		if (!*h)
			zd_diex(ZD_EXIT_USAGE, "%s: no host to send to", dest);
	} else if (json_log) {
		zd_diex(ZD_EXIT_USAGE, "--json-log needs stdout, which DEST - uses for the stream");
	}
	signal(SIGPIPE, SIG_IGN);

	/* Connect before reading anything: a backup that is not there is
	 * the first thing to report. */
	if (!strncmp(dest, ZD_SSH_PREFIX, strlen(ZD_SSH_PREFIX))) {
		/* the far zd-recv checks the same key file, at the same path */
		const char *args[] = { key_path ? "--key" : NULL, key_path, NULL };

		if (zd_net_ssh(dest, args, &s.conn, msg, sizeof(msg)) < 0)
			zd_diex(ZD_EXIT_PEER, "%s", msg);
	} else if (zd_net_connect(dest, &s.conn, msg, sizeof(msg)) < 0) {
		zd_diex(ZD_EXIT_PEER, "%s", msg);
	}
	if (key_path && (rc = zd_conn_auth(&s.conn, &key, false, ZD_AUTH_TIMEOUT_MS, msg, sizeof(msg))))
		zd_diex(rc, "%s: %s", s.conn.name, msg);
	zd_writer_init(&s.wire, s.conn.wfd, s.conn.rfd >= 0 ? ZD_ENC_BINARY : zd_output_encoding(s.conn.wfd, false));
	s.have_log = strcmp(dest, "-") && (json_log || !isatty(STDOUT_FILENO));
	zd_writer_init(&s.log, STDOUT_FILENO, json_log ? ZD_ENC_JSON : ZD_ENC_BINARY);
	if (s.conn.rfd >= 0) {
		if (pthread_create(&tid, NULL, ack_thread, &s))
			zd_diex(ZD_EXIT_FAIL, "cannot start the ACK thread");
		have_thread = true;
		if (s.hb_ms) {
			if (pthread_create(&hb_tid, NULL, heartbeat_thread, &s))
				zd_diex(ZD_EXIT_FAIL, "cannot start the heartbeat thread");
			have_hb = true;
		}
	}

	zd_reader_init(&rd, STDIN_FILENO, "stdin");
	cap = zd_capture_new(ship, &s, -1);
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		if (r.type == ZD_REC_HEADER && s.fb < 0) {
			int fb = zd_fb_join(&r.u.header, ZD_ROLE_SEND);

			pthread_mutex_lock(&s.lock);
			s.fb = fb;
			pthread_mutex_unlock(&s.lock);
			zd_capture_set_fb(cap, fb);
		}
		if (r.type == ZD_REC_CHECKPOINT) {
			pthread_mutex_lock(&s.lock);
			s.t1[r.u.ckpt.epoch % T1_RING].epoch = r.u.ckpt.epoch;
			s.t1[r.u.ckpt.epoch % T1_RING].t1 = r.u.ckpt.t1_ns;
			pthread_mutex_unlock(&s.lock);
		}
		if (r.type == ZD_REC_COMMIT) {
			/* Before the COMMIT can reach the wire (the capture
			 * filter or a full buffer may flush it): its ACK may
			 * come back before this thread runs again. */
			pthread_mutex_lock(&s.lock);
			s.sent = r.u.commit.epoch;
			pthread_mutex_unlock(&s.lock);
		}
		if (r.type == ZD_REC_END) {
			pthread_mutex_lock(&s.lock);
			s.done = true;	/* the peer may answer END and close */
			s.end_sent_status = (int)r.u.end.status;
			pthread_mutex_unlock(&s.lock);
			/* No heartbeat after END: zd-recv --once closes on END and
			 * a late heartbeat would fail the run with EPIPE. */
			pthread_mutex_lock(&s.wlock);
			s.hb_stop = true;
			pthread_cond_signal(&s.wake);
			pthread_mutex_unlock(&s.wlock);
		}
		if ((rc = zd_capture_feed(cap, &r))) {
			zd_warnx("%s", zd_capture_error(cap));
			zd_record_free(&r);
			break;
		}
		if (r.type == ZD_REC_COMMIT) {
			const struct zd_capture_stats *st = zd_capture_stats(cap);

			/* Without zd-swap upstream this stage drained the epoch
			 * (captured: the copy is ours, whatever the wire does). */
			if (st->captured) {
				struct zd_fb_msg m = { .op = ZD_FB_DRAINED, .epoch = st->epoch, .a = st->captured };

				pthread_mutex_lock(&s.lock);
				if (s.fb >= 0)
					zd_fb_send(s.fb, &m, NULL, NULL, 0);
				pthread_mutex_unlock(&s.lock);
			}
		}
		ended = r.type == ZD_REC_END;
		zd_record_free(&r);
	}
	if (n < 0) {
		zd_warnx("%s", rd.msg);
		rc = rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
	} else if (!rc && !ended) {
		zd_warnx("stdin: input ended without END: the backup keeps its last committed epoch");
		rc = ZD_EXIT_DATA;
	}
	if (s.pipe && zd_wire_pipe_finish(s.pipe, msg, sizeof(msg)) < 0 && !rc)
		die_once(ZD_EXIT_FAIL, "wire: %s%s", msg, "");
	s.pipe = NULL;
	if (wire_flush(&s) < 0 && !rc)
		wire_failed(&s);
	if (have_hb) {
		pthread_mutex_lock(&s.wlock);
		s.hb_stop = true;
		pthread_cond_signal(&s.wake);
		pthread_mutex_unlock(&s.wlock);
		pthread_join(hb_tid, NULL);
	}
	pthread_mutex_lock(&s.lock);
	s.done = true;
	pthread_mutex_unlock(&s.lock);
	/* FIN forward, then wait for the last ACKs and zd-recv's END. */
	zd_conn_shutdown_write(&s.conn);
	if (have_thread)
		pthread_join(tid, NULL);
	zd_capture_free(cap);
	zd_reader_free(&rd);
	if (ended) {
		struct zd_record e;

		zd_record_init(&e, ZD_REC_END);
		e.u.end = s.end;
		log_put(&s, &e);
	}
	if (s.have_log && zd_writer_flush(&s.log) < 0 && !rc) {
		zd_warnx("stdout: write: %s", strerror(s.log.err));
		rc = ZD_EXIT_FAIL;
	}
	pthread_mutex_lock(&s.lock);
	if (s.fb >= 0)
		close(s.fb);
	pthread_mutex_unlock(&s.lock);
	zd_writer_free(&s.log);
	zd_writer_free(&s.wire);
	zd_wire_enc_free(s.enc);
	zd_conn_close(&s.conn);
	return rc;
}
