/* SPDX-License-Identifier: MIT */
/*
 * The backup's copy of the protected VM, kept by zd-recv in a directory:
 *
 *   DIR/meta.json     last committed epoch, run, page size/count, target,
 *                     mode, memory checksum if known (written tmp + rename)
 *   DIR/memory.img    guest memory, page_count * page_size bytes, sparse
 *   DIR/state.bin     the last STATE blob (vCPU/device state), tmp + rename
 *   DIR/journal.tmp   the epoch being received (uncommitted, never applied;
 *                     kept between epochs so its blocks are reused)
 *   DIR/journal       an epoch committed but maybe not yet applied
 *
 * DIR is 0700 and its files 0600, each opened with O_NOFOLLOW by
 * zd_replica_open_file: guest memory is its owner's alone. The lock is a
 * flock on DIR itself, not a file.
 *
 * One epoch is applied atomically, in the order the functions below run:
 *
 *   stage_begin → stage_dirty / stage_pages / stage_state … (journal.tmp)
 *   → stage_verify   PAGES cover exactly DIRTY, memsum of memory+journal
 *   → commit_mark    fsync journal.tmp, rename to journal, fsync DIR:
 *                    from here the epoch survives a crash
 *   → apply          pwrite pages into memory.img, fsync, state.bin and
 *                    meta.json by tmp + rename, journal back to journal.tmp
 *
 * zd_replica_open() recovers: a journal is re-applied (applying is
 * idempotent), a journal.tmp is ignored. So after any crash the replica
 * is at the last epoch that reached commit_mark, never in between.
 *
 * Functions return 0 or an exit code of zd/util.h (ZD_EXIT_DATA for a bad
 * epoch, ZD_EXIT_TARGET for a directory that is not a replica, ZD_EXIT_FAIL
 * for I/O) with rep->err holding the reason.
 */
#ifndef ZD_REPLICA_H
#define ZD_REPLICA_H

#include <stdbool.h>
#include <stdint.h>
#include "zd/pageset.h"
#include "zd/stream.h"

struct zd_replica_meta {
	uint64_t epoch;		/* last committed epoch, 0 = none yet */
	uint64_t run;		/* HEADER start_ns of the stream that committed it */
	uint32_t page_size;
	uint64_t page_count;
	char target[256];
	char mode[16];
	bool have_memsum;
	uint64_t memsum;	/* zd_hash64 of memory.img at `epoch` */
	uint32_t state_kind;	/* kind of state.bin, 0 = none */
	uint64_t commit_wall_ns;
	uint64_t disk_size;	/* bytes of disk.img, 0 = the guest has no disk */
	bool ended;		/* the run's primary sent END: no stream may
				 * continue it, no loss can take it over */
};

struct zd_stage;

struct zd_replica {
	char *dir;
	int dirfd;		/* also holds the flock: one zd-recv per replica */
	int memfd;		/* memory.img, -1 until initialised */
	int diskfd;		/* disk.img, -1 until a DISK record or a meta.json
				 * with a disk_size (lib/replica/disk.c) */
	uint8_t *mem;		/* memory.img mapped read-only once, for checksums:
				 * a mapping kept across epochs faults each page once */
	bool initialised;	/* meta.json exists */
	struct zd_replica_meta meta;
	bool sync;		/* fsync at every step (default); off only for benchmarks */
	uint64_t run;		/* run of the stream being received, 0 if none bound */
	struct zd_stage *st;	/* the open epoch, NULL between epochs */
	struct zd_stage *applying;	/* committed, not applied, its pages in
					 * memory (zd_replica_stage_pages_keep);
					 * NULL: zd_replica_apply reads the journal */
	struct zd_pageset reserved;	/* pages of memory.img this process has
					 * fallocated: their blocks stay, so a
					 * commit reserves only the others */
	uint8_t *wmem;		/* memory.img mapped writable, for applying
				 * pages whose blocks are reserved (NULL not
				 * yet, MAP_FAILED: cannot be) */
	uint64_t last_heard_wall_ns;	/* CLOCK_REALTIME of the last record from
					 * the primary (zd_recv_session), 0 if none */
	/* Two parts of the last commit, CLOCK_MONOTONIC ns, for zd-recv's
	 * STAT "recv": stage_verify's checksums (memory and disk, 0 without
	 * them), commit_mark's ftruncate and fsync of journal.tmp. */
	uint64_t sum_ns, fsync_ns;
	/* The commit time (CLOCK_REALTIME) the last commit point wrote into
	 * its journal: the ACK's, which goes before the apply. */
	uint64_t marked_wall_ns;
	char err[512];
};

