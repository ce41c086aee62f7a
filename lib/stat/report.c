/* SPDX-License-Identifier: MIT */
/* zd-stat's reports: table, CSV, one JSON summary, a gnuplot PNG. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "stat_int.h"
#include "zd/util.h"

struct dist {
	bool any;
	double p50, p99, max, mean;
};

struct summary {
	uint64_t epochs, dirty_total, precopy_total, pages_sent;
	double dirty_mean;
	bool has_prec, has_recall, has_wire;
	double prec_mean, recall_mean, wire_bytes;
	struct dist pause, latency, delay, resp, epoch_bytes;
	bool epoch_bytes_wire;		/* from STAT "send", else stream bytes */
	/* the guest's stall per epoch (zd_stat_row_stall), its parts, and
	 * the guest's own clock (STAT "guest") */
	struct dist stall, cow_block, guest_stall, guest_lost;
	bool has_cow, has_wfault;
	double cow_faults_mean, redirtied_mean, wfault_ns_mean;
	/* where T1 → ACK went (STAT "latency"), by enum zd_lat_part */
	struct dist lat[ZD_LAT_MAX];
	bool has_lat;
};

static struct dist distribution(double *v, size_t n)
{
	struct dist d = { 0 };

	if (n == 0)
		return d;
	d.any = true;
	for (size_t i = 0; i < n; i++)
		d.mean += v[i];
	d.mean /= (double)n;
	d.p50 = zd_stat_percentile(v, n, 50);
	d.p99 = zd_stat_percentile(v, n, 99);
	d.max = v[n - 1];	/* sorted by the call above */
	return d;
}

/* The run's figures over the epochs from `from` on (0: all). */
static void summarise(struct zd_stat *s, uint64_t from, struct summary *m)
{
	double *pause = zd_xcalloc(s->nrows + 1, sizeof(double));
	double *lat = zd_xcalloc(s->nrows + 1, sizeof(double));
	double *eb = zd_xcalloc(s->nrows + 1, sizeof(double));
	double *stall = zd_xcalloc(s->nrows + 1, sizeof(double));
	double *cowb = zd_xcalloc(s->nrows + 1, sizeof(double));
	double *gst = zd_xcalloc(s->nrows + 1, sizeof(double));
	double *glost = zd_xcalloc(s->nrows + 1, sizeof(double));
	size_t npause = 0, nlat = 0, nprec = 0, nrec = 0, neb = 0;
	size_t nstall = 0, ncow = 0, ng = 0, nwf = 0;
	double *part[ZD_LAT_MAX];
	size_t npart[ZD_LAT_MAX] = { 0 };

	memset(m, 0, sizeof(*m));
	for (int p = 0; p < ZD_LAT_MAX; p++)
		part[p] = zd_xcalloc(s->nrows + 1, sizeof(double));
	for (size_t i = 0; i < s->nrows; i++) {
		const struct zd_stat_row *r = &s->rows[i];

		if (!r->checkpointed || r->epoch < from)
			continue;
		m->epochs++;
		m->dirty_total += r->dirty;
		m->precopy_total += r->precopy;
		m->pages_sent += r->pages_sent;
		if (r->has_precision) {
			m->prec_mean += r->precision;
			nprec++;
		}
		if (r->has_recall) {
			m->recall_mean += r->recall;
			nrec++;
		}
		/* what zd_stat_finish() makes pause_ns: --follow looks before */
		if (r->ckpt_pause_ns > 0)
			pause[npause++] = r->ckpt_pause_ns;
		else if (r->has_pause)
			pause[npause++] = r->pause_ns;
		if (r->has_latency)
			lat[nlat++] = r->latency_ns;
		for (int p = 0; p < ZD_LAT_MAX; p++)
			if (r->has_lat & (1u << p))
				part[p][npart[p]++] = r->lat[p];
		if (zd_stat_row_stall(r, &stall[nstall]))
			nstall++;
		if (r->has_cow) {
			cowb[ncow++] = r->cow_block_ns;
			m->cow_faults_mean += r->cow_faults;
		}
		m->redirtied_mean += r->track_redirtied;
		if (r->has_guest) {
			gst[ng] = r->guest_stall_ns;
			glost[ng++] = r->guest_lost_ns;
		}
		if (r->has_wfault) {
			m->wfault_ns_mean += r->guest_wfault_ns;
			nwf++;
		}
		if (r->has_wire) {
			m->wire_bytes += r->wire_bytes;
			m->has_wire = true;
		}
	}
	/* Bytes per epoch: what crossed the wire where zd-send said so (its
	 * log stream has no PAGES), else the epoch's records in this stream. */
	for (size_t i = 0; i < s->nrows; i++) {
		const struct zd_stat_row *r = &s->rows[i];

		if (r->checkpointed && r->epoch >= from)
			eb[neb++] = m->has_wire ? r->wire_bytes : (double)r->bytes;
	}
	m->epoch_bytes_wire = m->has_wire;
	m->dirty_mean = m->epochs ? (double)m->dirty_total / (double)m->epochs : 0;
	m->has_prec = nprec > 0;
	m->has_recall = nrec > 0;
	if (nprec)
		m->prec_mean /= (double)nprec;
	if (nrec)
		m->recall_mean /= (double)nrec;
	m->pause = distribution(pause, npause);
	m->latency = distribution(lat, nlat);
	for (int p = 0; p < ZD_LAT_MAX; p++) {
		m->lat[p] = distribution(part[p], npart[p]);
		m->has_lat |= m->lat[p].any;
		free(part[p]);
	}
	m->delay = distribution(s->delay, s->ndelay);
	m->resp = distribution(s->resp, s->nresp);
	m->epoch_bytes = distribution(eb, neb);
	m->stall = distribution(stall, nstall);
	m->cow_block = distribution(cowb, ncow);
	m->guest_stall = distribution(gst, ng);
	m->guest_lost = distribution(glost, ng);
	m->has_cow = ncow > 0;
	m->has_wfault = nwf > 0;
	if (ncow)
		m->cow_faults_mean /= (double)ncow;
	if (m->epochs)
		m->redirtied_mean /= (double)m->epochs;
	if (nwf)
		m->wfault_ns_mean /= (double)nwf;
	free(stall);
	free(cowb);
	free(gst);
	free(glost);
	free(pause);
	free(lat);
	free(eb);
}

