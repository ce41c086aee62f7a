/* SPDX-License-Identifier: MIT */
/*
 * The tracker's end of the feedback socket (zd/fb.h): a listening
 * SOCK_SEQPACKET socket served by one thread for the whole run, so an ACK
 * releases output at once even while the checkpoint loop sleeps.
 *
 * The thread keeps what the loop needs to know — the newest STANDBY set,
 * the highest DRAINED and ACKed epochs, which roles are connected — and
 * calls back into the tracker for the two things that touch the target
 * (commit on ACK, export_fds on MEMORY). Those callbacks run on the server
 * thread; the tracker serialises them with its own target calls.
 */
#ifndef ZD_FBSERVER_H
#define ZD_FBSERVER_H

#include <stdint.h>
#include "zd/fb.h"
#include "zd/pageset.h"

struct zd_fbserver;

struct zd_fbserver_ops {
	void *ctx;
	/* The backup committed `epoch` (and every epoch before it). */
	void (*ack)(void *ctx, uint64_t epoch, uint64_t backup_wall_ns);
	/* A MEMORY request: fill fds (max 4) and *base, return how many, 0 if
	 * the target has none (the client gets ERROR ENOTSUP), -1 on error. */
	int (*memory)(void *ctx, int *fds, uint64_t *base);
};

/* Default socket path: $XDG_RUNTIME_DIR/zd-track.PID.sock, else
 * /tmp/zd-track.PID.sock. */
void zd_fbserver_default_path(char *buf, size_t len);

/* Bind path (a stale socket left by a dead tracker is replaced; a live one
 * is an error), start the thread. NULL with msg filled on failure. */
struct zd_fbserver *zd_fbserver_start(const char *path, uint32_t page_size,
				      uint64_t page_count,
				      const struct zd_fbserver_ops *ops,
				      char *msg, size_t msglen);
/* Stop the thread, close every client, remove the socket file. */
void zd_fbserver_stop(struct zd_fbserver *s);
const char *zd_fbserver_path(const struct zd_fbserver *s);

/* Clients connected now with this role (after their HELLO). */
int zd_fbserver_clients(struct zd_fbserver *s, enum zd_fb_role role);
/* Copy the newest STANDBY set into out; returns the epoch it predicts,
 * 0 if none has arrived. */
uint64_t zd_fbserver_standby(struct zd_fbserver *s, struct zd_pageset *out);
uint64_t zd_fbserver_acked(struct zd_fbserver *s);
uint64_t zd_fbserver_drained(struct zd_fbserver *s);
/* zd-send said (LINK 0) that it is reconnecting to the backup. */
bool zd_fbserver_link_down(struct zd_fbserver *s);
/* A zd-send is connected, said its backup link is up (LINK 1: it relays
 * ACKs; zd-send - has no backup and never says so), and it is not
 * reconnecting. */
bool zd_fbserver_acks_expected(struct zd_fbserver *s);
/* Has a RESYNC come since the last call? */
bool zd_fbserver_take_resync(struct zd_fbserver *s);
/* Whether a resync is asked, leaving it to take_resync. */
bool zd_fbserver_resync_asked(struct zd_fbserver *s);

enum zd_fbwait { ZD_FBWAIT_OK = 0, ZD_FBWAIT_TIMEOUT = 1, ZD_FBWAIT_GONE = 2 };
/* Wait until an ACK (op ZD_FB_ACK) or DRAINED (ZD_FB_DRAINED) for `epoch`
 * or later has arrived, no client of `role` is connected any more (GONE),
 * or deadline_ns (CLOCK_MONOTONIC) passes (TIMEOUT). */
enum zd_fbwait zd_fbserver_wait(struct zd_fbserver *s, enum zd_fb_op op,
				enum zd_fb_role role, uint64_t epoch,
				uint64_t deadline_ns);

#endif