/* Open (creating an absent or empty DIR) and recover. A DIR holding files
 * that are not a replica's is refused with ZD_EXIT_TARGET. */
int zd_replica_open(struct zd_replica **rep, const char *dir, char *msg, size_t msglen);
void zd_replica_close(struct zd_replica *rep);

/* Open DIR/name (O_NOFOLLOW, 0600 if created): 0 with *fd, or an exit
 * code with rep->err (ZD_EXIT_TARGET for a symbolic link, a file that is
 * not regular or has other hard links) and errno that of the failure. */
int zd_replica_open_file(struct zd_replica *rep, const char *name, int flags, int *fd);

/* Bind a stream to the replica at its HEADER: initialises a new replica
 * (sparse memory.img, meta.json at epoch 0), or checks that page size and
 * count match (ZD_EXIT_DATA if not). */
int zd_replica_bind(struct zd_replica *rep, const struct zd_rec_header *hdr);

/* The primary ended its run cleanly (END): meta.json says so, and a later
 * HEADER of the same run is refused. No-op before the first epoch. */
int zd_replica_end_run(struct zd_replica *rep);

/* The epoch state machine; see the comment at the top. */
int zd_replica_stage_begin(struct zd_replica *rep, uint64_t epoch);
int zd_replica_stage_dirty(struct zd_replica *rep, const struct zd_pageset *set);
int zd_replica_stage_pages(struct zd_replica *rep, const struct zd_rec_pages *p);
/* The same in three steps, the pages appended in pieces between begin and
 * end (all of p but its data is read by both). */
int zd_replica_stage_pages_begin(struct zd_replica *rep, const struct zd_rec_pages *p);
int zd_replica_stage_pages_data(struct zd_replica *rep, const uint8_t *data, size_t len);
int zd_replica_stage_pages_end(struct zd_replica *rep, const struct zd_rec_pages *p);
/* After begin: the offset in journal.tmp of the first page of p. */
uint64_t zd_replica_stage_pages_at(const struct zd_replica *rep);
/* journal.tmp as staged so far, mapped read-only: a page staged earlier in
 * the epoch is *map + its offset. Valid until the next call or the end of
 * the stage. */
int zd_replica_stage_map(struct zd_replica *rep, const uint8_t **map);
/* After end: the replica takes buf (malloc'd, holding p->data, the pages
 * just staged) and applies the epoch from memory if it gets every PAGES
 * of it and they fit; frees it otherwise. */
void zd_replica_stage_pages_keep(struct zd_replica *rep, uint8_t *buf, const struct zd_rec_pages *p);
int zd_replica_stage_state(struct zd_replica *rep, const struct zd_rec_state *s);
/* The guest's disk writes (zd-stream(5) DISK): journaled with the epoch's
 * pages, in order, applied to DIR/disk.img at the same commit point.
 * The first one creates disk.img with the record's disk_size; a record of
 * another size, or one past it, is bad data (ZD_EXIT_DATA). */
int zd_replica_stage_disk(struct zd_replica *rep, const struct zd_rec_disk *d);
/* zd_hash64 of disk.img (the committed epoch's disk). */
int zd_replica_disksum(struct zd_replica *rep, uint64_t *sum);
/* verify: VERIFY_AUTO checks the memory checksum when COMMIT carries one,
 * VERIFY_ALWAYS also refuses a COMMIT without it, VERIFY_NEVER skips it. */
