/* SPDX-License-Identifier: MIT */
/*
 * zd-send as a whole: which flags go together, where DEST points, the key;
 * then zd_send_run (send.c). cmd/zd-send.c only reads the flags.
 */
#include <string.h>

#include "zd/net.h"
#include "zd/send.h"
#include "zd/util.h"
#include "zd/wire.h"

static int check(const struct zd_send_opts *o, char *err, size_t errlen)
{
	const int U = ZD_EXIT_USAGE;
	bool to_stdout = !strcmp(o->dest, "-");

	if (o->to_ms && o->hb_ms >= o->to_ms)
		return zd_msg(U, err, errlen, "--heartbeat must be shorter than --timeout (or --timeout 0)");
	if (o->level_set && o->wopts.enc == ZD_PENC_RAW)
		return zd_msg(U, err, errlen, "--level goes with --compress zstd or delta");
	if (o->cache_set && o->wopts.enc != ZD_PENC_DELTA)
		return zd_msg(U, err, errlen, "--delta-cache goes with --compress delta");
	if (o->resend_set && !o->reconnect_ms)
		return zd_msg(U, err, errlen, "--resend-buffer goes with --reconnect");
	if (o->key_path && to_stdout)
		return zd_msg(U, err, errlen, "--key needs a connection both ways: not with DEST -");
	if (o->reconnect_ms && to_stdout)
		return zd_msg(U, err, errlen, "--reconnect needs a connection both ways: not with DEST -");
	if (to_stdout) {
		if (o->json_log)
			return zd_msg(U, err, errlen, "--json-log needs stdout, which DEST - uses for the stream");
	} else if (!strncmp(o->dest, ZD_SSH_PREFIX, strlen(ZD_SSH_PREFIX))) {
		char uh[256], path[1024];

		if (zd_net_ssh_split(o->dest, uh, sizeof(uh), path, sizeof(path), err, errlen) < 0)
			return U;
	} else {
		char h[256], p[16];

		if (zd_net_split(o->dest, h, sizeof(h), p, sizeof(p), err, errlen) < 0)
			return U;
		if (!*h)
			return zd_msg(U, err, errlen, "%s: no host to send to", o->dest);
	}
	return 0;
}

int zd_send_main(struct zd_send_opts *o, char *err, size_t errlen)
{
	struct zd_auth_key key;
	int rc;

	*err = 0;
	if ((rc = check(o, err, errlen)))
		return rc;
	if (o->key_path) {
		char why[512];

		if (zd_auth_key_load(&key, o->key_path, why, sizeof(why)) < 0)
			return zd_msg(ZD_EXIT_USAGE, err, errlen, "--key %s", why);
		o->key = &key;
	}
	return zd_send_run(o, err, errlen);
}
