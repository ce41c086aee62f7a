/* SPDX-License-Identifier: MIT */
/*
 * zd-recv as a whole: which flags go together, then one of three runs —
 * print the replica's state (--status), receive one stream on stdin
 * (--stdio), or listen and serve — and, when the primary was lost, the
 * takeover. cmd/zd-recv.c only reads the flags into a struct zd_recv_args.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/replica.h"
#include "zd/util.h"
#include "zd/wire.h"

int zd_recv_check(const struct zd_recv_args *a, char *msg, size_t msglen)
{
	const int U = ZD_EXIT_USAGE;

	if (!a->dir)
		return zd_msg(U, msg, msglen, "--replica DIR is required");
	if (a->status && (a->listen || a->stdio || a->once || a->verify || a->no_verify || a->no_fsync ||
			  a->heartbeat_set || a->timeout_set || a->fence || a->on_failover || a->no_failover ||
			  a->key_path || a->accept_set || a->insecure || a->fence_timeout_set))
		return zd_msg(U, msg, msglen, "--status takes only --replica");
	if (!a->status && !a->listen == !a->stdio)
		return zd_msg(U, msg, msglen, "want exactly one of --listen ADDR:PORT and --stdio");
	if (a->no_failover && (a->on_failover || a->fence || a->fence_timeout_set))
		return zd_msg(U, msg, msglen, "--no-failover conflicts with --on-failover, --fence and --fence-timeout");
	if (a->fence_timeout_set && !a->fence)
		return zd_msg(U, msg, msglen, "--fence-timeout goes with --fence");
	if (a->key_path && a->insecure)
		return zd_msg(U, msg, msglen, "--key and --insecure conflict");
	if (a->timeout_ms && a->heartbeat_ms >= a->timeout_ms)
		return zd_msg(U, msg, msglen, "--heartbeat must be shorter than --timeout (or --timeout 0)");
	if (a->port_file && !a->listen)
		return zd_msg(U, msg, msglen, "--port-file goes with --listen");
	if (a->stdio && a->once)
		return zd_msg(U, msg, msglen, "--once goes with --listen (--stdio serves one stream)");
	if (a->verify && a->no_verify)
		return zd_msg(U, msg, msglen, "--verify and --no-verify conflict");
	if (a->standby && (a->on_failover || a->no_failover || a->status))
		return zd_msg(U, msg, msglen, "--standby conflicts with --on-failover, --no-failover and --status");
	if (a->standby_at && !a->standby)
		return zd_msg(U, msg, msglen, "--standby-at goes with --standby");
	if (a->listen) {
		char h[256], p[16];
		int lo;

		if (zd_net_split(a->listen, h, sizeof(h), p, sizeof(p), msg, msglen) < 0)
			return U;
		/* Guest memory in the clear, and a takeover anyone who can
		 * reach the port could steer: only on purpose. */
		if ((lo = zd_net_is_loopback(a->listen, msg, msglen)) < 0)
			return U;
		if (!lo && !a->key_path && !a->insecure)
			return zd_msg(U, msg, msglen, "--listen %s: not a loopback address, and no --key: anyone who "
				      "reaches it could read the guest's memory and steer the replica (give --key FILE, "
				      "or --insecure)", a->listen);
	}
	return 0;
}

/* --status: the replica's last committed epoch and the checksum of its
 * memory, checked against the one meta.json recorded. */
static int status(struct zd_replica *rep, char *msg, size_t msglen)
{
	uint64_t sum;
	int rc;

	if (!rep->initialised)
		return zd_msg(ZD_EXIT_TARGET, msg, msglen, "%s: not a zd replica (empty)", rep->dir);
	if ((rc = zd_replica_memsum(rep, &sum)))
		return zd_msg(rc, msg, msglen, "%s", rep->err);
	printf("replica %s\nepoch %" PRIu64 "\nmemsum 0x%016" PRIx64 "\npage_size %u\npage_count %" PRIu64
	       "\ntarget %s\nmode %s\n",
	       rep->dir, rep->meta.epoch, sum, rep->meta.page_size, rep->meta.page_count,
	       rep->meta.target, rep->meta.mode);
	if (fflush(stdout) == EOF || ferror(stdout))
		return zd_msg(ZD_EXIT_FAIL, msg, msglen, "stdout: write failed");
	if (rep->meta.have_memsum && rep->meta.memsum != sum)
		return zd_msg(ZD_EXIT_TARGET, msg, msglen, "%s/memory.img: checksum 0x%016" PRIx64 " differs from 0x%016"
			      PRIx64 " recorded at epoch %" PRIu64 " (damaged replica)",
			      rep->dir, sum, rep->meta.memsum, rep->meta.epoch);
	return 0;
}