enum zd_verify { ZD_VERIFY_AUTO = 0, ZD_VERIFY_ALWAYS, ZD_VERIFY_NEVER };
int zd_replica_stage_verify(struct zd_replica *rep, const struct zd_rec_commit *c,
			    enum zd_verify verify);
int zd_replica_commit_mark(struct zd_replica *rep);
int zd_replica_apply(struct zd_replica *rep);
/* Throw the open epoch away (bad data, peer gone). Never fails. */
void zd_replica_stage_abort(struct zd_replica *rep);
/* verify + mark + apply. */
int zd_replica_commit(struct zd_replica *rep, const struct zd_rec_commit *c,
		      enum zd_verify verify);
/* Epoch of the open stage, 0 if none. */
uint64_t zd_replica_open_epoch(const struct zd_replica *rep);
/* The pages the open stage's PAGES cover so far, NULL if none open. */
const struct zd_pageset *zd_replica_stage_covered(const struct zd_replica *rep);

/* Redo what a crash interrupted (done by zd_replica_open). */
int zd_replica_recover(struct zd_replica *rep);
/* zd_hash64 of the whole memory.img. */
int zd_replica_memsum(struct zd_replica *rep, uint64_t *sum);

/* The committed copy of pfn (page_size bytes, valid until the next
 * commit), the base XOR deltas decode against; NULL for a pfn beyond the
 * page count or a replica without memory. lib/replica/base.c. */
const uint8_t *zd_replica_base(struct zd_replica *rep, uint64_t pfn);

/* --- the receiving side of a connection (zd-recv) --- */

struct zd_conn;
struct zd_auth_key;
struct zd_standby;
struct zd_recv_opts {
	enum zd_verify verify;
	/* Failover hook: called when the primary is gone — the
	 * connection ended without END, or timed out — after the open epoch
	 * was discarded. The replica is at its last committed epoch. Returns
	 * the exit code the session ends with. NULL: end with ZD_EXIT_PEER. */
	int (*on_peer_lost)(struct zd_replica *rep, void *arg);
	void *arg;
	/* Heartbeats, TCP only, armed once the HEADER came: a STAT
	 * "heartbeat" record goes back when nothing else did for heartbeat_ms;
	 * timeout_ms without a byte from the primary is its death. 0 = off. */
	unsigned heartbeat_ms, timeout_ms;
	/* Asked at the HEADER (the replica bound): arm timeout_ms? NULL = yes.
	 * A timeout that nothing acts on only turns a slow primary into a
	 * lost one. */
	bool (*arm_timeout)(const struct zd_replica *rep, void *arg);
	/* The wire. key: authenticate the connection and every
	 * record (struct zd_auth_key of zd/wire.h; NULL: none). accept: the
	 * highest PAGES encoding taken (ZD_PENC_*), announced to zd-send
	 * after the HEADER, if accept_set (unset, the zero default: all). */
	const struct zd_auth_key *key;
	bool accept_set;
	uint8_t accept;
	/* A peer that has not finished the key handshake and sent its HEADER
	 * by hello_by_ns (CLOCK_MONOTONIC; 0: no bound) is cut off, its
	 * session ending with ZD_EXIT_PEER; hello_ms is that bound as said
	 * in the message. */
	uint64_t hello_by_ns;
	unsigned hello_ms;
	/* Called once the HEADER bound the replica (the session may own it). */
	void (*on_bound)(struct zd_replica *rep, const char *peer, void *bound_arg);
	void *bound_arg;
	/* Live status (zd/status.h; NULL: none): the session sets its peer,
	 * target and mode at the HEADER and its epoch, commit time and lag at
	 * each commit. */
	struct zd_status *status;
	/* A standby VM kept at the replica's committed epoch (--standby,
	 * lib/replica/standby.c), NULL: none. A HEADER or first STATE it
	 * cannot follow refuses the session. */
	struct zd_standby *standby;
};
/* Receive one stream from conn into rep until END. Returns 0 after a clean
 * END, else an exit code with msg holding the one-line reason. Only the loss
 * of a session that owns the replica (it bound the replica's run, which has
 * committed epochs and no END) reaches on_peer_lost. rep->run is non-zero
 * afterwards iff the session's HEADER bound the replica. */
