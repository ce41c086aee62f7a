/* SPDX-License-Identifier: MIT */
/*
 * xen:NAME or xen:DOMID — a PVH or HVM domain of the Xen host this runs on
 * (dom0, as root), through libxenctrl, libxenstore and libxenforeignmemory.
 *
 * Page numbers. A PVH guest's physmap spans ~4 GiB (max_gpfn ~0xfefff)
 * however little RAM it has, with RAM at the bottom and a few special and
 * ACPI pages near the top. Hashing or replicating the whole span every
 * epoch would cost 32 times the guest's memory, so the target numbers only
 * the frames that are populated when it opens: page i of the stream is the
 * i-th populated gfn in ascending order. A gfn without a frame at open
 * (a hole, MMIO: by Xen's page type, as its migration tells them) or that
 * dom0 cannot map is absent: it is neither tracked nor replicated.
 * The gfn list goes into the STATE blob, so a replica can be put back at
 * the right addresses. Frames the guest populates later (ballooning up)
 * are not tracked; the guest's RAM is mapped once, at open.
 *
 * Dirty log. Xen's log-dirty has only "read" (PEEK) and "read and clear
 * all" (CLEAN). The target ops want harvest without re-arm and re-arm of
 * a subset (zddspt's pre-copy), so bits CLEAN took but the caller did not
 * re-arm are kept in `pending` and reported by the next harvest. The
 * first harvest reports every page: the replica starts empty. A few
 * frames change behind the log (Xen's event channel and vcpu_info writes,
 * dom0's rings, also while the guest is paused): see "Frames written
 * behind log-dirty" below for how a checkpoint still gets them, and how
 * memsum agrees with what was sent.
 *
 * Attach role (zd-swap, zd-send): dom0 tools share the host, so a stage
 * opens the domain named by the HEADER's target spec itself and maps the
 * same frames; it refuses if it finds a different number of them.
 *
 * PV guests cannot be tracked: Debian's Xen (and any Xen built without
 * CONFIG_SHADOW_PAGING) has no log-dirty for them.
 *
 * Output commit (xen:NAME,output-commit=on|off, default on): the guest's
 * network output waits in dom0 for the ACK of its epoch; xen_netbuf.c.
 * Checkpoints suspend the guest (the default, checkpoint=suspend), as
 * Xen's Remus does: zd-track writes "suspend" to the guest's xenstore
 * control/shutdown, the guest (Linux's drivers/xen/manage.c) clears it,
 * quiesces its devices and calls SCHEDOP_shutdown(SHUTDOWN_suspend); once
 * Xen shows the domain shut down for suspend the checkpoint is taken, and
 * xc_domain_resume(fast) makes that hypercall return 1 ("cancelled") so
 * that the guest goes on cheaply. Why: the guest's event channels, grant
 * table and shared_info live in Xen, not in its memory. A guest stopped
 * with a plain pause and put into a new domain keeps using ports that do
 * not exist there, and hangs; one stopped in its suspend hypercall, whose
 * hypercall returns 0 in the new domain, binds everything again (that is
 * how a standby takes over: lib/replica/standby_xen.c). checkpoint=pause
 * keeps the plain xc_domain_pause: the guest needs no suspend support,
 * and the replica is for inspection only, it cannot be taken over.
 */
#include "zd/target.h"

#ifdef ZD_HAVE_XEN

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenguest.h>
#include <xenstore.h>
#include <xxhash.h>

#include "xen_disk.h"
#include "xen_netbuf.h"
#include "zd/util.h"

#define XEN_PAGE 4096u
#define SUSPEND_MS_DEFAULT 10000u	/* a suspend under QEMU TCG takes ~0.1-0.3 s */
#define SCAN_CHUNK 1024u		/* gfns per page-type query: the domctl takes <= 1024 */
#define NO_IDX UINT32_MAX

/* STATE blob (kind 2): this header, nranges × {first gfn, count} (u64
 * each), the HVM context of xc_domain_hvm_getcontext, then (since the
 * suspended version) struct xen_state_tsc: the domain's TSC info, which a
 * domain resuming the guest must be given as Xen's own restore gives it
 * (X86_TSC_INFO). The magic's
 * last byte says how the guest was stopped: 1 paused (the replica can
 * be inspected, not resumed), 2 in its suspend hypercall (a standby can
 * resume it: lib/replica/standby_xen.c reads this). */
#define XEN_STATE_MAGIC "zdxen\0\0\1"
#define XEN_STATE_MAGIC_SUSPENDED "zdxen\0\0\2"
struct xen_state_hdr {
	char magic[8];
	uint32_t nranges;
	uint32_t ctx_len;
};
struct xen_state_tsc {
	char tag[4];			/* "tsc1" */
	uint32_t mode;
	uint64_t elapsed_nsec;
	uint32_t khz;
	uint32_t incarnation;
};

struct xen_priv {
	xc_interface *xch;
	xenforeignmemory_handle *fmem;
	uint32_t domid;
	bool logdirty;			/* we enabled it: turn it off at close */
	bool paused;			/* we paused it: unpause at close */
	bool first;			/* no harvest yet: everything is dirty */
	bool by_suspend;		/* checkpoint=suspend (the default) */
	bool suspended;			/* stopped in its suspend hypercall by us */
	bool asked;			/* we wrote "suspend" to control/shutdown */
	unsigned suspend_ms;		/* how long the guest has to suspend */
	struct xs_handle *xs;		/* read-write, checkpoint=suspend */

	uint64_t ngfn;			/* max_gpfn + 1 */
	uint32_t *idx;			/* gfn -> page index, NO_IDX if absent */
	struct zd_pageset gfns;		/* populated gfns (ranges) */
	uint8_t *mem;			/* all populated frames, page i at i*4096 */
	size_t mem_pages;

	xc_hypercall_buffer_t hb;	/* log-dirty bitmap, ngfn bits */
	unsigned long *bm;
	size_t bm_pages;
	struct zd_pageset pending;	/* cleaned from Xen, not re-armed by the caller */
	uint64_t *scratch;		/* page indexes of one harvest */

	/* Frames written behind log-dirty (see "Frames written behind"): */
	uint64_t *ul;			/* their page indexes, ascending */
	size_t nul, ul_cap;
	uint8_t *ul_sent;		/* what the replica holds of each */
	uint8_t *ul_snap;		/* each as this pause's harvest saw it */

	/* This pause's checkpoint (a harvest while paused): */
	bool ckpt;			/* there is one */
	struct zd_pageset ckpt_set;	/* its dirty set */
	uint64_t *cc_idx;		/* its pages as the harvest read them */
	uint8_t *cc;			/* (unless more than CC_MAX) */
	size_t ncc, cc_cap;
	bool served;			/* read_pages gave cc's pages in this pause */

	/* This epoch's pre-copy (zddspt's reads while the guest runs): */
	uint64_t *pc_idx;		/* its pages, ascending */
	uint8_t *pc;			/* as read, what the replica gets of them */
	size_t npc, pc_cap;
	bool pc_partial;		/* more than CC_MAX pages, or out of order */

	uint8_t *audit;			/* ZD_XEN_AUDIT=1: every page as read_pages gave it */

	bool output_commit;		/* the spec's output-commit (tracker role) */
	char name[128];		/* the spec's NAME|DOMID, options cut off */
	char disk_path[256];		/* the spec's disk= ("": none) */
	struct zd_xdisk *disk;		/* its log-writes device (tracker role) */
	uint64_t epoch;			/* the checkpoint this pause takes */
	bool disk_late;			/* the pause marked the log: read it */
	bool disk_late_full;		/* ... and skip it (the whole disk went) */
	uint64_t disk_full_ns;		/* that whole-disk read's time */
	uint8_t *zeros;			/* a discard's data */
	struct xen_netbuf *nb;		/* the vifs' output held, NULL: none */
};

static void set_err(struct zd_target *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct zd_target *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->err, sizeof(t->err), fmt, ap);
	va_end(ap);
}

/* The spec: NAME|DOMID[,KEY=VALUE...]. Options, generically parsed: a
 * new one is a line of spec_keys and a case in spec_set. */
struct xen_spec {
	char name[128];
	bool by_pause;			/* checkpoint=pause */
	unsigned suspend_ms;		/* suspend-timeout=MS */
	bool output_commit;		/* output-commit=on|off (default on) */
	char disk[256];			/* disk=DEV, a log-writes device */
};

static const char *const spec_keys[] = { "checkpoint", "suspend-timeout", "output-commit", "disk" };

