/* SPDX-License-Identifier: MIT */
/*
 * Output commit on Xen: hold the guest's network output in dom0 until the
 * epoch that produced it is acknowledged (xen_netbuf.h), the way Xen's
 * Remus does it (libxl_netbuffer.c and its remus-netbuf-setup script).
 *
 * What the guest sends through its vif arrives in dom0 as *ingress* of the
 * backend device vifD.N. Per vif:
 *
 *   vifD.N ingress ── ingress qdisc ── matchall filter, action mirred
 *     egress redirect ──> zdifbD.N (an IFB device) egress ── plug qdisc
 *     ──(released)──> back into dom0's stack as if received on vifD.N
 *     (the bridge, routing: wherever the packet was going)
 *
 * The plug qdisc (sch_plug) queues every packet until told: BUFFER closes
 * the packets queued so far into a buffer, RELEASE_ONE lets the buffer
 * out. Set-up, tear-down and the plug commands all go through
 * libnl-route-3 (no tc): links, qdiscs, the classifier and its action.
 *
 * Marks. sch_plug keeps one closed buffer only: a second BUFFER before
 * the RELEASE_ONE of the first folds the first's count into nothing, and
 * later releases would then let out packets of epochs not yet
 * acknowledged. buffered and zddspt run ahead of the ACKs, so at most one
 * mark is in the kernel at a time: a pause while a mark waits for its
 * ACK adds none, and its epoch's packets stay with the open buffer, which
 * the next pause after that ACK closes. Packets are never released before
 * the ACK of their epoch; with several epochs unacknowledged some wait for
 * a later epoch's ACK than their own (up to one more epoch). In remus
 * mode every mark is released before the next pause: one mark per epoch.
 * Packets the guest queued on its ring before a pause and netback passes
 * on after it join the next epoch: later, never earlier.
 *
 * The target's ops run under zd-track's target lock (pause on the loop,
 * release on the feedback thread), so the socket and the mark are not
 * used from two threads at once.
 */
#include "zd/target.h"

#ifdef ZD_HAVE_XEN

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xen_netbuf.h"
#include "zd/util.h"

#ifdef ZD_HAVE_NL

#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/pkt_sched.h>
#include <linux/tc_act/tc_mirred.h>
#include <netlink/netlink.h>
#include <netlink/route/act/mirred.h>
#include <netlink/route/action.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/matchall.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/plug.h>
#include <netlink/route/tc.h>
#include <xenstore.h>

/* The plug qdisc's limit in bytes: what the guest may send in the epochs
 * not yet acknowledged; beyond it packets are dropped (TCP resends). */
#define PLUG_LIMIT (8u << 20)
#define MAX_VIFS 16

struct nb_vif {
	char vif[IFNAMSIZ], ifb[IFNAMSIZ];
	int vif_index, ifb_index;
	bool ingress;			/* we added the ingress qdisc on vif */
	bool ifb_made;			/* we created ifb */
	struct rtnl_qdisc *plug;	/* the plug qdisc on ifb */
};

struct xen_netbuf {
	struct nl_sock *sk;
	struct nb_vif v[MAX_VIFS];
	size_t nv;
	uint64_t marked;		/* epoch of the mark in the kernel, 0: none */
	uint64_t merged;		/* pauses that added no mark (debug) */
	char name[64];			/* the domain as the spec names it */
};

/* The hint that ends every refusal (its argument: nb->name). */
#define OFF_HINT "or turn output commit off with xen:%s,output-commit=off"

static void nb_delete(struct xen_netbuf *nb, struct nb_vif *v)
{
	if (v->ingress) {
		struct rtnl_qdisc *q = rtnl_qdisc_alloc();

		if (q) {
			rtnl_tc_set_ifindex(TC_CAST(q), v->vif_index);
			rtnl_tc_set_parent(TC_CAST(q), TC_H_INGRESS);
			rtnl_tc_set_handle(TC_CAST(q), TC_HANDLE(0xffff, 0));
			(void)rtnl_qdisc_delete(nb->sk, q);	/* its filter goes with it */
			rtnl_qdisc_put(q);
		}
		v->ingress = false;
	}
	if (v->ifb_made) {
		struct rtnl_link *l = rtnl_link_alloc();

		if (l) {
			rtnl_link_set_name(l, v->ifb);
			(void)rtnl_link_delete(nb->sk, l);	/* its qdiscs go with it */
			rtnl_link_put(l);
		}
		v->ifb_made = false;
	}
	if (v->plug)
		rtnl_qdisc_put(v->plug);
	v->plug = NULL;
}

