/* SPDX-License-Identifier: MIT */
/*
 * zd-recv's takeover (issue 5): when the primary is gone, run the fence
 * command, and only if it succeeds hand the process over to the failover
 * command (exec: a supervisor watching zd-recv now watches the restored
 * VM). Both run under /bin/sh with the replica described in the
 * environment:
 *
 *   ZD_REPLICA        the replica directory
 *   ZD_EPOCH          its last committed epoch (the state taken over)
 *   ZD_TARGET         the target spec of the HEADER that made it
 *   ZD_LAST_HEARD_NS  CLOCK_REALTIME ns of the last record from the primary
 *   ZD_LOST_NS        CLOCK_REALTIME ns when it was declared dead
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zd/replica.h"
#include "zd/util.h"

static void set_env(const char *k, uint64_t v)
{
	char b[32];

	snprintf(b, sizeof(b), "%" PRIu64, v);
	setenv(k, b, 1);
}

void zd_failover_env(const struct zd_replica *rep, uint64_t lost_wall_ns)
{
	setenv("ZD_REPLICA", rep->dir, 1);
	set_env("ZD_EPOCH", rep->meta.epoch);
	setenv("ZD_TARGET", rep->meta.target, 1);
	set_env("ZD_LAST_HEARD_NS", rep->last_heard_wall_ns);
	set_env("ZD_LOST_NS", lost_wall_ns);
}

int zd_failover_fence(const char *cmd, char *msg, size_t msglen)
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(msg, msglen, "fence: fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			snprintf(msg, msglen, "fence: wait: %s", strerror(errno));
			return -1;
		}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFEXITED(st))
		snprintf(msg, msglen, "fence command '%s' failed (exit %d): no takeover", cmd, WEXITSTATUS(st));
	else
		snprintf(msg, msglen, "fence command '%s' killed by signal %d: no takeover", cmd, WTERMSIG(st));
	return -1;
}
