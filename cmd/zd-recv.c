/* SPDX-License-Identifier: MIT */
/*
 * zd-recv: the backup side. Receives a zd-stream from zd-send (TCP or
 * stdin), applies each epoch atomically to a replica directory and sends
 * ACKs back. The work is in lib/replica/.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/replica.h"
#include "zd/util.h"
#include "zd/wire.h"
#include "opt.h"

#define USAGE "usage: zd-recv (--listen ADDR:PORT | --stdio) --replica DIR [--verify | --no-verify] [--once]\n" \
	      "               [--no-fsync] [--compress none|zstd|delta] [--key FILE | --insecure]\n" \
	      "               [--heartbeat MS] [--timeout MS] [--fence CMD] [--fence-timeout MS]\n" \
	      "               [--on-failover CMD | --no-failover | --standby KIND:ARGS [--standby-at WHEN]] [-v]\n" \
	      "       zd-recv --replica DIR --status\n"

static void help(void)
{
	printf(USAGE
	       "\n"
	       "Receive a zd-stream(5) from zd-send and keep a replica of the protected VM\n"
	       "in DIR: each epoch is staged, verified and committed atomically, then\n"
	       "acknowledged to the sender.\n"
	       "\n"
	       "  -l, --listen ADDR:PORT  accept TCP connections (HOST:PORT, :PORT, [V6]:PORT;\n"
	       "                          port 0 picks a free one and prints it); an address\n"
	       "                          other than loopback needs --key or --insecure\n"
	       "      --port-file FILE    once listening, write the port to FILE (atomically:\n"
	       "                          a reader sees no file or the whole port)\n"
	       "      --stdio             read the stream on stdin, write ACKs on stdout (ssh)\n"
	       "  -r, --replica DIR       the replica directory (created if absent or empty)\n"
	       "      --verify            require a memory checksum in every COMMIT and check it\n"
	       "      --no-verify         never hash the memory (default: check the checksum\n"
	       "                          when a COMMIT carries one)\n"
	       "      --once              serve one primary's stream and exit with its status\n"
	       "                          (default: serve streams one after another)\n"
	       "      --no-fsync          do not fsync at each commit: the replica survives\n"
	       "                          zd-recv dying, not the backup host crashing (as\n"
	       "                          Remus's in-memory backup) (default: fsync)\n"
	       "      --compress ENC      the most compressed PAGES taken: none (raw only),\n"
	       "                          zstd, or delta (XOR against the replica's page, then\n"
	       "                          zstd); zd-send learns it at connect (default: delta)\n"
	       "      --key FILE          pre-shared key (16..4096 bytes, mode 0600): the\n"
	       "                          sender must prove it knows it, and every record\n"
	       "                          is encrypted and authenticated (default: none)\n"
	       "      --insecure          listen on a non-loopback address without --key\n"
	       "      --heartbeat MS      send a heartbeat back when nothing else went for MS\n"
	       "                          (TCP; 0 = never) (default: 100)\n"
	       "      --timeout MS        the primary is dead after MS without a record or a\n"
	       "                          heartbeat from it (TCP; 0 = only when the connection\n"
	       "                          ends) (default: 500 where a failover command applies,\n"
	       "                          else 0)\n"
	       "      --fence CMD         run CMD (sh -c) before taking over; a non-zero exit\n"
	       "                          stops the takeover (default: none, with a warning)\n"
	       "      --fence-timeout MS  a fence still running after MS is killed and counts\n"
	       "                          as failed (0: wait for ever) (default: 10000)\n"
	       "      --on-failover CMD   when the primary is lost without END: exec CMD (sh -c)\n"
	       "                          in place of zd-recv (default for kvm replicas:\n"
	       "                          \"$ZD_VM\" --restore \"$ZD_REPLICA\", ZD_VM being the\n"
	       "                          zd-vm beside zd-recv, else zd-vm; none for others)\n"
	       "      --no-failover       only report the loss (exit 5)\n"
	       "      --standby xen:CFG   keep a standby from xl CFG; a takeover starts it\n"
	       "      --standby-at WHEN   make it at the HEADER, or at takeover (default: header)\n"
	       "      --status            print the replica's last committed epoch and the\n"
	       "                          checksum of its memory, and exit\n"
	       "  -v, --verbose           log each committed epoch on stderr\n"
	       "  -h, --help              this text\n"
	       "  -V, --version           print the version\n"
	       "\n"
	       "Only the loss of the primary whose stream feeds the replica (it sent the\n"
	       "replica's HEADER, committed epochs, and no END) leads to a takeover.\n"
	       "CMD and the fence see ZD_REPLICA, ZD_EPOCH, ZD_TARGET, ZD_LAST_HEARD_NS,\n"
	       "ZD_LOST_NS (CLOCK_REALTIME ns) and ZD_VM in their environment.\n"
	       "\n"
	       "Exit status: 0 clean END, 1 runtime error, 2 usage, 3 bad stream data, a\n"
	       "bad MAC or a refused encoding (the epoch is discarded), 4 DIR is not a\n"
	       "replica or is damaged or the standby cannot follow the stream, 5 the\n"
	       "sender went away mid-stream (and no failover) or (--stdio) failed the key\n"
	       "handshake, 6 the fence failed or hung: no takeover, 7 the standby could\n"
	       "not be started; after a takeover, that of CMD (0 with a standby).\n");
}

static int status(struct zd_replica *rep)
{
	uint64_t sum;
	int rc;

	if (!rep->initialised)
		zd_diex(ZD_EXIT_TARGET, "%s: not a zd replica (empty)", rep->dir);
	if ((rc = zd_replica_memsum(rep, &sum)))
		zd_diex(rc, "%s", rep->err);
	printf("replica %s\nepoch %" PRIu64 "\nmemsum 0x%016" PRIx64 "\npage_size %u\npage_count %" PRIu64
	       "\ntarget %s\nmode %s\n",
	       rep->dir, rep->meta.epoch, sum, rep->meta.page_size, rep->meta.page_count,
	       rep->meta.target, rep->meta.mode);
	if (fflush(stdout) == EOF || ferror(stdout))
		zd_die(ZD_EXIT_FAIL, "stdout");
	/* meta.json recorded the checksum the epoch was verified against. */
	if (rep->meta.have_memsum && rep->meta.memsum != sum)
		zd_diex(ZD_EXIT_TARGET, "%s/memory.img: checksum 0x%016" PRIx64 " differs from 0x%016" PRIx64
			" recorded at epoch %" PRIu64 " (damaged replica)",
			rep->dir, sum, rep->meta.memsum, rep->meta.epoch);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, 'P' },
		{ "stdio", no_argument, NULL, 's' },
		{ "replica", required_argument, NULL, 'r' },
		{ "verify", no_argument, NULL, 'y' },
		{ "no-verify", no_argument, NULL, 'n' },
		{ "once", no_argument, NULL, '1' },
		{ "no-fsync", no_argument, NULL, 'F' },
		{ "status", no_argument, NULL, 'S' },
		{ "heartbeat", required_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "fence", required_argument, NULL, 'f' },
		{ "fence-timeout", required_argument, NULL, 'W' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "on-failover", required_argument, NULL, 'o' },
		{ "no-failover", no_argument, NULL, 'N' },
		{ "standby", required_argument, NULL, 'B' },
		{ "standby-at", required_argument, NULL, 'A' },
		{ "compress", required_argument, NULL, 'C' },
		{ "key", required_argument, NULL, 'K' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_spec = NULL, *dir = NULL, *key_path = NULL, *port_file = NULL, *standby = NULL;
	static struct zd_auth_key key;
	bool standby_lazy = false, standby_at = false;
	bool use_stdio = false, once = false, no_fsync = false, want_status = false, verify = false, no_verify = false;
	static struct zd_takeover tk = { .fence_timeout_ms = ZD_FENCE_TIMEOUT_MS };
	struct zd_recv_opts ro = { .verify = ZD_VERIFY_AUTO, .heartbeat_ms = 100, .timeout_ms = 500,
				   .on_peer_lost = zd_takeover_on_peer_lost, .arg = &tk,
				   .arm_timeout = zd_takeover_arm_timeout };
	bool hb_set = false, to_set = false, no_failover = false, insecure = false, fto_set = false;
	uint64_t v;
	struct zd_replica *rep = NULL;
	bool port0 = false;
	char msg[768];
	int c, rc;

	zd_set_progname(argv[0]);
	zd_malloc_keep_big();
	const struct zd_cmd cmd = { .shortopts = "l:r:vhV", .longopts = opts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'l': listen_spec = optarg; break;
		case 'P': port_file = optarg; break;
		case 's': use_stdio = true; break;
		case 'r': dir = optarg; break;
		case 'y': verify = true; break;
		case 'n': no_verify = true; break;
		case '1': once = true; break;
		case 'F': no_fsync = true; break;
		case 'S': want_status = true; break;
		case 'H':
		case 'T':
			if (zd_parse_u64(optarg, &v) < 0 || v > 3600000)
				zd_usage("--heartbeat/--timeout: '%s' is not a number of ms in 0..3600000", optarg);
			if (c == 'H')
				ro.heartbeat_ms = (unsigned)v, hb_set = true;
			else
				ro.timeout_ms = (unsigned)v, to_set = tk.timeout_set = true;
			break;
		case 'f': tk.fence = optarg; break;
		case 'W':
			if (zd_parse_u64(optarg, &v) < 0 || v > 3600000)
				zd_usage("--fence-timeout: '%s' is not a number of ms in 0..3600000", optarg);
			tk.fence_timeout_ms = (unsigned)v;
			fto_set = true;
			break;
		case 'I': insecure = true; break;
		case 'o': tk.cmd = optarg; break;
		case 'N': no_failover = true; break;
		case 'B': standby = optarg; break;
		case 'A':
			if (strcmp(optarg, "header") && strcmp(optarg, "takeover"))
				zd_usage("--standby-at: '%s' is not header or takeover", optarg);
			standby_lazy = !strcmp(optarg, "takeover");
			standby_at = true;
			break;
		case 'C': {
			enum zd_page_enc e;

			if (zd_wire_enc_parse(optarg, &e) < 0)
				zd_usage("--compress: '%s' is not none, zstd or delta", optarg);
			ro.accept = (uint8_t)e;
			ro.accept_set = true;
			break;
		}
		case 'K': key_path = optarg; break;
		case 'v': zd_verbose = 1; break;
		}
	}
	if (optind < argc)
		zd_usage("unexpected argument '%s'", argv[optind]);
	if (!dir)
		zd_usage("--replica DIR is required");
	if (want_status && (listen_spec || use_stdio || once || verify || no_verify || no_fsync))
		zd_usage("--status takes only --replica");
	if (!want_status && !listen_spec == !use_stdio)
		zd_usage("want exactly one of --listen ADDR:PORT and --stdio");
	if (want_status && (hb_set || to_set || tk.fence || tk.cmd || no_failover || key_path || ro.accept_set ||
			    insecure || fto_set))
		zd_usage("--status takes only --replica");
	if (no_failover && (tk.cmd || tk.fence || fto_set))
		zd_usage("--no-failover conflicts with --on-failover, --fence and --fence-timeout");
	if (standby && (tk.cmd || no_failover || want_status))
		zd_usage("--standby conflicts with --on-failover, --no-failover and --status");
	if (standby_at && !standby)
		zd_usage("--standby-at goes with --standby");
	if (fto_set && !tk.fence)
		zd_usage("--fence-timeout goes with --fence");
	if (key_path && insecure)
		zd_usage("--key and --insecure conflict");
	if (no_failover)
		tk.cmd = "";
	if (ro.timeout_ms && ro.heartbeat_ms >= ro.timeout_ms)
		zd_usage("--heartbeat must be shorter than --timeout (or --timeout 0)");
	if (port_file && !listen_spec)
		zd_usage("--port-file goes with --listen");
	if (use_stdio && once)
		zd_usage("--once goes with --listen (--stdio serves one stream)");
	if (verify && no_verify)
		zd_usage("--verify and --no-verify conflict");
	if (listen_spec) {
		char h[256], p[16];

		if (zd_net_split(listen_spec, h, sizeof(h), p, sizeof(p), msg, sizeof(msg)) < 0)
			zd_usage("%s", msg);
		port0 = !strcmp(p, "0");
		/* Guest memory in the clear, and a takeover anyone who can
		 * reach the port could steer: only on purpose. */
		int lo = zd_net_is_loopback(listen_spec, msg, sizeof(msg));
		if (lo < 0)
			zd_usage("%s", msg);
		if (!lo && !key_path && !insecure)
			zd_usage("--listen %s: not a loopback address, and no --key: anyone who reaches it could "
				"read the guest's memory and steer the replica (give --key FILE, or --insecure)", listen_spec);
	}
	ro.verify = verify ? ZD_VERIFY_ALWAYS : no_verify ? ZD_VERIFY_NEVER : ZD_VERIFY_AUTO;
	if (key_path) {
		if (zd_auth_key_load(&key, key_path, msg, sizeof(msg)) < 0)
			zd_usage("--key %s", msg);
		ro.key = &key;
	}
	if (standby) {
		if ((rc = zd_standby_new(&tk.standby, standby, standby_lazy, msg, sizeof(msg))))
			zd_usage("%s", msg);
		ro.standby = tk.standby;
		tk.verify = verify;
	}
	if (((tk.cmd && *tk.cmd) || tk.standby) && !want_status)
		zd_takeover_warn_unfenced(&tk, NULL);
	/* A dead sender shows up as EPIPE on the ACK write, not a signal. */
	signal(SIGPIPE, SIG_IGN);

	if ((rc = zd_replica_open(&rep, dir, msg, sizeof(msg))))
		zd_diex(rc, "%s", msg);
	rep->sync = !no_fsync;
	if (want_status) {
		rc = status(rep);
	} else if (use_stdio) {
		struct zd_conn conn;

		zd_net_stdio(&conn);
		rc = zd_recv_session(rep, &conn, &ro, msg, sizeof(msg));
		if (rc || tk.go)
			zd_warnx("%s", msg);
	} else {
		int lfd = zd_net_listen(listen_spec, msg, sizeof(msg));
		char name[128];

		if (lfd < 0)
			zd_diex(ZD_EXIT_FAIL, "%s", msg);
		zd_net_local_name(lfd, name, sizeof(name));
		/* With port 0 the caller cannot know the port otherwise. */
		if (zd_verbose || port0)
			zd_warnx("listening on %s", name);
		/* After listen(): a script that sees the file can connect. */
		if (port_file && zd_net_write_port_file(lfd, port_file, msg, sizeof(msg)) < 0)
			zd_diex(ZD_EXIT_FAIL, "%s", msg);
		if ((rc = zd_recv_serve(rep, lfd, &ro, once, &tk.go, msg, sizeof(msg))) && *msg)
			zd_warnx("%s", msg);
		close(lfd);
	}
	zd_replica_close(rep);
	zd_standby_free(tk.standby);	/* destroyed unless it was taken over */
	/* The replica's lock goes with zd-recv: CMD opens it freely. */
	if (tk.go && (rc = zd_takeover_exec(&tk, msg, sizeof(msg))))
		zd_diex(rc, "%s", msg);
	return rc;
}
