/* SPDX-License-Identifier: MIT */
/*
 * Client side of zd-vm's control socket (zd/vmctl.h): used by the kvm:
 * target and by zd-vm --ctl.
 */
#ifndef ZD_VM_VMCTL_CLIENT_H
#define ZD_VM_VMCTL_CLIENT_H

#include <stddef.h>
#include "vm/vmctl.h"

/* Connect to PATH. Returns fd or -1 (errno). */
int zd_vmctl_connect(const char *path);
/* Send one request, wait for its reply. payload (may be NULL) receives up
 * to cap bytes; fds (may be NULL) up to 4 descriptors, count in *nfds.
 * Returns 0 when a reply arrived (check rep->status), -1 with errno on a
 * transport failure (EPIPE when zd-vm closed the connection). */
int zd_vmctl_call(int fd, const struct zd_vmctl_req *req, struct zd_vmctl_rep *rep,
		  void *payload, size_t cap, int *fds, int *nfds);

#endif
