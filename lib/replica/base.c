/* SPDX-License-Identifier: MIT */
/*
 * The backup's delta base: the replica's committed copy of a page, which
 * the sender's shadow of the page (lib/wire/shadow.c) equals as long as the
 * stream arrived whole and in order (zd/wire.h). Read from the read-only
 * mapping of memory.img that checksums use: apply() writes memory.img with
 * pwrite, which the shared mapping sees, so the base is always the last
 * committed epoch's page.
 */
#include "zd/replica.h"
#include "replica_int.h"

const uint8_t *zd_replica_base(struct zd_replica *rep, uint64_t pfn)
{
	if (!rep->initialised || pfn >= rep->meta.page_count)
		return NULL;
	if (zd__rep_map(rep))
		return NULL;
	return rep->mem + pfn * rep->meta.page_size;
}
