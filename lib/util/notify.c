/* SPDX-License-Identifier: MIT */
/*
 * Telling a service manager how we are (sd_notify(3)): READY=1 once a
 * tool does its job (zd-recv listens, zd-track's first epoch is
 * acknowledged), then STATUS= lines at most once a second. Outside
 * systemd (no NOTIFY_SOCKET) each call costs a getenv.
 */
#include <stdarg.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "zd/util.h"

void zd_notify_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void zd_notify_status(uint64_t *last_ns, const char *fmt, ...)
{
	char line[256];
	uint64_t now = zd_now_ns();
	va_list ap;

	if (*last_ns && now - *last_ns < 1000000000u)
		return;
	*last_ns = now;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	sd_notifyf(0, "STATUS=%s", line);
}
