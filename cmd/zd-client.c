/* SPDX-License-Identifier: MIT */
/* zd-client: requests to zd-vm's guest service, response delays, sequence
 * check. Parses flags; lib/client/ does the rest. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "zd/client.h"
#include "zd/util.h"
#include "opt.h"

static void help(void)
{
	fputs("usage: zd-client [--requests N] [--duration MS] [--rate R/s] [--concurrency C]\n"
	      "                 [--timeout MS] [--reconnect [--retry-for MS]] [--shared]\n"
	      "                 [--log FILE] [-v] ADDR:PORT\n"
	      "\n"
	      "Send requests (\"req K\") to the guest service of zd-vm --serve at ADDR:PORT,\n"
	      "measure each response delay and check that the answers (\"seq N\") form one\n"
	      "unbroken sequence; a JSON summary goes to stdout (man zd-client).\n"
	      "\n"
	      "  -n, --requests N       stop after N answers (default 100; with --duration\n"
	      "                         alone: no limit)\n"
	      "  -d, --duration MS      stop sending after this long (default: no limit)\n"
	      "  -r, --rate R[/s]       open loop: R requests per second (default: closed loop)\n"
	      "  -c, --concurrency C    at most C requests outstanding (default 1 without\n"
	      "                         --rate, no limit with it)\n"
	      "  -t, --timeout MS       longest wait for one answer (default 30000)\n"
	      "      --reconnect        connect again when the connection is lost (failover)\n"
	      "      --retry-for MS     with --reconnect: keep trying this long (default 5000)\n"
	      "      --shared           other clients use the service too: answers increase\n"
	      "  -l, --log FILE         one line per answer: SEQ SENT_NS RECEIVED_NS DELAY_NS\n"
	      "  -v, --verbose          log connections, losses and failover times on stderr\n"
	      "  -h, --help             this text\n"
	      "  -V, --version          print the version\n"
	      "\n"
	      "Exit status: 0 ok, 1 runtime failure, 2 usage, 3 an answer contradicts the\n"
	      "sequence, 5 ADDR:PORT unreachable, connection lost, or an answer timed out.\n", stdout);
}

/* "R" or "R/s" */
static double rate_arg(const char *s)
{
	char buf[64];
	size_t len = strnlen(s, sizeof(buf) - 1);
	double r;

	memcpy(buf, s, len);
	buf[len] = 0;
	if (len > 2 && !strcmp(buf + len - 2, "/s"))
		buf[len - 2] = 0;
	if (zd_parse_double(buf, &r) < 0 || !(r > 0) || r > 1e6)
		zd_usage("--rate '%s': want requests per second, above 0, at most 1000000", s);
	return r;
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
		ZD_CMD_COMMON_OPTS,
	};
	struct zd_client_opts o = {
		.timeout_ns = 30000000000ull,
		.retry_for_ns = 5000000000ull,
	};
	char msg[256];
	int c;

	zd_set_progname(argv[0]);
	const struct zd_cmd cmd = { .shortopts = "n:d:r:c:t:l:vhV", .longopts = longopts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'n':
			o.requests = zd_opt_count("--requests", optarg);
			o.requests_set = true;
			break;
		case 'd': o.duration_ns = zd_opt_duration_ns("--duration", optarg, false); break;
		case 'r': o.rate = rate_arg(optarg); break;
		case 'c':
			o.concurrency = zd_opt_count("--concurrency", optarg);
			o.concurrency_set = true;
			break;
		case 't': o.timeout_ns = zd_opt_duration_ns("--timeout", optarg, false); break;
		case OPT_RECONNECT: o.reconnect = true; break;
		case OPT_RETRY_FOR:
			o.retry_for_ns = zd_opt_duration_ns("--retry-for", optarg, true);
			o.retry_for_set = true;
			break;
		case OPT_SHARED: o.shared = true; break;
		case 'l':
			o.log_path = zd_opt_name("--log", optarg, "file name");
			break;
		case 'v': zd_verbose = 1; break;
		}
	}
	o.addr = zd_cmd_operand(argc, argv, "ADDR:PORT");
	/* SIGINT/SIGTERM end the run early: the summary of what was got is
	 * still worth having (the demo and the bench stop the client so). */
	zd_cmd_catch_stop();
	return zd_cmd_exit(zd_client_main(&o, &zd_cmd_stop, msg, sizeof(msg)), msg);
}