static json_t *dist_json(const struct dist *d)
{
	return json_pack("{s:I,s:I,s:I,s:I}", "p50", (json_int_t)d->p50, "p99", (json_int_t)d->p99,
			 "max", (json_int_t)d->max, "mean", (json_int_t)(d->mean + 0.5));
}

/* The stall figures of the summary: the total, then its parts, then the
 * guest's own clock to check them against. */
static void stall_json(json_t *o, const struct summary *m)
{
	if (m->stall.any)
		json_object_set_new(o, "stall_ns", dist_json(&m->stall));
	if (m->has_cow) {
		json_object_set_new(o, "cow_block_ns", dist_json(&m->cow_block));
		json_object_set_new(o, "cow_faults_mean", json_real(m->cow_faults_mean));
	}
	if (m->redirtied_mean > 0)
		json_object_set_new(o, "precopy_redirtied_mean", json_real(m->redirtied_mean));
	if (m->has_wfault)
		json_object_set_new(o, "wfault_ns_mean", json_real(m->wfault_ns_mean));
	if (m->guest_stall.any) {
		json_object_set_new(o, "guest_stall_ns", dist_json(&m->guest_stall));
		json_object_set_new(o, "guest_lost_ns", dist_json(&m->guest_lost));
	}
}

void zd_stat_print_json(struct zd_stat *s, FILE *out)
{
	struct summary m;
	json_t *o = json_object();

	summarise(s, 0, &m);
	json_object_set_new(o, "epochs", json_integer((json_int_t)m.epochs));
	json_object_set_new(o, "dirty_total", json_integer((json_int_t)m.dirty_total));
	json_object_set_new(o, "dirty_mean", json_real(m.dirty_mean));
	json_object_set_new(o, "precopy_total", json_integer((json_int_t)m.precopy_total));
	json_object_set_new(o, "pages_sent", json_integer((json_int_t)m.pages_sent));
	if (m.has_prec)
		json_object_set_new(o, "standby_precision_mean", json_real(m.prec_mean));
	if (m.has_recall)
		json_object_set_new(o, "standby_recall_mean", json_real(m.recall_mean));
	if (m.pause.any)
		json_object_set_new(o, "pause_ns", dist_json(&m.pause));
	stall_json(o, &m);
	if (m.latency.any)
		json_object_set_new(o, "latency_ns", dist_json(&m.latency));
	if (m.has_lat) {
		json_t *parts = json_object();

		for (int p = 0; p < ZD_LAT_MAX; p++)
			if (m.lat[p].any)
				json_object_set_new(parts, zd_lat_keys[p], dist_json(&m.lat[p]));
		json_object_set_new(o, "latency_parts_ns", parts);
	}
	if (m.delay.any)
		json_object_set_new(o, "output_delay_ns", dist_json(&m.delay));
	if (m.resp.any)
		json_object_set_new(o, "response_delay_ns", dist_json(&m.resp));
	json_object_set_new(o, "bytes", json_integer((json_int_t)s->bytes));
	if (s->disk_records)
		json_object_set_new(o, "disk", json_pack("{s:I,s:I,s:I}", "records", (json_int_t)s->disk_records,
							 "bytes", (json_int_t)s->disk_bytes,
							 "data_bytes", (json_int_t)s->disk_data_bytes));
	if (m.has_wire)
		json_object_set_new(o, "wire_bytes", json_integer((json_int_t)m.wire_bytes));
	if (m.epoch_bytes.any)
		json_object_set_new(o, m.epoch_bytes_wire ? "wire_bytes_per_epoch" : "bytes_per_epoch",
				    dist_json(&m.epoch_bytes));
	json_object_set_new(o, "mode", json_string(s->mode ? s->mode : ""));
	json_object_set_new(o, "target", json_string(s->target ? s->target : ""));
	json_dumpf(o, out, JSON_PRESERVE_ORDER | JSON_COMPACT);
	fputc('\n', out);
	json_decref(o);
}

