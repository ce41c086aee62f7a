/* SPDX-License-Identifier: MIT */
/* zd-mru: the standby-set policy stage. Parses flags; lib/mru/ does the rest. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "zd/mru.h"
#include "zd/util.h"
#include "opt.h"

#define USAGE "usage: zd-mru [--policy mru|lru|lfu|none] [--budget PAGES|PERCENT%] [--json]\n"

static void help(void)
{
	fputs(USAGE, stdout);
	printf("\n"
	       "Pass a zd-stream(5) from stdin to stdout; after each epoch add STAT \"mru\"\n"
	       "(precision and recall of the standby set predicted for it) and STANDBY, the\n"
	       "set predicted for the next epoch, also sent to zd-track's control socket.\n"
	       "\n"
	       "Options:\n"
	       "  -p, --policy POLICY    mru (most recently dirtied first), lru (least\n"
	       "                         recently: a deliberately poor baseline), lfu (most\n"
	       "                         often dirtied, decaying), none (empty) (default mru)\n"
	       "  -b, --budget N|P%%      standby pages per epoch: N pages, or P%% of the last\n"
	       "                         epoch's dirty pages (default %s)\n"
	       "  -j, --json             JSON lines even when stdout is not a terminal\n"
	       "  -v, --verbose          log on stderr\n"
	       "  -h, --help             this text\n"
	       "  -V, --version          print the version\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime failure, 2 usage, 3 bad input stream.\n",
	       ZD_MRU_DEFAULT_BUDGET);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "policy", required_argument, NULL, 'p' },
		{ "budget", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'j' },
		ZD_CMD_COMMON_OPTS,
	};
	struct zd_mru_stage_opts o = { .policy = ZD_MRU_MRU, .in_fd = 0, .out_fd = 1 };
	int c;

	zd_set_progname(argv[0]);
	zd_mru_budget_parse(ZD_MRU_DEFAULT_BUDGET, &o.budget);
	const struct zd_cmd cmd = { .shortopts = "p:b:jvhV", .longopts = longopts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'p':
			if (zd_mru_policy_parse(optarg, &o.policy) < 0)
				zd_usage("--policy '%s': want mru, lru, lfu or none", optarg);
			break;
		case 'b':
			if (zd_mru_budget_parse(optarg, &o.budget) < 0)
				zd_usage("--budget '%s': want a page count or a percentage like 50%%", optarg);
			break;
		case 'j':
			o.json = true;
			break;
		case 'v':
			zd_verbose = 1;
			break;
		}
	}
	if (optind < argc)
		zd_usage("unexpected argument '%s' (zd-mru reads stdin)", argv[optind]);
	signal(SIGPIPE, SIG_IGN);
	return zd_mru_stage_run(&o);
}
