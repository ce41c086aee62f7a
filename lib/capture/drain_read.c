/* SPDX-License-Identifier: MIT */
/*
 * The plain drain: read the missing pages from the target as they are now,
 * DRAIN_PAGES at a time. Right while the VM is paused for the
 * checkpoint (remus) or for a target that can produce any epoch's contents
 * (synth, trace); zddspt on a running VM needs drain_uffd, which saves
 * each frozen page before the guest writes it again.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "zd/capture.h"
#include "zd/target.h"
#include "zd/util.h"

/* Pages per PAGES record. In remus the VM stays paused until the ACK, and
 * the stages after zd-swap each wait for a whole record: 1 MiB records
 * let zd-send and zd-recv work on the first while the next is read (T1 to
 * ACK 7.2-7.4 -> 6.3-6.6 ms at ~1000 pages, bench/README.md); smaller
 * ones gained nothing more. */
#define DRAIN_PAGES 256u

static int drain_read(struct zd_capture *c, uint64_t epoch, const struct zd_pageset *missing)
{
	struct zd_target *t = zd_capture_target(c);
	struct zd_pageset rest = ZD_PAGESET_INIT, chunk = ZD_PAGESET_INIT;
	uint8_t *buf = NULL;
	int rc = 0;

	zd_pageset_copy(&rest, missing);
	buf = zd_xmalloc((size_t)ZD_MIN(rest.pages, DRAIN_PAGES) * t->page_size);
	while (!zd_pageset_empty(&rest)) {
		zd_pageset_clear(&chunk);
		zd_pageset_take_front(&chunk, &rest, DRAIN_PAGES);
		if (t->ops->read_pages(t, epoch, &chunk, buf) < 0) {
			rc = zd_capture_fail(c, ZD_EXIT_TARGET, "%s: reading %" PRIu64 " pages of epoch %" PRIu64 ": %s",
					     t->spec, chunk.pages, epoch, t->err);
			break;
		}
		if ((rc = zd_capture_emit_pages(c, epoch, &chunk, buf, 0)))
			break;
	}
	free(buf);
	zd_pageset_free(&rest);
	zd_pageset_free(&chunk);
	return rc;
}

const struct zd_drain_ops zd_drain_read = {
	.name = "read",
	.drain = drain_read,
};