/* The table's lines for the parts of T1 → ACK: what each is, indented
 * under the part it is a part of. */
static const struct {
	int depth;
	const char *what;
} lat_lines[ZD_LAT_MAX] = {
	[ZD_LAT_TO_CKPT] = { 1, "T1 -> CHECKPOINT read by zd-send (zd-track, pipes)" },
	[ZD_LAT_TO_COMMIT] = { 1, "CHECKPOINT -> COMMIT read (the epoch through zd-track, zd-mru, zd-swap)" },
	[ZD_LAT_TO_WIRE] = { 1, "COMMIT read -> its write to the connection begins (capture, compression, backlog)" },
	[ZD_LAT_TO_ACK] = { 1, "COMMIT write begun -> ACK read" },
	[ZD_LAT_NET] = { 2, "network both ways, backup's backlog" },
	[ZD_LAT_RECV_TOTAL] = { 2, "backup: COMMIT read -> ACK sent" },
	[ZD_LAT_RECV_VERIFY] = { 3, "verify (PAGES against DIRTY, blocks, commit entry)" },
	[ZD_LAT_RECV_CHECKSUM] = { 4, "checksums (--verify)" },
	[ZD_LAT_RECV_FSYNC] = { 3, "journal fsync" },
	[ZD_LAT_RECV_COMMIT] = { 3, "commit point (rename, fsync DIR)" },
	[ZD_LAT_RECV_APPLY] = { 1, "backup, after the ACK: apply (memory.img, its fsync, meta.json)" },
	[ZD_LAT_RECV_ACK] = { 3, "status, CHECKPOINT echo, until the ACK's write" },
	[ZD_LAT_RECV_RECEIVE] = { 1, "backup, alongside: first record -> COMMIT read" },
	[ZD_LAT_RECV_STAGE] = { 2, "staging the records" },
	[ZD_LAT_RECV_DECODE] = { 3, "decoding PAGES" },
	[ZD_LAT_RECV_JOURNAL] = { 3, "writing journal.tmp" },
};

