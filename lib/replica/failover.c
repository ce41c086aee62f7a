/* SPDX-License-Identifier: MIT */
/*
 * zd-recv's takeover: when the session that owns the replica is lost
 * (recv.c decides that; nothing else gets here), run the fence command,
 * and only if it succeeds within its time hand the process over to the
 * failover command (exec: a supervisor watching zd-recv now watches the
 * restored VM). Both run under /bin/sh with the replica described in the
 * environment:
 *
 *   ZD_REPLICA        the replica directory
 *   ZD_EPOCH          its last committed epoch (the state taken over)
 *   ZD_TARGET         the target spec of the HEADER that made it
 *   ZD_LAST_HEARD_NS  CLOCK_REALTIME ns of the last record from the primary
 *   ZD_LOST_NS        CLOCK_REALTIME ns when it was declared dead
 *   ZD_VM             the zd-vm beside the running zd-recv, else "zd-vm"
 *
 * Without a fence nothing stops a primary that is alive but unheard (a cut
 * link) from running on beside the restored VM: split brain. That is said
 * when it first applies and again in the takeover line.
 *
 * With a standby (--standby, lib/replica/standby.c) the takeover is the
 * same fence, then the standby started in this process (its memory is the
 * committed epoch already: no copy); zd-recv then exits 0, or
 * ZD_EXIT_STANDBY if the standby could not be started.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
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

/* The zd-vm installed or built with this zd-recv: bin/zd-recv run from a
 * build tree must not restore with another zd-vm, or with none. */
static void set_vm_env(void)
{
	char self[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - sizeof("zd-vm"));

	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/'))) {
			strcpy(slash + 1, "zd-vm");
			if (access(self, X_OK) == 0) {
				setenv("ZD_VM", self, 1);
				return;
			}
		}
	}
	setenv("ZD_VM", "zd-vm", 1);
}

void zd_failover_env(const struct zd_replica *rep, uint64_t lost_wall_ns)
{
	setenv("ZD_REPLICA", rep->dir, 1);
	set_env("ZD_EPOCH", rep->meta.epoch);
	setenv("ZD_TARGET", rep->meta.target, 1);
	set_env("ZD_LAST_HEARD_NS", rep->last_heard_wall_ns);
	set_env("ZD_LOST_NS", lost_wall_ns);
	set_vm_env();
}

/* Wait for pid up to timeout_ms (0: for ever). 0 with *st, or -1 timed out. */
static int wait_within(pid_t pid, unsigned timeout_ms, int *st)
{
	uint64_t deadline = zd_now_ns() + (uint64_t)timeout_ms * 1000000u;
	int pfd = timeout_ms ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;

	for (;;) {
		pid_t r = waitpid(pid, st, timeout_ms ? WNOHANG : 0);

		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			break;
		if (r == 0) {
			uint64_t now = zd_now_ns();

			if (now >= deadline) {
				if (pfd >= 0)
					close(pfd);
				return -1;
			}
			if (pfd >= 0) {
				struct pollfd p = { .fd = pfd, .events = POLLIN };

				poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
			} else {
				zd_sleep_ns(2000000);
			}
		}
	}
	if (pfd >= 0)
		close(pfd);
	return 0;
}

int zd_failover_fence(const char *cmd, unsigned timeout_ms, char *msg, size_t msglen)
{
	pid_t pid;
	int st = 0;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		snprintf(msg, msglen, "fence: fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* Its own group: a hung fence is killed with all it started. */
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);
	if (wait_within(pid, timeout_ms, &st) < 0) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL);
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		snprintf(msg, msglen, "fence command '%s' still running after %u ms (--fence-timeout): killed; no takeover",
			 cmd, timeout_ms);
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

#define DEFAULT_KVM_CMD "exec \"$ZD_VM\" --restore \"$ZD_REPLICA\""

const char *zd_takeover_cmd(const struct zd_takeover *t, const struct zd_replica *rep)
{
	if (t->cmd)
		return *t->cmd ? t->cmd : NULL;
	/* A zd-vm replica: the VM restarts from it. Others (synth, trace,
	 * xen) have no default. */
	if (strncmp(rep->meta.target, "kvm", 3))
		return NULL;
	return DEFAULT_KVM_CMD;
}

void zd_takeover_warn_unfenced(struct zd_takeover *t, const struct zd_replica *rep)
{
	if (t->warned || t->fence || (!t->standby && !zd_takeover_cmd(t, rep)))
		return;
	t->warned = true;
	zd_warnx("warning: no --fence: a takeover will not stop a primary that is alive but unheard "
		 "(split brain; see SPLIT BRAIN in zd-recv(1))");
}

bool zd_takeover_arm_timeout(const struct zd_replica *rep, void *arg)
{
	struct zd_takeover *t = arg;

	/* Called at the HEADER: the target, and so the default, is known. */
	zd_takeover_warn_unfenced(t, rep);
	return t->timeout_set || t->standby || zd_takeover_cmd(t, rep);
}

int zd_takeover_on_peer_lost(struct zd_replica *rep, void *arg)
{
	struct zd_takeover *t = arg;
	uint64_t now = zd_wall_ns();
	const char *cmd = zd_takeover_cmd(t, rep);
	char msg[600];

	if (!cmd && !t->standby)
		return ZD_EXIT_PEER;
	if (rep->meta.epoch == 0) {
		zd_warnx("primary lost before any epoch was committed: nothing to take over");
		return ZD_EXIT_PEER;
	}
	zd_failover_env(rep, now);
	zd_warnx("primary lost, last heard %.1f ms ago; taking over at epoch %" PRIu64 "%s",
		 rep->last_heard_wall_ns ? (double)(now - rep->last_heard_wall_ns) / 1e6 : -1.0, rep->meta.epoch,
		 t->fence ? "" : " without a fence");
	if (t->fence) {
		zd_warnx("fencing: %s", t->fence);
		if (zd_failover_fence(t->fence, t->fence_timeout_ms, msg, sizeof(msg)) < 0) {
			zd_warnx("%s", msg);
			return ZD_EXIT_FENCE;
		}
	}
	if (t->standby) {
		int rc = zd_standby_takeover(t->standby, rep, t->verify, now);

		if (rc)
			return rc;
		t->exec_cmd = NULL;
		t->go = true;
		return 0;
	}
	t->exec_cmd = cmd;
	t->go = true;
	return 0;
}

int zd_takeover_exec(const struct zd_takeover *t, char *msg, size_t msglen)
{
	if (!t->exec_cmd)
		return 0;	/* the standby runs: nothing to exec */
	zd_warnx("failover: %s", t->exec_cmd);
	fflush(NULL);
	/* zd-recv ignores SIGPIPE; the restored VM and its command must not
	 * inherit that. */
	signal(SIGPIPE, SIG_DFL);
	execl("/bin/sh", "sh", "-c", t->exec_cmd, (char *)NULL);
	snprintf(msg, msglen, "exec /bin/sh: %s", strerror(errno));
	return ZD_EXIT_FAIL;
}