static int spec_set(struct zd_target *t, struct xen_spec *sp, size_t key, const char *val)
{
	uint64_t v;

	switch (key) {
	case 0:
		if (!strcmp(val, "suspend") || !strcmp(val, "pause")) {
			sp->by_pause = !strcmp(val, "pause");
			return 0;
		}
		set_err(t, "checkpoint=%s: want checkpoint=suspend (default) or checkpoint=pause", val);
		return -2;
	case 1:
		if (zd_parse_u64(val, &v) < 0 || v < 1 || v > 600000) {
			set_err(t, "suspend-timeout=%s: want a number of ms in 1..600000", val);
			return -2;
		}
		sp->suspend_ms = (unsigned)v;
		return 0;
	case 2:
		if (!strcmp(val, "on") || !strcmp(val, "off")) {
			sp->output_commit = !strcmp(val, "on");
			return 0;
		}
		set_err(t, "output-commit=%s: want on or off", val);
		return -2;
	case 3:
		if (val[0] != '/' || strlen(val) >= sizeof(sp->disk)) {
			set_err(t, "disk=%s: want the path of the guest's log-writes device (zd-xen-disk(1))", val);
			return -2;
		}
		snprintf(sp->disk, sizeof(sp->disk), "%s", val);
		return 0;
	}
	return -2;
}