static void print_lat_parts(FILE *out, const struct summary *m)
{
	if (!m->has_lat)
		return;
	fprintf(out, "where T1 to ACK goes, us (zd-send's STAT \"latency\"):%*s %10s %10s\n", 27, "", "p50", "p99");
	/* The enum's order (the CSV's) but for the apply, which zd-recv
	 * does after the ACK. */
	static const int order[] = { ZD_LAT_TO_CKPT, ZD_LAT_TO_COMMIT, ZD_LAT_TO_WIRE, ZD_LAT_TO_ACK, ZD_LAT_NET,
				     ZD_LAT_RECV_TOTAL, ZD_LAT_RECV_VERIFY, ZD_LAT_RECV_CHECKSUM, ZD_LAT_RECV_FSYNC,
				     ZD_LAT_RECV_COMMIT, ZD_LAT_RECV_ACK, ZD_LAT_RECV_APPLY, ZD_LAT_RECV_RECEIVE,
				     ZD_LAT_RECV_STAGE, ZD_LAT_RECV_DECODE, ZD_LAT_RECV_JOURNAL };
	_Static_assert(ZD_ARRAY_SIZE(order) == ZD_LAT_MAX, "every part once");

	for (size_t i = 0; i < ZD_ARRAY_SIZE(order); i++) {
		int p = order[i], w = 80 - 2 * lat_lines[p].depth;

		if (m->lat[p].any)
			fprintf(out, "%*s%-*s %10.1f %10.1f\n", 2 * lat_lines[p].depth, "", w, lat_lines[p].what,
				m->lat[p].p50 / 1e3, m->lat[p].p99 / 1e3);
	}
}

static void opt(FILE *out, bool has, double v, const char *fmt, int width)
{
	if (has)
		fprintf(out, fmt, width, v);
	else
		fprintf(out, "%*s", width, "-");
}

void zd_stat_print_table(struct zd_stat *s, FILE *out)
{
	struct summary m;

	fprintf(out, "%8s %8s %8s %8s %9s %7s %10s %11s %8s %10s\n", "epoch", "dirty", "precopy",
		"standby", "precision", "recall", "pause_us", "latency_us", "pages", "bytes");
	for (size_t i = 0; i < s->nrows; i++) {
		const struct zd_stat_row *r = &s->rows[i];

		if (!r->checkpointed)
			continue;
		fprintf(out, "%8llu %8llu %8llu ", (unsigned long long)r->epoch,
			(unsigned long long)r->dirty, (unsigned long long)r->precopy);
		opt(out, r->has_standby, r->standby, "%*.0f", 8);
		fputc(' ', out);
		opt(out, r->has_precision, r->precision, "%*.3f", 9);
		fputc(' ', out);
		opt(out, r->has_recall, r->recall, "%*.3f", 7);
		fputc(' ', out);
		opt(out, r->has_pause, r->pause_ns / 1e3, "%*.1f", 10);
		fputc(' ', out);
		opt(out, r->has_latency, r->latency_ns / 1e3, "%*.1f", 11);
		fprintf(out, " %8llu %10llu\n", (unsigned long long)r->pages_sent,
			(unsigned long long)r->bytes);
	}
	summarise(s, 0, &m);
	fprintf(out, "\nepochs %llu, mode %s, target %s\n", (unsigned long long)m.epochs,
		s->mode ? s->mode : "?", s->target ? s->target : "?");
	fprintf(out, "dirty pages: %llu total, %.1f per epoch; pre-copied %llu; sent %llu\n",
		(unsigned long long)m.dirty_total, m.dirty_mean,
		(unsigned long long)m.precopy_total, (unsigned long long)m.pages_sent);
	if (s->disk_records)
		fprintf(out, "disk writes: %llu records, %llu bytes written, %llu bytes of data in the stream\n",
			(unsigned long long)s->disk_records, (unsigned long long)s->disk_bytes,
			(unsigned long long)s->disk_data_bytes);
	if (m.has_prec || m.has_recall)
		fprintf(out, "standby: precision mean %.3f, recall mean %.3f\n",
			m.prec_mean, m.recall_mean);
	if (m.pause.any)
		fprintf(out, "pause us: p50 %.1f, p99 %.1f, max %.1f\n",
			m.pause.p50 / 1e3, m.pause.p99 / 1e3, m.pause.max / 1e3);
	if (m.stall.any)
		fprintf(out, "guest stall us (pause + copy-on-write faults + re-armed pages' faults): "
			"p50 %.1f, p99 %.1f, max %.1f, mean %.1f\n", m.stall.p50 / 1e3,
			m.stall.p99 / 1e3, m.stall.max / 1e3, m.stall.mean / 1e3);
	if (m.has_cow)
		fprintf(out, "copy-on-write faults per epoch: mean %.1f, blocked us p50 %.1f, p99 %.1f\n",
			m.cow_faults_mean, m.cow_block.p50 / 1e3, m.cow_block.p99 / 1e3);
	if (m.guest_stall.any)
		fprintf(out, "the guest's own clock, us per epoch: stopped >= 40 us p50 %.1f, p99 %.1f, "
			"mean %.1f; all time lost p50 %.1f, mean %.1f; dirty-log fault %.1f\n",
			m.guest_stall.p50 / 1e3, m.guest_stall.p99 / 1e3, m.guest_stall.mean / 1e3,
			m.guest_lost.p50 / 1e3, m.guest_lost.mean / 1e3, m.wfault_ns_mean / 1e3);
	if (m.latency.any)
		fprintf(out, "latency (T1 to ACK) us: p50 %.1f, p99 %.1f, max %.1f\n",
			m.latency.p50 / 1e3, m.latency.p99 / 1e3, m.latency.max / 1e3);
	print_lat_parts(out, &m);
	if (m.delay.any)
		fprintf(out, "output delay (produced to released) us: p50 %.1f, p99 %.1f, max %.1f, mean %.1f\n",
			m.delay.p50 / 1e3, m.delay.p99 / 1e3, m.delay.max / 1e3, m.delay.mean / 1e3);
	if (m.resp.any)
		fprintf(out, "response delay (sent to answered) us: p50 %.1f, p99 %.1f, max %.1f, mean %.1f\n",
			m.resp.p50 / 1e3, m.resp.p99 / 1e3, m.resp.max / 1e3, m.resp.mean / 1e3);
	if (m.epoch_bytes.any)
		fprintf(out, "%s bytes per epoch: p50 %.0f, p99 %.0f, max %.0f, mean %.0f\n",
			m.epoch_bytes_wire ? "wire" : "stream", m.epoch_bytes.p50,
			m.epoch_bytes.p99, m.epoch_bytes.max, m.epoch_bytes.mean);
	fprintf(out, "stream bytes: %llu", (unsigned long long)s->bytes);
	if (m.has_wire)
		fprintf(out, ", on the wire %.0f", m.wire_bytes);
	fputc('\n', out);
}

