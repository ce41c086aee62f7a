/* SPDX-License-Identifier: MIT */
/*
 * Output commit for the xen: target (lib/target/xen_netbuf.c): a Xen
 * guest's network output is held in dom0 until the backup acknowledged
 * the checkpoint that produced it, as Xen's own Remus does.
 *
 * The spec's options are parsed here too, so that xen.c only names them:
 *
 *   xen:NAME|DOMID[,output-commit=on|off]      (default on)
 */
#ifndef ZD_XEN_NETBUF_H
#define ZD_XEN_NETBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct xen_netbuf;

/* Hold every vif of domain domid from now on: one IFB device per vif, the
 * vif's ingress (the guest's output) redirected to it, the plug qdisc on
 * its egress. name is the domain as the spec named it (for the hint).
 * -1 with err filled (one line, naming the missing module and
 * xen:NAME,output-commit=off) and nothing left behind. */
int zd__xen_netbuf_open(struct xen_netbuf **nb, uint32_t domid, const char *name, char *err,
		    size_t errlen);
/* At checkpoint epoch's pause: what the guest sent so far belongs to it. */
int zd__xen_netbuf_mark(struct xen_netbuf *nb, uint64_t epoch, char *err, size_t errlen);
/* The backup acknowledged epoch: what belongs to it and to the epochs
 * before goes out. */
int zd__xen_netbuf_release(struct xen_netbuf *nb, uint64_t epoch, char *err, size_t errlen);
/* Remove the redirects and the IFB devices (packets still held are
 * dropped: the guest's TCP sends them again). NULL is fine. */
void zd__xen_netbuf_close(struct xen_netbuf *nb);

#endif
