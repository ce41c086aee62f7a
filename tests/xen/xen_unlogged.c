/* SPDX-License-Identifier: MIT */
/*
 * xen_unlogged DOMID [ROUNDS [MS]]: which frames of a running PVH/HVM
 * guest change without a log-dirty bit. Diagnosis for tests/xen/: with
 * the guest paused, copy every populated frame; then ROUNDS times: CLEAN
 * the log, run the guest MS milliseconds, pause, PEEK (LOGDIRTY_FINAL, as
 * zd-track's checkpoints ask) and compare every frame with its copy. A
 * frame that changed with no bit is printed with its gfn and byte range,
 * and what Xen says it is (shared_info, HVM params). Leaves log-dirty off
 * and the guest running. Exit 0 none found, 1 some found, 4 Xen errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>

#define PG 4096u

int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom, unsigned int num, xen_pfn_t *arr);

static const char *what(xc_interface *xch, uint32_t dom, uint64_t gfn, uint64_t shinfo)
{
	static const struct { int p; const char *n; } params[] = {
		{ HVM_PARAM_STORE_PFN, "xenstore ring" }, { HVM_PARAM_CONSOLE_PFN, "console ring" },
		{ HVM_PARAM_IOREQ_PFN, "ioreq" }, { HVM_PARAM_BUFIOREQ_PFN, "buffered ioreq" },
		{ HVM_PARAM_PAGING_RING_PFN, "paging ring" }, { HVM_PARAM_MONITOR_RING_PFN, "monitor ring" },
		{ HVM_PARAM_SHARING_RING_PFN, "sharing ring" }, { HVM_PARAM_IDENT_PT, "ident PT" },
	};
	uint64_t v;

	if (gfn == shinfo)
		return "shared_info";
	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
		if (xc_hvm_param_get(xch, dom, params[i].p, &v) == 0 && v &&
		    (params[i].p == HVM_PARAM_IDENT_PT ? v >> 12 : v) == gfn)
			return params[i].n;
	return "?";
}

int main(int argc, char **argv)
{
	xc_interface *xch;
	xenforeignmemory_handle *fm;
	xc_dominfo_t info;
	xen_pfn_t maxg, *gfns, arr[1024];
	DECLARE_HYPERCALL_BUFFER(unsigned long, bm);
	xc_shadow_op_stats_t st;
	uint32_t dom;
	int rounds = argc > 2 ? atoi(argv[2]) : 20, ms = argc > 3 ? atoi(argv[3]) : 20;
	uint64_t n = 0, found = 0, ngfn, bmp;
	uint8_t *mem, *copy;
	int *err;

	if (argc < 2) {
		fprintf(stderr, "usage: xen_unlogged DOMID [ROUNDS [MS]]\n");
		return 2;
	}
	dom = (uint32_t)atoi(argv[1]);
	xch = xc_interface_open(NULL, NULL, 0);
	fm = xenforeignmemory_open(NULL, 0);
	if (!xch || !fm || xc_domain_getinfo(xch, dom, 1, &info) != 1 ||
	    xc_domain_maximum_gpfn(xch, dom, &maxg) < 0) {
		perror("xen_unlogged: domain");
		return 4;
	}
	ngfn = maxg + 1;
	gfns = malloc(ngfn * sizeof(*gfns));
	xc_domain_pause(xch, dom);
	for (uint64_t g = 0; g < ngfn; g += 1024) {
		unsigned k = (unsigned)(ngfn - g < 1024 ? ngfn - g : 1024);

		for (unsigned i = 0; i < k; i++)
			arr[i] = g + i;
		if (xc_get_pfn_type_batch(xch, dom, k, arr) < 0)
			return 4;
		for (unsigned i = 0; i < k; i++) {
			uint32_t t = (uint32_t)(arr[i] & XEN_DOMCTL_PFINFO_LTAB_MASK);

			if (t != XEN_DOMCTL_PFINFO_XTAB && t != XEN_DOMCTL_PFINFO_XALLOC &&
			    t != XEN_DOMCTL_PFINFO_BROKEN)
				gfns[n++] = g + i;
		}
	}
	err = calloc(n, sizeof(*err));
	mem = xenforeignmemory_map(fm, dom, PROT_READ, n, gfns, err);
	copy = malloc(n * PG);
	if (!mem || !copy) {
		perror("xen_unlogged: map");
		return 4;
	}
	printf("domain %u: %" PRIu64 " populated gfns of %" PRIu64 ", shared_info gfn %#lx\n", dom, n, ngfn,
	       info.shared_info_frame);
	bmp = (ngfn + 8 * PG - 1) / (8 * PG);
	bm = xc_hypercall_buffer_alloc_pages(xch, bm, (int)bmp);
	if (xc_shadow_control(xch, dom, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0) < 0) {
		perror("xen_unlogged: enable log-dirty");
		return 4;
	}
	for (uint64_t i = 0; i < n; i++)
		if (!err[i])
			memcpy(copy + i * PG, mem + i * PG, PG);
	for (int r = 0; r < rounds; r++) {
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
		uint64_t dirty = 0, quiet = 0;

		if (xc_logdirty_control(xch, dom, XEN_DOMCTL_SHADOW_OP_CLEAN, HYPERCALL_BUFFER(bm), ngfn,
					XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL, &st) < 0)
			return 4;
		xc_domain_unpause(xch, dom);
		nanosleep(&ts, NULL);
		xc_domain_pause(xch, dom);
		if (xc_logdirty_control(xch, dom, XEN_DOMCTL_SHADOW_OP_PEEK, HYPERCALL_BUFFER(bm), ngfn,
					XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL, &st) < 0)
			return 4;
		for (uint64_t i = 0; i < n; i++) {
			uint8_t *a = mem + i * PG, *b = copy + i * PG;
			uint64_t g = gfns[i];
			bool bit = (bm[g / (8 * sizeof(long))] >> (g % (8 * sizeof(long)))) & 1;

			if (err[i])
				continue;
			dirty += bit;
			if (memcmp(a, b, PG)) {
				if (!bit) {
					unsigned lo = 0, hi = PG - 1;

					while (a[lo] == b[lo])
						lo++;
					while (a[hi] == b[hi])
						hi--;
					printf("round %d: gfn %#" PRIx64 " (page %" PRIu64 ", %s) changed with no dirty bit, bytes %u..%u\n",
					       r, g, i, what(xch, dom, g, info.shared_info_frame), lo, hi);
					found++;
				}
				memcpy(b, a, PG);
			} else if (bit) {
				quiet++;
			}
		}
		printf("round %d: %" PRIu64 " dirty bits (%" PRIu64 " of them unchanged)\n", r, dirty, quiet);
	}
	xc_shadow_control(xch, dom, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0);
	xc_domain_unpause(xch, dom);
	printf("%" PRIu64 " change(s) without a dirty bit over %d rounds of %d ms\n", found, rounds, ms);
	return found ? 1 : 0;
}
