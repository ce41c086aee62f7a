/* SPDX-License-Identifier: MIT */
#ifndef ZD_STAT_INT_H
#define ZD_STAT_INT_H

#include "zd/pageset.h"
#include "zd/stat.h"

struct acc {
	bool used;
	uint64_t epoch;
	struct zd_pageset set;
};

struct zd_stat {
	struct zd_stat_row *rows;	/* by increasing epoch */
	size_t nrows, cap;
	uint64_t last_ckpt;
	struct acc acc[2];		/* epochs whose pages are still being gathered */
	struct zd_pageset tmp;
	double *delay;			/* output delay samples */
	size_t ndelay, capdelay;
	double *resp;			/* response delay samples */
	size_t nresp, capresp;
	uint64_t bytes;
	/* DISK records (the guest's disk writes): how many, the bytes the guest wrote, the
	 * bytes their data took on the stream (zstd-packed or raw) */
	uint64_t disk_records, disk_bytes, disk_data_bytes;
	bool have_header;
	char *mode, *target;
};

void zd_stat_push(double **v, size_t *n, size_t *cap, double x);

#endif
