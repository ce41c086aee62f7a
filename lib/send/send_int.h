/* SPDX-License-Identifier: MIT */
/*
 * Inside zd-send: the sender's state, shared by its threads
 *
 *   main thread  stdin → capture → ship() → (wire worker) → emit()
 *   ack thread   one per connection: zd-recv's HEADER, STAT "wire", ACKs
 *   heartbeat    a STAT "heartbeat" when the wire was quiet
 *   link thread  (--reconnect) a lost link: reconnect, resend (relink.c)
 */
#ifndef ZD_SEND_INT_H
#define ZD_SEND_INT_H

#include <pthread.h>
#include "zd/fb.h"
#include "zd/net.h"
#include "zd/send.h"
#include "zd/stream.h"
#include "zd/wire.h"

#define T1_RING 4096

struct sender {
	const struct zd_send_opts *o;
	struct zd_conn conn;	/* swapped by the link thread, under wlock, while down */
	struct zd_writer wire;
	struct zd_writer log;
	bool have_log;
	int fb;
	pthread_mutex_t lock;	/* log writer, t1 ring, done, fb, peer_* */
	/* Per epoch, CLOCK_MONOTONIC ns on this host (zd-track's T1 is
	 * taken on the same clock): T1, and when its CHECKPOINT and COMMIT
	 * were read from stdin and the COMMIT's write to the connection began;
	 * 0 = not yet. Its STAT "latency" is made of them at the ACK. */
	struct { uint64_t epoch, t1, ckpt_in, commit_in, commit_out; } t1[T1_RING];
	bool done;		/* END sent: the peer may close now */
	bool end_echoed;	/* zd-recv answered END: the run is over */
	struct zd_rec_end end;	/* the END to log last */
	int end_sent_status;	/* status of the END from stdin, -1 none yet */
	uint64_t acked;
	uint64_t sent;		/* highest COMMIT on the wire */
	/* per epoch, the emitting thread's */
	uint64_t ep_pages, ep_raw, ep_delta, ep_miss;
	uint64_t wire_mark;
	uint64_t wire_prev;	/* bytes written on the connections before this one */
	/* compression: the encoder is the worker's once the pipe runs */
	struct zd_wire_opts wopts;
	struct zd_wire_enc *enc;
	struct zd_wire_pipe *pipe;
	struct zd_record *cur;	/* the main thread's record from stdin, while
				 * in the capture filter: ship() may take it */
	bool keyed;
	/* zd-recv's STAT "wire" (ack thread → emitter, link thread) */
	pthread_cond_t wire_cv;	/* with lock */
	int peer_wire;		/* 0 not yet, 1 announced, -1 not a wire peer */
	int peer_accept;
	uint64_t peer_committed;	/* its replica's last committed epoch */
	bool ack_over;		/* the ack thread has returned */
	bool wire_checked;	/* the emitter's: peer_wire was fine */
	pthread_t ack_tid;
	bool ack_running;	/* ack_tid is to be joined */
	/* Heartbeats share the wire with the main thread. */
	pthread_mutex_t wlock;	/* wire, conn, last_tx, header_out, hb_stop, link_* */
	pthread_cond_t wake;
	uint64_t last_tx;
	bool header_out, hb_stop;
	unsigned hb_ms, to_ms;
	/* --reconnect (relink.c), under wlock */
	struct zd_resend *resend;	/* NULL without --reconnect */
	pthread_mutex_t conn_lock;	/* conn's swap (with wlock) and its abort by zd__send_link_lost */
	pthread_cond_t link_cv;		/* link_down set or cleared, link_stop */
	bool link_down, link_stop;
	unsigned link_gen;		/* connections made so far */
	unsigned lost_gen;		/* conn_lock: the generation zd__send_link_lost took */
	char down_why[300];		/* conn_lock: why it was lost */
	bool resync;			/* dropping records until a FULL checkpoint */
	struct zd_record header;	/* the HEADER, sent again on each connection */
	bool have_header;
	uint64_t reconnects;
	pthread_t link_tid;
	bool link_running;		/* link_tid is to be joined */
	/* The run's first error, from whichever thread met it: what
	 * zd_send_run() returns. */
	pthread_mutex_t fail_lock;
	int fail_code;			/* 0 none yet; read atomically */
	char fail_msg[1024];
	bool stopped;			/* zd__send_fail(): every thread is to stop */
	int stop_fd;			/* eventfd: readable once stopped, ends the wait on stdin */
};

/* Record the run's error (the first one only) and stop the run: wake
 * every thread that waits, so that each returns (the main thread's read
 * of stdin, writes and reads on the link, the heartbeat, the link
 * thread). For what ends the run at once, from any thread. Call with none
 * of the sender's locks held. Returns -1. */
int zd__send_fail(struct sender *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Record the run's error (the first one only) and go on: the main
 * thread's, which winds the run down in order (what was queued still
 * goes, the last ACKs are still relayed). */
void zd__send_error(struct sender *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The first error's exit code, 0 while there is none. */
int zd__send_failed(const struct sender *s);
bool zd__send_stopped(const struct sender *s);
void zd__send_log_put(struct sender *s, const struct zd_record *r);
/* Relay an ACK of epoch e to zd-track (s->lock held). */
void zd__send_relay_ack(struct sender *s, uint64_t e, uint64_t wall_ns);
int zd__send_fb(struct sender *s, enum zd_fb_op op, uint64_t a);
/* Connect to o->dest and prove the key (timeout_ms 0: no bound of ours):
 * 0, -1 with msg, or -code for a key refusal. */
int zd__send_connect(struct sender *s, struct zd_conn *c, unsigned timeout_ms, char *msg, size_t len);
/* 0 if zd-recv (peer_wire, accept) takes our PAGES, else zd__send_fail()
 * with the reason. */
int zd__send_check_accept(struct sender *s, int peer_wire, int accept);
/* Start the ack thread on s->conn: 0, or zd__send_fail(). */
int zd__send_start_ack_thread(struct sender *s);
/* Join it (after zd_conn_abort or the peer's close). */
void zd__send_join_ack_thread(struct sender *s);

/* relink.c */
/* The link of generation gen failed (why): hand it to the link thread
 * (--reconnect). Any thread; idempotent per gen. */
void zd__send_link_lost(struct sender *s, unsigned gen, const char *why);
/* Under wlock: what emit() does with a record while relinking (keep it
 * for resending; drop it while waiting for a FULL checkpoint). 1 if the
 * record is to be written now, 0 if not, -1 if the resend log cannot
 * keep it. */
int zd__send_link_admit(struct sender *s, const struct zd_record *r);
/* 0, or zd__send_fail(). */
int zd__send_link_start(struct sender *s);
void zd__send_link_stop(struct sender *s);

#endif