/* Listen, say where, and serve. */
static int serve(const struct zd_recv_args *a, struct zd_replica *rep, const struct zd_recv_opts *ro,
		 const bool *stop, char *msg, size_t msglen)
{
	char name[128], h[256], p[16];
	int lfd, rc;

	if ((lfd = zd_net_listen(a->listen, msg, msglen)) < 0)
		return ZD_EXIT_FAIL;
	zd_net_local_name(lfd, name, sizeof(name));
	/* With port 0 the caller cannot know the port otherwise (a script
	 * reads --port-file rather than this line). */
	if (zd_verbose || (zd_net_split(a->listen, h, sizeof(h), p, sizeof(p), msg, msglen) == 0 && !strcmp(p, "0")))
		zd_warnx("listening on %s", name);
	*msg = 0;
	/* After listen(): a script that sees the file can connect. */
	if (a->port_file && zd_net_write_port_file(lfd, a->port_file, msg, msglen) < 0) {
		close(lfd);
		return ZD_EXIT_FAIL;
	}
	/* Its line goes out now: a takeover may follow. */
	if ((rc = zd_recv_serve(rep, lfd, ro, a->once, stop, msg, msglen)) && *msg)
		zd_warnx("%s", msg);
	*msg = 0;
	close(lfd);
	return rc;
}

int zd_recv_main(const struct zd_recv_args *a, char *msg, size_t msglen)
{
	struct zd_auth_key key;
	struct zd_takeover tk;
	struct zd_recv_opts ro = { .heartbeat_ms = a->heartbeat_ms, .timeout_ms = a->timeout_ms,
				   .accept_set = a->accept_set, .accept = a->accept,
				   .on_peer_lost = zd_takeover_on_peer_lost, .arg = &tk,
				   .arm_timeout = zd_takeover_arm_timeout };
	struct zd_replica *rep = NULL;
	int rc;

	*msg = 0;
	if ((rc = zd_recv_check(a, msg, msglen)))
		return rc;
	tk = (struct zd_takeover){ .fence = a->fence, .fence_timeout_ms = a->fence_timeout_ms,
				   .cmd = a->no_failover ? "" : a->on_failover, .timeout_set = a->timeout_set };
	ro.verify = a->verify ? ZD_VERIFY_ALWAYS : a->no_verify ? ZD_VERIFY_NEVER : ZD_VERIFY_AUTO;
	if (a->key_path) {
		char why[512];

		if (zd_auth_key_load(&key, a->key_path, why, sizeof(why)) < 0)
			return zd_msg(ZD_EXIT_USAGE, msg, msglen, "--key %s", why);
		ro.key = &key;
	}
	if (a->standby) {
		if ((rc = zd_standby_new(&tk.standby, a->standby, a->standby_lazy, msg, msglen)))
			return rc;
		ro.standby = tk.standby;
		/* The standby is checked against the replica before it starts
		 * unless --no-verify (with or without checksums in the COMMITs). */
		tk.verify = !a->no_verify;
	}
	if (((tk.cmd && *tk.cmd) || tk.standby) && !a->status)
		zd_takeover_warn_unfenced(&tk, NULL);
	if ((rc = zd_replica_open(&rep, a->dir, msg, msglen))) {
		zd_standby_free(tk.standby);
		return rc;
	}
	rep->sync = !a->no_fsync;
	if (a->status) {
		rc = status(rep, msg, msglen);
	} else if (a->stdio) {
		struct zd_conn conn;

		zd_net_stdio(&conn);
		rc = zd_recv_session(rep, &conn, &ro, msg, msglen);
		/* Why the primary was lost, before the takeover. */
		if (tk.go) {
			zd_warnx("%s", msg);
			*msg = 0;
		}
	} else {
		rc = serve(a, rep, &ro, &tk.go, msg, msglen);
	}
	zd_replica_close(rep);
	zd_standby_free(tk.standby);	/* destroyed unless it was taken over */
	/* The replica's lock goes with zd-recv: the command opens it freely. */
	if (tk.go)
		return zd_takeover_exec(&tk, msg, msglen);
	return rc;
}
