/* SPDX-License-Identifier: MIT */
/*
 * zd-stat's side inputs: the timing logs of zd-vm (--output-log) and
 * zd-client (--log). The stream carries what the pipeline saw; when an
 * answer was produced, released and received only the VM monitor and the
 * client know, and they write it down one line per answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stat_int.h"
#include "zd/util.h"

/* Split a line into n unsigned numbers, or up to max where a log has
 * optional trailing fields. */
static int fields(char *line, uint64_t *v, int n, int max)
{
	char *save = NULL, *tok;
	int i = 0;

	line[strcspn(line, "\r\n")] = 0;
	for (tok = strtok_r(line, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (i == max || zd_parse_u64(tok, &v[i]) < 0)
			return -1;
		i++;
	}
	return i >= n ? 0 : -1;
}

/* Read every line of f: n numbers each; sample(v) gives the value, or -1
 * when the numbers contradict each other. The samples go to *out only if
 * the whole file is good. */
static int read_log(FILE *f, const char *name, int n, int max, const char *want,
		    double (*sample)(const uint64_t *v), double **out, size_t *nout,
		    size_t *capout, char *msg, size_t msglen)
{
	char *line = NULL;
	size_t cap = 0, nv = 0, capv = 0;
	double *vals = NULL;
	uint64_t lineno = 0;
	int rc = 0;

	while (getline(&line, &cap, f) >= 0) {
		uint64_t v[8];
		double x;

		lineno++;
		if (fields(line, v, n, max) < 0) {
			snprintf(msg, msglen, "%s: line %" PRIu64 ": want '%s'", name, lineno, want);
			rc = -1;
			break;
		}
		x = sample(v);
		if (x < 0) {
			snprintf(msg, msglen, "%s: line %" PRIu64 ": times out of order", name, lineno);
			rc = -1;
			break;
		}
		zd_stat_push(&vals, &nv, &capv, x);
	}
	if (rc == 0 && ferror(f)) {
		snprintf(msg, msglen, "%s: read error", name);
		rc = -1;
	}
	for (size_t i = 0; rc == 0 && i < nv; i++)
		zd_stat_push(out, nout, capout, vals[i]);
	free(vals);
	free(line);
	return rc;
}

/* SEQ EPOCH PRODUCED_NS RELEASED_NS RELEASED_WALL_NS */
static double output_delay(const uint64_t *v)
{
	return v[3] < v[2] ? -1 : (double)(v[3] - v[2]);
}

/* SEQ SENT_NS RECEIVED_NS DELAY_NS [FAILOVER_NS] */
static double response_delay(const uint64_t *v)
{
	return v[2] < v[1] || v[2] - v[1] != v[3] ? -1 : (double)v[3];
}

int zd_stat_read_output_log(struct zd_stat *s, FILE *f, const char *name, char *msg,
			    size_t msglen)
{
	return read_log(f, name, 5, 5, "SEQ EPOCH PRODUCED_NS RELEASED_NS RELEASED_WALL_NS",
			output_delay, &s->delay, &s->ndelay, &s->capdelay, msg, msglen);
}

int zd_stat_read_client_log(struct zd_stat *s, FILE *f, const char *name, char *msg,
			    size_t msglen)
{
	/* The first answer after a lost connection carries the failover
	 * time as a fifth number. */
	return read_log(f, name, 4, 5, "SEQ SENT_NS RECEIVED_NS DELAY_NS [FAILOVER_NS]", response_delay,
			&s->resp, &s->nresp, &s->capresp, msg, msglen);
}
