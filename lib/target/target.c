/* SPDX-License-Identifier: MIT */
/*
 * The target registry: a spec "scheme:args" names one entry of the table
 * below. Adding a kind of VM is one new file and one line here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zd/target.h"
#include "zd/util.h"

static const struct zd_target_ops *const table[] = {
	&zd_target_kvm,
#ifdef ZD_HAVE_XEN
	&zd_target_xen,		/* lib/target/xen.mk: where libxen-dev is installed */
#endif
	&zd_target_synth,
	&zd_target_trace,
};

static const struct zd_target_ops *lookup(const char *spec, const char **args)
{
	const char *colon = strchr(spec, ':');
	size_t n = colon ? (size_t)(colon - spec) : strlen(spec);

	for (size_t i = 0; i < ZD_ARRAY_SIZE(table); i++) {
		if (strlen(table[i]->scheme) == n && !strncmp(spec, table[i]->scheme, n)) {
			*args = colon ? colon + 1 : spec + n;
			return table[i];
		}
	}
	return NULL;
}

static void unknown(const char *spec, char *msg, size_t msglen)
{
	const char *colon = strchr(spec, ':');
	int n = colon ? (int)(colon - spec) : (int)strlen(spec);
	size_t off;

	off = (size_t)snprintf(msg, msglen, "unknown target scheme '%.*s' (want ", n, spec);
	for (size_t i = 0; i < ZD_ARRAY_SIZE(table) && off < msglen; i++)
		off += (size_t)snprintf(msg + off, msglen - off, "%s%s", i ? ", " : "",
					table[i]->scheme);
	if (off < msglen)
		snprintf(msg + off, msglen - off, ")");
}

static struct zd_target *new_target(const struct zd_target_ops *ops, const char *spec)
{
	struct zd_target *t = zd_xcalloc(1, sizeof(*t));

	t->ops = ops;
	t->spec = zd_xstrdup(spec);
	return t;
}

static void free_target(struct zd_target *t)
{
	free(t->spec);
	free(t);
}

int zd_target_open(struct zd_target **tp, const char *spec, char *msg, size_t msglen)
{
	const struct zd_target_ops *ops;
	const char *args;
	struct zd_target *t;

	*tp = NULL;
	ops = lookup(spec, &args);
	if (!ops) {
		unknown(spec, msg, msglen);
		errno = EINVAL;
		return -1;
	}
	t = new_target(ops, spec);
	errno = 0;
	if (ops->open(t, args) < 0) {
		int e = errno;

		snprintf(msg, msglen, "%s: %s", spec, t->err[0] ? t->err : "cannot open");
		free_target(t);
		errno = e;
		return -1;
	}
	*tp = t;
	return 0;
}

int zd_target_attach(struct zd_target **tp, const struct zd_rec_header *hdr,
		     char *msg, size_t msglen)
{
	const struct zd_target_ops *ops;
	const char *args;
	struct zd_target *t;

	*tp = NULL;
	if (!hdr->target || !*hdr->target) {
		snprintf(msg, msglen, "the stream's HEADER names no target");
		return -1;
	}
	ops = lookup(hdr->target, &args);
	if (!ops) {
		unknown(hdr->target, msg, msglen);
		return -1;
	}
	if (!ops->attach) {
		snprintf(msg, msglen, "%s: target cannot be attached to for page contents",
			 hdr->target);
		return -1;
	}
	t = new_target(ops, hdr->target);
	t->page_size = hdr->page_size;
	t->page_count = hdr->page_count;
	if (ops->attach(t, hdr) < 0) {
		snprintf(msg, msglen, "%s: %s", hdr->target, t->err[0] ? t->err : "cannot attach");
		free_target(t);
		return -1;
	}
	*tp = t;
	return 0;
}

void zd_target_close(struct zd_target *t)
{
	if (!t)
		return;
	if (t->ops->close)
		t->ops->close(t);
	free_target(t);
}
