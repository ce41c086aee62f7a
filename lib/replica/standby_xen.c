/* SPDX-License-Identifier: MIT */
/*
 * zd-recv --standby xen:CONFIG: the protected Xen guest's standby, a
 * domain of this host (dom0, root) made from CONFIG, the guest's xl
 * config, and kept paused at the replica's committed epoch.
 *
 *   create   xl create -p -q CONFIG 'name="NAME-standby"' (what an
 *            operator would run; xl sets up xenstore, the console and
 *            the devices as for the guest itself); PV is refused
 *   attach   at the first STATE (lib/target/xen.c's blob: the primary's
 *            populated gfn ranges, then its HVM context): the standby's
 *            populated gfns must be the same (same memory=, type=), up
 *            to the few Xen frames the guest mapped (match_layout); then
 *            its RAM is mapped once, writable, in the
 *            replica's page order, and filled by lib/replica/standby.c
 *   start    the HVM context of the committed epoch, vCPU0's rax set to
 *            0, then unpause. The guest was stopped in its suspend
 *            hypercall (checkpoint=suspend): 0 is "resumed in a new
 *            domain", and Linux binds its event channels, shared_info,
 *            grant table and xenstore/console again (drivers/xen/
 *            manage.c), as after a migration; its xenstore and console
 *            rings are zeroed and its timer mode set first. An epoch
 *            taken with the guest paused (checkpoint=pause) cannot be
 *            resumed so.
 *   after    xl rename NAME-standby NAME, once the primary is gone
 *
 * A guest with a disk (its config's disk = [ '...,target=DEV' ], one
 * disk, target= last; the stream carries it: zd-track xen:NAME,disk=DEV):
 * the standby's disk is the replica's DIR/disk.img, in the same slot
 * (vdev) and with the same options, so the guest that takes over reads
 * and writes the replica's disk. disk.img must exist, at the disk's size,
 * when the domain is made (its backend opens it then): the xl create waits
 * from the HEADER until the first STATE, which follows the first epoch's
 * DISK records. The disk's contents need no copy: zd-recv applies each
 * epoch's writes to disk.img at the commit (the standby's backend reads
 * the file through the page cache), so it holds the committed epoch when
 * the standby starts.
 */
#ifdef ZD_HAVE_XEN

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xenctrl.h>
#include <xenforeignmemory.h>
#include <xenstore.h>
#include <xen/hvm/save.h>

#include "zd/util.h"
#include "standby_int.h"

#define XEN_PAGE 4096u
#define SCAN_CHUNK 1024u
#define STATE_MAGIC_LEN 7		/* "zdxen\0\0", then the version */
#define STATE_PAUSED 1
#define STATE_SUSPENDED 2

struct xen_state_hdr {
	char magic[8];
	uint32_t nranges;
	uint32_t ctx_len;
};
struct xen_state_tsc {			/* after the context (lib/target/xen.c) */
	char tag[4];			/* "tsc1" */
	uint32_t mode;
	uint64_t elapsed_nsec;
	uint32_t khz;
	uint32_t incarnation;
};

struct xsb {
	xc_interface *xch;
	xenforeignmemory_handle *fmem;
	uint32_t domid;
	char name[160];			/* the standby's */
	char primary[128];		/* the primary's name ("" for a domid) */
	void *map;
	size_t map_pages;
	char disk[512];			/* the config's disk spec up to its target= ("": no disk) */
	bool deferred;			/* xl create waits for disk.img (first STATE) */
};

/* Run xl with args; its output (stdout and stderr) in out. The exit status,
 * or -1 if it could not run. */