int zd_recv_session(struct zd_replica *rep, struct zd_conn *conn,
		    const struct zd_recv_opts *opts, char *msg, size_t msglen);

/* Serve connections on the listening socket lfd (lib/replica/serve.c): one
 * session at a time feeds the replica; a connection that has sent nothing
 * waits without holding anyone up, one that sends no HEADER within
 * opts->hello_ms (0: ZD_RECV_HELLO_MS) of its accept is cut off, and while
 * a session has bound the replica every other connection is refused at
 * once. Connections that never bound the replica get a line on stderr and
 * change nothing. Returns after the first bound session if once, or when
 * *stop is set after a session (a takeover); its exit code, its line
 * already on stderr; or ZD_EXIT_FAIL with msg if accepting fails. */
#define ZD_RECV_HELLO_MS 2000
int zd_recv_serve(struct zd_replica *rep, int lfd, const struct zd_recv_opts *opts, bool once,
		  const bool *stop, char *msg, size_t msglen);

/* --- takeover (lib/replica/failover.c) --- */
/* What zd-recv does when the session owning the replica is lost: pass as
 * zd_recv_opts.arg with on_peer_lost = zd_takeover_on_peer_lost and
 * arm_timeout = zd_takeover_arm_timeout. */
#define ZD_EXIT_FENCE 6		/* the fence failed or hung: no takeover */
#define ZD_FENCE_TIMEOUT_MS 10000
struct zd_takeover {
	const char *fence;		/* sh -c before taking over; NULL: none */
	unsigned fence_timeout_ms;	/* a fence still running is killed: failed (0: no bound) */
	const char *cmd;		/* NULL: the target's default; "": never take over */
	bool timeout_set;		/* arm the heartbeat timeout even without a command */
	bool warned;			/* the no-fence warning was given */
	bool go;			/* out: take over with exec_cmd (NULL: the
					 * standby runs already, nothing to exec) */
	const char *exec_cmd;
	struct zd_standby *standby;	/* take over by starting it (--standby) */
	bool verify;			/* --verify: the standby's memory must hash
					 * as the replica's before it starts */
};
/* The command a takeover would run for this replica, NULL if none. */
const char *zd_takeover_cmd(const struct zd_takeover *t, const struct zd_replica *rep);
/* Once: warn that a takeover would run without a fence. */
void zd_takeover_warn_unfenced(struct zd_takeover *t, const struct zd_replica *rep);
bool zd_takeover_arm_timeout(const struct zd_replica *rep, void *arg);
/* Fence, then set go (returns 0), or ZD_EXIT_PEER (nothing to take over)
 * or ZD_EXIT_FENCE. */
int zd_takeover_on_peer_lost(struct zd_replica *rep, void *arg);
/* After go, the replica closed (its lock goes with it): exec the failover
 * command in place of this process. Returns only if that fails. */
int zd_takeover_exec(const struct zd_takeover *t, char *msg, size_t msglen);

/* --- a standby VM (lib/replica/standby.c) ---
 * zd-recv --standby SCHEME:ARGS: a VM created stopped on the backup when a
 * stream of a SCHEME: target binds the replica, given each committed
 * epoch's pages once the epoch is acknowledged, and started at a takeover
 * instead of a failover command: the takeover costs no copy of memory.
 * Kinds: xen:CONFIG (lib/replica/standby_xen.c, where libxen-dev is). */
#define ZD_EXIT_STANDBY 7	/* the standby could not be started (or --verify
				 * found its memory differs): nothing runs */
/* Parse spec and check what can be checked before any stream: 0, or
 * ZD_EXIT_USAGE with msg. lazy (--standby-at takeover): the VM is made
 * only at the takeover, from the replica's files (same steps, all of them
 * then). */
