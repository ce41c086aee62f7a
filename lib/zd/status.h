/* SPDX-License-Identifier: MIT */
/*
 * Live status of a running zd-recv or zd-track: a Unix socket in the run
 * directory (ZD_RUN_DIR, else /run/zd for root, else $XDG_RUNTIME_DIR/zd)
 * named TOOL.PID.sock, mode 0600. A client connects and reads one JSON
 * object: what the tool set (role, epoch, peer...), "*_age_ms" for each
 * event it marked (how long ago), and p50/p99/n over the last minute of
 * each sampled series. `zd-stat --live` (and `zd status`) read them all.
 *
 * Status is best effort: a tool whose socket cannot be made says so once
 * and runs on; every call takes NULL.
 */
#ifndef ZD_STATUS_H
#define ZD_STATUS_H
#include <jansson.h>
#include <stddef.h>

struct zd_status;

struct zd_status *zd_status_open(const char *tool);
void zd_status_close(struct zd_status *st);
/* Set KEY to VALUE (the reference is stolen). */
void zd_status_set(struct zd_status *st, const char *key, json_t *value);
/* KEY happened now: the query shows KEY_age_ms. */
void zd_status_mark(struct zd_status *st, const char *key);
/* One value of SERIES: the query shows SERIES: {p50, p99, n} of the last 60 s. */
void zd_status_sample(struct zd_status *st, const char *series, double value);

/* The run directory (without creating it). */
const char *zd_status_dir(char *buf, size_t len);
/* Query every socket in the run directory; write a JSON array of their
 * answers (json) or one block per tool to out. Returns how many answered. */
int zd_status_query_all(FILE *out, int json);
#endif
