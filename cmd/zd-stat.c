/* SPDX-License-Identifier: MIT */
/* zd-stat: per-epoch and summary figures of a stream. Parses flags; lib/stat/ does the rest. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "zd/stat.h"
#include "zd/status.h"
#include "zd/util.h"
#include "opt.h"

#define USAGE                                                                  \
	"usage: zd-stat [--json | --csv] [--follow[=EVERY]] [--plot FILE.png]\n"  \
	"               [--from EPOCH] [--output-log FILE] [--client-log FILE] [FILE]\n"  \
	"       zd-stat --live [--json]\n"

static void help(void)
{
	fputs(USAGE, stdout);
	printf("\n"
	       "Read a zd-stream(5) from FILE or stdin and report per-epoch figures (dirty,\n"
	       "pre-copied and standby pages, standby precision and recall, pause, checkpoint\n"
	       "latency, pages sent, stream bytes) and a summary: pause, latency, output\n"
	       "and response delay as p50/p99/max/mean, bytes per epoch.\n"
	       "\n"
	       "Options:\n"
	       "  -j, --json             one JSON summary object instead of the table\n"
	       "  -c, --csv              one CSV row per epoch, with a header line\n"
	       "  -F, --follow[=EVERY]   while the stream runs, a line of the figures so far\n"
	       "                         (epoch, epochs, pages sent, bytes, pause, latency)\n"
	       "                         every EVERY: a duration with its unit (500ms, 2s) or\n"
	       "                         epochs:N (default 1s); a JSON object with --json;\n"
	       "                         not with --csv\n"
	       "  -p, --plot FILE.png    also draw dirty, standby hits, pause (gnuplot)\n"
	       "  -L, --live             the live status of every zd-recv and zd-track running\n"
	       "                         here (their status sockets; JSON array with --json)\n"
	       "  -f, --from EPOCH       leave out the epochs before EPOCH (e.g. 2: not the\n"
	       "                         first checkpoint, which copies all memory) (default 1)\n"
	       "  -o, --output-log FILE  zd-vm's --output-log: output delay of every released\n"
	       "                         answer (produced to released)\n"
	       "  -C, --client-log FILE  zd-client's --log: response delay of every answer\n"
	       "                         (request sent to answer received)\n"
	       "  -v, --verbose          log on stderr\n"
	       "  -h, --help             this text\n"
	       "  -V, --version          print the version\n"
	       "\n"
	       "Default: a table on stdout. Percentiles are nearest-rank. Pages sent are\n"
	       "zd-send's (STAT \"send\") where the stream has them, else its PAGES'.\n"
	       "A cut stream and SIGINT/SIGTERM still get the report of what was read.\n"
	       "Exit status: 0 ok, 1 runtime failure, 2 usage, 3 bad input stream (a cut\n"
	       "one: after its report), 130 SIGINT, 143 SIGTERM (after the report).\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "csv", no_argument, NULL, 'c' },
		{ "follow", optional_argument, NULL, 'F' },
		{ "plot", required_argument, NULL, 'p' },
		{ "live", no_argument, NULL, 'L' },
		{ "from", required_argument, NULL, 'f' },
		{ "output-log", required_argument, NULL, 'o' },
		{ "client-log", required_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct zd_stat_opts o = { .format = ZD_STAT_TABLE, .in_fd = 0, .in_name = "stdin" };
	bool json = false, csv = false, follow = false, live = false;
	char msg[256];
	int c, rc;

	zd_set_progname(argv[0]);
	const struct zd_cmd cmd = { .shortopts = "jcF::p:Lf:o:C:vhV", .longopts = longopts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'c':
			csv = true;
			break;
		case 'F':
			follow = true;
			if (zd_stat_parse_follow(optarg ? optarg : "1s", &o, msg, sizeof(msg)) < 0)
				zd_usage("%s", msg);
			break;
		case 'p':
			o.plot = zd_opt_name("--plot", optarg, "file name");
			break;
		case 'f':
			if (zd_parse_u64(optarg, &o.from) < 0)
				zd_usage("--from '%s': want an epoch number",
					optarg);
			break;
		case 'o':
		case 'C': {
			FILE **fp = c == 'o' ? &o.output_log : &o.client_log;
			const char *opt = c == 'o' ? "--output-log" : "--client-log";

			if (*fp)
				zd_usage("%s given twice", opt);
			*fp = fopen(zd_opt_name(opt, optarg, "file name"), "re");
			if (!*fp)
				zd_die(ZD_EXIT_USAGE, "%s %s", opt, optarg);
			if (c == 'o')
				o.output_log_name = optarg;
			else
				o.client_log_name = optarg;
			break;
		}
		case 'L':
			live = true;
			break;
		case 'v':
			zd_verbose = 1;
			break;
		}
	}
	if (json && csv)
		zd_usage("--json and --csv: choose one");
	if (live)	/* what runs here now, not a stream */
		return zd_status_query_all(stdout, json) >= 0 ? 0 : ZD_EXIT_FAIL;
	if (follow && csv)
		zd_usage("--follow and --csv: choose one (a follow line is no CSV row)");
	o.format = json ? ZD_STAT_JSON : csv ? ZD_STAT_CSV : ZD_STAT_TABLE;
	if (argc - optind > 1)
		zd_usage("unexpected argument '%s' (one FILE at most)",
			argv[optind + 1]);
	if (optind < argc && strcmp(argv[optind], "-") != 0) {
		o.in_name = argv[optind];
		o.in_fd = open(o.in_name, O_RDONLY | O_CLOEXEC);
		if (o.in_fd < 0)
			zd_die(ZD_EXIT_USAGE, "%s", o.in_name);
	}
	zd_cmd_catch_stop_restart(&o.stop_sigs);
	o.stop = &zd_cmd_stop;
	o.input_done = zd_cmd_uncatch_stop;
	rc = zd_stat_run(&o);
	if (o.in_fd > 0)
		close(o.in_fd);
	if (o.output_log)
		fclose(o.output_log);
	if (o.client_log)
		fclose(o.client_log);
	return rc;
}
