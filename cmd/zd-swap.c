/* SPDX-License-Identifier: MIT */
/*
 * zd-swap: drains each checkpoint's frozen pages into the stream. Passes
 * every record through; for an epoch whose pages the tracker did not send
 * inline it reads the DIRTY pages from the target (lib/capture) and emits
 * PAGES before the COMMIT, then tells zd-track the epoch is DRAINED (remus
 * mode resumes the VM only then).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "zd/capture.h"
#include "zd/fb.h"
#include "zd/stream.h"
#include "zd/util.h"

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

static int emit(void *arg, const struct zd_record *r)
{
	return zd_writer_put(arg, r);
}

/* Records that end a unit downstream waits for go out at once. */
static bool flush_after(uint16_t type)
{
	return type != ZD_REC_CHECKPOINT && type != ZD_REC_DIRTY && type != ZD_REC_PAGES &&
	       type != ZD_REC_STATE && type != ZD_REC_STANDBY;
}

/* The VM died mid-epoch: drop the rest of that epoch (zd-recv discards
 * it at END status 3) and wait for zd-track's END, which tells the
 * backup to take over. Returns whether END went on. */
static bool pass_end(struct zd_reader *rd, struct zd_writer *w)
{
	struct zd_record r;
	bool end = false;

	zd_warnx("the VM died: dropping the epoch, passing on zd-track's END");
	while (!end && zd_reader_next(rd, (zd_record_init(&r, 0), &r)) > 0) {
		if ((end = r.type == ZD_REC_END) && (zd_writer_put(w, &r) < 0 || zd_writer_flush(w) < 0))
			end = false;
		zd_record_free(&r);
	}
	return end;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "drain-delay", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct zd_reader rd;
	struct zd_writer w;
	struct zd_capture *cap;
	struct zd_record r;
	bool json = false;
	uint64_t drain_delay_ms = 0;
	int c, n, rc = 0, fb = -1;
	bool ended = false;

	zd_set_progname(argv[0]);
	zd_malloc_keep_big();
	while ((c = getopt_long(argc, argv, "jvhV", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			if (zd_parse_u64(optarg, &drain_delay_ms) < 0 || drain_delay_ms > 10000)
				zd_diex(ZD_EXIT_USAGE, "--drain-delay '%s': want milliseconds, 0 to 10000", optarg);
			break;
		case 'j': json = true; break;
		case 'v': zd_verbose = 1; break;
		case 'h': help(); return 0;
		case 'V': printf("zd-swap " ZD_VERSION "\n"); return 0;
		default: fputs(USAGE, stderr); return ZD_EXIT_USAGE;
		}
	}
	if (optind < argc)
		zd_diex(ZD_EXIT_USAGE, "unexpected argument '%s' (see --help)", argv[optind]);
	signal(SIGPIPE, SIG_IGN);

	zd_reader_init(&rd, STDIN_FILENO, "stdin");
	zd_writer_init(&w, STDOUT_FILENO, zd_output_encoding(STDOUT_FILENO, json));
	cap = zd_capture_new(emit, &w, -1);
	zd_capture_own_guard(cap);
	zd_capture_set_drain_delay(cap, drain_delay_ms * 1000000);
	while ((n = zd_reader_next(&rd, (zd_record_init(&r, 0), &r))) > 0) {
		if (r.type == ZD_REC_HEADER && fb < 0) {
			fb = zd_fb_join(&r.u.header, ZD_ROLE_SWAP);
			zd_capture_set_fb(cap, fb);
		}
		if ((rc = zd_capture_feed(cap, &r))) {
			if (rc == ZD_EXIT_FAIL)
				zd_warnx("stdout: %s: %s", zd_capture_error(cap), strerror(w.err));
			else
				zd_warnx("%s", zd_capture_error(cap));
			zd_record_free(&r);
			if (zd_capture_vm_died(cap))
				ended = pass_end(&rd, &w);
			break;
		}
		if (flush_after(r.type) && zd_writer_flush(&w) < 0) {
			zd_warnx("stdout: write: %s", strerror(w.err));
			rc = ZD_EXIT_FAIL;
			zd_record_free(&r);
			break;
		}
		if (r.type == ZD_REC_COMMIT) {
			const struct zd_capture_stats *st = zd_capture_stats(cap);

			zd_debug("epoch %" PRIu64 ": %" PRIu64 " pages captured", st->epoch, st->captured);
			/* After the flush: DRAINED means downstream has the pages. */
			if (fb >= 0) {
				struct zd_fb_msg m = { .op = ZD_FB_DRAINED, .epoch = st->epoch, .a = st->captured,
						       .b = st->cow_faults };

				if (zd_fb_send(fb, &m, NULL, NULL, 0) < 0) {
					/* A tracker that died is the stream's to report
					 * (it ends without END); only a live one matters. */
					if (errno == EPIPE || errno == ECONNRESET)
						zd_debug("control socket: DRAINED: %s", strerror(errno));
					else
						zd_warn("control socket: DRAINED: continuing open loop");
					close(fb);
					fb = -1;
					zd_capture_set_fb(cap, -1);
				}
			}
		}
		ended = r.type == ZD_REC_END;
		zd_record_free(&r);
	}
	if (n < 0) {
		zd_warnx("%s", rd.msg);
		rc = rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
	} else if (!rc && !ended) {
		/* Cut between records: the stage before died. What came whole
		 * went on; the stages after see the same missing END. */
		zd_warnx("stdin: byte %" PRIu64 ": after record %" PRIu64 ": truncated: the stream ends without END",
			 (uint64_t)rd.offset, (uint64_t)rd.nrec);
		rc = ZD_EXIT_DATA;
	}
	if (!rc && zd_writer_flush(&w) < 0) {
		zd_warnx("stdout: write: %s", strerror(w.err));
		rc = ZD_EXIT_FAIL;
	}
	if (fb >= 0)
		close(fb);
	zd_capture_free(cap);
	zd_writer_free(&w);
	zd_reader_free(&rd);
	return rc;
}
