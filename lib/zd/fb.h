/* SPDX-License-Identifier: MIT */
/*
 * The feedback channel: data flows forward on the pipe, feedback flows
 * backward on one Unix SOCK_SEQPACKET socket that zd-track serves for the
 * run (its path is in the HEADER's "control" field). Downstream stages
 * connect to it:
 *   zd-mru  sends STANDBY (the predicted hot set for the next epoch),
 *   zd-swap sends DRAINED (an epoch's pages are all captured),
 *   zd-send relays ACK (the backup committed an epoch),
 * and any stage may ask for MEMORY: the reply carries guest RAM's memfd
 * (and the uffd in zddspt mode) as SCM_RIGHTS ancillary data.
 *
 * One message = struct zd_fb_msg followed by len bytes of payload.
 * A STANDBY payload is a page set in the binary range encoding of
 * zd-stream(5) (u32 nranges, then {u64 first, u64 count} each), truncated
 * to what fits in ZD_FB_MAX_MSG: the standby set is a hint.
 */
#ifndef ZD_FB_H
#define ZD_FB_H

#include <stdint.h>
#include "zd/pageset.h"

#define ZD_FB_MAX_MSG (128u << 10)

enum zd_fb_op {
	ZD_FB_HELLO = 1,	/* a = role (enum zd_fb_role); reply HELLO with a = page_size, b = page_count */
	ZD_FB_STANDBY = 2,	/* epoch = the epoch it predicts, payload = page set */
	ZD_FB_DRAINED = 3,	/* epoch drained; a = pages captured, b = cow faults */
	ZD_FB_ACK = 4,		/* epoch committed by the backup; a = backup wall ns */
	ZD_FB_MEMORY = 5,	/* request; reply MEMORY with fds, a = base address, b = nfds */
	ZD_FB_ERROR = 6,	/* reply: a = errno */
	ZD_FB_BYE = 7,
	ZD_FB_LINK = 8,		/* zd-send: a = 1 the backup link is up, 0 it is down (reconnecting) */
	ZD_FB_RESYNC = 9,	/* zd-send: the backup lost epochs: make the next checkpoint FULL */
};

enum zd_fb_role { ZD_ROLE_MRU = 1, ZD_ROLE_SWAP = 2, ZD_ROLE_SEND = 3, ZD_ROLE_OTHER = 4 };

struct zd_fb_msg {
	uint32_t op;
	uint32_t len;		/* payload bytes after this struct */
	uint64_t epoch;
	uint64_t a, b;
};

/* Client side: connect, send HELLO with the role and wait (up to 5 s) for
 * the tracker's HELLO reply, which is consumed here — the caller's first
 * recv is the answer to its own first request. Returns fd or -1 (errno). */
int zd_fb_connect(const char *path, enum zd_fb_role role);
/* Send/receive one message; fds (up to 4) ride along as SCM_RIGHTS.
 * recv returns payload bytes copied (<= cap), 0 on orderly close (msg op
 * = 0), -1 on error; *nfds (may be NULL) gets the number of fds received. */
int zd_fb_send(int fd, const struct zd_fb_msg *m, const void *payload,
	       const int *fds, int nfds);
int zd_fb_recv(int fd, struct zd_fb_msg *m, void *payload, size_t cap,
	       int *fds, int *nfds);
/* Page set <-> STANDBY payload. encode returns bytes used (<= cap). */
size_t zd_fb_encode_set(const struct zd_pageset *s, uint8_t *buf, size_t cap);
int zd_fb_decode_set(const uint8_t *buf, size_t len, struct zd_pageset *s);

#endif
