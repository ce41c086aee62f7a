/* SPDX-License-Identifier: MIT */
/*
 * zd-recv: the backup side. Flags, then lib/replica (zd_recv_main):
 * receive a zd-stream from zd-send, apply each epoch atomically to a
 * replica directory, ACK it, and take over when the primary is lost.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "zd/replica.h"
#include "zd/util.h"
#include "zd/wire.h"
#include "opt.h"

static void help(void)
{
	fputs("usage: zd-recv (--listen ADDR:PORT | --stdio) --replica DIR [--verify | --no-verify] [--once]\n"
	      "               [--no-fsync] [--compress none|zstd|delta] [--key FILE | --insecure]\n"
	      "               [--heartbeat MS] [--timeout MS] [--fence CMD] [--fence-timeout MS]\n"
	      "               [--on-failover CMD | --no-failover | --standby xen:CFG [--standby-at WHEN]]\n"
	      "               [--port-file FILE] [-v]\n"
	      "       zd-recv --replica DIR --status\n"
	      "\n"
	      "Receive a zd-stream(5) from zd-send and keep a replica of the protected VM in\n"
	      "DIR: each epoch is staged, verified, committed atomically and acknowledged.\n"
	      "When the primary is lost, take over (man zd-recv).\n"
	      "\n"
	      "  -l, --listen ADDR:PORT  accept TCP connections (port 0: a free one)\n"
	      "      --port-file FILE    once listening, write the port to FILE\n"
	      "      --stdio             the stream on stdin, ACKs on stdout (ssh)\n"
	      "  -r, --replica DIR       the replica directory (created if absent or empty)\n"
	      "      --verify            require a memory checksum in every COMMIT\n"
	      "      --no-verify         never hash the memory (default: check it when sent)\n"
	      "      --once              serve one primary's stream and exit with its status\n"
	      "      --no-fsync          do not fsync at each commit (default: fsync)\n"
	      "      --compress ENC      the most compressed PAGES taken (default: delta)\n"
	      "      --key FILE          pre-shared key: authenticate and encrypt (default: none)\n"
	      "      --insecure          listen on a non-loopback address without --key\n"
	      "      --heartbeat MS      heartbeat period, 0 = never (default: 100)\n"
	      "      --timeout MS        the primary is dead after MS of silence, 0 = only\n"
	      "                          when the connection ends (default: 500 or 0)\n"
	      "      --fence CMD         run CMD before taking over; failing, it stops it\n"
	      "      --fence-timeout MS  a fence still running after MS has failed (default: 10000)\n"
	      "      --on-failover CMD   exec CMD when the primary is lost (default for kvm:\n"
	      "                          the zd-vm beside zd-recv, --restore DIR)\n"
	      "      --no-failover       only report the loss (exit 5)\n"
	      "      --standby xen:CFG   keep a standby domain from xl CFG; a takeover starts it\n"
	      "      --standby-at WHEN   make it at the HEADER or at takeover (default: header)\n"
	      "      --status            print the replica's last epoch and memory checksum\n"
	      "  -v, --verbose           log each committed epoch on stderr\n"
	      "  -h, --help              this text\n"
	      "  -V, --version           print the version\n"
	      "\n"
	      "Exit status: 0 clean END, 1 runtime error, 2 usage, 3 bad stream data,\n"
	      "4 DIR is not a replica or is damaged, 5 the primary went away (no failover),\n"
	      "6 the fence failed: no takeover, 7 the standby could not be started; after a\n"
	      "takeover, that of CMD (0 with a standby).\n", stdout);
}

int main(int argc, char **argv)
{
	enum { PORT_FILE = 256, STDIO, VERIFY, NO_VERIFY, ONCE, NO_FSYNC, STATUS, HEARTBEAT, TIMEOUT,
	       FENCE, FENCE_TIMEOUT, INSECURE, ON_FAILOVER, NO_FAILOVER, COMPRESS, KEY, STANDBY, STANDBY_AT };
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, PORT_FILE },
		{ "stdio", no_argument, NULL, STDIO },
		{ "replica", required_argument, NULL, 'r' },
		{ "verify", no_argument, NULL, VERIFY },
		{ "no-verify", no_argument, NULL, NO_VERIFY },
		{ "once", no_argument, NULL, ONCE },
		{ "no-fsync", no_argument, NULL, NO_FSYNC },
		{ "status", no_argument, NULL, STATUS },
		{ "heartbeat", required_argument, NULL, HEARTBEAT },
		{ "timeout", required_argument, NULL, TIMEOUT },
		{ "fence", required_argument, NULL, FENCE },
		{ "fence-timeout", required_argument, NULL, FENCE_TIMEOUT },
		{ "insecure", no_argument, NULL, INSECURE },
		{ "on-failover", required_argument, NULL, ON_FAILOVER },
		{ "no-failover", no_argument, NULL, NO_FAILOVER },
		{ "compress", required_argument, NULL, COMPRESS },
		{ "key", required_argument, NULL, KEY },
		{ "standby", required_argument, NULL, STANDBY },
		{ "standby-at", required_argument, NULL, STANDBY_AT },
		ZD_CMD_COMMON_OPTS,
	};
	const struct zd_cmd cmd = { .shortopts = "l:r:vhV", .longopts = opts, .help = help };
	struct zd_recv_args a = ZD_RECV_ARGS_INIT;
	enum zd_page_enc enc;
	char msg[768];
	int c;

	zd_set_progname(argv[0]);
	zd_malloc_keep_big();
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'l': a.listen = optarg; break;
		case PORT_FILE: a.port_file = optarg; break;
		case STDIO: a.stdio = true; break;
		case 'r': a.dir = optarg; break;
		case VERIFY: a.verify = true; break;
		case NO_VERIFY: a.no_verify = true; break;
		case ONCE: a.once = true; break;
		case NO_FSYNC: a.no_fsync = true; break;
		case STATUS: a.status = true; break;
		case HEARTBEAT:
			a.heartbeat_ms = zd_opt_ms("--heartbeat", optarg, 3600000);
			a.heartbeat_set = true;
			break;
		case TIMEOUT:
			a.timeout_ms = zd_opt_ms("--timeout", optarg, 3600000);
			a.timeout_set = true;
			break;
		case FENCE: a.fence = optarg; break;
		case FENCE_TIMEOUT:
			a.fence_timeout_ms = zd_opt_ms("--fence-timeout", optarg, 3600000);
			a.fence_timeout_set = true;
			break;
		case INSECURE: a.insecure = true; break;
		case ON_FAILOVER: a.on_failover = optarg; break;
		case NO_FAILOVER: a.no_failover = true; break;
		case COMPRESS:
			if (zd_wire_enc_parse(optarg, &enc) < 0)
				zd_usage("--compress: '%s' is not none, zstd or delta", optarg);
			a.accept = (uint8_t)enc;
			a.accept_set = true;
			break;
		case KEY: a.key_path = optarg; break;
		case STANDBY: a.standby = optarg; break;
		case STANDBY_AT:
			if (strcmp(optarg, "header") && strcmp(optarg, "takeover"))
				zd_usage("--standby-at: '%s' is not header or takeover", optarg);
			a.standby_lazy = !strcmp(optarg, "takeover");
			a.standby_at = true;
			break;
		case 'v': zd_verbose = 1; break;
		}
	}
	zd_cmd_no_operands(argc, argv);
	/* A dead sender shows up as EPIPE on the ACK write, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return zd_cmd_exit(zd_recv_main(&a, msg, sizeof(msg)), msg);
}
