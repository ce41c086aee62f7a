/* SPDX-License-Identifier: MIT */
/*
 * zd-vm --ctl PATH OP [ARG]: drive a running zd-vm by hand or from a test
 * script, one request per invocation, the reply as key=value lines.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/vm.h"
#include "vm/vmctl_client.h"
#include "zd/util.h"

static const struct {
	const char *name;
	uint32_t op;
	bool arg;
} ops[] = {
	{ "info", ZD_VMCTL_INFO, false },
	{ "pause", ZD_VMCTL_PAUSE, true },
	{ "resume", ZD_VMCTL_RESUME, false },
	{ "dirty-get", ZD_VMCTL_DIRTY_GET, false },
	{ "dirty-clear", ZD_VMCTL_DIRTY_CLEAR, false },
	{ "state", ZD_VMCTL_STATE, false },
	{ "memsum", ZD_VMCTL_MEMSUM, false },
	{ "commit", ZD_VMCTL_COMMIT, true },
	{ "stats", ZD_VMCTL_STATS, false },
	{ "stop", ZD_VMCTL_STOP, false },
};

int zd_vm_ctl_main(const char *path, int argc, char **argv)
{
	struct zd_vmctl_req req = { 0 };
	struct zd_vmctl_rep rep;
	static uint8_t payload[ZD_VMCTL_MAX_MSG];
	int fd, fds[4], nfds = 0;
	size_t i;

	if (argc < 1) {
		zd_warnx("--ctl %s: want an operation (info, pause EPOCH, resume, dirty-get, "
			 "dirty-clear, state, memsum, commit EPOCH, stats, stop)", path);
		return ZD_EXIT_USAGE;
	}
	for (i = 0; i < ZD_ARRAY_SIZE(ops); i++)
		if (!strcmp(argv[0], ops[i].name))
			break;
	if (i == ZD_ARRAY_SIZE(ops)) {
		zd_warnx("--ctl: unknown operation '%s'", argv[0]);
		return ZD_EXIT_USAGE;
	}
	if (argc != (ops[i].arg ? 2 : 1) ||
	    (ops[i].arg && zd_parse_u64(argv[1], &req.arg0) < 0)) {
		zd_warnx("--ctl %s: %s", argv[0], ops[i].arg ? "want one number (the epoch)"
							      : "takes no argument");
		return ZD_EXIT_USAGE;
	}
	req.op = ops[i].op;
	if (req.op == ZD_VMCTL_DIRTY_CLEAR)
		req.flags = ZD_VMCTL_F_ALL;
	fd = zd_vmctl_connect(path);
	if (fd < 0) {
		zd_warnx("%s: cannot connect: %s", path, strerror(errno));
		return ZD_EXIT_TARGET;
	}
	if (zd_vmctl_call(fd, &req, &rep, payload, sizeof(payload), fds, &nfds) < 0) {
		zd_warnx("%s: %s: %s", path, argv[0],
			 errno == EPIPE ? "zd-vm closed the connection" : strerror(errno));
		close(fd);
		return ZD_EXIT_TARGET;
	}
	close(fd);
	for (int k = 0; k < nfds; k++)
		close(fds[k]);
	if (rep.status < 0 && req.op != ZD_VMCTL_STOP) {
		zd_warnx("%s: %s: %s", path, argv[0], strerror(-rep.status));
		return ZD_EXIT_TARGET;
	}
	switch (req.op) {
	case ZD_VMCTL_INFO: {
		struct zd_vm_info *in = (void *)payload;

		printf("mem_bytes=%llu\npage_size=%u\nbitmap_words=%llu\nflags=%#x\npvm=%d\n"
		       "epoch=%llu\nserve=%s\nfds=%d\n",
		       (unsigned long long)in->mem_bytes, in->page_size,
		       (unsigned long long)in->bitmap_words, in->flags,
		       !!(in->flags & ZD_VM_F_PVM), (unsigned long long)in->epoch, in->serve, nfds);
		break;
	}
	case ZD_VMCTL_STATS: {
		struct zd_vm_stats *s = (void *)payload;

		printf("exits=%llu\nmmio_exits=%llu\nidle_exits=%llu\npauses=%llu\n"
		       "guest_pages=%llu\nrequests=%llu\nanswers=%llu\nreleased=%llu\n"
		       "held=%llu\nepoch=%llu\ncommitted=%llu\npaused=%llu\ntsc_hz=%llu\n",
		       (unsigned long long)s->exits, (unsigned long long)s->mmio_exits,
		       (unsigned long long)s->idle_exits, (unsigned long long)s->pauses,
		       (unsigned long long)s->guest_pages, (unsigned long long)s->requests,
		       (unsigned long long)s->answers, (unsigned long long)s->released,
		       (unsigned long long)s->held, (unsigned long long)s->epoch,
		       (unsigned long long)s->committed, (unsigned long long)s->paused,
		       (unsigned long long)s->tsc_hz);
		printf("disk_writes=%llu\ndisk_done=%llu\ndisk_overflows=%llu\n",
		       (unsigned long long)s->disk_writes, (unsigned long long)s->disk_done,
		       (unsigned long long)s->disk_overflows);
		/* The guest's own clock (lib/vm/guest/abi.h, struct zdg_svc). */
		if (s->tsc_hz)
			printf("guest_lost_ns=%.0f\nguest_stall_ns=%.0f\n",
			       (double)s->guest_lost_ticks * 1e9 / (double)s->tsc_hz,
			       (double)s->guest_stall_ticks * 1e9 / (double)s->tsc_hz);
		break;
	}
	case ZD_VMCTL_STATE:
		printf("state_bytes=%u\nstate_hash=%016llx\n", rep.len,
		       (unsigned long long)zd_hash64(payload, rep.len));
		break;
	case ZD_VMCTL_PAUSE:
	case ZD_VMCTL_RESUME:
		printf("ns=%llu\n", (unsigned long long)rep.v0);
		break;
	case ZD_VMCTL_DIRTY_GET:
		printf("dirty=%llu\nns=%llu\n", (unsigned long long)rep.v0,
		       (unsigned long long)rep.v1);
		break;
	case ZD_VMCTL_DIRTY_CLEAR:
		printf("ns=%llu\n", (unsigned long long)rep.v1);
		break;
	case ZD_VMCTL_MEMSUM:
		printf("memsum=%016llx\nns=%llu\n", (unsigned long long)rep.v0,
		       (unsigned long long)rep.v1);
		break;
	case ZD_VMCTL_COMMIT:
		printf("committed=%llu\n", (unsigned long long)rep.v0);
		break;
	default:
		break;
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		zd_warn("stdout");
		return ZD_EXIT_FAIL;
	}
	return ZD_EXIT_OK;
}