static void csv_opt(FILE *out, bool has, double v)
{
	if (has)
		fprintf(out, ",%.17g", v);
	else
		fputc(',', out);
}

void zd_stat_print_csv(struct zd_stat *s, FILE *out)
{
	fprintf(out, "epoch,dirty,precopy,standby,precision,recall,pause_ns,latency_ns,"
		"pages_sent,bytes,wire_bytes,stall_ns,cow_faults,cow_block_ns,guest_stall_ns,"
		"guest_lost_ns");
	for (int p = 0; p < ZD_LAT_MAX; p++)
		fprintf(out, ",%s", zd_lat_keys[p]);
	fputc('\n', out);
	for (size_t i = 0; i < s->nrows; i++) {
		const struct zd_stat_row *r = &s->rows[i];

		if (!r->checkpointed)
			continue;
		fprintf(out, "%llu,%llu,%llu", (unsigned long long)r->epoch,
			(unsigned long long)r->dirty, (unsigned long long)r->precopy);
		csv_opt(out, r->has_standby, r->standby);
		csv_opt(out, r->has_precision, r->precision);
		csv_opt(out, r->has_recall, r->recall);
		csv_opt(out, r->has_pause, r->pause_ns);
		csv_opt(out, r->has_latency, r->latency_ns);
		fprintf(out, ",%llu,%llu", (unsigned long long)r->pages_sent,
			(unsigned long long)r->bytes);
		csv_opt(out, r->has_wire, r->wire_bytes);
		{
			double st = 0;
			bool has = zd_stat_row_stall(r, &st);

			csv_opt(out, has, st);
		}
		csv_opt(out, r->has_cow, r->cow_faults);
		csv_opt(out, r->has_cow, r->cow_block_ns);
		csv_opt(out, r->has_guest, r->guest_stall_ns);
		csv_opt(out, r->has_guest, r->guest_lost_ns);
		for (int p = 0; p < ZD_LAT_MAX; p++)
			csv_opt(out, r->has_lat & (1u << p), r->lat[p]);
		fputc('\n', out);
	}
}