static int parse_spec(struct zd_target *t, const char *args, struct xen_spec *sp)
{
	const char *comma = strchr(args, ',');
	size_t n = comma ? (size_t)(comma - args) : strlen(args);
	char *opts, *tok, *save = NULL;
	int rc = 0;

	memset(sp, 0, sizeof(*sp));
	sp->suspend_ms = SUSPEND_MS_DEFAULT;
	sp->output_commit = true;
	if (n >= sizeof(sp->name)) {
		set_err(t, "domain name too long");
		return -2;
	}
	memcpy(sp->name, args, n);
	if (!comma)
		return 0;
	opts = zd_xstrdup(comma + 1);
	for (tok = strtok_r(opts, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		size_t k;

		if (eq)
			*eq = '\0';
		for (k = 0; k < ZD_ARRAY_SIZE(spec_keys); k++)
			if (!strcmp(tok, spec_keys[k]))
				break;
		if (k == ZD_ARRAY_SIZE(spec_keys) || !eq) {
			set_err(t, "unknown option '%s' (want NAME|DOMID[,checkpoint=suspend|pause]"
				"[,suspend-timeout=MS][,output-commit=on|off][,disk=DEV])", tok);
			rc = -2;
		} else {
			rc = spec_set(t, sp, k, eq + 1);
		}
	}
	free(opts);
	return rc;
}

/* "xen:7" is a domid, anything else a name looked up in xenstore.
 * -2: the spec itself is wrong. */
static int resolve(struct zd_target *t, const char *args, uint32_t *domid)
{
	struct xs_handle *xs;
	char **dirs, path[64];
	unsigned n;
	uint64_t v;
	int rc = -1;

	if (!*args) {
		set_err(t, "want xen:NAME or xen:DOMID");
		return -2;
	}
	if (zd_parse_u64(args, &v) == 0) {
		if (v >= 0x7ff0) {	/* DOMID_FIRST_RESERVED */
			set_err(t, "domid %" PRIu64 " out of range", v);
			return -2;
		}
		*domid = (uint32_t)v;
		return 0;
	}
	xs = xs_open(XS_OPEN_READONLY);
	if (!xs) {
		set_err(t, "cannot open xenstore (%s): run in dom0 as root with xenstored up",
			strerror(errno));
		return -1;
	}
	dirs = xs_directory(xs, XBT_NULL, "/local/domain", &n);
	for (unsigned i = 0; dirs && i < n && rc < 0; i++) {
		unsigned len;
		char *name;

		snprintf(path, sizeof(path), "/local/domain/%s/name", dirs[i]);
		name = xs_read(xs, XBT_NULL, path, &len);
		if (name && !strcmp(name, args) && zd_parse_u64(dirs[i], &v) == 0) {
			*domid = (uint32_t)v;
			rc = 0;
		}
		free(name);
	}
	if (!dirs)
		set_err(t, "xenstore /local/domain: %s", strerror(errno));
	else if (rc < 0)
		set_err(t, "no domain named '%s' in xenstore", args);
	free(dirs);
	xs_close(xs);
	return rc;
}

/* How a domain that stopped by itself ended, for "domain N has ...". */
static const char *how_stopped(const xc_dominfo_t *info)
{
	if (info->crashed)
		return "crashed";
	if (info->dying)
		return "died";
	if (info->shutdown && info->shutdown_reason == SHUTDOWN_reboot)
		return "shut down (reboot: for an HVM guest, a triple fault)";
	return "shut down";
}

/* The domain is gone or stopped by itself: lost (zd-track's END then says
 * the VM died, and the backup takes over), unless its guest powered it
 * off, which is an end its operator asked for. */
static void domain_lost(struct zd_target *t, const xc_dominfo_t *info)
{
	t->vm_died = !info || !(info->shutdown && !info->dying && !info->crashed &&
				info->shutdown_reason == SHUTDOWN_poweroff);
}

static int domain_info(struct zd_target *t, xc_dominfo_t *info)
{
	struct xen_priv *p = t->priv;

	if (xc_domain_getinfo(p->xch, p->domid, 1, info) != 1 || info->domid != p->domid) {
		set_err(t, "domain %u does not exist", p->domid);
		domain_lost(t, NULL);
		return -1;
	}
	/* Shut down for suspend is a checkpoint under way (checkpoint=
	 * suspend: zd-track resumes it), not an end. */
	if (info->dying || info->crashed || (info->shutdown && info->shutdown_reason != SHUTDOWN_suspend)) {
		set_err(t, "domain %u has %s", p->domid, how_stopped(info));
		domain_lost(t, info);
		return -1;
	}
	return 0;
}

/* checkpoint=suspend: the guest must say it can. Linux writes
 * control/feature-suspend when its xenbus comes up; a guest resumed in a
 * new domain (a taken-over standby, a migrated guest) does not write it
 * again, so, as libxl does, an HVM guest whose PV drivers set their event
 * callback (HVM_PARAM_CALLBACK_IRQ) is taken to answer control/shutdown
 * too. */
static int suspend_check(struct zd_target *t)
{
	struct xen_priv *p = t->priv;
	char path[80], *v;
	unsigned len;
	bool yes;

	p->xs = xs_open(0);
	if (!p->xs) {
		set_err(t, "cannot open xenstore (%s): run in dom0 as root with xenstored up", strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/local/domain/%u/control/feature-suspend", p->domid);
	/* A guest that has just booted may not have said it yet (seen
	 * under QEMU TCG: its user space ran before its xenbus had). */
	for (uint64_t until = zd_now_ns() + (uint64_t)p->suspend_ms * 1000000u;;) {
		uint64_t callback = 0;

		v = xs_read(p->xs, XBT_NULL, path, &len);
		yes = v && !strcmp(v, "1");
		free(v);
		if (!yes && xc_hvm_param_get(p->xch, p->domid, HVM_PARAM_CALLBACK_IRQ, &callback) == 0 &&
		    callback)
			yes = true;
		if (yes || zd_now_ns() >= until)
			break;
		zd_sleep_ns(100000000);
	}
	if (!yes) {
		set_err(t, "domain %u does not announce Xen PV suspend (no control/feature-suspend): checkpoints "
			"cannot suspend it; xen:NAME,checkpoint=pause replicates it for inspection only "
			"(no takeover)", p->domid);
		return -1;
	}
	return 0;
}

/* A vbd whose two ends agreed on persistent grants (feature-persistent
 * on both) has blkback write the data of the guest's disk reads through
 * mappings of the guest's pages that it keeps for good: Xen's log-dirty
 * does not see those writes (it marks a granted page dirty when its
 * mapping goes), so the replica would keep stale pages and --verify
 * would find its checksum differ now and then (seen in tests/xen/disk.sh).
 * Refused before epoch 1, naming the cure. */
static int persistent_grants_check(struct zd_target *t)
{
	struct xen_priv *p = t->priv;
	struct xs_handle *xs = xs_open(XS_OPEN_READONLY);
	char path[128], **devs;
	unsigned n = 0;
	int rc = 0;

	if (!xs) {
		set_err(t, "cannot open xenstore (%s): run in dom0 as root with xenstored up", strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/local/domain/%u/device/vbd", p->domid);
	devs = xs_directory(xs, XBT_NULL, path, &n);
	for (unsigned i = 0; devs && i < n && !rc; i++) {
		char *front, *back = NULL, *be;
		unsigned len;

		snprintf(path, sizeof(path), "/local/domain/%u/device/vbd/%s/feature-persistent", p->domid, devs[i]);
		front = xs_read(xs, XBT_NULL, path, &len);
		snprintf(path, sizeof(path), "/local/domain/%u/device/vbd/%s/backend", p->domid, devs[i]);
		be = xs_read(xs, XBT_NULL, path, &len);
		if (be) {
			snprintf(path, sizeof(path), "%s/feature-persistent", be);
			back = xs_read(xs, XBT_NULL, path, &len);
		}
		if (front && back && !strcmp(front, "1") && !strcmp(back, "1")) {
			set_err(t, "domain %u's vbd %s uses persistent grants: blkback writes its disk reads "
				"into guest memory behind log-dirty; set "
				"/sys/module/xen_blkback/parameters/feature_persistent to 0 (or load xen-blkback "
				"with feature_persistent=0) and start the guest again", p->domid, devs[i]);
			rc = -1;
		}
		free(front), free(back), free(be);
	}
	free(devs);
	xs_close(xs);
	return rc;
}

/* Ask the guest to suspend and wait until Xen shows it shut down for
 * suspend, in its SCHEDOP_shutdown hypercall. */
static int suspend_guest(struct zd_target *t)
{
	struct xen_priv *p = t->priv;
	uint64_t deadline = zd_now_ns() + (uint64_t)p->suspend_ms * 1000000u;
	char path[80];

	snprintf(path, sizeof(path), "/local/domain/%u/control/shutdown", p->domid);
	if (!xs_write(p->xs, XBT_NULL, path, "suspend", 7)) {
		set_err(t, "xenstore write %s: %s", path, strerror(errno));
		return -1;
	}
	p->asked = true;
	for (;;) {
		xc_dominfo_t info;

		if (xc_domain_getinfo(p->xch, p->domid, 1, &info) != 1 || info.domid != p->domid) {
			set_err(t, "domain %u does not exist", p->domid);
			domain_lost(t, NULL);
			return -1;
		}
		if (info.shutdown && info.shutdown_reason == SHUTDOWN_suspend) {
			p->suspended = true;
			return 0;
		}
		if (info.crashed || info.dying || info.shutdown) {
			set_err(t, "domain %u has %s", p->domid, how_stopped(&info));
			domain_lost(t, &info);
			return -1;
		}
		/* Paused by someone else after we asked (wait_until_unpaused):
		 * the guest answers once it runs again. */
		if (info.paused)
			deadline = zd_now_ns() + (uint64_t)p->suspend_ms * 1000000u;
		if (zd_now_ns() >= deadline) {
			/* Take the request back; a guest that still suspends
			 * late is resumed by xen_close. */
			xs_write(p->xs, XBT_NULL, path, "", 0);
			set_err(t, "guest did not suspend within %u ms: does it have Xen PV suspend support? "
				"(xen:NAME,checkpoint=pause does without, for a replica that cannot be taken over)",
				p->suspend_ms);
			return -1;
		}
		/* dom0 shares the CPUs with the guest that is suspending. */
		zd_sleep_ns(1000000);
	}
}

/* Not in xenctrl.h but exported by libxenctrl since 4.x: the page type
 * of a batch of gfns (what Xen's own migration uses to skip holes). */
int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom, unsigned int num, xen_pfn_t *arr);

/* Which gfns of the physmap hold a frame: one cheap domctl per SCAN_CHUNK
 * gfns, no mapping. Then map them all, read-only, as one range; a gfn
 * that still does not map (a frame Xen will not let dom0 map) is dropped
 * and the rest mapped again. */
static int map_frames(struct zd_target *t)
{
	struct xen_priv *p = t->priv;
	xen_pfn_t *arr = zd_xmalloc(SCAN_CHUNK * sizeof(*arr));
	xen_pfn_t *all = NULL;
	int *err = NULL;
	uint64_t n = 0, kept;
	int rc = -1;

	for (uint64_t g = 0; g < p->ngfn; g += SCAN_CHUNK) {
		unsigned k = (unsigned)ZD_MIN((uint64_t)SCAN_CHUNK, p->ngfn - g);

		for (unsigned i = 0; i < k; i++)
			arr[i] = g + i;
		if (xc_get_pfn_type_batch(p->xch, p->domid, k, arr) < 0) {
			set_err(t, "page types of gfns %#" PRIx64 "..: %s", g, strerror(errno));
			goto out;
		}
		for (unsigned i = 0; i < k; i++) {
			uint32_t type = (uint32_t)(arr[i] & XEN_DOMCTL_PFINFO_LTAB_MASK);

			if (type != XEN_DOMCTL_PFINFO_XTAB && type != XEN_DOMCTL_PFINFO_XALLOC &&
			    type != XEN_DOMCTL_PFINFO_BROKEN)
				zd_pageset_add(&p->gfns, g + i);
		}
	}
	for (int pass = 0; pass < 2; pass++) {
		n = zd_pageset_count(&p->gfns);
		if (!n) {
			set_err(t, "domain %u has no frame to map", p->domid);
			goto out;
		}
		free(all);
		free(err);
		all = zd_xmalloc(n * sizeof(*all));
		err = zd_xcalloc(n, sizeof(*err));
		n = 0;
		for (size_t r = 0; r < p->gfns.n; r++)
			for (uint64_t i = 0; i < p->gfns.r[r].count; i++)
				all[n++] = p->gfns.r[r].first + i;
		p->mem = xenforeignmemory_map(p->fmem, p->domid, PROT_READ, n, all, err);
		if (!p->mem) {
			set_err(t, "foreign map of %" PRIu64 " frames: %s", n, strerror(errno));
			goto out;
		}
		p->mem_pages = n;
		kept = n;
		for (uint64_t i = 0; i < n; i++) {
			if (err[i]) {
				struct zd_pageset one = ZD_PAGESET_INIT, rest = ZD_PAGESET_INIT;

				zd_pageset_add(&one, all[i]);
				zd_pageset_subtract(&rest, &p->gfns, &one);
				zd_pageset_swap(&rest, &p->gfns);
				zd_pageset_free(&one);
				zd_pageset_free(&rest);
				kept--;
			}
		}
		if (kept == n)
			break;
		zd_debug("xen: %" PRIu64 " of %" PRIu64 " frames do not map: left out", n - kept, n);
		xenforeignmemory_unmap(p->fmem, p->mem, n);
		p->mem = NULL;
		if (pass == 1) {
			set_err(t, "the guest's frames keep changing while it is paused");
			goto out;
		}
	}
	p->idx = zd_xmalloc(p->ngfn * sizeof(*p->idx));
	for (uint64_t g = 0; g < p->ngfn; g++)
		p->idx[g] = NO_IDX;
	for (uint64_t i = 0; i < n; i++)
		p->idx[all[i]] = (uint32_t)i;
	t->page_size = XEN_PAGE;
	t->page_count = n;
	rc = 0;
out:
	free(arr);
	free(err);
	free(all);
	return rc;
}

static int xen_connect(struct zd_target *t, const char *args, bool tracker)
{
	struct xen_priv *p = zd_xcalloc(1, sizeof(*p));
	struct xen_spec sp;
	xc_dominfo_t info;
	xen_pfn_t maxg = 0;
	int r;

	t->priv = p;
	zd_pageset_init(&p->gfns);
	zd_pageset_init(&p->pending);
	p->hb = (xc_hypercall_buffer_t){ .hbuf = NULL, .param_shadow = NULL,
					 HYPERCALL_BUFFER_INIT_NO_BOUNCE };
	if ((r = parse_spec(t, args, &sp)) < 0 || (r = resolve(t, sp.name, &p->domid)) < 0)
		return r;
	snprintf(p->name, sizeof(p->name), "%s", sp.name);
	p->output_commit = sp.output_commit;
	snprintf(p->disk_path, sizeof(p->disk_path), "%s", sp.disk);
	p->by_suspend = !sp.by_pause;
	p->suspend_ms = sp.suspend_ms;
	p->xch = xc_interface_open(NULL, NULL, 0);
	if (!p->xch) {
		set_err(t, "cannot open the Xen control interface (%s): run in dom0 as root",
			strerror(errno));
		return -1;
	}
	if (domain_info(t, &info) < 0)
		return -1;
	if (!info.hvm) {
		set_err(t, "log-dirty is not supported for PV domains on this Xen (no shadow paging): "
			"use a PVH or HVM guest");
		return -1;
	}
	if (p->domid == 0) {
		set_err(t, "domain 0 cannot protect itself");
		return -1;
	}
	if (xc_domain_maximum_gpfn(p->xch, p->domid, &maxg) < 0) {
		set_err(t, "maximum gpfn of domain %u: %s", p->domid, strerror(errno));
		return -1;
	}
	p->ngfn = (uint64_t)maxg + 1;
	p->fmem = xenforeignmemory_open(NULL, 0);
	if (!p->fmem) {
		set_err(t, "cannot open foreign memory (%s)", strerror(errno));
		return -1;
	}
	if (tracker && p->by_suspend && suspend_check(t) < 0)
		return -1;
	/* The tracker pauses while it probes: the frames must not move. */
	if (tracker) {
		if (xc_domain_pause(p->xch, p->domid) < 0) {
			set_err(t, "pause domain %u: %s", p->domid, strerror(errno));
			return -1;
		}
		p->paused = true;
	}
	if (map_frames(t) < 0)
		return -1;
	zd_debug("xen:%s: domain %u, %" PRIu64 " of %" PRIu64 " gfns populated", args, p->domid,
		 t->page_count, p->ngfn);
	return 0;
}

static void xen_close(struct zd_target *t)
{
	struct xen_priv *p = t->priv;

	if (!p)
		return;
	zd__xen_netbuf_close(p->nb);
	if (p->disk) {
		zd_xdisk_close(p->disk);
		free(p->disk);
	}
	if (p->xch && p->logdirty)
		xc_shadow_control(p->xch, p->domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0);
	if (p->xch && p->asked && !p->suspended) {
		xc_dominfo_t info;

		/* It answered after we gave up on it. */
		if (xc_domain_getinfo(p->xch, p->domid, 1, &info) == 1 && info.domid == p->domid &&
		    info.shutdown && info.shutdown_reason == SHUTDOWN_suspend)
			p->suspended = true;
	}
	if (p->xch && p->suspended) {
		xc_domain_resume(p->xch, p->domid, 1);
		if (p->xs)
			xs_resume_domain(p->xs, p->domid);
	} else if (p->xch && p->paused)
		xc_domain_unpause(p->xch, p->domid);
	if (p->xs)
		xs_close(p->xs);
	if (p->bm)
		xc__hypercall_buffer_free_pages(p->xch, &p->hb, (int)p->bm_pages);
	if (p->mem)
		xenforeignmemory_unmap(p->fmem, p->mem, p->mem_pages);
	if (p->fmem)
		xenforeignmemory_close(p->fmem);
	if (p->xch)
		xc_interface_close(p->xch);
	zd_pageset_free(&p->gfns);
	zd_pageset_free(&p->pending);
	free(p->ul);
	free(p->ul_sent);
	free(p->ul_snap);
	zd_pageset_free(&p->ckpt_set);
	free(p->cc_idx);
	free(p->cc);
	free(p->pc_idx);
	free(p->pc);
	free(p->audit);
	free(p->idx);
	free(p->scratch);
	free(p->zeros);
	free(p);
	t->priv = NULL;
}

/* One log-dirty operation into the bitmap; the number of dirty bits. */
/* A libxc call on the domain failed (errno e): where the domain is gone
 * or stopped, that is what happened (domain_info says so, and marks it
 * lost); else the call's own error. -1. */
static int op_failed(struct zd_target *t, const char *what, int e)
{
	xc_dominfo_t info;

	if (domain_info(t, &info) < 0)
		return -1;
	set_err(t, "%s: %s", what, strerror(e));
	return -1;
}

static int logdirty(struct zd_target *t, unsigned op, uint64_t *count)
{
	struct xen_priv *p = t->priv;
	xc_shadow_op_stats_t st = { 0 };
	long long r;
	/* Xen writes some guest frames through its own mappings (vcpu_info,
	 * runstate areas) without marking them dirty. At a checkpoint the
	 * domain is paused and the bitmap must be complete, as on the last
	 * round of a migration: LOGDIRTY_FINAL adds the frames Xen has
	 * mapped writable. Without it the replica misses their updates. */
	unsigned mode = p->paused ? XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL : 0;

	r = xc_logdirty_control(p->xch, p->domid, op, &p->hb, p->ngfn, mode, &st);
	/* Returns the bitmap's size in pages, not a count of dirty ones. */
	if (r < 0)
		return op_failed(t, op == XEN_DOMCTL_SHADOW_OP_PEEK ? "log-dirty PEEK" : "log-dirty CLEAN", errno);
	*count = st.dirty_count;
	return 0;
}

/* The bitmap as page indexes, added to out (gfns we do not track skipped). */
static void bitmap_pages(struct zd_target *t, struct zd_pageset *out)
{
	struct xen_priv *p = t->priv;
	struct zd_pageset s = ZD_PAGESET_INIT, u = ZD_PAGESET_INIT;
	const unsigned long *w = p->bm;
	size_t n = 0, nw = (size_t)((p->ngfn + 63) / 64);

	for (size_t i = 0; i < nw; i++) {
		for (unsigned long b = w[i]; b; b &= b - 1) {
			uint64_t g = i * 64 + (unsigned)__builtin_ctzl(b);

			if (g < p->ngfn && p->idx[g] != NO_IDX)
				p->scratch[n++] = p->idx[g];
		}
	}
	zd_pageset_from_pfns(&s, p->scratch, n);
	zd_pageset_union(&u, out, &s);
	zd_pageset_swap(&u, out);
	zd_pageset_free(&s);
	zd_pageset_free(&u);
}

/* The gfn of page i (the i-th populated gfn). */
static uint64_t page_gfn(const struct xen_priv *p, uint64_t i)
{
	for (size_t r = 0; r < p->gfns.n; r++) {
		if (i < p->gfns.r[r].count)
			return p->gfns.r[r].first + i;
		i -= p->gfns.r[r].count;
	}
	return UINT64_MAX;
}

/* Index of page i in a sorted array, or -1. */
static ssize_t find_idx(const uint64_t *a, size_t n, uint64_t i)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (a[mid] == i)
			return (ssize_t)mid;
		if (a[mid] < i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/*
 * Frames written behind log-dirty. Log-dirty sees the guest's own writes
 * (through its p2m) and Xen's copies into guest memory, not writes
 * through mappings made once and kept:
 *   - Xen's global mappings of the frames the guest registered with it:
 *     the vcpu_info area and, with FIFO event channels (Linux's default),
 *     the per-vCPU control block and the event array pages. Xen writes
 *     them whenever it sets an event pending (a word's PENDING/LINKED
 *     flags, the control block's READY bits, vcpu_info's upcall flag):
 *     also while the domain is paused, when the guest's one-shot timer
 *     fires or dom0 notifies it. Seen under QEMU TCG: one byte of such a
 *     frame changed during the pause, after zd-track had copied the frame
 *     and before it hashed memory (--verify: the replica's checksum
 *     differed every few epochs in buffered and zddspt), or in a frame
 *     the guest had not written that epoch (then the replica missed the
 *     event until the guest's handler wrote the frame again). Xen's own
 *     migration does not care: its guest suspends, and registers these
 *     frames again on resume.
 *   - dom0's xenstored and xenconsoled, which keep the xenstore and
 *     console rings mapped writable for good (foreign mappings).
 * Xen does not tell dom0 where the first kind are (the guest chose them
 * by hypercall). They are learned: at open, by a probe (let the guest run
 * a moment with a clean log, pause it, note what it dirtied, wait for the
 * events that land while paused, and note every frame that changed since
 * with or without a dirty bit; a few rounds), and at every checkpoint, by
 * comparing the pages copied at the harvest with the frames at memsum.
 * The rings come from the HVM params.
 *
 * A checkpoint (a harvest while paused) reads these frames into ul_snap
 * and adds to the dirty set those that differ from what the replica
 * holds, then copies the whole dirty set (cc); zd-track's own reads in
 * that pause (buffered, zddspt) get cc, and memsum hashes memory as the
 * replica will hold it: cc for those pages, ul_snap for the frames
 * written behind log-dirty that were not sent, the frames for the rest.
 * remus leaves the dirty pages to the stage downstream, which reads the
 * frames after memsum, later in the pause: the dirty frames written
 * behind log-dirty (and those memsum finds changed since the harvest)
 * zd-track sends itself from cc (xen_paused_writes), or an event Xen
 * sets pending in between would make the replica differ from memsum.
 */
#define PROBE_ROUNDS 4
#define PROBE_RUN_NS (20ull * 1000000)
#define PROBE_SETTLE_NS (50ull * 1000000)
#define CC_MAX (32768u)			/* pages (128 MiB); a bigger dirty set is not copied */
#define PAGE_BUF_MIN 1024u		/* pages cc and pc keep at least, once grown */

/* Give back most of a page buffer (cc, pc) that an epoch used an eighth
 * of at most, keeping twice what it used: epoch 1 grows both to the
 * guest's whole memory (up to CC_MAX pages each), and dom0 would hold
 * that for the whole run. (cc is filled in the pause: a buffer made
 * anew costs a fault a page there, so epochs whose sizes vary keep
 * theirs.) */
static void page_buf_fit(uint8_t **pages, uint64_t **idx, size_t *cap, size_t used)
{
	size_t want = ZD_MAX(2 * used, (size_t)PAGE_BUF_MIN);

	if (*cap <= 4 * want)
		return;
	*pages = zd_xrealloc(*pages, want * XEN_PAGE);
	*idx = zd_xrealloc(*idx, want * sizeof(**idx));
	*cap = want;
}

/* Add page i to the frames written behind log-dirty (the replica holds
 * `sent` of it). */
static void add_unlogged(struct xen_priv *p, uint64_t i, const uint8_t *sent, const char *how)
{
	size_t at = 0;

	if (find_idx(p->ul, p->nul, i) >= 0)
		return;
	if (p->nul == p->ul_cap) {
		p->ul_cap = p->ul_cap ? 2 * p->ul_cap : 8;
		p->ul = zd_xrealloc(p->ul, p->ul_cap * sizeof(*p->ul));
		p->ul_sent = zd_xrealloc(p->ul_sent, p->ul_cap * XEN_PAGE);
		p->ul_snap = zd_xrealloc(p->ul_snap, p->ul_cap * XEN_PAGE);
	}
	while (at < p->nul && p->ul[at] < i)
		at++;
	memmove(p->ul + at + 1, p->ul + at, (p->nul - at) * sizeof(*p->ul));
	memmove(p->ul_sent + (at + 1) * XEN_PAGE, p->ul_sent + at * XEN_PAGE, (p->nul - at) * XEN_PAGE);
	memmove(p->ul_snap + (at + 1) * XEN_PAGE, p->ul_snap + at * XEN_PAGE, (p->nul - at) * XEN_PAGE);
	p->ul[at] = i;
	memcpy(p->ul_sent + at * XEN_PAGE, sent, XEN_PAGE);
	memcpy(p->ul_snap + at * XEN_PAGE, sent, XEN_PAGE);
	p->nul++;
	zd_debug("xen:%u: gfn %#" PRIx64 " (page %" PRIu64 ") is written behind log-dirty (%s)",
		 p->domid, page_gfn(p, i), i, how);
}

static int find_unlogged(struct zd_target *t)
{
	static const int params[] = { HVM_PARAM_STORE_PFN, HVM_PARAM_CONSOLE_PFN };
	struct xen_priv *p = t->priv;
	uint64_t *before = zd_xmalloc(p->mem_pages * sizeof(*before));
	uint64_t *at_pause = zd_xmalloc(p->mem_pages * sizeof(*at_pause));
	struct zd_pageset dirty = ZD_PAGESET_INIT;
	uint64_t count, pg;
	int rc = -1;

	for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
		uint64_t gfn;

		if (xc_hvm_param_get(p->xch, p->domid, params[i], &gfn) < 0 || !gfn ||
		    gfn >= p->ngfn || p->idx[gfn] == NO_IDX)
			continue;
		add_unlogged(p, p->idx[gfn], p->mem + (uint64_t)p->idx[gfn] * XEN_PAGE,
			     params[i] == HVM_PARAM_STORE_PFN ? "the xenstore ring" : "the console ring");
	}
	for (size_t i = 0; i < p->mem_pages; i++)
		before[i] = zd_hash64(p->mem + i * XEN_PAGE, XEN_PAGE);
	for (int r = 0; r < PROBE_ROUNDS; r++) {
		struct zd_pageset_iter it;

		if (logdirty(t, XEN_DOMCTL_SHADOW_OP_CLEAN, &count) < 0)
			goto out;
		if (xc_domain_unpause(p->xch, p->domid) < 0) {
			set_err(t, "unpause domain %u: %s", p->domid, strerror(errno));
			goto out;
		}
		p->paused = false;
		zd_sleep_ns(PROBE_RUN_NS);
		if (xc_domain_pause(p->xch, p->domid) < 0) {
			set_err(t, "pause domain %u: %s", p->domid, strerror(errno));
			goto out;
		}
		p->paused = true;
		if (logdirty(t, XEN_DOMCTL_SHADOW_OP_PEEK, &count) < 0)
			goto out;
		zd_pageset_clear(&dirty);
		bitmap_pages(t, &dirty);
		/* What the guest dirtied, as a checkpoint would copy it now. */
		zd_pageset_iter_init(&it, &dirty);
		while (zd_pageset_iter_next(&it, &pg))
			at_pause[pg] = zd_hash64(p->mem + pg * XEN_PAGE, XEN_PAGE);
		zd_sleep_ns(PROBE_SETTLE_NS);
		for (size_t i = 0; i < p->mem_pages; i++) {
			uint64_t h = zd_hash64(p->mem + i * XEN_PAGE, XEN_PAGE);
			bool bit = zd_pageset_contains(&dirty, i);

			if (bit && h != at_pause[i])
				add_unlogged(p, i, p->mem + i * XEN_PAGE, "probe: written while paused");
			else if (!bit && h != before[i])
				add_unlogged(p, i, p->mem + i * XEN_PAGE, "probe: changed with no dirty bit");
			before[i] = h;
		}
	}
	/* The replica starts from every frame as epoch 1 reads it. */
	for (size_t u = 0; u < p->nul; u++)
		memcpy(p->ul_sent + u * XEN_PAGE, p->mem + p->ul[u] * XEN_PAGE, XEN_PAGE);
	zd_debug("xen:%u: %zu frame(s) written behind log-dirty after a probe of %d rounds", p->domid,
		 p->nul, PROBE_ROUNDS);
	rc = 0;
out:
	zd_pageset_free(&dirty);
	free(before);
	free(at_pause);
	return rc;
}

/* The pages of this epoch's pre-copy that are not in `dirty` and changed
 * since it read them (an event Xen set pending, often while the guest is
 * paused for the checkpoint) are written behind log-dirty: the replica
 * holds them as pre-copied. */
static void learn_after_precopy(struct xen_priv *p, const struct zd_pageset *dirty, const char *how)
{
	for (size_t k = 0; k < p->npc; k++) {
		uint64_t i = p->pc_idx[k];

		if (!zd_pageset_contains(dirty, i) && find_idx(p->ul, p->nul, i) < 0 &&
		    memcmp(p->pc + k * XEN_PAGE, p->mem + i * XEN_PAGE, XEN_PAGE))
			add_unlogged(p, i, p->pc + k * XEN_PAGE, how);
	}
}

/* Keep what zddspt's pre-copy read of pages first..first+count, as read
 * (buf), for learn_after_precopy. */
static void keep_precopied(struct xen_priv *p, uint64_t first, uint64_t count, const uint8_t *buf)
{
	if (p->pc_partial)
		return;
	if (p->npc + count > CC_MAX || (p->npc && first <= p->pc_idx[p->npc - 1])) {
		zd_debug("xen:%u: pre-copy of more than %u pages or out of order: not checked for writes "
			 "behind log-dirty", p->domid, CC_MAX);
		p->pc_partial = true;
		return;
	}
	if (p->npc + count > p->pc_cap) {
		p->pc_cap = ZD_MAX(p->npc + count, 2 * p->pc_cap);
		p->pc_idx = zd_xrealloc(p->pc_idx, p->pc_cap * sizeof(*p->pc_idx));
		p->pc = zd_xrealloc(p->pc, p->pc_cap * XEN_PAGE);
	}
	memcpy(p->pc + p->npc * XEN_PAGE, buf, count * XEN_PAGE);
	for (uint64_t j = 0; j < count; j++)
		p->pc_idx[p->npc++] = first + j;
}

/* A checkpoint's harvest (paused): the frames written behind log-dirty
 * that the replica does not hold as they are now join dirty; then dirty's
 * pages are copied (cc), those frames from the same snapshot. */
static void checkpoint_copy(struct xen_priv *p, struct zd_pageset *dirty)
{
	struct zd_pageset changed = ZD_PAGESET_INIT, u = ZD_PAGESET_INIT;
	struct zd_pageset_iter it;
	uint64_t pg, n;

	learn_after_precopy(p, dirty, "changed after its pre-copy with no dirty bit");
	for (size_t i = 0; i < p->nul; i++) {
		uint8_t *snap = p->ul_snap + i * XEN_PAGE;

		memcpy(snap, p->mem + p->ul[i] * XEN_PAGE, XEN_PAGE);
		if (memcmp(snap, p->ul_sent + i * XEN_PAGE, XEN_PAGE))
			zd_pageset_add_range(&changed, p->ul[i], 1);
	}
	if (changed.n) {
		zd_pageset_union(&u, dirty, &changed);
		zd_pageset_swap(&u, dirty);
	}
	for (size_t i = 0; i < p->nul; i++)
		if (zd_pageset_contains(dirty, p->ul[i]))
			memcpy(p->ul_sent + i * XEN_PAGE, p->ul_snap + i * XEN_PAGE, XEN_PAGE);
	zd_pageset_copy(&p->ckpt_set, dirty);
	p->ckpt = true;
	p->served = false;
	p->ncc = 0;
	n = zd_pageset_count(dirty);
	if (n <= CC_MAX) {
		page_buf_fit(&p->cc, &p->cc_idx, &p->cc_cap, (size_t)n);
		if (n > p->cc_cap) {
			p->cc_cap = (size_t)n;
			p->cc_idx = zd_xrealloc(p->cc_idx, p->cc_cap * sizeof(*p->cc_idx));
			p->cc = zd_xrealloc(p->cc, p->cc_cap * XEN_PAGE);
		}
		zd_pageset_iter_init(&it, dirty);
		while (zd_pageset_iter_next(&it, &pg)) {
			ssize_t k = find_idx(p->ul, p->nul, pg);

			memcpy(p->cc + p->ncc * XEN_PAGE,
			       k >= 0 ? p->ul_snap + (size_t)k * XEN_PAGE : p->mem + pg * XEN_PAGE, XEN_PAGE);
			p->cc_idx[p->ncc++] = pg;
		}
	}
	zd_pageset_free(&changed);
	zd_pageset_free(&u);
}

/* Page i of this pause's checkpoint as the replica will hold it: as the
 * harvest copied it where zd-track's reads got that copy (served), or
 * where it is written behind log-dirty (remus sends those itself:
 * xen_paused_writes); the rest as the stage downstream will read it. */
static const uint8_t *ckpt_view(const struct xen_priv *p, uint64_t i)
{
	ssize_t k, u = find_idx(p->ul, p->nul, i);

	if ((p->served || u >= 0) && (k = find_idx(p->cc_idx, p->ncc, i)) >= 0)
		return p->cc + (size_t)k * XEN_PAGE;
	if (u >= 0 && !zd_pageset_contains(&p->ckpt_set, i))
		return p->ul_snap + (size_t)u * XEN_PAGE;
	return p->mem + i * XEN_PAGE;
}

static int xen_open(struct zd_target *t, const char *args)
{
	struct xen_priv *p;
	uint64_t dummy;
	int r = xen_connect(t, args, true);

	if (r < 0)
		goto fail;
	p = t->priv;
	if (xc_shadow_control(p->xch, p->domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0) < 0) {
		int e = errno;

		if (e == EOPNOTSUPP)
			set_err(t, "log-dirty is not supported for this domain on this Xen "
				"(no shadow paging): use a PVH or HVM guest");
		else if (e == EBUSY || e == EEXIST || e == EINVAL)
			set_err(t, "cannot enable log-dirty on domain %u (%s): is a migration, "
				"xl remus or another zd-track already tracking it?", p->domid, strerror(e));
		else
			set_err(t, "enable log-dirty on domain %u: %s", p->domid, strerror(e));
		goto fail;
	}
	p->logdirty = true;
	/* Before the guest runs again: epoch 1's output is held too. */
	if (p->output_commit && zd__xen_netbuf_open(&p->nb, p->domid, p->name, t->err, sizeof(t->err)) < 0)
		goto fail;
	/* Its disk, while it is paused: epoch 1 copies all of it. */
	if (p->disk_path[0]) {
		p->disk = zd_xcalloc(1, sizeof(*p->disk));
		if (zd_xdisk_open(p->disk, p->disk_path, t->err, sizeof(t->err)) < 0) {
			free(p->disk);
			p->disk = NULL;
			goto fail;
		}
		zd_debug("xen:%u: disk %s: %" PRIu64 " bytes, log %s, marks zd-%s-EPOCH", p->domid, p->disk_path,
			 p->disk->bytes, p->disk->log.path, p->disk->run);
	}
	if (persistent_grants_check(t) < 0)
		goto fail;
	p->bm_pages = (size_t)((p->ngfn + 7) / 8 + XEN_PAGE - 1) / XEN_PAGE;
	p->bm = xc__hypercall_buffer_alloc_pages(p->xch, &p->hb, (int)p->bm_pages);
	if (!p->bm) {
		set_err(t, "hypercall buffer of %zu pages: %s", p->bm_pages, strerror(errno));
		goto fail;
	}
	p->scratch = zd_xmalloc(t->page_count * sizeof(*p->scratch));
	if (find_unlogged(t) < 0)
		goto fail;
	if (getenv("ZD_XEN_AUDIT") && !strcmp(getenv("ZD_XEN_AUDIT"), "1"))
		p->audit = zd_xcalloc(p->mem_pages, XEN_PAGE);
	/* Start from a clean log; epoch 1 reports every page anyway. */
	if (logdirty(t, XEN_DOMCTL_SHADOW_OP_CLEAN, &dummy) < 0)
		goto fail;
	p->first = true;
	if (xc_domain_unpause(p->xch, p->domid) < 0) {
		set_err(t, "unpause domain %u: %s", p->domid, strerror(errno));
		goto fail;
	}
	p->paused = false;
	return 0;
fail:
	{
		char err[sizeof(t->err)];

		memcpy(err, t->err, sizeof(err));
		xen_close(t);
		memcpy(t->err, err, sizeof(err));
	}
	errno = r == -2 ? EINVAL : 0;	/* EINVAL: a usage error, exit 2 */
	return -1;
}

static int xen_attach(struct zd_target *t, const struct zd_rec_header *hdr)
{
	const char *args = strchr(hdr->target, ':');
	uint64_t want = hdr->page_count;

	if (xen_connect(t, args ? args + 1 : "", false) < 0)
		goto fail;
	if (t->page_count != want || hdr->page_size != XEN_PAGE) {
		set_err(t, "domain has %" PRIu64 " frames of %u bytes, the stream says %" PRIu64
			" of %u (did the guest balloon?)", t->page_count, XEN_PAGE, want,
			hdr->page_size);
		goto fail;
	}
	return 0;
fail:
	{
		char err[sizeof(t->err)];

		memcpy(err, t->err, sizeof(err));
		xen_close(t);
		memcpy(t->err, err, sizeof(err));
	}
	return -1;
}

static int xen_run_until(struct zd_target *t, uint64_t deadline_ns)
{
	xc_dominfo_t info;

	/* The guest just runs; notice now, not at the next pause, if it died. */
	while (zd_now_ns() < deadline_ns) {
		uint64_t left = deadline_ns - zd_now_ns();

		zd_sleep_ns(ZD_MIN(left, (uint64_t)50000000u));
		if (domain_info(t, &info) < 0)
			return -1;
	}
	return 0;
}

/* A guest someone else paused (xl pause; xl destroy pauses a domain
 * before it destroys it) cannot answer a suspend, and an epoch taken by a
 * plain pause could not be resumed in a new domain: the checkpoint waits
 * until the guest runs again, or is gone (the run then ends as lost, the
 * replica at the last epoch taken by suspend, which a standby can
 * resume). zd-send's heartbeats tell the backup zd-track is alive
 * meanwhile. */
static int wait_until_unpaused(struct zd_target *t)
{
	struct xen_priv *p = t->priv;
	xc_dominfo_t info;
	bool said = false;

	for (;;) {
		if (domain_info(t, &info) < 0)
			return -1;
		if (!info.paused || info.shutdown)
			break;
		if (!said)
			zd_warnx("xen:%u: paused by someone else (xl pause?): checkpoints wait until it runs again",
				 p->domid);
		said = true;
		zd_sleep_ns(10000000);
	}
	if (said)
		zd_debug("xen:%u: runs again: checkpoints go on", p->domid);
	return 0;
}

static int xen_pause(struct zd_target *t, uint64_t epoch)
{
	struct xen_priv *p = t->priv;

	p->ckpt = p->served = false;
	p->epoch = epoch;
	if (p->by_suspend) {
		if (wait_until_unpaused(t) < 0 || suspend_guest(t) < 0)
			return -1;
	} else if (xc_domain_pause(p->xch, p->domid) < 0) {
		/* Synchronous: returns once every vCPU is off the CPUs. */
		return op_failed(t, "pause", errno);
	}
	p->paused = true;
	/* What the guest sent until now belongs to this checkpoint. */
	if (p->nb && zd__xen_netbuf_mark(p->nb, epoch, t->err, sizeof(t->err)) < 0)
		return -1;
	return 0;
}

static int xen_release_output(struct zd_target *t, uint64_t epoch)
{
	struct xen_priv *p = t->priv;

	return p->nb ? zd__xen_netbuf_release(p->nb, epoch, t->err, sizeof(t->err)) : 0;
}

static int xen_resume(struct zd_target *t)
{
	struct xen_priv *p = t->priv;

	if (!p->paused)
		return 0;
	if (p->suspended) {
		/* fast: the suspend hypercall returns 1, "cancelled" (libxl's
		 * Remus checkpoints do the same). */
		if (xc_domain_resume(p->xch, p->domid, 1) < 0)
			return op_failed(t, "resume after suspend", errno);
		/* xenstored marked the domain shut down when it suspended;
		 * tell it the domain runs again, as libxl's resume does. */
		if (!xs_resume_domain(p->xs, p->domid)) {
			set_err(t, "xenstore: resume domain %u: %s", p->domid, strerror(errno));
			return -1;
		}
		p->suspended = false;
	} else if (xc_domain_unpause(p->xch, p->domid) < 0) {
		return op_failed(t, "unpause", errno);
	}
	p->paused = false;
	p->ckpt = p->served = false;
	page_buf_fit(&p->pc, &p->pc_idx, &p->pc_cap, p->npc);
	p->npc = 0;
	p->pc_partial = false;
	return 0;
}

static int xen_harvest(struct zd_target *t, struct zd_pageset *dirty)
{
	struct xen_priv *p = t->priv;
	uint64_t count;

	zd_pageset_clear(dirty);
	if (p->first) {
		zd_pageset_add_range(dirty, 0, t->page_count);
	} else {
		if (logdirty(t, XEN_DOMCTL_SHADOW_OP_PEEK, &count) < 0)
			return -1;
		zd_pageset_copy(dirty, &p->pending);
		bitmap_pages(t, dirty);
	}
	/* A checkpoint. (A harvest while the guest runs, zddspt's at T0,
	 * leaves the frames written behind log-dirty to T1's.) */
	if (p->paused)
		checkpoint_copy(p, dirty);
	return 0;
}

static int xen_rearm(struct zd_target *t, const struct zd_pageset *set)
{
	struct xen_priv *p = t->priv;
	struct zd_pageset keep = ZD_PAGESET_INIT;
	uint64_t count;

	if (logdirty(t, XEN_DOMCTL_SHADOW_OP_CLEAN, &count) < 0)
		return -1;
	if (!set) {
		zd_pageset_clear(&p->pending);
		p->first = false;
		return 0;
	}
	/* Xen cleared every bit: keep what the caller did not re-arm. */
	if (p->first) {
		zd_pageset_clear(&p->pending);
		zd_pageset_add_range(&p->pending, 0, t->page_count);
		p->first = false;
	}
	bitmap_pages(t, &p->pending);
	zd_pageset_subtract(&keep, &p->pending, set);
	zd_pageset_swap(&keep, &p->pending);
	zd_pageset_free(&keep);
	return 0;
}

static int xen_read_pages(struct zd_target *t, uint64_t epoch, const struct zd_pageset *set,
			  uint8_t *buf)
{
	struct xen_priv *p = t->priv;

	(void)epoch;
	for (size_t i = 0; i < set->n; i++) {
		uint64_t first = set->r[i].first, count = set->r[i].count;

		if (first + count > p->mem_pages) {
			set_err(t, "page %" PRIu64 " beyond the guest's %zu frames",
				first + count - 1, p->mem_pages);
			return -1;
		}
		if (p->ckpt && p->ncc) {
			/* A checkpoint's pages: as its harvest copied them. */
			for (uint64_t j = 0; j < count; j++) {
				ssize_t k = find_idx(p->cc_idx, p->ncc, first + j);

				memcpy(buf + j * XEN_PAGE, k >= 0 ? p->cc + (size_t)k * XEN_PAGE :
				       p->mem + (first + j) * XEN_PAGE, XEN_PAGE);
			}
			p->served = true;
		} else {
			memcpy(buf, p->mem + first * XEN_PAGE, count * XEN_PAGE);
			/* zddspt's pre-copy (running): the replica gets these. */
			if (!p->paused)
				keep_precopied(p, first, count, buf);
			for (size_t u = 0; u < p->nul; u++)
				if (p->ul[u] >= first && p->ul[u] < first + count)
					memcpy(p->ul_sent + u * XEN_PAGE, buf + (p->ul[u] - first) * XEN_PAGE,
					       XEN_PAGE);
		}
		if (p->audit)
			memcpy(p->audit + first * XEN_PAGE, buf, count * XEN_PAGE);
		buf += count * XEN_PAGE;
	}
	return 0;
}

/* ZD_XEN_AUDIT=1 (diagnosis; modes that copy in zd-track: buffered,
 * zddspt): at each memsum, the frames whose checkpoint view differs from
 * what read_pages gave over the run. */
static void audit(struct zd_target *t)
{
	struct xen_priv *p = t->priv;
	unsigned n = 0;

	for (size_t i = 0; i < p->mem_pages; i++) {
		const uint8_t *a = ckpt_view(p, i), *b = p->audit + i * XEN_PAGE;
		unsigned lo = 0, hi = XEN_PAGE - 1;

		if (!memcmp(a, b, XEN_PAGE))
			continue;
		while (a[lo] == b[lo])
			lo++;
		while (a[hi] == b[hi])
			hi--;
		if (n++ < 16)
			zd_warnx("xen audit: gfn %#" PRIx64 " (page %zu%s%s) differs from what was read, bytes %u..%u",
				 page_gfn(p, i), i, zd_pageset_contains(&p->ckpt_set, i) ? ", dirty" : "",
				 find_idx(p->ul, p->nul, i) >= 0 ? ", behind log-dirty" : "", lo, hi);
	}
	if (n)
		zd_warnx("xen audit: %u frame(s) differ", n);
}

static int xen_memsum(struct zd_target *t, uint64_t *sum)
{
	struct xen_priv *p = t->priv;
	XXH3_state_t *h;

	if (!p->paused || !p->ckpt) {
		*sum = zd_hash64(p->mem, p->mem_pages * XEN_PAGE);
		return 0;
	}
	/* Learn: a page the harvest copied that changed since, the guest
	 * paused, is written behind log-dirty. */
	for (size_t k = 0; k < p->ncc; k++) {
		uint64_t i = p->cc_idx[k];

		if (find_idx(p->ul, p->nul, i) < 0 &&
		    memcmp(p->cc + k * XEN_PAGE, p->mem + i * XEN_PAGE, XEN_PAGE))
			add_unlogged(p, i, p->cc + k * XEN_PAGE, "written while paused for a checkpoint");
	}
	learn_after_precopy(p, &p->ckpt_set, "written while paused after its pre-copy");
	if (p->audit && p->served)
		audit(t);
	h = XXH3_createState();
	if (!h) {
		set_err(t, "out of memory");
		return -1;
	}
	XXH3_64bits_reset(h);
	for (size_t i = 0; i < p->mem_pages; i++)
		zd_hash64_update(h, ckpt_view(p, i), XEN_PAGE);
	*sum = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return 0;
}

/* This checkpoint's frames written behind log-dirty, as the harvest
 * copied them (what ckpt_view gave memsum). */
static int xen_paused_writes(struct zd_target *t, struct zd_pageset *set, uint8_t **data)
{
	struct xen_priv *p = t->priv;
	size_t n = 0;

	zd_pageset_clear(set);
	*data = NULL;
	if (!p->ckpt || !p->ncc)
		return 0;
	for (size_t k = 0; k < p->ncc; k++)
		if (find_idx(p->ul, p->nul, p->cc_idx[k]) >= 0)
			n++;
	if (!n)
		return 0;
	*data = zd_xmalloc(n * XEN_PAGE);
	n = 0;
	for (size_t k = 0; k < p->ncc; k++)	/* cc_idx ascends: pfn order */
		if (find_idx(p->ul, p->nul, p->cc_idx[k]) >= 0) {
			memcpy(*data + n++ * XEN_PAGE, p->cc + k * XEN_PAGE, XEN_PAGE);
			zd_pageset_add_range(set, p->cc_idx[k], 1);
		}
	return 0;
}

static int xen_get_state(struct zd_target *t, uint32_t *kind, uint8_t **data, uint32_t *len)
{
	struct xen_priv *p = t->priv;
	struct xen_state_hdr h = { .nranges = (uint32_t)p->gfns.n };
	size_t off;
	int sz;

	sz = xc_domain_hvm_getcontext(p->xch, p->domid, NULL, 0);
	if (sz <= 0) {
		set_err(t, "HVM context size: %s", strerror(errno));
		return -1;
	}
	off = sizeof(h) + p->gfns.n * 16;
	*data = zd_xmalloc(off + (size_t)sz + sizeof(struct xen_state_tsc));
	sz = xc_domain_hvm_getcontext(p->xch, p->domid, *data + off, (uint32_t)sz);
	if (sz <= 0) {
		set_err(t, "HVM context: %s", strerror(errno));
		free(*data);
		*data = NULL;
		return -1;
	}
	memcpy(h.magic, p->suspended ? XEN_STATE_MAGIC_SUSPENDED : XEN_STATE_MAGIC, sizeof(h.magic));
	h.ctx_len = (uint32_t)sz;
	memcpy(*data, &h, sizeof(h));
	for (size_t i = 0; i < p->gfns.n; i++) {
		memcpy(*data + sizeof(h) + i * 16, &p->gfns.r[i].first, 8);
		memcpy(*data + sizeof(h) + i * 16 + 8, &p->gfns.r[i].count, 8);
	}
	*kind = 2;
	*len = (uint32_t)(off + (size_t)sz);
	if (p->suspended) {
		struct xen_state_tsc tsc = { .tag = "tsc1" };

		if (xc_domain_get_tsc_info(p->xch, p->domid, &tsc.mode, &tsc.elapsed_nsec, &tsc.khz,
					   &tsc.incarnation) < 0) {
			set_err(t, "TSC info: %s", strerror(errno));
			free(*data);
			*data = NULL;
			return -1;
		}
		memcpy(*data + *len, &tsc, sizeof(tsc));
		*len += sizeof(tsc);
	}
	return 0;
}

/* The disk (disk=DEV): in the pause the log is marked (and on epoch 1
 * or a FULL checkpoint the whole disk read); after it the log's writes
 * up to the mark are read (skipped after a whole disk).
 * lib/target/xen_disk.c says which writes an epoch holds. */
struct disk_walk {
	struct zd_target *t;
	int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len);
	void *arg;
	bool failed;			/* fn said no: t->err is not the reader's */
};

static int disk_piece(void *arg, uint64_t off, const uint8_t *data, uint64_t len)
{
	struct disk_walk *w = arg;
	struct xen_priv *p = w->t->priv;

	if (!data && !p->zeros)
		p->zeros = zd_xcalloc(1, ZD_DISK_PER_RECORD);
	while (len) {
		uint32_t n = (uint32_t)ZD_MIN(len, (uint64_t)ZD_DISK_PER_RECORD);

		if (w->fn(w->arg, off, data ? data : p->zeros, n) < 0) {
			w->failed = true;
			return -1;
		}
		off += n;
		len -= n;
		if (data)
			data += n;
	}
	return 0;
}

/* In the pause: flush and mark the log (zd_xdisk_mark); with full, read
 * the whole disk too. The log up to the mark is read after the pause
 * (xen_disk_writes_late). */
static int xen_disk_writes(struct zd_target *t, bool full, uint64_t *size,
			   int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len), void *arg)
{
	struct xen_priv *p = t->priv;
	struct disk_walk w = { t, fn, arg, false };
	char err[sizeof(t->err)];

	*size = p->disk ? p->disk->bytes : 0;
	if (!p->disk || !fn)
		return 0;
	if (!p->paused) {
		set_err(t, "disk writes wanted while the guest runs");
		return -1;
	}
	if (zd_xdisk_mark(p->disk, p->epoch, err, sizeof(err)) < 0) {
		memcpy(t->err, err, sizeof(err));
		return -1;
	}
	p->disk_late = true;
	p->disk_late_full = full;
	p->disk_full_ns = 0;
	if (full) {
		uint64_t t0 = zd_now_ns();

		if (zd_xdisk_read_all(p->disk, ZD_DISK_PER_RECORD, disk_piece, &w, err, sizeof(err)) < 0) {
			if (!w.failed)
				memcpy(t->err, err, sizeof(err));
			return -1;
		}
		p->disk_full_ns = zd_now_ns() - t0;
	}
	return 0;
}

static int xen_disk_writes_late(struct zd_target *t,
				int (*fn)(void *arg, uint64_t off, const uint8_t *data, uint32_t len), void *arg,
				bool *sum_void)
{
	struct xen_priv *p = t->priv;
	struct disk_walk w = { t, fn, arg, false };
	char err[sizeof(t->err)];
	uint64_t late = 0;

	*sum_void = false;
	if (!p->disk || !p->disk_late)
		return 0;
	p->disk_late = false;
	if (zd_xdisk_read(p->disk, p->disk_late_full ? NULL : disk_piece, &w, &late, err, sizeof(err)) < 0) {
		if (!w.failed)
			memcpy(t->err, err, sizeof(err));
		return -1;
	}
	*sum_void = late > 0;
	zd_debug("xen:%u: disk: epoch %" PRIu64 ": %" PRIu64 " write(s), %" PRIu64 " bytes logged%s; in the pause "
		 "flush %.2f ms, mark %.2f ms, whole disk %.2f ms; after it log read %.2f ms (%" PRIu64
		 " super block read(s), %" PRIu64 " pread(s))", p->domid, p->epoch, p->disk->log.writes,
		 p->disk->log.bytes, p->disk_late_full ? " (the whole disk sent instead)" : "",
		 (double)p->disk->flush_ns / 1e6, (double)p->disk->mark_ns / 1e6, (double)p->disk_full_ns / 1e6,
		 (double)p->disk->read_ns / 1e6, p->disk->log.polls, p->disk->log.reads);
	return 0;
}

static int hash_piece(void *arg, uint64_t off, const uint8_t *data, uint64_t len)
{
	(void)off;
	zd_hash64_update(arg, data, (size_t)len);
	return 0;
}

/* --verify: the disk read whole in the pause, after the mark
 * (xen_disk_writes), then a second mark, so that the log read says whether
 * a write that was still in flight at the pause completed during this
 * read (zd_xdisk_mark_sum; the sum is then not sent). */
static int xen_disksum(struct zd_target *t, uint64_t *sum, uint64_t *size)
{
	struct xen_priv *p = t->priv;
	char err[sizeof(t->err)];
	XXH3_state_t *h;
	int r;

	*size = p->disk ? p->disk->bytes : 0;
	if (!p->disk)
		return 0;
	if (!p->paused || !p->disk_late) {
		set_err(t, "disk checksum wanted outside a checkpoint's pause");
		return -1;
	}
	h = XXH3_createState();
	XXH3_64bits_reset(h);
	r = zd_xdisk_read_all(p->disk, ZD_DISK_PER_RECORD, hash_piece, h, err, sizeof(err));
	*sum = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	if (r == 0)
		r = zd_xdisk_mark_sum(p->disk, p->epoch, err, sizeof(err));
	if (r < 0)
		memcpy(t->err, err, sizeof(err));
	return r;
}

const struct zd_target_ops zd_target_xen = {
	.scheme = "xen",
	.usage = "xen:NAME|DOMID[,checkpoint=suspend|pause][,output-commit=on|off][,disk=DEV]  a PVH or HVM domain of this Xen host (dom0, root)",
	.open = xen_open,
	.attach = xen_attach,
	.close = xen_close,
	.run_until = xen_run_until,
	.pause = xen_pause,
	.resume = xen_resume,
	.harvest = xen_harvest,
	.rearm = xen_rearm,
	.read_pages = xen_read_pages,
	.paused_writes = xen_paused_writes,
	.disk_writes = xen_disk_writes,
	.disk_writes_late = xen_disk_writes_late,
	.disksum = xen_disksum,
	.get_state = xen_get_state,
	.memsum = xen_memsum,
	.release_output = xen_release_output,
	.copy_frozen_paused = true,	/* no write-protect on Xen yet */
};

#else
/* Built without libxen-dev: the registry does not list xen. */
typedef int zd_xen_absent;
#endif
