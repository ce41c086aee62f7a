/* SPDX-License-Identifier: MIT */
/*
 * zd-stat's figures (lib/stat/): per-epoch rows and a run summary from the
 * records of a stream.
 *
 * Where a figure comes from:
 *   dirty       |DIRTY ∪ pages pre-copied for the epoch| (all modes alike)
 *   standby     STAT "mru" standby, else the STANDBY record for the epoch
 *   precision, recall   STAT "mru"
 *   pause       CHECKPOINT pause_ns, else STAT "track" pause_ns (remus
 *               resumes after the CHECKPOINT went out)
 *   latency     ACK latency_ns (T1 → ACK at the primary)
 *   latency parts  STAT "latency" (zd-send's log): where T1 → ACK went,
 *               enum zd_lat_part
 *   pages sent  STAT "send" pages of the epoch (what zd-send put on the
 *               wire; its log leaves PAGES out), else the pages in the
 *               epoch's PAGES records
 *   bytes       stream bytes of the records naming the epoch
 *   wire bytes  STAT "send" wire_bytes
 *   output delay  every STAT "vm" output_delay_ns value, and RELEASED_NS -
 *               PRODUCED_NS of every line of zd-vm's --output-log
 *               (zd_stat_read_output_log)
 *   response delay  DELAY_NS of every line of zd-client's --log
 *               (zd_stat_read_client_log): request sent → answer received
 *   bytes per epoch  wire bytes (STAT "send") of each epoch where the
 *               stream has them, else its stream bytes
 *   stall       pause + STAT "swap" cow_block_ns + STAT "track"
 *               precopy_redirtied × STAT "guest" wfault_ns
 *               (zd_stat_row_stall)
 *   guest stall, guest lost  STAT "guest" stall_ns, lost_ns: the guest's
 *               own clock (zd-vm's built-in guest)
 * Percentiles are nearest-rank: the p-th of n sorted values is the
 * ceil(p/100 * n)-th.
 */
#ifndef ZD_STAT_H
#define ZD_STAT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "zd/stream.h"

/* The parts of T1 → ACK, the keys of zd-send's STAT "latency" (each
 * _ns), in the order zd-stat prints them. to_ckpt, to_commit, to_wire,
 * net and recv_verify … recv_ack follow one another and add up to
 * latency_ns; to_ack is net + recv_total; recv_checksum is part of
 * recv_verify; recv_receive (with its parts stage, decode, journal) is
 * the backup receiving the epoch, during to_commit and to_wire. */
enum zd_lat_part {
	ZD_LAT_TO_CKPT, ZD_LAT_TO_COMMIT, ZD_LAT_TO_WIRE, ZD_LAT_TO_ACK, ZD_LAT_NET,
	ZD_LAT_RECV_TOTAL, ZD_LAT_RECV_VERIFY, ZD_LAT_RECV_CHECKSUM, ZD_LAT_RECV_FSYNC,
	ZD_LAT_RECV_COMMIT, ZD_LAT_RECV_APPLY, ZD_LAT_RECV_ACK,
	ZD_LAT_RECV_RECEIVE, ZD_LAT_RECV_STAGE, ZD_LAT_RECV_DECODE, ZD_LAT_RECV_JOURNAL,
	ZD_LAT_MAX
};
/* "to_ckpt_ns", …: the STAT "latency" key of each part */
extern const char *const zd_lat_keys[ZD_LAT_MAX];

struct zd_stat_row {
	uint64_t epoch;
	bool checkpointed;	/* its CHECKPOINT was seen */
	uint64_t dirty, precopy, pages_sent, bytes;
	double standby, precision, recall, pause_ns, latency_ns, wire_bytes;
	bool has_standby, has_precision, has_recall, has_pause, has_latency, has_wire;
	bool has_mru_standby;
	bool has_send_pages;	/* pages_sent is STAT "send" pages, not PAGES */
	double ckpt_pause_ns;
	/* zd-track's STAT "precopy"/"precopy_redirtied" (zddspt): the
	 * epoch's pre-copy where the stream carries no PAGES (zd-send's
	 * log), so dirty can still be |pre-copied ∪ DIRTY| */
	double track_precopy, track_redirtied;
	bool has_track_precopy;
	/* The guest's stall (zd_stat_row_stall): zd-swap's STAT "swap"
	 * cow_faults and cow_block_ns (message read → writer woken, summed),
	 * and zd-track's STAT "guest", the guest's own clock over the epoch:
	 * lost_ns (every gap >= 2 us it did not ask for), stall_ns (those >=
	 * 40 us), wfault_ns (mean dirty-log write fault) */
	double cow_faults, cow_block_ns;
	bool has_cow;
	double guest_lost_ns, guest_stall_ns, guest_wfault_ns;
	bool has_guest, has_wfault;
	/* zd-send's STAT "latency": lat[p] where has_lat has bit 1 << p */
	double lat[ZD_LAT_MAX];
	uint32_t has_lat;
};

