/* SPDX-License-Identifier: MIT */
/* zd-track: the checkpoint scheduler. Parses flags; lib/track/ does the rest. */
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include "zd/target.h"
#include "zd/track.h"
#include "zd/util.h"
#include "opt.h"

static void help(void)
{
	printf("usage: zd-track TARGET [--interval MS] [--epochs N] [--mode remus|buffered|zddspt]\n"
	       "                [--precopy PERCENT] [--no-guard] [--verify] [--json] [--control PATH]\n"
	       "                [--timeout MS] [--grace MS] [--max-hold MS] [--window N] [-v]\n"
	       "\n"
	       "Checkpoint TARGET every interval and write a zd-stream(5) on stdout\n"
	       "(man zd-track).\n"
	       "\n"
	       "Targets:\n"
	       "  %s\n  %s\n  kvm:SOCKET  (a VM run by zd-vm --control SOCKET)\n"
	       "  xen:NAME|DOMID[,output-commit=on|off]  (a PVH or HVM domain of this Xen host)\n"
	       "\n"
	       "  -i, --interval MS      checkpoint interval, 0 = back to back (default 25)\n"
	       "  -n, --epochs N         stop after N epochs (default: until SIGINT/SIGTERM)\n"
	       "  -m, --mode MODE        remus, buffered or zddspt (default remus)\n"
	       "  -p, --precopy PERCENT  zddspt: pre-copy this share of the interval (default 2)\n"
	       "      --no-guard         zddspt: copy the frozen set while paused\n"
	       "      --verify           put a whole-memory checksum in every COMMIT\n"
	       "  -j, --json             JSON lines even when stdout is not a terminal\n"
	       "  -c, --control PATH     feedback socket (default in $XDG_RUNTIME_DIR or /tmp)\n"
	       "  -t, --timeout MS       remus: longest wait for the backup (default 10000)\n"
	       "  -g, --grace MS         remus: wait for a backup stage at the start (default 1000)\n"
	       "      --max-hold MS      warn when output waited MS for an ACK, 0 = never\n"
	       "                         (default 2000)\n"
	       "  -w, --window N         buffered, zddspt: most epochs unacknowledged, 0 = no\n"
	       "                         limit (default 1)\n"
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
		ZD_CMD_COMMON_OPTS,
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
	uint64_t v;
	char msg[256];
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
			o.precopy_set = true;
			break;
		case 'G': o.no_guard = true; break;
		case 'y': o.verify = true; break;
		case 'j': o.json = true; break;
		case 'c': o.control = optarg; break;
		case 't':
			if (zd_parse_duration_ns(optarg, &o.timeout_ns) < 0 || o.timeout_ns == 0)
				zd_usage("--timeout '%s': want a duration > 0, e.g. 10000 or 10s", optarg);
			break;
		case 'g':
			if (zd_parse_duration_ns(optarg, &o.grace_ns) < 0 || o.grace_ns > 3600ull * 1000000000)
				zd_usage("--grace '%s': want a duration up to 1h, e.g. 1000 or 1s", optarg);
			o.grace_set = true;
			break;
		case 'M':
			if (zd_parse_duration_ns(optarg, &o.max_hold_ns) < 0 || o.max_hold_ns > 3600ull * 1000000000)
				zd_usage("--max-hold '%s': want a duration up to 1h, e.g. 2000 or 2s (0 = never)", optarg);
			break;
		case 'w':
			if (zd_parse_u64(optarg, &o.window) < 0 || o.window > 1000000)
				zd_usage("--window '%s': want a number of epochs, 0 (no limit) to 1000000", optarg);
			break;
		case 'v': zd_verbose = 1; break;
		}
	}
	o.spec = zd_cmd_operand(argc, argv, "TARGET");

	zd_cmd_catch_stop();
	return zd_cmd_exit(zd_track_main(&o, &zd_cmd_stop, msg, sizeof(msg)), msg);
}
