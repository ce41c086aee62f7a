/* SPDX-License-Identifier: MIT */
/*
 * bench/codec: encode and decode throughput of zd-stream(5), binary and
 * JSON, on a typical epoch: CHECKPOINT, DIRTY of 1024 scattered pages of a
 * 1 GiB guest, PAGES carrying those pages raw (4 KiB each), COMMIT.
 *
 * Encode = zd_writer_put into a buffer flushed to /dev/null; decode =
 * zd_reader_next from a memfd holding the encoded stream (read(2) copies
 * included, as a tool reading a pipe pays them). MB = 10^6 bytes of
 * encoded stream, per second of CPU time of the benchmarking thread. Each
 * figure is the best of several passes of >= 0.3 s.
 *
 *   bench/codec [CSV]        writes CSV (default bench/results/codec.csv)
 */
#include <err.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zd/stream.h"
#include "zd/util.h"
#define TESTLIB_RNG_SEED 0x2545F4914F6CDD1Dull
#include "../tests/unit/testlib.h"

/* CPU time of this thread (user + system, so read(2) copies count): the
 * bench machines are shared, and wall time would measure the neighbours. */
static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define PAGE 4096u
#define NPAGES (1u << 18)	/* 1 GiB guest */
#define DIRTY 1024u
#define EPOCHS 24u
#define PASSES 5

struct epoch_recs {
	struct zd_record r[4];	/* CHECKPOINT, DIRTY, PAGES, COMMIT */
};

static void make_epoch(struct epoch_recs *e, uint64_t epoch)
{
	uint64_t pfns[DIRTY];
	for (unsigned i = 0; i < DIRTY; i++)
		pfns[i] = rnd() % NPAGES;
	struct zd_record *r = e->r;
	zd_record_init(&r[0], ZD_REC_CHECKPOINT);
	r[0].u.ckpt.epoch = epoch;
	r[0].u.ckpt.t1_ns = zd_now_ns();
	r[0].u.ckpt.pause_ns = 40000;
	zd_record_init(&r[1], ZD_REC_DIRTY);
	r[1].u.dirty.epoch = epoch;
	zd_pageset_from_pfns(&r[1].u.dirty.set, pfns, DIRTY);
	zd_record_init(&r[2], ZD_REC_PAGES);
	r[2].u.pages.epoch = epoch;
	zd_pageset_copy(&r[2].u.pages.set, &r[1].u.dirty.set);
	r[2].u.pages.data_len = (uint32_t)(r[2].u.pages.set.pages * PAGE);
	r[2].u.pages.data = zd_xmalloc(r[2].u.pages.data_len);
	/* guest-like contents: mostly zero words, some text, some noise */
	uint64_t *w = (uint64_t *)r[2].u.pages.data;
	for (size_t i = 0; i < r[2].u.pages.data_len / 8; i++)
		w[i] = i % 7 == 0 ? rnd() : i % 3 == 0 ? 0x6c6c6568206f6c6cull : 0;
	zd_record_init(&r[3], ZD_REC_COMMIT);
	r[3].u.commit.epoch = epoch;
	r[3].u.commit.pages = r[1].u.dirty.set.pages;
}

static struct zd_record header;

static void put_all(struct zd_writer *w, struct epoch_recs *ep)
{
	if (zd_writer_put(w, &header) < 0)
		err(1, "encode HEADER");
	for (unsigned e = 0; e < EPOCHS; e++)
		for (int k = 0; k < 4; k++)
			if (zd_writer_put(w, &ep[e].r[k]) < 0)
				err(1, "encode");
	if (zd_writer_flush(w) < 0)
		err(1, "flush");
}

struct result {
	double mb_per_s, rec_per_s;
};

