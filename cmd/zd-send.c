/* SPDX-License-Identifier: MIT */
/*
 * zd-send: flags, then lib/send (zd_send_run): ship the stream to
 * zd-recv, relay its ACKs to zd-track, reconnect a lost link.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#include "zd/send.h"
#include "zd/util.h"
#include "zd/wire.h"
#include "opt.h"

static void help(void)
{
	printf("usage: zd-send [--compress none|zstd|delta] [--level N] [--delta-cache SIZE]\n"
	       "               [--key FILE] [--json-log] [--heartbeat MS] [--timeout MS]\n"
	       "               [--reconnect MS] [--resend-buffer SIZE] [-v] DEST\n"
	       "\n"
	       "Ship a zd-stream(5) read on stdin to zd-recv at DEST and relay the backup's\n"
	       "acknowledgements to zd-track (man zd-send).\n"
	       "\n"
	       "  DEST                  HOST:PORT, [V6]:PORT, ssh:[USER@]HOST[:PATH], or -\n"
	       "                        (stdout; no ACKs come back)\n"
	       "  -c, --compress ENC    PAGES as sent: none, zstd or delta (default: delta)\n"
	       "      --level N         zstd level, %d..%d (default: %d)\n"
	       "      --delta-cache SIZE  copies of pages sent, for delta (default: 256M)\n"
	       "      --key FILE        pre-shared key: authenticate and encrypt (default: none)\n"
	       "  -j, --json-log        the log stream on stdout as JSON lines\n"
	       "      --heartbeat MS    heartbeat period, 0 = never (default: 100)\n"
	       "      --timeout MS      zd-recv is gone after MS of silence, 0 = only when the\n"
	       "                        connection ends (default: 2000)\n"
	       "      --reconnect MS    reconnect a lost link for up to MS (default: 0, exit 5)\n"
	       "      --resend-buffer SIZE  epochs kept for --reconnect (default: 256M)\n"
	       "  -v, --verbose         log each epoch on stderr\n"
	       "  -h, --help            this text\n"
	       "  -V, --version         print the version\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime error, 2 usage, 3 bad input stream, 4 the target\n"
	       "cannot be read, 5 zd-recv unreachable, gone, or refused the key or encoding.\n",
	       ZSTD_minCLevel(), ZSTD_maxCLevel(), ZD_WIRE_LEVEL_DEFAULT);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json-log", no_argument, NULL, 'j' },
		{ "compress", required_argument, NULL, 'c' },
		{ "level", required_argument, NULL, 'L' },
		{ "delta-cache", required_argument, NULL, 'D' },
		{ "key", required_argument, NULL, 'K' },
		{ "heartbeat", required_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "reconnect", required_argument, NULL, 'R' },
		{ "resend-buffer", required_argument, NULL, 'B' },
		ZD_CMD_COMMON_OPTS,
	};
	struct zd_send_opts o = { .hb_ms = 100, .to_ms = 2000, .resend_bytes = ZD_RESEND_DEFAULT,
				  .wopts = { .enc = ZD_PENC_DELTA, .level = ZD_WIRE_LEVEL_DEFAULT,
					     .cache_bytes = ZD_WIRE_CACHE_DEFAULT } };
	int64_t lv;
	char msg[1024];
	int c;

	zd_set_progname(argv[0]);
	zd_malloc_keep_big();
	const struct zd_cmd cmd = { .shortopts = "jc:vhV", .longopts = opts, .help = help };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'j': o.json_log = true; break;
		case 'c':
			if (zd_wire_enc_parse(optarg, &o.wopts.enc) < 0)
				zd_usage("--compress: '%s' is not none, zstd or delta", optarg);
			break;
		case 'L': {
			char *end;

			errno = 0;
			lv = strtoll(optarg, &end, 10);
			if (errno || !*optarg || *end || lv < ZSTD_minCLevel() || lv > ZSTD_maxCLevel())
				zd_usage("--level: '%s' is not a zstd level in %d..%d",
					optarg, ZSTD_minCLevel(), ZSTD_maxCLevel());
			o.wopts.level = (int)lv;
			o.level_set = true;
			break;
		}
		case 'D':
			o.wopts.cache_bytes = zd_opt_size("--delta-cache", optarg);
			o.cache_set = true;
			break;
		case 'B':
			o.resend_bytes = zd_opt_size("--resend-buffer", optarg);
			o.resend_set = true;
			break;
		case 'K': o.key_path = optarg; break;
		case 'H': o.hb_ms = zd_opt_ms("--heartbeat", optarg, 3600000); break;
		case 'T': o.to_ms = zd_opt_ms("--timeout", optarg, 3600000); break;
		case 'R': o.reconnect_ms = zd_opt_ms("--reconnect", optarg, ZD_SEND_RECONNECT_MAX_MS); break;
		case 'v': zd_verbose = 1; break;
		}
	}
	o.dest = zd_cmd_operand(argc, argv, "DEST");
	/* A closed peer is a failed write, not the end of the process. */
	signal(SIGPIPE, SIG_IGN);
	return zd_cmd_exit(zd_send_main(&o, msg, sizeof(msg)), msg);
}
