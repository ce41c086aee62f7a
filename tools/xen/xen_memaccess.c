/* SPDX-License-Identifier: MIT */
/*
 * xen_memaccess DOMID [MS]: can mem_access + vm_event trap a running
 * PVH guest's writes here? The building block zddspt's copy-on-write
 * guard would need on Xen. With log-dirty on, as under
 * zd-track: find the pages the guest writes (CLEAN, run 50 ms, PEEK), make
 * them read-only with xc_set_mem_access, run the guest MS ms (default 500)
 * answering every write event from the monitor ring (restore rwx on the
 * page, resume the vCPU), then put every page back to rwx and turn the
 * monitor off. Prints what worked and the first error, with errno.
 * Exit 0 write events arrived and were answered, 1 not, 4 setup failed.
 * Written after Xen's tools/tests/xen-access (its ring handling).
 * Built by `make xen-probes`; run by tools/xen/memaccess.sh.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xen/vm_event.h>

#define MAXP 256

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	xenevtchn_handle *xce = NULL;
	DECLARE_HYPERCALL_BUFFER(unsigned long, bm);
	xc_shadow_op_stats_t st;
	vm_event_back_ring_t back;
	vm_event_sring_t *sring;
	xen_pfn_t maxg = 0;
	uint64_t gfns[MAXP], events = 0, t_end;
	uint32_t dom, port = 0;
	int ms = argc > 2 ? atoi(argv[2]) : 500, n = 0, rc = 4, lport = -1;
	bool logdirty = false, monitor = false;
	void *ring;

	if (argc < 2 || !xch) {
		fprintf(stderr, "usage: xen_memaccess DOMID [MS] (in dom0, as root)\n");
		return 2;
	}
	dom = (uint32_t)atoi(argv[1]);
	if (xc_domain_maximum_gpfn(xch, dom, &maxg) < 0) {
		printf("maximum gpfn: %s\n", strerror(errno));
		return 4;
	}
	bm = xc_hypercall_buffer_alloc_pages(xch, bm, (int)((maxg + 1 + 8 * 4096 - 1) / (8 * 4096)));
	xc_domain_pause(xch, dom);
	if (xc_shadow_control(xch, dom, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0) < 0) {
		printf("enable log-dirty: %s\n", strerror(errno));
		goto out;
	}
	logdirty = true;
	xc_logdirty_control(xch, dom, XEN_DOMCTL_SHADOW_OP_CLEAN, HYPERCALL_BUFFER(bm), maxg + 1, 0, &st);
	xc_domain_unpause(xch, dom);
	{
		struct timespec ts = { 0, 50 * 1000000 };

		nanosleep(&ts, NULL);
	}
	xc_domain_pause(xch, dom);
	xc_logdirty_control(xch, dom, XEN_DOMCTL_SHADOW_OP_PEEK, HYPERCALL_BUFFER(bm), maxg + 1, 0, &st);
	for (uint64_t g = 0; g <= maxg && n < MAXP; g++)
		if ((bm[g / (8 * sizeof(long))] >> (g % (8 * sizeof(long)))) & 1)
			gfns[n++] = g;
	printf("the guest wrote %d+ pages in 50 ms (log-dirty)\n", n);

	ring = xc_monitor_enable(xch, dom, &port);
	if (!ring) {
		printf("xc_monitor_enable: %s (errno %d)\n", strerror(errno), errno);
		goto out;
	}
	monitor = true;
	xce = xenevtchn_open(NULL, 0);
	if (!xce || (lport = xenevtchn_bind_interdomain(xce, dom, port)) < 0) {
		printf("bind the monitor event channel: %s\n", strerror(errno));
		goto out;
	}
	sring = ring;
	SHARED_RING_INIT(sring);
	BACK_RING_INIT(&back, sring, XC_PAGE_SIZE);
	for (int i = 0; i < n; i++) {
		if (xc_set_mem_access(xch, dom, XENMEM_access_rx, gfns[i], 1) < 0) {
			printf("xc_set_mem_access(rx) gfn %#" PRIx64 ": %s (errno %d)\n", gfns[i], strerror(errno), errno);
			goto out;
		}
	}
	printf("%d pages read-only (XENMEM_access_rx)\n", n);
	xc_domain_unpause(xch, dom);
	t_end = now_ms() + (uint64_t)ms;
	while (now_ms() < t_end) {
		struct pollfd pfd = { .fd = xenevtchn_fd(xce), .events = POLLIN };
		int p;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		p = xenevtchn_pending(xce);
		if (p >= 0)
			xenevtchn_unmask(xce, (evtchn_port_t)p);
		while (RING_HAS_UNCONSUMED_REQUESTS(&back)) {
			vm_event_request_t req;
			vm_event_response_t rsp;

			memcpy(&req, RING_GET_REQUEST(&back, back.req_cons), sizeof(req));
			back.req_cons++;
			back.sring->req_event = back.req_cons + 1;
			if (req.reason == VM_EVENT_REASON_MEM_ACCESS) {
				/* Here zddspt would save the page's pre-image. */
				xc_set_mem_access(xch, dom, XENMEM_access_rwx, req.u.mem_access.gfn, 1);
				events++;
			}
			memset(&rsp, 0, sizeof(rsp));
			rsp.version = VM_EVENT_INTERFACE_VERSION;
			rsp.vcpu_id = req.vcpu_id;
			rsp.flags = req.flags & VM_EVENT_FLAG_VCPU_PAUSED;
			rsp.reason = req.reason;
			memcpy(RING_GET_RESPONSE(&back, back.rsp_prod_pvt), &rsp, sizeof(rsp));
			back.rsp_prod_pvt++;
			RING_PUSH_RESPONSES(&back);
		}
		xenevtchn_notify(xce, (evtchn_port_t)lport);
	}
	xc_domain_pause(xch, dom);
	printf("%" PRIu64 " write event(s) in %d ms, each answered (page back to rwx, vCPU resumed)\n", events, ms);
	rc = events ? 0 : 1;
out:
	xc_domain_pause(xch, dom);
	for (int i = 0; i < n; i++)
		xc_set_mem_access(xch, dom, XENMEM_access_rwx, gfns[i], 1);
	if (lport >= 0)
		xenevtchn_unbind(xce, (evtchn_port_t)lport);
	if (xce)
		xenevtchn_close(xce);
	if (monitor)
		xc_monitor_disable(xch, dom);
	if (logdirty)
		xc_shadow_control(xch, dom, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0);
	xc_domain_unpause(xch, dom);
	xc_interface_close(xch);
	return rc;
}
