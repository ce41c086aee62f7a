/* SPDX-License-Identifier: MIT */
/*
 * bench/wire: what PAGES compression (lib/wire) saves and costs, on the
 * synth target's page contents (zd_target_open("synth:...") driven through
 * run_until/pause/harvest/read_pages as zd-track drives it).
 *
 * Synth pages are random words with `write` words rewritten per write: plain
 * zstd finds nothing to squeeze, XOR against the previous copy is nearly all
 * zero. Warm-up epochs fill the shadows (as a running pair has), then the
 * measured epochs are encoded, carried, decoded against a receiver image,
 * checked equal and applied.
 *
 * Throughput = raw page bytes per second of CPU time of the thread doing
 * the work (the bench machine is shared; wall time would measure the
 * neighbours); "pipe" is wall time of the 2-thread pipeline (capture thread
 * copies records in, the worker encodes) for the whole measured run, and
 * the load average is recorded beside it.
 *
 *   bench/wire [CSV]    (default bench/results/wire_lib.csv; bench/wire.sh
 *                       writes wire.csv through the real tools)
 */
#include <err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zd/target.h"
#include "zd/util.h"
#include "zd/wire.h"

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define WARM 20u	/* > 256 MiB of dirty pages: the default cache is full and evicting */
#define MEASURED 24u

struct workload {
	const char *name;
	const char *spec;
	struct zd_record *rec;	/* PAGES records of WARM + MEASURED epochs */
	size_t nrec, nwarm;	/* records; the first nwarm are warm-up */
	uint32_t ps;
	uint64_t pages;
};

static void load(struct workload *w)
{
	struct zd_target *t;
	char msg[256];
	struct zd_pageset dirty, part;
	struct zd_pageset_iter it;
	size_t cap = 64;

	if (zd_target_open(&t, w->spec, msg, sizeof(msg)) < 0)
		err(ZD_EXIT_TARGET, "%s: %s", w->spec, msg);
	w->ps = t->page_size;
	w->pages = t->page_count;
	w->rec = zd_xcalloc(cap, sizeof(*w->rec));
	zd_pageset_init(&dirty);
	zd_pageset_init(&part);
	t->ops->rearm(t, NULL);
	for (uint64_t e = 1; e <= WARM + MEASURED; e++) {
		if (e == WARM + 1)
			w->nwarm = w->nrec;
		if (t->ops->run_until(t, 0) < 0 || t->ops->pause(t, e) < 0 ||
		    t->ops->harvest(t, &dirty) < 0 || t->ops->rearm(t, NULL) < 0)
			err(ZD_EXIT_TARGET, "%s: %s", w->spec, t->err);
		zd_pageset_iter_init(&it, &dirty);
		while (zd_pageset_iter_take(&it, &part, ZD_PAGES_PER_RECORD)) {
			if (w->nrec == cap)
				w->rec = realloc(w->rec, (cap *= 2) * sizeof(*w->rec));
			struct zd_record *r = &w->rec[w->nrec++];
			zd_record_init(r, ZD_REC_PAGES);
			r->u.pages.epoch = e;
			zd_pageset_copy(&r->u.pages.set, &part);
			r->u.pages.data_len = (uint32_t)(part.pages * w->ps);
			r->u.pages.data = zd_xmalloc(r->u.pages.data_len);
			if (t->ops->read_pages(t, e, &part, r->u.pages.data) < 0)
				err(ZD_EXIT_TARGET, "%s: %s", w->spec, t->err);
		}
		t->ops->resume(t);
	}
	zd_pageset_free(&dirty);
	zd_pageset_free(&part);
	zd_target_close(t);
}

struct image {
	uint8_t *mem;
	uint32_t ps;
};

static const uint8_t *image_page(void *arg, uint64_t pfn)
{
	struct image *im = arg;
	return im->mem + pfn * im->ps;
}

static void apply(struct image *im, const struct zd_rec_pages *p)
{
	struct zd_pageset_iter it;
	uint64_t pfn, i = 0;
	zd_pageset_iter_init(&it, &p->set);
	while (zd_pageset_iter_next(&it, &pfn))
		memcpy(im->mem + pfn * im->ps, p->data + im->ps * i++, im->ps);
}

struct result {
	uint64_t raw, wire, enc_ns, dec_ns, delta_pages, pages, compressed;
};

