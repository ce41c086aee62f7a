/* SPDX-License-Identifier: MIT */
/*
 * xen_memcmp SPEC IMAGE: compare a replica's memory.img with the guest's
 * frames as zd-swap would read them (the xen: target's attach role), page
 * by page. For tests/xen/replicate.sh, with the guest paused.
 * Exit 0 all equal, 1 some differ (count and first on stdout), 4 target.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zd/target.h"
#include "zd/util.h"

#define CHUNK 4096u

int main(int argc, char **argv)
{
	struct zd_rec_header h = { .page_size = 4096 };
	struct zd_pageset set = ZD_PAGESET_INIT;
	struct zd_target *t;
	uint64_t differ = 0, first = UINT64_MAX;
	const uint8_t *img;
	uint8_t *buf;
	struct stat st;
	char msg[256];
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: xen_memcmp xen:NAME|DOMID MEMORY.IMG\n");
		return 2;
	}
	fd = open(argv[2], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size % h.page_size) {
		fprintf(stderr, "xen_memcmp: %s: %s\n", argv[2], fd < 0 ? strerror(errno) : "not whole pages");
		return 1;
	}
	img = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (img == MAP_FAILED) {
		fprintf(stderr, "xen_memcmp: mmap %s: %s\n", argv[2], strerror(errno));
		return 1;
	}
	h.page_count = (uint64_t)st.st_size / h.page_size;
	h.target = argv[1];
	if (zd_target_attach(&t, &h, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "xen_memcmp: %s\n", msg);
		return 4;
	}
	buf = zd_xmalloc((size_t)CHUNK * h.page_size);
	for (uint64_t p = 0; p < h.page_count; p += CHUNK) {
		uint64_t n = ZD_MIN((uint64_t)CHUNK, h.page_count - p);

		zd_pageset_clear(&set);
		zd_pageset_add_range(&set, p, n);
		if (t->ops->read_pages(t, 0, &set, buf) < 0) {
			fprintf(stderr, "xen_memcmp: read pages %" PRIu64 "..: %s\n", p, t->err);
			return 4;
		}
		for (uint64_t i = 0; i < n; i++) {
			const uint8_t *a = buf + i * h.page_size, *b = img + (p + i) * h.page_size;

			if (memcmp(a, b, h.page_size)) {
				uint32_t lo = 0, hi = h.page_size - 1;

				differ++;
				if (first == UINT64_MAX)
					first = p + i;
				/* Which frames and where in them: a frame Xen
				 * writes behind the log (vcpu_info, time) shows
				 * as a few bytes at a fixed offset. */
				while (a[lo] == b[lo])
					lo++;
				while (a[hi] == b[hi])
					hi--;
				if (differ <= 8)
					fprintf(stderr, "xen_memcmp: page %" PRIu64 " differs in bytes %u..%u\n",
						p + i, lo, hi);
			}
		}
	}
	if (differ) {
		printf("%" PRIu64 " of %" PRIu64 " pages differ (first: page %" PRIu64 ")\n", differ,
		       h.page_count, first);
		return 1;
	}
	printf("%" PRIu64 " pages equal\n", h.page_count);
	free(buf);
	zd_pageset_free(&set);
	zd_target_close(t);
	return 0;
}
