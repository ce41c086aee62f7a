/* SPDX-License-Identifier: MIT */
/* zd-client: requests to zd-vm's guest service, response delays, sequence
 * check. Parses flags; lib/client/ does the rest. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zd/client.h"
#include "zd/util.h"
#include "opt.h"

#define USAGE                                                                              \
	"usage: zd-client [--requests N] [--duration MS] [--rate R/s] [--concurrency C]\n"  \
	"                 [--timeout MS] [--reconnect [--retry-for MS]] [--shared]\n"       \
	"                 [--log FILE] [-v] ADDR:PORT\n"

static void help(void)
{
	fputs(USAGE, stdout);
	printf("\n"
	       "Send requests (lines \"req K\") to the guest service of zd-vm --serve at\n"
	       "ADDR:PORT, read the answers (\"seq N\"), measure each response delay and check\n"
	       "that the answers form one unbroken sequence. A JSON summary goes to stdout.\n"
	       "\n"
	       "  -n, --requests N       stop after N answers (default 100; with --duration\n"
	       "                         alone: no limit)\n"
	       "  -d, --duration MS      stop sending after this long, then wait for the\n"
	       "                         answers outstanding (default: no limit)\n"
	       "  -r, --rate R[/s]       open loop: send R requests per second whatever the\n"
	       "                         answers (default: closed loop)\n"
	       "  -c, --concurrency C    at most C requests outstanding (default 1 without\n"
	       "                         --rate, no limit with it)\n"
	       "  -t, --timeout MS       longest wait for one answer (default 30000)\n"
	       "      --reconnect        when the connection is lost or an answer is late,\n"
	       "                         connect to ADDR:PORT again, send the unanswered\n"
	       "                         requests again and carry on (failover)\n"
	       "      --retry-for MS     with --reconnect: keep trying this long each time,\n"
	       "                         every 2 ms (default 5000)\n"
	       "      --shared           other clients use the service too: answers must\n"
	       "                         increase, not follow one another (default: they must)\n"
	       "  -l, --log FILE         one line per answer: SEQ SENT_NS RECEIVED_NS DELAY_NS\n"
	       "                         (CLOCK_MONOTONIC), and FAILOVER_NS on the first\n"
	       "                         answer after a loss (since the last one before it)\n"
	       "  -v, --verbose          log connections, losses and failover times on stderr\n"
	       "  -h, --help             this text\n"
	       "  -V, --version          print the version\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime failure, 2 usage, 3 an answer contradicts the\n"
	       "sequence, 5 ADDR:PORT unreachable, connection lost, or an answer timed out.\n");
}

static uint64_t ms_arg(const char *opt, const char *s, bool zero_ok)
{
	uint64_t ns;

	if (zd_parse_duration_ns(s, &ns) < 0 || (!zero_ok && ns == 0))
		zd_usage("%s '%s': want a duration%s", opt, s,
			zero_ok ? "" : " above 0");
	return ns;
}

static uint64_t count_arg(const char *opt, const char *s)
{
	uint64_t v;

	if (zd_parse_u64(s, &v) < 0 || v == 0)
		zd_usage("%s '%s': want a whole number above 0", opt, s);
	return v;
}

static volatile sig_atomic_t stop_flag;

static void on_stop(int sig)
{
	(void)sig;
	stop_flag = 1;
}

int main(int argc, char **argv)
{
	enum { OPT_RECONNECT = 256, OPT_RETRY_FOR, OPT_SHARED };
	static const struct option longopts[] = {
		{ "requests", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "rate", required_argument, NULL, 'r' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 't' },
		{ "reconnect", no_argument, NULL, OPT_RECONNECT },
		{ "retry-for", required_argument, NULL, OPT_RETRY_FOR },
		{ "shared", no_argument, NULL, OPT_SHARED },
		{ "log", required_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ 0 },
	};
	struct zd_client_opts o = {
		.timeout_ns = 30000000000ull,
		.retry_for_ns = 5000000000ull,
	};
	bool have_requests = false, have_conc = false, have_retry = false;
	int c;

	zd_set_progname(argv[0]);
	const struct zd_cmd cmd = { .shortopts = "n:d:r:c:t:l:vhV", .longopts = longopts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'n':
			o.requests = count_arg("--requests", optarg);
			have_requests = true;
			break;
		case 'd':
			o.duration_ns = ms_arg("--duration", optarg, false);
			break;
		case 'r': {
			char buf[64];
			size_t len = strlen(optarg);

			/* "R" or "R/s" */
			if (len >= sizeof(buf))
				len = sizeof(buf) - 1;
			memcpy(buf, optarg, len);
			buf[len] = 0;
			if (len > 2 && !strcmp(buf + len - 2, "/s"))
				buf[len - 2] = 0;
			if (zd_parse_double(buf, &o.rate) < 0 || !(o.rate > 0) || o.rate > 1e6)
				zd_usage("--rate '%s': want requests per second, above 0, at most 1000000",
					optarg);
			break;
		}
		case 'c':
			o.concurrency = count_arg("--concurrency", optarg);
			have_conc = true;
			break;
		case 't':
			o.timeout_ns = ms_arg("--timeout", optarg, false);
			break;
		case OPT_RECONNECT:
			o.reconnect = true;
			break;
		case OPT_RETRY_FOR:
			o.retry_for_ns = ms_arg("--retry-for", optarg, true);
			have_retry = true;
			break;
		case OPT_SHARED:
			o.shared = true;
			break;
		case 'l':
			if (!*optarg)
				zd_usage("--log: empty file name");
			o.log_path = optarg;
			break;
		case 'v':
			zd_verbose = 1;
			break;
		}
	}
	if (have_retry && !o.reconnect)
		zd_usage("--retry-for needs --reconnect");
	if (optind == argc)
		zd_usage("missing ADDR:PORT");
	if (argc - optind > 1)
		zd_usage("unexpected argument '%s'", argv[optind + 1]);
	o.addr = argv[optind];
	if (!strrchr(o.addr, ':') || !strrchr(o.addr, ':')[1])
		zd_usage("'%s': want ADDR:PORT", o.addr);
	if (!have_requests && !o.duration_ns)
		o.requests = 100;
	if (!have_conc && o.rate == 0)
		o.concurrency = 1;
	/* SIGINT/SIGTERM end the run early: the summary of what was got is
	 * still worth having (the demo and the bench stop the client so). No
	 * SA_RESTART: the client's poll returns. */
	struct sigaction sa = { .sa_handler = on_stop };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return zd_client_run(&o, &stop_flag);
}
