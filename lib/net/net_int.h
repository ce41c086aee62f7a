/* SPDX-License-Identifier: MIT */
/* Shared by the files of lib/net/ only. */
#ifndef ZD_NET_INT_H
#define ZD_NET_INT_H

#include "zd/net.h"

/* link.c: the authenticated link's part of shutdown and close. */
void zd__conn_auth_shutdown_write(struct zd_conn *c);
void zd__conn_auth_close(struct zd_conn *c);
void zd__conn_auth_abort(struct zd_conn *c);
/* ssh.c: wait for the ssh process (after its pipes are closed). */
void zd__conn_reap(struct zd_conn *c);

#endif