static void run(struct workload *w, const struct zd_wire_opts *o, struct result *res)
{
	struct zd_wire_enc *e;
	struct zd_wire_dec *d;
	struct image im = { zd_xcalloc(w->pages, w->ps), w->ps };
	char msg[256];

	memset(res, 0, sizeof(*res));
	if (zd_wire_enc_new(&e, o, msg, sizeof(msg)) < 0 || zd_wire_dec_new(&d, w->ps, msg, sizeof(msg)) < 0)
		err(ZD_EXIT_FAIL, "%s", msg);
	uint8_t *carried = zd_xmalloc((size_t)ZD_PAGES_PER_RECORD * w->ps + 4096);
	for (size_t i = 0; i < w->nrec; i++) {
		struct zd_rec_pages *in = &w->rec[i].u.pages, enc, raw;
		bool m = i >= w->nwarm;
		uint64_t t0 = cpu_ns();
		if (zd_wire_encode(e, in, &enc, msg, sizeof(msg)) < 0)
			err(ZD_EXIT_FAIL, "encode: %s", msg);
		uint64_t t1 = cpu_ns();
		/* what the receiver gets is a copy: the encoder's buffer is reused */
		memcpy(carried, enc.data, enc.data_len);
		enc.data = carried;
		uint64_t t2 = cpu_ns();
		if (zd_wire_decode(d, &enc, image_page, &im, &raw, msg, sizeof(msg)) < 0)
			err(ZD_EXIT_DATA, "decode: %s", msg);
		uint64_t t3 = cpu_ns();
		if (memcmp(raw.data, in->data, in->data_len))
			err(ZD_EXIT_FAIL, "record %zu: decoded pages differ", i);
		apply(&im, &raw);
		if (m) {
			res->enc_ns += t1 - t0;
			res->dec_ns += t3 - t2;
			res->raw += in->data_len;
			res->wire += enc.data_len;
			res->pages += in->set.pages;
			res->compressed += enc.enc != ZD_PENC_RAW;
		}
	}
	res->delta_pages = zd_wire_enc_stats(e)->delta_pages;
	free(carried);
	free(im.mem);
	zd_wire_enc_free(e);
	zd_wire_dec_free(d);
}

struct count {
	uint64_t bytes;
};

static int count_emit(void *arg, const struct zd_record *r)
{
	((struct count *)arg)->bytes += r->u.pages.data_len;
	return 0;
}

/* Wall-clock GB/s of raw pages through the 2-thread pipeline, and of the
 * same work on one thread (copy in + encode), measured epochs only. */
static void run_pipe(struct workload *w, const struct zd_wire_opts *o, double *pipe_gbps, double *one_gbps)
{
	struct zd_wire_enc *e;
	char msg[256];
	uint64_t raw = 0;

	for (int pass = 0; pass < 2; pass++) {
		if (zd_wire_enc_new(&e, o, msg, sizeof(msg)) < 0)
			err(ZD_EXIT_FAIL, "%s", msg);
		struct zd_rec_pages out;
		for (size_t i = 0; i < w->nwarm; i++)
			zd_wire_encode(e, &w->rec[i].u.pages, &out, msg, sizeof(msg));
		struct count c = { 0 };
		uint64_t t0 = zd_now_ns();
		if (pass == 0) {
			struct zd_wire_pipe *p;
			if (zd_wire_pipe_new(&p, e, 4, count_emit, &c, msg, sizeof(msg)) < 0)
				errx(ZD_EXIT_FAIL, "%s", msg);
			for (size_t i = w->nwarm; i < w->nrec; i++)
				zd_wire_pipe_put(p, &w->rec[i]);
			if (zd_wire_pipe_finish(p, msg, sizeof(msg)) < 0)
				err(ZD_EXIT_FAIL, "pipeline: %s", msg);
		} else {
			uint8_t *copy = zd_xmalloc((size_t)ZD_PAGES_PER_RECORD * w->ps);
			for (size_t i = w->nwarm; i < w->nrec; i++) {
				struct zd_rec_pages in = w->rec[i].u.pages;
				memcpy(copy, in.data, in.data_len);	/* as put copies */
				in.data = copy;
				zd_wire_encode(e, &in, &out, msg, sizeof(msg));
				c.bytes += out.data_len;
			}
			free(copy);
		}
		uint64_t dt = zd_now_ns() - t0;
		raw = 0;
		for (size_t i = w->nwarm; i < w->nrec; i++)
			raw += w->rec[i].u.pages.data_len;
		*(pass == 0 ? pipe_gbps : one_gbps) = (double)raw / (double)dt;
		zd_wire_enc_free(e);
	}
}

