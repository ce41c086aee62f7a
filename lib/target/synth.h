/* SPDX-License-Identifier: MIT */
/*
 * The synth: target's generator as plain functions (lib/target/synth.c),
 * so tests and benchmarks can compute what a synthetic VM wrote and what
 * its pages hold without running a tracker.
 */
#ifndef ZD_SYNTH_H
#define ZD_SYNTH_H

#include <stddef.h>
#include <stdint.h>

struct zd_synth_params {
	uint64_t pages;		/* pages= */
	uint64_t dirty;		/* dirty= pages written per epoch */
	double hot;		/* hot= fraction of them from the hot window (0.8) */
	uint64_t seed;		/* seed= (1) */
	uint32_t write;		/* write= words changed per write (8) */
	uint64_t drift;		/* drift= pages the hot window moves per epoch (1) */
	uint64_t hotset;	/* hotset= hot window size (2*dirty, at most pages) */
	uint32_t page_size;	/* pagesize= (4096) */
	uint64_t protect_fail;	/* protect_fail= Nth protect fails; 0: no guard (0) */
};

/* Parse the part of the spec after "synth:". -1 with msg on a bad key. */
int zd_synth_parse(const char *args, struct zd_synth_params *p, char *msg, size_t len);
/* Contents of pfn after its write in epoch (epoch 0: never written, zero). */
void zd_synth_page(const struct zd_synth_params *p, uint64_t pfn, uint64_t epoch,
		   uint8_t *out);
/* The distinct pages written in epoch, in write order, into list (room
 * for p->dirty); returns how many (p->dirty). */
uint64_t zd_synth_epoch_pages(const struct zd_synth_params *p, uint64_t epoch,
			      uint64_t *list);

#endif
