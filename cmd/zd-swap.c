/* SPDX-License-Identifier: MIT */
/*
 * zd-swap: drains each checkpoint's frozen pages into the stream. The
 * work is lib/capture/swap.c's.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "zd/capture.h"
#include "zd/util.h"
#include "opt.h"

#define USAGE "usage: zd-swap [--drain-delay MS] [--json] [-v]\n"

static void help(void)
{
	printf(USAGE
	       "\n"
	       "Read a zd-stream(5) on stdin and write it on stdout with the page contents\n"
	       "of every checkpoint: for each epoch whose CHECKPOINT does not say the\n"
	       "pages are inline, the DIRTY pages are read from the target named in the\n"
	       "HEADER and emitted as PAGES records before the epoch's COMMIT. Reports\n"
	       "DRAINED to zd-track over the stream's control socket.\n"
	       "\n"
	       "  --drain-delay MS  zddspt: wait MS after each guarded epoch's COMMIT before\n"
	       "                   draining it, the VM running (exercises the copy-on-write\n"
	       "                   guard as a slow link would; default 0)\n"
	       "  -j, --json       write JSON lines (default: binary unless stdout is a terminal)\n"
	       "  -v, --verbose    log each drained epoch on stderr\n"
	       "  -h, --help       this text\n"
	       "  -V, --version    print the version\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime error, 2 usage, 3 bad input stream,\n"
	       "4 the target cannot be attached or read.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "drain-delay", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		ZD_CMD_COMMON_OPTS,
	};
	const struct zd_cmd cmd = { .shortopts = "jvhV", .longopts = opts, .help = help };
	bool json = false;
	uint64_t drain_delay_ms = 0;
	int c;

	zd_set_progname(argv[0]);
	zd_malloc_keep_big();
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'D':
			if (zd_parse_u64(optarg, &drain_delay_ms) < 0 || drain_delay_ms > 10000)
				zd_usage("--drain-delay '%s': want milliseconds, 0 to 10000", optarg);
			break;
		case 'j': json = true; break;
		case 'v': zd_verbose = 1; break;
		}
	}
	zd_cmd_no_operands(argc, argv);
	signal(SIGPIPE, SIG_IGN);

	return zd_swap_run(STDIN_FILENO, STDOUT_FILENO, json, drain_delay_ms * 1000000);
}