static struct result bench_encode(enum zd_encoding enc, struct epoch_recs *ep, uint64_t *bytes)
{
	int fd = open("/dev/null", O_WRONLY);
	if (fd < 0)
		err(1, "/dev/null");
	double best = 0;
	uint64_t nrec = 1 + EPOCHS * 4;
	for (int pass = 0; pass < PASSES; pass++) {
		uint64_t t0 = cpu_ns(), b = 0, n = 0;
		do {
			struct zd_writer w;
			zd_writer_init(&w, fd, enc);
			put_all(&w, ep);
			b += w.bytes;
			n++;
			*bytes = w.bytes;
			zd_writer_free(&w);
		} while (cpu_ns() - t0 < 300000000ull);
		double s = (double)(cpu_ns() - t0) / 1e9;
		if ((double)b / s > best)
			best = (double)b / s;
		(void)n;
	}
	close(fd);
	double per_stream = (double)*bytes;
	return (struct result){ best / 1e6, best / per_stream * (double)nrec };
}

static struct result bench_decode(enum zd_encoding enc, struct epoch_recs *ep)
{
	int fd = memfd_create("bench-codec", 0);
	if (fd < 0)
		err(1, "memfd_create");
	struct zd_writer w;
	zd_writer_init(&w, fd, enc);
	put_all(&w, ep);
	uint64_t bytes = w.bytes;
	zd_writer_free(&w);
	uint64_t nrec = 1 + EPOCHS * 4;
	double best = 0;
	for (int pass = 0; pass < PASSES; pass++) {
		uint64_t t0 = cpu_ns(), b = 0;
		do {
			if (lseek(fd, 0, SEEK_SET) != 0)
				err(1, "lseek");
			struct zd_reader rd;
			struct zd_record r;
			zd_reader_init(&rd, fd, "bench");
			uint64_t n = 0;
			int rc;
			while ((rc = zd_reader_next(&rd, &r)) > 0) {
				n++;
				zd_record_free(&r);
			}
			if (rc < 0 || n != nrec)
				errx(1, "decode: %s", rc < 0 ? rd.msg : "record count");
			zd_reader_free(&rd);
			b += bytes;
		} while (cpu_ns() - t0 < 300000000ull);
		double s = (double)(cpu_ns() - t0) / 1e9;
		if ((double)b / s > best)
			best = (double)b / s;
	}
	close(fd);
	return (struct result){ best / 1e6, best / (double)bytes * (double)nrec };
}

int main(int argc, char **argv)
{
	zd_set_progname("bench-codec");
	const char *csv = argc > 1 ? argv[1] : "bench/results/codec.csv";
	static struct epoch_recs ep[EPOCHS];
	for (unsigned e = 0; e < EPOCHS; e++)
		make_epoch(&ep[e], e + 1);
	zd_record_init(&header, ZD_REC_HEADER);
	header.u.header.page_size = PAGE;
	header.u.header.page_count = NPAGES;
	header.u.header.mode = ZD_MODE_ZDDSPT;
	header.u.header.interval_us = 25000;
	header.u.header.target = "synth:pages=262144,dirty=1024";
	header.u.header.control = "";

	FILE *f = fopen(csv, "w");
	if (!f)
		err(1, "%s", csv);
	char out[1024];
	int len = 0;
	len += snprintf(out + len, sizeof(out) - (size_t)len, "encoding,direction,mb_per_s,records_per_s\n");
	static const char *names[] = { "binary", "json" };
	for (int enc = ZD_ENC_BINARY; enc <= ZD_ENC_JSON; enc++) {
		uint64_t bytes;
		struct result e = bench_encode((enum zd_encoding)enc, ep, &bytes);
		struct result d = bench_decode((enum zd_encoding)enc, ep);
		len += snprintf(out + len, sizeof(out) - (size_t)len, "%s,encode,%.1f,%.0f\n",
				names[enc], e.mb_per_s, e.rec_per_s);
		len += snprintf(out + len, sizeof(out) - (size_t)len, "%s,decode,%.1f,%.0f\n",
				names[enc], d.mb_per_s, d.rec_per_s);
		fprintf(stderr, "bench-codec: %s: %.2f MB per %u-epoch stream\n", names[enc],
			(double)bytes / 1e6, EPOCHS);
	}
	fputs(out, f);
	if (fclose(f) != 0)
		err(1, "%s", csv);
	fputs(out, stdout);
	for (unsigned e = 0; e < EPOCHS; e++)
		for (int k = 0; k < 4; k++)
			zd_record_free(&ep[e].r[k]);
	return 0;
}