static double loadavg(void)
{
	double l = 0;
	FILE *f = fopen("/proc/loadavg", "r");
	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = 0;
		fclose(f);
	}
	return l;
}

int main(int argc, char **argv)
{
	const char *csv = argc > 1 ? argv[1] : "bench/results/wire_lib.csv";
	struct workload wl[] = {
		{ .name = "synth-w8", .spec = "synth:pages=262144,dirty=4096,write=8,seed=7" },
		{ .name = "synth-w64", .spec = "synth:pages=262144,dirty=4096,write=64,seed=7" },
	};
	struct {
		enum zd_page_enc enc;
		int level;
		uint64_t cache_mib;
	} cfg[] = {
		{ ZD_PENC_RAW, 0, 0 },
		{ ZD_PENC_ZSTD, 1, 0 },
		{ ZD_PENC_ZSTD, -1, 0 },
		{ ZD_PENC_DELTA, 1, 256 },
		{ ZD_PENC_DELTA, 1, 1024 },
		{ ZD_PENC_DELTA, -1, 256 },
		{ ZD_PENC_DELTA, 1, 16 },
	};
	const char *names[] = { "none", "zstd", "delta" };
	FILE *f = fopen(csv, "w");

	if (!f)
		err(ZD_EXIT_FAIL, "%s: cannot write", csv);
	fprintf(f, "workload,enc,level,cache_mib,epochs,pages,raw_bytes,wire_bytes,ratio,delta_pages,"
		   "records,compressed_records,enc_gbps_cpu,dec_gbps_cpu,pipe2_gbps_wall,one_thread_gbps_wall,loadavg\n");
	/* BENCH_WIRE_ONLY=K:C runs workload K, configuration C only (profiling) */
	const char *only = getenv("BENCH_WIRE_ONLY");
	unsigned ok = ~0u, oc = ~0u;
	if (only && sscanf(only, "%u:%u", &ok, &oc) != 2)
		err(ZD_EXIT_USAGE, "BENCH_WIRE_ONLY=%s: want K:C", only);
	for (size_t k = 0; k < ZD_ARRAY_SIZE(wl); k++) {
		if (only && k != ok)
			continue;
		load(&wl[k]);
		for (size_t c = 0; c < ZD_ARRAY_SIZE(cfg); c++) {
			if (only && c != oc)
				continue;
			struct zd_wire_opts o = { .enc = cfg[c].enc, .level = cfg[c].level,
						  .cache_bytes = cfg[c].cache_mib << 20, .page_size = wl[k].ps };
			struct result r;
			double pipe = 0, one = 0;
			run(&wl[k], &o, &r);
			if (cfg[c].enc != ZD_PENC_RAW)
				run_pipe(&wl[k], &o, &pipe, &one);
			double ratio = (double)r.raw / (double)r.wire;
			/* none, and records that went raw: nothing was done, no rate */
			double eg = cfg[c].enc != ZD_PENC_RAW ? (double)r.raw / (double)r.enc_ns : 0;
			double dg = r.compressed ? (double)r.raw / (double)r.dec_ns : 0;
			fprintf(f, "%s,%s,%d,%llu,%u,%llu,%llu,%llu,%.2f,%llu,%zu,%llu,%.2f,%.2f,%.2f,%.2f,%.1f\n",
				wl[k].name, names[cfg[c].enc], cfg[c].level,
				(unsigned long long)cfg[c].cache_mib, MEASURED, (unsigned long long)r.pages,
				(unsigned long long)r.raw, (unsigned long long)r.wire, ratio,
				(unsigned long long)r.delta_pages, wl[k].nrec - wl[k].nwarm,
				(unsigned long long)r.compressed, eg, dg, pipe, one, loadavg());
			fprintf(stderr, "bench-wire: %-9s %-5s L%-2d cache %4lluM: ratio %7.2fx  enc %5.2f GB/s cpu  dec %5.2f GB/s cpu  pipe %5.2f / one %5.2f GB/s wall\n",
				wl[k].name, names[cfg[c].enc], cfg[c].level,
				(unsigned long long)cfg[c].cache_mib, ratio, eg, dg, pipe, one);
			fflush(f);
		}
		for (size_t i = 0; i < wl[k].nrec; i++)
			zd_record_free(&wl[k].rec[i]);
		free(wl[k].rec);
	}
	fclose(f);
	return 0;
}