/* The stall a checkpoint costs the guest, in ns: the pause, the time its
 * writes were blocked in copy-on-write faults on the frozen set, and one
 * dirty-log write fault (the guest's mean of the epoch) for each
 * pre-copied page it wrote again after the pre-copy re-armed it. False
 * when the row has no pause. */
bool zd_stat_row_stall(const struct zd_stat_row *r, double *ns);

struct zd_stat;

struct zd_stat *zd_stat_new(void);
void zd_stat_free(struct zd_stat *s);
/* Account one record that took `bytes` bytes of the stream. */
void zd_stat_add(struct zd_stat *s, const struct zd_record *r, uint64_t bytes);
/* Close the run: the last epoch's figures are final. */
void zd_stat_finish(struct zd_stat *s);
/* Forget the epochs before `from` (after finish): e.g. the first
 * checkpoint, which copies the whole memory. */
void zd_stat_drop_before(struct zd_stat *s, uint64_t from);

size_t zd_stat_rows(const struct zd_stat *s, const struct zd_stat_row **rows);
/* Nearest-rank percentile of v[0..n) (sorted in place); 0 if n == 0. */
double zd_stat_percentile(double *v, size_t n, double p);

void zd_stat_print_table(struct zd_stat *s, FILE *out);
void zd_stat_print_csv(struct zd_stat *s, FILE *out);
/* Side inputs, one sample per line. zd-vm --output-log: "SEQ EPOCH
 * PRODUCED_NS RELEASED_NS RELEASED_WALL_NS" → an output delay each;
 * zd-client --log: "SEQ SENT_NS RECEIVED_NS DELAY_NS" → a response delay
 * each. Return 0, or -1 with msg naming the line (nothing taken from a
 * file with a bad line). */
int zd_stat_read_output_log(struct zd_stat *s, FILE *f, const char *name, char *msg,
			    size_t msglen);
int zd_stat_read_client_log(struct zd_stat *s, FILE *f, const char *name, char *msg,
			    size_t msglen);

/* The summary as one JSON object (a line). */
void zd_stat_print_json(struct zd_stat *s, FILE *out);
/* A PNG of dirty, standby hits and pause per epoch, through gnuplot.
 * Returns 0, or -1 with msg. */
int zd_stat_plot(struct zd_stat *s, const char *png, char *msg, size_t msglen);

/* One --follow line of the figures so far (epochs from `from` on): text,
 * or a JSON object with "follow": true. */
void zd_stat_print_follow(struct zd_stat *s, FILE *out, bool json, uint64_t from, double elapsed_s);

enum zd_stat_format { ZD_STAT_TABLE, ZD_STAT_JSON, ZD_STAT_CSV };
struct zd_stat_opts {
	enum zd_stat_format format;
	const char *plot;	/* PNG path or NULL */
	int in_fd;
	const char *in_name;	/* "stdin" or the path */
	FILE *output_log, *client_log;	/* side inputs or NULL */
	uint64_t from;			/* report epochs >= from (0: all) */
	const char *output_log_name, *client_log_name;
	/* --follow: a line of the figures so far every follow_ns of run
	 * time, or every follow_epochs epochs (at most one of them set) */
	uint64_t follow_ns, follow_epochs;
	/* NULL, or the flag the caller's SIGINT/SIGTERM handler sets to the
	 * signal's number: the reading ends there and the report covers what
	 * came before; stop_sigs, those signals (struct zd_reader's). */
	volatile sig_atomic_t *stop;
	sigset_t stop_sigs;
	/* NULL, or called once the reading ended, before the report: where the
	 * caller lets a signal act as usual again, so that a second Ctrl-C is
	 * not held up by a report stuck on a full stdout. */
	void (*input_done)(void);
};
/* --follow's EVERY: "1s", "500ms" (a duration with its unit) or
 * "epochs:N". 0, or -1 with msg. */
int zd_stat_parse_follow(const char *every, struct zd_stat_opts *o, char *msg, size_t msglen);
/* Read the whole stream, print the report on stdout; returns the exit
 * code. A truncated stream gets the report of what came before its cut
 * (exit 3); SIGINT and SIGTERM end the reading and get the report so far
 * (exit 128 + the signal's number, as a shell's). */
int zd_stat_run(const struct zd_stat_opts *o);

#endif
