/* SPDX-License-Identifier: MIT */
/*
 * zd-send's work (lib/send/): ship a zd-stream read on stdin to zd-recv,
 * relay its ACKs to zd-track, and with --reconnect outlive a lost link.
 */
#ifndef ZD_SEND_H
#define ZD_SEND_H

#include <stdbool.h>
#include <stdint.h>
#include "zd/wire.h"

#define ZD_SEND_RECONNECT_MAX_MS 3600000u

struct zd_send_opts {
	const char *dest;		/* HOST:PORT, [V6]:PORT, ssh:…, or - */
	const char *key_path;		/* for the far zd-recv over ssh; NULL: none */
	const struct zd_auth_key *key;	/* NULL: no key */
	struct zd_wire_opts wopts;	/* compression (page_size from the HEADER) */
	bool json_log;			/* the log on stdout as JSON lines */
	unsigned hb_ms, to_ms;		/* heartbeat period, timeout (0 = none) */
	unsigned reconnect_ms;		/* a lost link: reconnect for this long; 0 = exit 5 */
	uint64_t resend_bytes;		/* the resend log's budget */
	/* given on the command line (each goes with some other flags) */
	bool level_set, cache_set, resend_set;
};

/* Connect, ship stdin until END, wait for the last ACKs. Returns 0, or
 * the exit code with err saying why, from whichever thread failed first
 * (notes along the way go to stderr). The caller ignores SIGPIPE: a
 * closed peer is a failed write, not the end of the process. */
int zd_send_run(const struct zd_send_opts *o, char *err, size_t errlen);

/* zd-send as a whole (lib/send/tool.c): check which flags go together and
 * DEST (ZD_EXIT_USAGE with err), load the key, then zd_send_run (whose
 * caller ignores SIGPIPE). o->key is set here from o->key_path. */
int zd_send_main(struct zd_send_opts *o, char *err, size_t errlen);

#endif