int zd_standby_new(struct zd_standby **sb, const char *spec, bool lazy, char *msg, size_t msglen);
/* At the HEADER (replica bound): create the standby (once) and mark it
 * for a full fill; 0 or an exit code with rep->err. */
int zd_standby_bind(struct zd_standby *sb, struct zd_replica *rep, const struct zd_rec_header *hdr);
/* A STATE of the open epoch: the first after a bind is checked against
 * the standby (its memory layout); 0 or an exit code with rep->err. */
int zd_standby_state(struct zd_standby *sb, struct zd_replica *rep, const struct zd_rec_state *st);
/* Before the open epoch's COMMIT: its pages are to be filled. */
void zd_standby_note(struct zd_standby *sb, const struct zd_replica *rep);
/* After the COMMIT's ACK: copy what the replica committed into the
 * standby (a failure is logged and leaves it for the takeover to redo). */
void zd_standby_fill(struct zd_standby *sb, struct zd_replica *rep);
/* Take over: finish the fill, verify (if asked), start. 0 when it runs,
 * ZD_EXIT_STANDBY with the line logged. */
int zd_standby_takeover(struct zd_standby *sb, struct zd_replica *rep, bool verify, uint64_t lost_wall_ns);
/* Destroy a standby that was not taken over; free. */
void zd_standby_free(struct zd_standby *sb);

/* Describe the replica to the fence and failover commands (ZD_REPLICA,
 * ZD_EPOCH, ZD_TARGET, ZD_LAST_HEARD_NS, ZD_LOST_NS, ZD_VM). */
void zd_failover_env(const struct zd_replica *rep, uint64_t lost_wall_ns);
/* Run cmd under /bin/sh and wait up to timeout_ms (0: for ever; then it is
 * killed with its process group): 0 if it exited 0, else -1 with msg. */
int zd_failover_fence(const char *cmd, unsigned timeout_ms, char *msg, size_t msglen);

/* --- zd-recv as a whole (lib/replica/tool.c) --- */
/* What zd-recv's flags ask for: cmd/zd-recv.c fills it in and calls
 * zd_recv_main. A new flag is a field here, an entry in cmd/zd-recv.c's
 * option table and, if it conflicts with others, a line in
 * zd_recv_check. */
struct zd_recv_args {
	const char *listen;		/* ADDR:PORT, or NULL */
	const char *port_file;		/* with listen: the port, once listening */
	bool stdio;			/* the stream on stdin, ACKs on stdout */
	const char *dir;		/* the replica */
	bool status;			/* print the replica's state and exit */
	bool verify, no_verify;		/* ZD_VERIFY_ALWAYS, ZD_VERIFY_NEVER */
	bool once, no_fsync, insecure;
	const char *key_path;		/* NULL: no key */
	unsigned heartbeat_ms, timeout_ms;
	bool heartbeat_set, timeout_set;
	bool accept_set;		/* --compress: the highest encoding taken */
	uint8_t accept;
	const char *fence;		/* NULL: none */
	unsigned fence_timeout_ms;
	bool fence_timeout_set;
	const char *on_failover;	/* NULL: the target's default */
	bool no_failover;
	const char *standby;		/* --standby KIND:ARGS, NULL: none */
	bool standby_at, standby_lazy;	/* --standby-at given; takeover (not header) */
};
#define ZD_RECV_ARGS_INIT { .heartbeat_ms = 100, .timeout_ms = 500, .fence_timeout_ms = ZD_FENCE_TIMEOUT_MS }
/* ZD_EXIT_USAGE with msg if the flags conflict. */
int zd_recv_check(const struct zd_recv_args *a, char *msg, size_t msglen);
/* Check, then run zd-recv: print the status, or serve until the end of
 * the stream(s), then take over if the primary was lost. Returns the exit
 * status with msg holding the reason (lines along the way went to stderr);
 * after a takeover it does not return. The caller ignores SIGPIPE: a dead
 * sender is a failed ACK write. */
int zd_recv_main(const struct zd_recv_args *a, char *msg, size_t msglen);

#endif