int zd_stat_plot(struct zd_stat *s, const char *png, char *msg, size_t msglen)
{
	FILE *gp;
	int st;

	if (strchr(png, '\'') || strchr(png, '\n')) {
		snprintf(msg, msglen, "--plot %s: a quote or newline in the name", png);
		return -1;
	}
	/* gnuplot reads the data inline (a datablock): no temporary file. */
	gp = popen("gnuplot >/dev/null 2>&1", "w");
	if (!gp) {
		snprintf(msg, msglen, "--plot: gnuplot: %s", strerror(errno));
		return -1;
	}
	fprintf(gp, "set terminal png size 1000,700\nset output '%s'\n", png);
	fprintf(gp, "$d << EOD\n");
	for (size_t i = 0; i < s->nrows; i++) {
		const struct zd_stat_row *r = &s->rows[i];

		if (r->checkpointed)
			fprintf(gp, "%llu %llu %.3f %.3f\n", (unsigned long long)r->epoch,
				(unsigned long long)r->dirty,
				r->has_recall ? r->recall * (double)r->dirty : 0.0,
				r->has_pause ? r->pause_ns / 1e3 : 0.0);
	}
	fprintf(gp, "EOD\n"
		"set multiplot layout 2,1 title 'zd-stat: %s, %s'\n"
		"set xlabel 'epoch'\nset ylabel 'pages'\n"
		"plot $d using 1:2 with lines title 'dirty', $d using 1:3 with lines title 'standby hits'\n"
		"set ylabel 'pause (us)'\n"
		"plot $d using 1:4 with lines title 'pause'\n"
		"unset multiplot\n",
		s->mode ? s->mode : "?", s->target ? s->target : "?");
	st = pclose(gp);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(msg, msglen, "--plot %s: gnuplot failed (exit %d; is gnuplot installed?)",
			 png, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		return -1;
	}
	return 0;
}

/* One --follow line: the figures so far. The table's is for people; the
 * JSON one is an object marked "follow" (the summary comes last). */
void zd_stat_print_follow(struct zd_stat *s, FILE *out, bool json, uint64_t from, double elapsed_s)
{
	struct summary m;
	uint64_t epoch = s->last_ckpt;

	summarise(s, from, &m);
	if (json) {
		json_t *o = json_object();

		json_object_set_new(o, "follow", json_true());
		json_object_set_new(o, "elapsed_ms", json_integer((json_int_t)(elapsed_s * 1e3 + 0.5)));
		json_object_set_new(o, "epoch", json_integer((json_int_t)epoch));
		json_object_set_new(o, "epochs", json_integer((json_int_t)m.epochs));
		json_object_set_new(o, "pages_sent", json_integer((json_int_t)m.pages_sent));
		json_object_set_new(o, "bytes", json_integer((json_int_t)s->bytes));
		if (m.has_wire)
			json_object_set_new(o, "wire_bytes", json_integer((json_int_t)m.wire_bytes));
		if (m.pause.any)
			json_object_set_new(o, "pause_ns", dist_json(&m.pause));
		if (m.stall.any)
			json_object_set_new(o, "stall_ns", dist_json(&m.stall));
		if (m.latency.any)
			json_object_set_new(o, "latency_ns", dist_json(&m.latency));
		json_dumpf(o, out, JSON_PRESERVE_ORDER | JSON_COMPACT);
		fputc('\n', out);
		json_decref(o);
		return;
	}
	fprintf(out, "[%7.1fs] epoch %llu: %llu epochs, sent %llu pages, %llu bytes", elapsed_s,
		(unsigned long long)epoch, (unsigned long long)m.epochs,
		(unsigned long long)m.pages_sent, (unsigned long long)s->bytes);
	if (m.has_wire)
		fprintf(out, " (wire %.0f)", m.wire_bytes);
	if (m.pause.any)
		fprintf(out, ", pause us p50 %.1f p99 %.1f max %.1f", m.pause.p50 / 1e3,
			m.pause.p99 / 1e3, m.pause.max / 1e3);
	if (m.stall.any)
		fprintf(out, ", stall us p50 %.1f p99 %.1f", m.stall.p50 / 1e3, m.stall.p99 / 1e3);
	if (m.latency.any)
		fprintf(out, ", latency us p50 %.1f p99 %.1f max %.1f", m.latency.p50 / 1e3,
			m.latency.p99 / 1e3, m.latency.max / 1e3);
	fputc('\n', out);
}