/* The ifindex of the device called name, 0 if there is none. */
static int link_index(struct xen_netbuf *nb, const char *name)
{
	struct rtnl_link *l = NULL;
	int idx;

	if (strlen(name) >= IFNAMSIZ || rtnl_link_get_kernel(nb->sk, 0, name, &l) < 0)
		return 0;
	idx = rtnl_link_get_ifindex(l);
	rtnl_link_put(l);
	return idx;
}

/* The vif's backend devices, from xenstore: vifname if the guest config
 * set one, else libxl's vifD.N; an HVM guest's emulated NIC (NAME-emu)
 * too, where it exists. */
static int find_vifs(struct xen_netbuf *nb, uint32_t domid, char *err, size_t errlen)
{
	struct xs_handle *xs = xs_open(XS_OPEN_READONLY);
	char path[96], **devs;
	unsigned n = 0;

	if (!xs) {
		snprintf(err, errlen, "output commit: cannot open xenstore (%s)", strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "/local/domain/0/backend/vif/%u", domid);
	devs = xs_directory(xs, XBT_NULL, path, &n);
	for (unsigned i = 0; devs && i < n; i++) {
		char *vn, name[IFNAMSIZ + 8];
		unsigned len;

		snprintf(path, sizeof(path), "/local/domain/0/backend/vif/%u/%s/vifname", domid, devs[i]);
		vn = xs_read(xs, XBT_NULL, path, &len);
		if (vn && *vn)
			snprintf(name, sizeof(name), "%s", vn);
		else
			snprintf(name, sizeof(name), "vif%u.%s", domid, devs[i]);
		free(vn);
		for (int emu = 0; emu < 2; emu++) {
			struct nb_vif *v = &nb->v[nb->nv];
			char full[IFNAMSIZ + 16];
			int idx;

			snprintf(full, sizeof(full), "%s%s", name, emu ? "-emu" : "");
			idx = link_index(nb, full);
			if (!idx)
				continue;	/* no such device (no -emu on PVH) */
			if (nb->nv == MAX_VIFS) {
				snprintf(err, errlen, "output commit: domain %u has more than %d vifs",
					 domid, MAX_VIFS);
				goto fail;
			}
			if (snprintf(v->ifb, sizeof(v->ifb), "zdifb%u.%s%s", domid, devs[i],
				     emu ? "e" : "") >= (int)sizeof(v->ifb)) {
				snprintf(err, errlen, "output commit: device name of %s too long", full);
				goto fail;
			}
			if (strlen(full) >= sizeof(v->vif)) {
				snprintf(err, errlen, "output commit: device name %s too long", full);
				goto fail;
			}
			memcpy(v->vif, full, strlen(full) + 1);
			v->vif_index = idx;
			nb->nv++;
		}
	}
	free(devs);
	xs_close(xs);
	return 0;
fail:
	free(devs);
	xs_close(xs);
	return -1;
}

/* Create the IFB device of v and bring it up. A device of that name is
 * left from a zd-track that did not clean up (log-dirty refused a second
 * tracker of this domain before we got here): removed, with the vif's
 * ingress qdisc that redirected to it. */
static int make_ifb(struct xen_netbuf *nb, struct nb_vif *v, char *err, size_t errlen)
{
	struct rtnl_link *l = NULL, *got = NULL, *up = NULL;
	int r, rc = -1;

	if (rtnl_link_get_kernel(nb->sk, 0, v->ifb, &got) == 0) {
		zd_debug("output commit: removing %s and the ingress qdisc of %s, left by an earlier run",
			 v->ifb, v->vif);
		v->ifb_made = v->ingress = true;
		nb_delete(nb, v);
		rtnl_link_put(got);
		got = NULL;
	}
	l = rtnl_link_alloc();
	up = rtnl_link_alloc();
	if (!l || !up) {
		snprintf(err, errlen, "output commit: out of memory");
		goto out;
	}
	rtnl_link_set_name(l, v->ifb);
	if ((r = rtnl_link_set_type(l, "ifb")) < 0 ||
	    (r = rtnl_link_add(nb->sk, l, NLM_F_CREATE | NLM_F_EXCL)) < 0) {
		snprintf(err, errlen, "output commit: cannot create the IFB device %s for %s (%s): "
			 "load the kernel module ifb, " OFF_HINT, v->ifb, v->vif, nl_geterror(r), nb->name);
		goto out;
	}
	v->ifb_made = true;
	if ((r = rtnl_link_get_kernel(nb->sk, 0, v->ifb, &got)) < 0) {
		snprintf(err, errlen, "output commit: %s: %s", v->ifb, nl_geterror(r));
		goto out;
	}
	v->ifb_index = rtnl_link_get_ifindex(got);
	rtnl_link_set_flags(up, IFF_UP);
	if ((r = rtnl_link_change(nb->sk, got, up, 0)) < 0) {
		snprintf(err, errlen, "output commit: cannot bring %s up: %s", v->ifb, nl_geterror(r));
		goto out;
	}
	rc = 0;
out:
	if (l)
		rtnl_link_put(l);
	if (up)
		rtnl_link_put(up);
	if (got)
		rtnl_link_put(got);
	return rc;
}

/* The plug qdisc as the root of the IFB's egress. It starts plugged:
 * everything waits for the first mark's release. */
static int add_plug(struct xen_netbuf *nb, struct nb_vif *v, char *err, size_t errlen)
{
	int r;

	v->plug = rtnl_qdisc_alloc();
	if (!v->plug) {
		snprintf(err, errlen, "output commit: out of memory");
		return -1;
	}
	rtnl_tc_set_ifindex(TC_CAST(v->plug), v->ifb_index);
	rtnl_tc_set_parent(TC_CAST(v->plug), TC_H_ROOT);
	rtnl_tc_set_handle(TC_CAST(v->plug), TC_HANDLE(1, 0));
	if ((r = rtnl_tc_set_kind(TC_CAST(v->plug), "plug")) < 0 ||
	    (r = rtnl_qdisc_plug_set_limit(v->plug, (int)PLUG_LIMIT)) < 0 ||
	    (r = rtnl_qdisc_add(nb->sk, v->plug, NLM_F_CREATE | NLM_F_EXCL)) < 0) {
		snprintf(err, errlen, "output commit: cannot add the plug qdisc to %s (%s): "
			 "load the kernel module sch_plug, " OFF_HINT, v->ifb, nl_geterror(r), nb->name);
		return -1;
	}
	return 0;
}

/* The vif's ingress, all of it, redirected to the IFB's egress. */
static int redirect(struct xen_netbuf *nb, struct nb_vif *v, char *err, size_t errlen)
{
	struct rtnl_qdisc *ing = rtnl_qdisc_alloc();
	struct rtnl_cls *cls = rtnl_cls_alloc();
	struct rtnl_act *act = rtnl_act_alloc();
	int r, rc = -1;

	if (!ing || !cls || !act) {
		snprintf(err, errlen, "output commit: out of memory");
		goto out;
	}
	rtnl_tc_set_ifindex(TC_CAST(ing), v->vif_index);
	rtnl_tc_set_parent(TC_CAST(ing), TC_H_INGRESS);
	rtnl_tc_set_handle(TC_CAST(ing), TC_HANDLE(0xffff, 0));
	if ((r = rtnl_tc_set_kind(TC_CAST(ing), "ingress")) < 0 ||
	    (r = rtnl_qdisc_add(nb->sk, ing, NLM_F_CREATE | NLM_F_EXCL)) < 0) {
		if (r == -NLE_EXIST)
			snprintf(err, errlen, "output commit: %s has an ingress qdisc already: remove it "
				 "(tc qdisc del dev %s ingress), " OFF_HINT, v->vif, v->vif, nb->name);
		else
			snprintf(err, errlen, "output commit: cannot add an ingress qdisc to %s (%s): "
				 "load the kernel module sch_ingress, " OFF_HINT, v->vif, nl_geterror(r),
				 nb->name);
		goto out;
	}
	v->ingress = true;
	if ((r = rtnl_tc_set_kind(TC_CAST(act), "mirred")) < 0 ||
	    (r = rtnl_mirred_set_action(act, TCA_EGRESS_REDIR)) < 0 ||
	    (r = rtnl_mirred_set_policy(act, TC_ACT_STOLEN)) < 0 ||
	    (r = rtnl_mirred_set_ifindex(act, (uint32_t)v->ifb_index)) < 0) {
		snprintf(err, errlen, "output commit: mirred action: %s", nl_geterror(r));
		goto out;
	}
	rtnl_tc_set_ifindex(TC_CAST(cls), v->vif_index);
	rtnl_tc_set_parent(TC_CAST(cls), TC_HANDLE(0xffff, 0));
	rtnl_cls_set_protocol(cls, ETH_P_ALL);
	rtnl_cls_set_prio(cls, 1);
	if ((r = rtnl_tc_set_kind(TC_CAST(cls), "matchall")) < 0 ||
	    (r = rtnl_mall_append_action(cls, act)) < 0 ||
	    (r = rtnl_cls_add(nb->sk, cls, NLM_F_CREATE | NLM_F_EXCL)) < 0) {
		snprintf(err, errlen, "output commit: cannot redirect the ingress of %s to %s (%s): "
			 "load the kernel modules cls_matchall and act_mirred, " OFF_HINT,
			 v->vif, v->ifb, nl_geterror(r), nb->name);
		goto out;
	}
	rc = 0;
out:
	if (act)
		rtnl_act_put(act);
	if (cls)
		rtnl_cls_put(cls);
	if (ing)
		rtnl_qdisc_put(ing);
	return rc;
}

int zd__xen_netbuf_open(struct xen_netbuf **nbp, uint32_t domid, const char *name, char *err,
		    size_t errlen)
{
	struct xen_netbuf *nb = zd_xcalloc(1, sizeof(*nb));
	int r;

	*nbp = NULL;
	snprintf(nb->name, sizeof(nb->name), "%s", name);
	nb->sk = nl_socket_alloc();
	if (!nb->sk) {
		snprintf(err, errlen, "output commit: out of memory");
		goto fail;
	}
	if ((r = nl_connect(nb->sk, NETLINK_ROUTE)) < 0) {
		snprintf(err, errlen, "output commit: rtnetlink: %s", nl_geterror(r));
		goto fail;
	}
	if (find_vifs(nb, domid, err, errlen) < 0)
		goto fail;
	/* The plug first, then the redirect: no packet passes unheld. */
	for (size_t i = 0; i < nb->nv; i++) {
		struct nb_vif *v = &nb->v[i];

		if (make_ifb(nb, v, err, errlen) < 0 || add_plug(nb, v, err, errlen) < 0 ||
		    redirect(nb, v, err, errlen) < 0)
			goto fail;
		zd_debug("output commit: %s's output held on %s (plug, %u bytes at most)", v->vif,
			 v->ifb, PLUG_LIMIT);
	}
	if (!nb->nv)
		zd_debug("output commit: domain %u has no vif: no network output to hold", domid);
	*nbp = nb;
	return 0;
fail:
	zd__xen_netbuf_close(nb);
	return -1;
}

/* One plug command to every vif's qdisc. */
static int plug_all(struct xen_netbuf *nb, bool buffer, char *err, size_t errlen)
{
	for (size_t i = 0; i < nb->nv; i++) {
		struct nb_vif *v = &nb->v[i];
		int r = buffer ? rtnl_qdisc_plug_buffer(v->plug) : rtnl_qdisc_plug_release_one(v->plug);

		if (r == 0)
			r = rtnl_qdisc_add(nb->sk, v->plug, 0);
		if (r < 0) {
			snprintf(err, errlen, "output commit: plug %s on %s: %s",
				 buffer ? "buffer" : "release", v->ifb, nl_geterror(r));
			return -1;
		}
	}
	return 0;
}

int zd__xen_netbuf_mark(struct xen_netbuf *nb, uint64_t epoch, char *err, size_t errlen)
{
	if (!nb->nv)
		return 0;
	if (nb->marked) {
		/* sch_plug holds one closed buffer: this epoch's packets
		 * wait for the next mark (see "Marks" above). */
		nb->merged++;
		return 0;
	}
	if (plug_all(nb, true, err, errlen) < 0)
		return -1;
	nb->marked = epoch;
	return 0;
}

int zd__xen_netbuf_release(struct xen_netbuf *nb, uint64_t epoch, char *err, size_t errlen)
{
	if (!nb->nv || !nb->marked || epoch < nb->marked)
		return 0;
	if (plug_all(nb, false, err, errlen) < 0)
		return -1;
	nb->marked = 0;
	return 0;
}

void zd__xen_netbuf_close(struct xen_netbuf *nb)
{
	if (!nb)
		return;
	for (size_t i = 0; i < nb->nv; i++)
		nb_delete(nb, &nb->v[i]);
	if (nb->merged)
		zd_debug("output commit: %" PRIu64 " checkpoint(s) shared the next one's mark "
			 "(their ACK came after the next pause)", nb->merged);
	if (nb->sk)
		nl_socket_free(nb->sk);
	free(nb);
}

#else /* !ZD_HAVE_NL */

/* Built without libnl-route-3 (lib/target/xen.mk): no output commit. */
int zd__xen_netbuf_open(struct xen_netbuf **nb, uint32_t domid, const char *name, char *err,
		    size_t errlen)
{
	(void)domid;
	*nb = NULL;
	snprintf(err, errlen, "output commit: zd was built without libnl-route-3 "
		 "(libnl-route-3-dev), which it needs to drive sch_plug; turn output commit off "
		 "with xen:%s,output-commit=off", name);
	return -1;
}

int zd__xen_netbuf_mark(struct xen_netbuf *nb, uint64_t epoch, char *err, size_t errlen)
{
	(void)nb, (void)epoch, (void)err, (void)errlen;
	return 0;
}

int zd__xen_netbuf_release(struct xen_netbuf *nb, uint64_t epoch, char *err, size_t errlen)
{
	(void)nb, (void)epoch, (void)err, (void)errlen;
	return 0;
}

void zd__xen_netbuf_close(struct xen_netbuf *nb)
{
	(void)nb;
}

#endif /* ZD_HAVE_NL */

#else
typedef int zd_xen_netbuf_absent;
#endif /* ZD_HAVE_XEN */
