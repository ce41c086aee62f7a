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
#include <string.h>
#include <zstd.h>

#include "zd/net.h"
#include "zd/send.h"
#include "zd/util.h"
#include "zd/wire.h"
#include "opt.h"

#define USAGE "usage: zd-send [--compress none|zstd|delta] [--level N] [--delta-cache SIZE]\n" \
	      "               [--key FILE] [--json-log] [--heartbeat MS] [--timeout MS]\n" \
	      "               [--reconnect MS] [--resend-buffer SIZE] [-v] DEST\n"

static void help(void)
{
	printf(USAGE
	       "\n"
	       "Ship a zd-stream(5) read on stdin to zd-recv at DEST and relay the backup's\n"
	       "acknowledgements to zd-track. Epochs whose pages are not in the stream are\n"
	       "captured from the target first (as zd-swap does).\n"
	       "\n"
	       "  DEST             HOST:PORT or [V6]:PORT (TCP); ssh:[USER@]HOST[:PATH]: run\n"
	       "                   zd-recv --stdio --replica PATH on HOST over ssh (PATH\n"
	       "                   default: zd-replica; $ZD_SSH, $ZD_REMOTE_RECV: the ssh\n"
	       "                   command and remote program); or - for stdout (no ACKs\n"
	       "                   come back then)\n"
	       "  -c, --compress ENC  PAGES as sent: none, zstd, or delta (XOR with the copy\n"
	       "                   the backup holds, then zstd; a page not in the cache goes\n"
	       "                   as zstd) (default: delta)\n"
	       "      --level N    zstd level, %d..%d (default: %d)\n"
	       "      --delta-cache SIZE  memory for the copies of pages sent that delta XORs\n"
	       "                   against, e.g. 512M, 2G; least recently sent dropped first\n"
	       "                   (default: 256M)\n"
	       "      --key FILE   pre-shared key (16..4096 bytes, mode 0600, the same file as\n"
	       "                   zd-recv's, stretched by Argon2id): challenge-response at\n"
	       "                   connect, then every record both ways encrypted and\n"
	       "                   authenticated (AES-256-GCM or XChaCha20-Poly1305) (not\n"
	       "                   with DEST -) (default: none)\n"
	       "  -j, --json-log   write the log stream on stdout as JSON lines, even on a\n"
	       "                   terminal (default: binary when stdout is not a terminal,\n"
	       "                   none on a terminal or with DEST -)\n"
	       "      --heartbeat MS  send a heartbeat when nothing else went for MS (TCP;\n"
	       "                   0 = never) (default: 100)\n"
	       "      --timeout MS  zd-recv is gone after MS without an ACK or heartbeat\n"
	       "                   from it (TCP; 0 = only when the connection ends)\n"
	       "                   (default: 2000: the primary only loses its backup by it,\n"
	       "                   so a stalled backup gets longer than a stalled primary)\n"
	       "      --reconnect MS  a lost link (a failed write, the peer's close, --timeout)\n"
	       "                   is reconnected for up to MS, with backoff; the epochs the\n"
	       "                   backup lost are sent again, or a full checkpoint is asked\n"
	       "                   of zd-track; the VM runs on, its output stays held (TCP and\n"
	       "                   ssh; 0 = a lost link ends the run, exit 5) (default: 0)\n"
	       "      --resend-buffer SIZE  memory for the epochs sent but not yet\n"
	       "                   acknowledged, kept for --reconnect (default: 256M)\n"
	       "  -v, --verbose    log each epoch on stderr\n"
	       "  -h, --help       this text\n"
	       "  -V, --version    print the version\n"
	       "\n"
	       "The log stream is the input without PAGES and STATE, plus per epoch a STAT\n"
	       "record (source \"send\": pages, raw_bytes, wire_bytes, ratio, delta_pages,\n"
	       "miss_pages) and the ACK records.\n"
	       "\n"
	       "Exit status: 0 ok, 1 runtime error, 2 usage, 3 bad input stream, 4 the target\n"
	       "cannot be read, 5 zd-recv unreachable, gone, refused the key or does not take\n"
	       "the compression.\n", ZSTD_minCLevel(), ZSTD_maxCLevel(), ZD_WIRE_LEVEL_DEFAULT);
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
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct zd_send_opts o = { .hb_ms = 100, .to_ms = 2000, .resend_bytes = ZD_RESEND_DEFAULT,
				  .wopts = { .enc = ZD_PENC_DELTA, .level = ZD_WIRE_LEVEL_DEFAULT,
					     .cache_bytes = ZD_WIRE_CACHE_DEFAULT } };
	static struct zd_auth_key key;
	bool level_set = false, cache_set = false, resend_set = false;
	int64_t lv;
	uint64_t v;
	char msg[1024];
	int c, rc;

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
			level_set = true;
			break;
		}
		case 'D':
			if (zd_parse_size(optarg, &v) < 0 || v > (1ull << 40))
				zd_usage("--delta-cache: '%s' is not a size up to 1T (e.g. 512M)",
					optarg);
			o.wopts.cache_bytes = v;
			cache_set = true;
			break;
		case 'B':
			if (zd_parse_size(optarg, &v) < 0 || v > (1ull << 40))
				zd_usage("--resend-buffer: '%s' is not a size up to 1T (e.g. 512M)",
					optarg);
			o.resend_bytes = v;
			resend_set = true;
			break;
		case 'K': o.key_path = optarg; break;
		case 'H':
		case 'T':
		case 'R':
			if (zd_parse_u64(optarg, &v) < 0 || v > ZD_SEND_RECONNECT_MAX_MS)
				zd_usage("--heartbeat/--timeout/--reconnect: '%s' is not a number of ms in 0..3600000",
					optarg);
			if (c == 'H')
				o.hb_ms = (unsigned)v;
			else if (c == 'T')
				o.to_ms = (unsigned)v;
			else
				o.reconnect_ms = (unsigned)v;
			break;
		case 'v': zd_verbose = 1; break;
		}
	}
	if (argc - optind != 1)
		zd_usage("%s", optind < argc ? "too many arguments" : "DEST is required");
	o.dest = argv[optind];
	if (o.to_ms && o.hb_ms >= o.to_ms)
		zd_usage("--heartbeat must be shorter than --timeout (or --timeout 0)");
	if (level_set && o.wopts.enc == ZD_PENC_RAW)
		zd_usage("--level goes with --compress zstd or delta");
	if (cache_set && o.wopts.enc != ZD_PENC_DELTA)
		zd_usage("--delta-cache goes with --compress delta");
	if (resend_set && !o.reconnect_ms)
		zd_usage("--resend-buffer goes with --reconnect");
	if (o.key_path && !strcmp(o.dest, "-"))
		zd_usage("--key needs a connection both ways: not with DEST -");
	if (o.reconnect_ms && !strcmp(o.dest, "-"))
		zd_usage("--reconnect needs a connection both ways: not with DEST -");
	if (o.key_path) {
		if (zd_auth_key_load(&key, o.key_path, msg, sizeof(msg)) < 0)
			zd_usage("--key %s", msg);
		o.key = &key;
	}
	if (!strncmp(o.dest, ZD_SSH_PREFIX, strlen(ZD_SSH_PREFIX))) {
		char uh[256], path[1024];

		if (zd_net_ssh_split(o.dest, uh, sizeof(uh), path, sizeof(path), msg, sizeof(msg)) < 0)
			zd_usage("%s", msg);
	} else if (strcmp(o.dest, "-")) {
		char h[256], p[16];

		if (zd_net_split(o.dest, h, sizeof(h), p, sizeof(p), msg, sizeof(msg)) < 0)
			zd_usage("%s", msg);
		if (!*h)
			zd_usage("%s: no host to send to", o.dest);
	} else if (o.json_log) {
		zd_usage("--json-log needs stdout, which DEST - uses for the stream");
	}
	signal(SIGPIPE, SIG_IGN);
	if ((rc = zd_send_run(&o, msg, sizeof(msg))))
		zd_warnx("%s", msg);
	return rc;
}
