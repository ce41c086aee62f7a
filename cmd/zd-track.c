/* SPDX-License-Identifier: MIT */
/* zd-track: the checkpoint scheduler. Parses flags; lib/track/ does the rest. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/target.h"
#include "zd/track.h"
#include "zd/util.h"
#include "opt.h"

#define USAGE "usage: zd-track TARGET [--interval MS] [--epochs N] [--mode remus|buffered|zddspt]\n" \
	      "                [--precopy PERCENT] [--no-guard] [--verify] [--json] [--control PATH]\n" \
	      "                [--timeout MS] [--grace MS] [--max-hold MS] [--window N] [-v]\n"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void help(void)
{
	printf(USAGE
	       "\n"
	       "Checkpoint TARGET every interval and write a zd-stream(5) on stdout.\n"
	       "\n"
	       "Targets:\n"
	       "  %s\n  %s\n  kvm:SOCKET  (a VM run by zd-vm --control SOCKET)\n"
	       "  xen:NAME|DOMID[,output-commit=on|off]  (a PVH or HVM domain of this Xen\n"
	       "                  host: dom0, root; where zd is built with libxen-dev;\n"
	       "                  output commit holds the guest's network output until\n"
	       "                  its epoch's ACK, default on, needs sch_plug)\n"
	       "\n"
	       "Options:\n"
	       "  -i, --interval MS      checkpoint interval; ns/us/ms/s suffixes, 0 = back to\n"
	       "                         back (default 25)\n"
	       "  -n, --epochs N         stop after N epochs (default: until SIGINT/SIGTERM)\n"
	       "  -m, --mode MODE        remus (pause until the backup has the epoch),\n"
	       "                         buffered (copy while paused, send while running),\n"
	       "                         zddspt (pre-copy + frozen table) (default remus)\n"
	       "  -p, --precopy PERCENT  zddspt: start pre-copy this share of the interval\n"
	       "                         before the checkpoint, 0-99 (default 20)\n"
	       "      --no-guard         zddspt: copy the frozen set while paused instead of\n"
	       "                         write-protecting it (default: protect where the target\n"
	       "                         can and zd-swap drains; else the copy, see STAT)\n"
	       "      --verify           put a whole-memory checksum in every COMMIT\n"
	       "  -j, --json             JSON lines even when stdout is not a terminal\n"
	       "  -c, --control PATH     feedback socket (default\n"
	       "                         $XDG_RUNTIME_DIR/zd-track.PID.sock or /tmp/…)\n"
	       "  -t, --timeout MS       remus: longest wait for the backup's ACK or DRAINED\n"
	       "                         (default 10000)\n"
	       "  -g, --grace MS         remus: wait this long at the start for a backup stage\n"
	       "                         to connect before running open loop (default 1000)\n"
	       "      --max-hold MS      warn loudly when output has waited MS for the backup's\n"
	       "                         ACK (zd-send reconnecting); 0 = never (default 2000)\n"
	       "  -w, --window N         buffered, zddspt: take a checkpoint only while fewer\n"
	       "                         than N epochs wait for the backup's ACK (the VM runs\n"
	       "                         on meanwhile; at most --timeout); 0 = no limit\n"
	       "                         (default 1)\n"
	       "  -v, --verbose          log every epoch on stderr\n"
	       "  -h, --help             this text\n"
	       "  -V, --version          print the version\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime failure, 2 usage, 4 target, 5 backup peer.\n",
	       zd_target_synth.usage, zd_target_trace.usage);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "epochs", required_argument, NULL, 'n' },
		{ "mode", required_argument, NULL, 'm' },
		{ "precopy", required_argument, NULL, 'p' },
		{ "verify", no_argument, NULL, 'y' },
		{ "no-guard", no_argument, NULL, 'G' },
		{ "json", no_argument, NULL, 'j' },
		{ "control", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 't' },
		{ "grace", required_argument, NULL, 'g' },
		{ "max-hold", required_argument, NULL, 'M' },
		{ "window", required_argument, NULL, 'w' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct zd_track_opts o = {
		.interval_ns = ZD_TRACK_DEFAULT_INTERVAL_NS,
		.mode = ZD_MODE_REMUS,
		.precopy_pct = ZD_TRACK_DEFAULT_PRECOPY,
		.timeout_ns = ZD_TRACK_DEFAULT_TIMEOUT_NS,
		.grace_ns = ZD_TRACK_DEFAULT_GRACE_NS,
		.max_hold_ns = ZD_TRACK_DEFAULT_MAX_HOLD_NS,
		.window = ZD_TRACK_DEFAULT_WINDOW,
		.out_fd = STDOUT_FILENO,
	};
	bool precopy_given = false, grace_given = false;
	struct sigaction sa;
	uint64_t v;
	int c;

	zd_set_progname(argv[0]);
	const struct zd_cmd cmd = { .shortopts = "i:n:m:p:jc:t:g:w:vhV", .longopts = longopts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'i':
			if (zd_parse_duration_ns(optarg, &o.interval_ns) < 0 ||
			    o.interval_ns > 3600ull * 1000000000)
				zd_usage("--interval '%s': want a duration up to 1h, e.g. 25 or 25ms", optarg);
			break;
		case 'n':
			if (zd_parse_u64(optarg, &o.epochs) < 0 || o.epochs == 0)
				zd_usage("--epochs '%s': want a whole number >= 1", optarg);
			break;
		case 'm':
			if (zd_mode_parse(optarg, &o.mode) < 0)
				zd_usage("--mode '%s': want remus, buffered or zddspt", optarg);
			break;
		case 'p':
			if (zd_parse_u64(optarg, &v) < 0 || v > 99)
				zd_usage("--precopy '%s': want a percentage from 0 to 99", optarg);
			o.precopy_pct = (unsigned)v;
			precopy_given = true;
			break;
		case 'G':
			o.no_guard = true;
			break;
		case 'y':
			o.verify = true;
			break;
		case 'j':
			o.json = true;
			break;
		case 'c':
			o.control = optarg;
			break;
		case 't':
			if (zd_parse_duration_ns(optarg, &o.timeout_ns) < 0 || o.timeout_ns == 0)
				zd_usage("--timeout '%s': want a duration > 0, e.g. 10000 or 10s", optarg);
			break;
		case 'g':
			if (zd_parse_duration_ns(optarg, &o.grace_ns) < 0 || o.grace_ns > 3600ull * 1000000000)
				zd_usage("--grace '%s': want a duration up to 1h, e.g. 1000 or 1s", optarg);
			grace_given = true;
			break;
		case 'M':
			if (zd_parse_duration_ns(optarg, &o.max_hold_ns) < 0 || o.max_hold_ns > 3600ull * 1000000000)
				zd_usage("--max-hold '%s': want a duration up to 1h, e.g. 2000 or 2s (0 = never)", optarg);
			break;
		case 'w':
			if (zd_parse_u64(optarg, &o.window) < 0 || o.window > 1000000)
				zd_usage("--window '%s': want a number of epochs, 0 (no limit) to 1000000", optarg);
			break;
		case 'v':
			zd_verbose = 1;
			break;
		}
	}
	if (optind == argc)
		zd_usage("missing TARGET");
	if (argc - optind > 1)
		zd_usage("unexpected argument '%s'", argv[optind + 1]);
	if (precopy_given && o.mode != ZD_MODE_ZDDSPT)
		zd_usage("--precopy needs --mode zddspt");
	if (o.no_guard && o.mode != ZD_MODE_ZDDSPT)
		zd_usage("--no-guard needs --mode zddspt");
	if (grace_given && o.mode != ZD_MODE_REMUS)
		zd_usage("--grace needs --mode remus");
	o.spec = argv[optind];

	/* A flag and no work in the handler: the loop ends the stream. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	/* A reader that went away shows as EPIPE on write, reported once. */
	signal(SIGPIPE, SIG_IGN);

	return zd_track_run(&o, &stop_flag);
}