static int run_xl(char *const argv[], char *out, size_t outlen)
{
	int pfd[2], st = 0;
	size_t got = 0;
	pid_t pid;

	out[0] = '\0';
	if (pipe(pfd) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(pfd[1], 1);
		dup2(pfd[1], 2);
		/* Nothing else of ours: xl create leaves a daemon watching
		 * the domain for as long as it lives, which would hold the
		 * replica's lock, the listening socket and our caller's
		 * pipes. */
		close_range(3, ~0u, 0);
		signal(SIGPIPE, SIG_DFL);
		execvp("xl", argv);
		dprintf(2, "cannot run xl: %s\n", strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	for (;;) {
		char buf[512];
		ssize_t r = read(pfd[0], buf, sizeof(buf));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r && got + 1 < outlen; i++)
			out[got++] = buf[i];
	}
	out[got] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The last non-empty line of s, in place. */
static const char *last_line(char *s)
{
	char *end = s + strlen(s), *p;

	while (end > s && (end[-1] == '\n' || end[-1] == ' '))
		*--end = '\0';
	p = strrchr(s, '\n');
	return p ? p + 1 : s;
}

/* The domid of the domain called name, by xenstore. */
static int find_domid(const char *name, uint32_t *domid)
{
	struct xs_handle *xs = xs_open(XS_OPEN_READONLY);
	char **dirs, path[64];
	unsigned n;
	int rc = -1;

	if (!xs)
		return -1;
	dirs = xs_directory(xs, XBT_NULL, "/local/domain", &n);
	for (unsigned i = 0; dirs && i < n && rc < 0; i++) {
		unsigned len;
		char *v;
		uint64_t id;

		snprintf(path, sizeof(path), "/local/domain/%s/name", dirs[i]);
		v = xs_read(xs, XBT_NULL, path, &len);
		if (v && !strcmp(v, name) && zd_parse_u64(dirs[i], &id) == 0) {
			*domid = (uint32_t)id;
			rc = 0;
		}
		free(v);
	}
	free(dirs);
	xs_close(xs);
	return rc;
}

/* The xl config's disk: the one spec of its disk = [ ... ] up to its
 * "target=" (prefix, "" if the config has no disk). -1 with sb->err. */
static int cfg_disk(struct zd_standby *sb, char *prefix, size_t len)
{
	FILE *f = fopen(sb->args, "re");
	char *text = NULL, *p, *end, *q, *spec = NULL;
	size_t cap = 0;
	int n = 0, rc = -1;

	prefix[0] = '\0';
	if (!f) {
		zd__standby_err(sb, "cannot read the xl config %s: %s", sb->args, strerror(errno));
		return -1;
	}
	if (getdelim(&text, &cap, '\0', f) < 0) {
		fclose(f);
		free(text);
		return 0;		/* empty */
	}
	fclose(f);
	for (p = text; (p = strstr(p, "disk")); p += 4) {
		const char *b = p;

		/* At a line's start (after blanks), then blanks, '=', '['. */
		while (b > text && (b[-1] == ' ' || b[-1] == '\t'))
			b--;
		if (b > text && b[-1] != '\n')
			continue;
		q = p + 4;
		q += strspn(q, " \t");
		if (*q != '=')
			continue;
		q++;
		q += strspn(q, " \t\n");
		if (*q != '[')
			continue;
		end = strchr(q, ']');
		if (!end) {
			zd__standby_err(sb, "%s: its disk = [ has no ]", sb->args);
			goto out;
		}
		for (q++; q < end; q++) {
			char quote = *q, *close;

			if (quote != '\'' && quote != '"')
				continue;
			close = memchr(q + 1, quote, (size_t)(end - q - 1));
			if (!close)
				break;
			if (n++ == 0)
				spec = strndup(q + 1, (size_t)(close - q - 1));
			q = close;
		}
		break;
	}
	if (n == 0) {
		rc = 0;
		goto out;
	}
	if (n > 1) {
		zd__standby_err(sb, "%s gives %d disks: a standby takes over a guest with one disk", sb->args, n);
		goto out;
	}
	q = spec ? strstr(spec, "target=") : NULL;
	if (!q || (q != spec && q[-1] != ',')) {
		zd__standby_err(sb, "%s: write the disk as 'KEY=VALUE,...,target=PATH' (target= last): the standby "
				"puts the replica's disk.img as its target", sb->args);
		goto out;
	}
	if ((size_t)(q - spec) + 1 > len) {
		zd__standby_err(sb, "%s: the disk spec is too long", sb->args);
		goto out;
	}
	memcpy(prefix, spec, (size_t)(q - spec));
	prefix[q - spec] = '\0';
	rc = 0;
out:
	free(spec);
	free(text);
	return rc;
}

static int xsb_check(struct zd_standby *sb)
{
	char disk[512];

	if (access(sb->args, R_OK) < 0) {
		zd__standby_err(sb, "cannot read the xl config %s: %s", sb->args, strerror(errno));
		return -1;
	}
	return cfg_disk(sb, disk, sizeof(disk));
}

static void xl_destroy(const char *name)
{
	char *argv[] = { "xl", "destroy", (char *)name, NULL };
	char out[512];

	run_xl(argv, out, sizeof(out));
}

static void xsb_release(struct zd_standby *sb, bool destroy);

static int make_domain(struct zd_standby *sb, const char *diskimg);

static int xsb_create(struct zd_standby *sb, const struct zd_rec_header *hdr)
{
	struct xsb *x;
	const char *colon = strchr(hdr->target, ':');
	const char *args = colon ? colon + 1 : "";
	size_t n = strcspn(args, ",");
	uint64_t id;
	uint32_t dummy;

	/* What a failed attempt (an earlier session's) left. */
	if (sb->priv)
		xsb_release(sb, false);
	x = zd_xcalloc(1, sizeof(*x));
	sb->priv = x;
	if (n >= sizeof(x->primary) || !n) {
		zd__standby_err(sb, "the stream's target '%s' names no domain", hdr->target);
		return -1;
	}
	memcpy(x->primary, args, n);
	if (zd_parse_u64(x->primary, &id) == 0) {
		snprintf(x->name, sizeof(x->name), "zd-standby-%" PRIu64, id);
		x->primary[0] = '\0';
	} else {
		snprintf(x->name, sizeof(x->name), "%s-standby", x->primary);
	}
	if (find_domid(x->name, &dummy) == 0) {
		zd__standby_err(sb, "a domain named %s exists already (a standby left behind? xl destroy it)", x->name);
		return -1;
	}
	if (cfg_disk(sb, x->disk, sizeof(x->disk)) < 0)
		return -1;
	/* With a disk: made at the first STATE, on disk.img. */
	x->deferred = x->disk[0] != '\0';
	return x->deferred ? 0 : make_domain(sb, NULL);
}

/* xl create -p, with the replica's disk.img as the disk (diskimg NULL:
 * the config's own). */
static int make_domain(struct zd_standby *sb, const char *diskimg)
{
	struct xsb *x = sb->priv;
	char nameopt[200], out[4096], *diskopt = NULL;
	xc_dominfo_t info;
	uint32_t dummy;
	int r;

	snprintf(nameopt, sizeof(nameopt), "name=\"%s\"", x->name);
	if (diskimg && asprintf(&diskopt, "disk=['%starget=%s']", x->disk, diskimg) < 0)
		diskopt = NULL;
	{
		char *argv[] = { "xl", "create", "-p", "-q", sb->args, nameopt, diskopt, NULL };

		r = run_xl(argv, out, sizeof(out));
	}
	if (r == 0)
		zd_debug("standby: xl create -p %s %s%s%s", sb->args, nameopt, diskopt ? " " : "", diskopt ? diskopt : "");
	free(diskopt);
	x->deferred = false;
	if (r != 0) {
		zd__standby_err(sb, "xl create -p %s %s%s failed (%s %d): %s", sb->args, nameopt,
				diskimg ? " (disk: the replica's disk.img)" : "",
				r < 0 ? "cannot run, errno" : "exit", r < 0 ? errno : r, last_line(out));
		/* xl cleans up after itself; a half-made domain of our name is ours. */
		if (find_domid(x->name, &dummy) == 0)
			xl_destroy(x->name);
		return -1;
	}
	if (find_domid(x->name, &x->domid) < 0) {
		zd__standby_err(sb, "xl create made no domain named %s", x->name);
		return -1;
	}
	x->xch = xc_interface_open(NULL, NULL, 0);
	x->fmem = xenforeignmemory_open(NULL, 0);
	if (!x->xch || !x->fmem) {
		zd__standby_err(sb, "cannot open the Xen control interface (%s): run in dom0 as root", strerror(errno));
		xl_destroy(x->name);
		return -1;
	}
	if (xc_domain_getinfo(x->xch, x->domid, 1, &info) != 1 || info.domid != x->domid) {
		zd__standby_err(sb, "domain %s (%u) vanished", x->name, x->domid);
		return -1;
	}
	if (!info.hvm) {
		zd__standby_err(sb, "%s makes a PV guest: a standby must be PVH or HVM, as the protected guest is",
				sb->args);
		xl_destroy(x->name);
		return -1;
	}
	return 0;
}

int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom, unsigned int num, xen_pfn_t *arr);

/* The standby's populated gfns, as lib/target/xen.c counts the primary's. */
static int populated(struct zd_standby *sb, struct zd_pageset *out)
{
	struct xsb *x = sb->priv;
	xen_pfn_t maxg = 0, arr[SCAN_CHUNK];

	if (xc_domain_maximum_gpfn(x->xch, x->domid, &maxg) < 0) {
		zd__standby_err(sb, "maximum gpfn of %s: %s", x->name, strerror(errno));
		return -1;
	}
	for (uint64_t g = 0; g <= maxg; g += SCAN_CHUNK) {
		unsigned k = (unsigned)ZD_MIN((uint64_t)SCAN_CHUNK, (uint64_t)maxg + 1 - g);

		for (unsigned i = 0; i < k; i++)
			arr[i] = g + i;
		if (xc_get_pfn_type_batch(x->xch, x->domid, k, arr) < 0) {
			zd__standby_err(sb, "page types of %s: %s", x->name, strerror(errno));
			return -1;
		}
		for (unsigned i = 0; i < k; i++) {
			uint32_t type = (uint32_t)(arr[i] & XEN_DOMCTL_PFINFO_LTAB_MASK);

			if (type != XEN_DOMCTL_PFINFO_XTAB && type != XEN_DOMCTL_PFINFO_XALLOC &&
			    type != XEN_DOMCTL_PFINFO_BROKEN)
				zd_pageset_add(out, g + i);
		}
	}
	return 0;
}

/* The STATE blob's header and gfn ranges; -1 with sb->err. */
static int parse_state(struct zd_standby *sb, const uint8_t *state, uint32_t len, struct xen_state_hdr *h,
		       struct zd_pageset *gfns)
{
	if (len < sizeof(*h)) {
		zd__standby_err(sb, "STATE of %u bytes is no xen: state", len);
		return -1;
	}
	memcpy(h, state, sizeof(*h));
	if (memcmp(h->magic, "zdxen\0\0", STATE_MAGIC_LEN) ||
	    (h->magic[7] != STATE_PAUSED && h->magic[7] != STATE_SUSPENDED)) {
		zd__standby_err(sb, "STATE is no xen: state this zd-recv knows");
		return -1;
	}
	if ((uint64_t)sizeof(*h) + (uint64_t)h->nranges * 16 + h->ctx_len > len) {
		zd__standby_err(sb, "STATE is truncated (%u ranges, %u bytes of context, %u bytes)", h->nranges,
				h->ctx_len, len);
		return -1;
	}
	for (uint32_t i = 0; gfns && i < h->nranges; i++) {
		uint64_t first, count;

		memcpy(&first, state + sizeof(*h) + i * 16, 8);
		memcpy(&count, state + sizeof(*h) + i * 16 + 8, 8);
		if (count)
			zd_pageset_add_range(gfns, first, count);
	}
	return 0;
}

/* Put each pageset's gfns into a malloc'd array; their count. */
static uint64_t gfn_array(const struct zd_pageset *set, xen_pfn_t **out)
{
	uint64_t n = zd_pageset_count(set), k = 0;

	*out = zd_xmalloc((n ? n : 1) * sizeof(**out));
	for (size_t r = 0; r < set->n; r++)
		for (uint64_t i = 0; i < set->r[r].count; i++)
			(*out)[k++] = set->r[r].first + i;
	return n;
}

/*
 * The standby's populated gfns made the primary's. A fresh domain of the
 * same config has the same RAM and special pages, but not quite the
 * primary's physmap: its guest may have put Xen's frames (shared_info,
 * grant table) at gfns it chose, and given pages back (seen with Linux
 * PVH under Xen 4.17: one gfn, 0x10, absent in the primary and present in
 * a fresh domain; its cause not looked into). Xen's own restore populates
 * exactly the frames of
 * the stream in an empty domain; here the few gfns that differ are
 * populated or released. The guest maps Xen's frames over its gfns again
 * when it resumes. More than LAYOUT_SLACK differing gfns is another
 * config (memory=, type=): refused.
 */
#define LAYOUT_SLACK 1024u

static int match_layout(struct zd_standby *sb, const struct zd_pageset *want, const struct zd_pageset *have)
{
	struct xsb *x = sb->priv;
	struct zd_pageset missing = ZD_PAGESET_INIT, extra = ZD_PAGESET_INIT;
	xen_pfn_t *arr = NULL;
	uint64_t nm, ne;
	int rc = -1;

	zd_pageset_subtract(&missing, want, have);
	zd_pageset_subtract(&extra, have, want);
	nm = zd_pageset_count(&missing);
	ne = zd_pageset_count(&extra);
	if (!nm && !ne)
		return 0;
	if (nm > LAYOUT_SLACK || ne > LAYOUT_SLACK) {
		zd__standby_err(sb, "%s has %" PRIu64 " frames populated, the primary %" PRIu64 " (%" PRIu64
				" of the primary's missing from gfn %#" PRIx64 ", %" PRIu64 " extra from gfn %#" PRIx64
				"): the config must give the primary's memory and type",
				x->name, zd_pageset_count(have), zd_pageset_count(want), nm,
				nm ? missing.r[0].first : 0, ne, ne ? extra.r[0].first : 0);
		goto out;
	}
	zd_debug("standby %s: %" PRIu64 " gfn(s) to populate (first %#" PRIx64 "), %" PRIu64
		 " to release (first %#" PRIx64 ") to match the primary's physmap", x->name, nm,
		 nm ? missing.r[0].first : 0, ne, ne ? extra.r[0].first : 0);
	if (ne) {
		gfn_array(&extra, &arr);
		if (xc_domain_decrease_reservation_exact(x->xch, x->domid, ne, 0, arr) < 0) {
			zd__standby_err(sb, "releasing %" PRIu64 " gfn(s) of %s from %#" PRIx64 ": %s", ne, x->name,
					extra.r[0].first, strerror(errno));
			goto out;
		}
		free(arr);
		arr = NULL;
	}
	if (nm) {
		gfn_array(&missing, &arr);
		if (xc_domain_populate_physmap_exact(x->xch, x->domid, nm, 0, 0, arr) < 0) {
			zd__standby_err(sb, "populating %" PRIu64 " gfn(s) of %s from %#" PRIx64 ": %s (is its "
					"memory= smaller than the primary's?)", nm, x->name, missing.r[0].first,
					strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	free(arr);
	zd_pageset_free(&missing);
	zd_pageset_free(&extra);
	return rc;
}

static int xsb_attach(struct zd_standby *sb, const struct zd_replica *rep, const uint8_t *state, uint32_t len)
{
	struct xsb *x = sb->priv;
	struct zd_pageset want = ZD_PAGESET_INIT, have = ZD_PAGESET_INIT;
	struct xen_state_hdr h;
	xen_pfn_t *gfns = NULL;
	int *err = NULL;
	uint64_t n, k = 0;
	int rc = -1;

	if (parse_state(sb, state, len, &h, &want) < 0)
		goto out;
	if (h.magic[7] == STATE_PAUSED) {
		zd__standby_err(sb, "the primary's checkpoints pause the guest (xen:NAME,checkpoint=pause): "
				"a standby cannot resume them (the default checkpoint=suspend can be)");
		goto out;
	}
	if (x->disk[0] && rep->diskfd < 0 && !rep->meta.disk_size) {
		zd__standby_err(sb, "%s gives the guest a disk, the stream carries none (protect it with "
				"zd-track xen:NAME,disk=DEV)", sb->args);
		goto out;
	}
	if (!x->disk[0] && (rep->diskfd >= 0 || rep->meta.disk_size)) {
		zd__standby_err(sb, "the stream carries a disk, %s gives the guest none", sb->args);
		goto out;
	}
	if (x->deferred) {
		char img[PATH_MAX + 16], dir[PATH_MAX];

		if (!realpath(rep->dir, dir)) {
			zd__standby_err(sb, "%s: %s", rep->dir, strerror(errno));
			goto out;
		}
		snprintf(img, sizeof(img), "%s/disk.img", dir);
		if (make_domain(sb, img) < 0)
			goto out;
	}
	n = zd_pageset_count(&want);
	if (n != rep->meta.page_count) {
		zd__standby_err(sb, "STATE lists %" PRIu64 " frames, the stream %" PRIu64, n, rep->meta.page_count);
		goto out;
	}
	if (populated(sb, &have) < 0 || match_layout(sb, &want, &have) < 0)
		goto out;
	gfns = zd_xmalloc(n * sizeof(*gfns));
	err = zd_xcalloc(n, sizeof(*err));
	for (size_t r = 0; r < want.n; r++)
		for (uint64_t i = 0; i < want.r[r].count; i++)
			gfns[k++] = want.r[r].first + i;
	if (x->map)
		xenforeignmemory_unmap(x->fmem, x->map, x->map_pages);
	x->map = xenforeignmemory_map(x->fmem, x->domid, PROT_READ | PROT_WRITE, n, gfns, err);
	if (!x->map) {
		zd__standby_err(sb, "foreign map of %s's %" PRIu64 " frames: %s", x->name, n, strerror(errno));
		goto out;
	}
	x->map_pages = n;
	for (uint64_t i = 0; i < n; i++) {
		if (err[i]) {
			zd__standby_err(sb, "gfn %#" PRIx64 " of %s does not map: %s", (uint64_t)gfns[i], x->name,
					strerror(-err[i]));
			goto out;
		}
	}
	sb->mem = x->map;
	sb->pages = n;
	sb->page_size = XEN_PAGE;
	rc = 0;
out:
	free(gfns);
	free(err);
	zd_pageset_free(&want);
	zd_pageset_free(&have);
	return rc;
}

/* vCPU0's rax in an HVM context: the suspend hypercall's return. */
static int set_rax0(struct zd_standby *sb, uint8_t *ctx, uint32_t len, uint64_t *was)
{
	uint32_t off = 0;

	while (off + sizeof(struct hvm_save_descriptor) <= len) {
		struct hvm_save_descriptor d;

		memcpy(&d, ctx + off, sizeof(d));
		off += sizeof(d);
		if (d.typecode == 0 || off + d.length > len)
			break;
		if (d.typecode == HVM_SAVE_CODE(CPU) && d.instance == 0 &&
		    d.length >= offsetof(struct hvm_hw_cpu, rax) + 8) {
			uint64_t zero = 0;

			memcpy(was, ctx + off + offsetof(struct hvm_hw_cpu, rax), 8);
			memcpy(ctx + off + offsetof(struct hvm_hw_cpu, rax), &zero, 8);
			return 0;
		}
		off += d.length;
	}
	zd__standby_err(sb, "the HVM context has no record of vCPU 0");
	return -1;
}

/* The guest said control/feature-suspend on the primary (zd-track
 * suspends only such a guest), but Linux says it once, when its xenbus
 * comes up, not when it resumes in a new domain; its drivers still answer
 * control/shutdown. Saying it for the standby lets zd-track (or xl save,
 * xl remus) protect the taken-over guest again. */
static int say_suspend(struct zd_standby *sb)
{
	struct xsb *x = sb->priv;
	struct xs_handle *xs = xs_open(0);
	char path[80];
	bool done;

	if (!xs) {
		zd__standby_err(sb, "cannot open xenstore: %s", strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/local/domain/%u/control/feature-suspend", x->domid);
	done = xs_write(xs, XBT_NULL, path, "1", 1);
	xs_close(xs);
	if (!done) {
		zd__standby_err(sb, "writing %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* The xenstore and console rings as Xen's own restore leaves them
 * (handle_hvm_params in libxenguest): zeroed. The replica holds the
 * primary's rings, their indices as xenstored and xenconsoled had left
 * them for the primary; the standby's daemons start from an empty ring,
 * and the guest resumed in a new domain starts its side afresh
 * (xb_init_comms, the hvc driver's resume). */
static int clear_rings(struct zd_standby *sb)
{
	static const struct { int param; const char *what; } rings[] = {
		{ HVM_PARAM_STORE_PFN, "xenstore" }, { HVM_PARAM_CONSOLE_PFN, "console" },
	};
	struct xsb *x = sb->priv;

	for (size_t i = 0; i < sizeof(rings) / sizeof(rings[0]); i++) {
		uint64_t gfn;

		if (xc_hvm_param_get(x->xch, x->domid, rings[i].param, &gfn) < 0 || !gfn)
			continue;	/* none: nothing to clear */
		if (xc_clear_domain_page(x->xch, x->domid, (xen_pfn_t)gfn) < 0) {
			zd__standby_err(sb, "clearing %s's %s ring (gfn %#" PRIx64 "): %s", x->name, rings[i].what,
					gfn, strerror(errno));
			return -1;
		}
	}
	return 0;
}

static int xsb_start(struct zd_standby *sb, const uint8_t *state, uint32_t len)
{
	struct xsb *x = sb->priv;
	struct xen_state_hdr h;
	uint8_t *ctx;
	uint64_t rax = 0;
	int rc = -1;

	if (parse_state(sb, state, len, &h, NULL) < 0)
		return -1;
	if (h.magic[7] != STATE_SUSPENDED) {
		zd__standby_err(sb, "the committed epoch was taken with the guest paused, not suspended "
				"(paused by someone else?): it cannot be resumed in a new domain");
		return -1;
	}
	ctx = zd_xmalloc(h.ctx_len);
	memcpy(ctx, state + sizeof(h) + (size_t)h.nranges * 16, h.ctx_len);
	if (set_rax0(sb, ctx, h.ctx_len, &rax) < 0)
		goto out;
	zd_debug("standby: vCPU0's rax in the saved context was %#" PRIx64 ", set to 0 (resumed in a new domain)",
		 rax);
	/* The TSC as Xen's restore sets it (X86_TSC_INFO), before the
	 * context: its mode, frequency and the guest time elapsed. */
	{
		size_t at = sizeof(h) + (size_t)h.nranges * 16 + h.ctx_len;
		struct xen_state_tsc tsc;

		if (len >= at + sizeof(tsc) && !memcmp(state + at, "tsc1", 4)) {
			memcpy(&tsc, state + at, sizeof(tsc));
			if (xc_domain_set_tsc_info(x->xch, x->domid, tsc.mode, tsc.elapsed_nsec, tsc.khz,
						   tsc.incarnation) < 0) {
				zd__standby_err(sb, "setting %s's TSC info: %s", x->name, strerror(errno));
				goto out;
			}
			zd_debug("standby: TSC mode %u, %u kHz, %" PRIu64 " ns elapsed, incarnation %u", tsc.mode,
				 tsc.khz, tsc.elapsed_nsec, tsc.incarnation);
		} else {
			zd_debug("standby: the STATE has no TSC info (an older zd-track)");
		}
	}
	if (xc_domain_hvm_setcontext(x->xch, x->domid, ctx, h.ctx_len) < 0) {
		zd__standby_err(sb, "setting %s's HVM context: %s", x->name, strerror(errno));
		goto out;
	}
	/* The guest stood still from the checkpoint to the takeover: Xen's
	 * default timer mode (no_delay_for_missed_ticks) would inject every
	 * tick of its virtual timers "missed" meanwhile at once, a storm the
	 * resumed kernel spends tens of seconds in or dies of (bench/README.md,
	 * the Xen standby's takeover). One pending missed tick at most. */
	if (xc_hvm_param_set(x->xch, x->domid, HVM_PARAM_TIMER_MODE, HVMPTM_one_missed_tick_pending) < 0) {
		zd__standby_err(sb, "setting %s's timer mode: %s", x->name, strerror(errno));
		goto out;
	}
	if (clear_rings(sb) < 0 || say_suspend(sb) < 0)
		goto out;
	if (xc_domain_unpause(x->xch, x->domid) < 0) {
		zd__standby_err(sb, "unpause %s: %s", x->name, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	free(ctx);
	return rc;
}

/* The standby takes the primary's name once the fence has removed it. */
static void xsb_after_start(struct zd_standby *sb)
{
	struct xsb *x = sb->priv;
	uint32_t dummy;
	char out[1024];

	if (!x->primary[0])
		return;
	if (find_domid(x->primary, &dummy) == 0) {
		zd_warnx("standby %s: a domain named %s still exists: keeping the name %s", x->name, x->primary,
			 x->name);
		return;
	}
	char *argv[] = { "xl", "rename", x->name, x->primary, NULL };
	int r = run_xl(argv, out, sizeof(out));

	if (r)
		zd_warnx("standby %s: xl rename %s %s failed (%d): %s", x->name, x->name, x->primary, r, last_line(out));
	else
		zd_debug("standby %s renamed %s", x->name, x->primary);
}

static void xsb_release(struct zd_standby *sb, bool destroy)
{
	struct xsb *x = sb->priv;

	if (!x)
		return;
	if (x->map)
		xenforeignmemory_unmap(x->fmem, x->map, x->map_pages);
	if (destroy && x->name[0] && find_domid(x->name, &x->domid) == 0)
		xl_destroy(x->name);
	if (x->fmem)
		xenforeignmemory_close(x->fmem);
	if (x->xch)
		xc_interface_close(x->xch);
	free(x);
	sb->priv = NULL;
	sb->mem = NULL;
}

const struct zd_standby_ops zd_standby_xen = {
	.scheme = "xen",
	.usage = "xen:CONFIG (the protected guest's xl config)",
	.check = xsb_check,
	.create = xsb_create,
	.attach = xsb_attach,
	.start = xsb_start,
	.after_start = xsb_after_start,
	.release = xsb_release,
};

#else
typedef int zd_standby_xen_absent;
#endif
