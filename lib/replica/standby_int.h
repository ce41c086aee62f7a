/* SPDX-License-Identifier: MIT */
/* A kind of standby VM (lib/replica/standby.c): one file per kind. */
#ifndef ZD_STANDBY_INT_H
#define ZD_STANDBY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "zd/replica.h"

struct zd_standby;

/* In the order they run. Each returns 0, or -1 with the reason in
 * sb->err (one line, no prefix). */
struct zd_standby_ops {
	const char *scheme;	/* --standby SCHEME:ARGS, and the target scheme it follows */
	const char *usage;	/* one line for the man page and errors */
	/* zd-recv's start: what can be checked before any stream. */
	int (*check)(struct zd_standby *sb);
	/* A HEADER: create the VM, stopped, unless it exists (sb->made). */
	int (*create)(struct zd_standby *sb, const struct zd_rec_header *hdr);
	/* The first STATE after a bind: check the VM's memory against the
	 * layout it gives and map it: sb->mem, page i of memory.img at
	 * i * page_size, sb->pages pages. */
	int (*attach)(struct zd_standby *sb, const struct zd_replica *rep, const uint8_t *state, uint32_t len);
	/* Takeover: load the CPU/device state (state.bin), start the VM. */
	int (*start)(struct zd_standby *sb, const uint8_t *state, uint32_t len);
	/* After start, off the critical path (e.g. take the primary's name). */
	void (*after_start)(struct zd_standby *sb);
	/* Not taken over: destroy the VM; free priv either way. */
	void (*release)(struct zd_standby *sb, bool destroy);
};

struct zd_standby {
	const struct zd_standby_ops *ops;
	char *args;		/* after SCHEME: */
	void *priv;
	bool lazy;		/* --standby-at takeover: made only then */
	bool made;		/* the VM exists */
	bool attached;		/* checked and mapped since the last bind */
	bool running;		/* taken over */
	uint8_t *mem;		/* its memory, writable */
	uint64_t pages;
	uint32_t page_size;
	bool full;		/* fill every page (after a bind, or a failed fill) */
	struct zd_pageset pending;	/* pages committed, not yet filled */
	char err[512];
};

void zd__standby_err(struct zd_standby *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef ZD_HAVE_XEN
extern const struct zd_standby_ops zd_standby_xen;
#endif

#endif
