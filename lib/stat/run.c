/* SPDX-License-Identifier: MIT */
/*
 * zd-stat's run: read the stream record by record into the figures,
 * --follow lines while it runs, the report at its end.
 *
 * The report is also written when the reading ends early:
 *   - the stream is cut (a dead primary's log): the report of what came
 *     before the cut, one line naming where it was cut, exit 3;
 *   - SIGINT or SIGTERM: the report so far, one line naming where the
 *     reading stopped, exit 128 + the signal (130, 143), as a shell's.
 * Any other broken stream (CRC, order, magic) gets no report: its figures
 * would mislead.
 *
 * The caller's signal handler only sets a flag (cmd/zd-stat.c; the library
 * installs none). The reader waits for input in ppoll(2) with the signals
 * let in only there, and looks at the flag with them blocked just before,
 * so a signal cannot slip in between the look and the wait
 * (lib/stream/reader.c); this loop looks again after every record, for
 * input that is already buffered.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stat_int.h"
#include "zd/util.h"

int zd_stat_parse_follow(const char *every, struct zd_stat_opts *o, char *msg, size_t msglen)
{
	size_t n = strlen(every);

	o->follow_ns = o->follow_epochs = 0;
	if (!strncmp(every, "epochs:", 7)) {
		if (zd_parse_u64(every + 7, &o->follow_epochs) < 0 || !o->follow_epochs) {
			snprintf(msg, msglen, "--follow=%s: want epochs:N, N >= 1", every);
			return -1;
		}
		return 0;
	}
	/* A unit is required: a bare "2" would be 2 ms to zd's parser. At
	 * most a day: the next line's time stays far from overflowing. */
	if (!n || every[n - 1] != 's' || zd_parse_duration_ns(every, &o->follow_ns) < 0 ||
	    o->follow_ns < 1000000 || o->follow_ns > 86400ull * 1000000000) {
		snprintf(msg, msglen, "--follow=%s: want a duration from 1ms to 86400s with its unit "
			 "(500ms, 2s) or epochs:N", every);
		return -1;
	}
	return 0;
}

struct follow {
	struct zd_stat *s;
	const struct zd_stat_opts *o;
	uint64_t start, due;	/* CLOCK_MONOTONIC ns */
	uint64_t epochs;	/* CHECKPOINTs seen */
};

static void follow_line(struct follow *f)
{
	zd_stat_print_follow(f->s, stdout, f->o->format == ZD_STAT_JSON, f->o->from,
			     (double)(zd_now_ns() - f->start) / 1e9);
	fflush(stdout);
}

/* The reader's idle hook: a line when one is due, and how long it may
 * wait for input before the next. */
static int follow_idle(void *arg)
{
	struct follow *f = arg;
	uint64_t now = zd_now_ns();

	if (now >= f->due) {
		follow_line(f);
		while (f->due <= now)
			f->due += f->o->follow_ns;
	}
	return (int)ZD_MIN((f->due - now + 999999) / 1000000, (uint64_t)INT_MAX);
}

/* Before a record is counted: with epochs:N, a CHECKPOINT after N whole
 * epochs since the last line. */
static void follow_record(struct follow *f, const struct zd_record *r)
{
	if (f->o->follow_ns)
		follow_idle(f);
	if (!f->o->follow_epochs || r->type != ZD_REC_CHECKPOINT)
		return;
	if (f->epochs && f->epochs % f->o->follow_epochs == 0)
		follow_line(f);
	f->epochs++;
}

static int report(struct zd_stat *s, const struct zd_stat_opts *o)
{
	char msg[512];
	int rc = 0;

	zd_stat_finish(s);
	zd_stat_drop_before(s, o->from);
	switch (o->format) {
	case ZD_STAT_JSON:
		zd_stat_print_json(s, stdout);
		break;
	case ZD_STAT_CSV:
		zd_stat_print_csv(s, stdout);
		break;
	default:
		zd_stat_print_table(s, stdout);
		break;
	}
	if (o->plot && zd_stat_plot(s, o->plot, msg, sizeof(msg)) < 0) {
		zd_warnx("%s", msg);
		rc = -1;
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		zd_warn("stdout");
		rc = -1;
	}
	return rc;
}

int zd_stat_run(const struct zd_stat_opts *o)
{
	struct zd_reader rd;
	struct zd_record r;
	struct zd_stat *s = zd_stat_new();
	struct follow f = { .s = s, .o = o };
	char msg[512];
	int rc = ZD_EXIT_OK, got = 0, sig;
	uint64_t before = 0;
	bool ended = false;

	zd_reader_init(&rd, o->in_fd, o->in_name);
	/* The side logs first: a bad one means no report at all. */
	if ((o->output_log && zd_stat_read_output_log(s, o->output_log, o->output_log_name, msg,
						      sizeof(msg)) < 0) ||
	    (o->client_log && zd_stat_read_client_log(s, o->client_log, o->client_log_name, msg,
						      sizeof(msg)) < 0)) {
		zd_warnx("%s", msg);
		zd_reader_free(&rd);
		zd_stat_free(s);
		return ZD_EXIT_DATA;
	}
	if (o->stop) {
		rd.stop_flag = o->stop;
		rd.stop_sigs = o->stop_sigs;
	}
	f.start = zd_now_ns();
	f.due = f.start + o->follow_ns;
	if (o->follow_ns) {
		rd.idle = follow_idle;
		rd.idle_arg = &f;
	}
	while (!(o->stop && *o->stop) && (got = zd_reader_next(&rd, &r)) > 0) {
		follow_record(&f, &r);
		zd_stat_add(s, &r, rd.offset - before);
		before = rd.offset;
		ended = r.type == ZD_REC_END;
		zd_record_free(&r);
	}
	if (o->input_done)
		o->input_done();
	sig = o->stop ? *o->stop : 0;
	if (sig) {
		zd_warnx("%s: %s %llu: after record %llu: %s: the report covers what came before",
			 rd.name, rd.enc == ZD_ENC_JSON ? "line" : "byte",
			 (unsigned long long)(rd.enc == ZD_ENC_JSON ? rd.line : rd.offset),
			 (unsigned long long)rd.nrec, sig == SIGINT ? "SIGINT" : "SIGTERM");
		rc = 128 + sig;
	} else if (got == 0 && !ended) {
		/* Cut exactly between records: the reader cannot tell, the
		 * missing END can. */
		zd_warnx("%s: %s %llu: after record %llu: truncated: the stream ends without END; "
			 "the report covers what came before",
			 rd.name, rd.enc == ZD_ENC_JSON ? "line" : "byte",
			 (unsigned long long)(rd.enc == ZD_ENC_JSON ? rd.line : rd.offset),
			 (unsigned long long)rd.nrec);
		rc = ZD_EXIT_DATA;
	} else if (got < 0 && rd.err == ZD_RERR_TRUNCATED && rd.have_header) {
		zd_warnx("%s; the report covers the %llu records before", rd.msg,
			 (unsigned long long)rd.nrec);
		rc = ZD_EXIT_DATA;
	} else if (got < 0) {
		/* No report from a broken stream: its figures would mislead. */
		zd_warnx("%s", rd.msg);
		rc = rd.err == ZD_RERR_IO ? ZD_EXIT_FAIL : ZD_EXIT_DATA;
		goto out;
	}
	if (report(s, o) < 0)
		rc = rc ? rc : ZD_EXIT_FAIL;
out:
	zd_reader_free(&rd);
	zd_stat_free(s);
	return rc;
}
