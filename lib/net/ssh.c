/* SPDX-License-Identifier: MIT */
/*
 * ssh:[USER@]HOST[:PATH] — zd-send's connection to a zd-recv started on
 * the far side by ssh. ssh carries the stream on its stdin and the ACKs on
 * its stdout, encrypted and authenticated by ssh itself; the remote zd-recv
 * runs with --stdio. Remote errors reach our stderr through ssh's.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/util.h"
#include "net_int.h"

int zd_net_ssh_split(const char *spec, char *userhost, size_t uhlen, char *path, size_t plen,
		     char *msg, size_t msglen)
{
	const char *h = spec + strlen(ZD_SSH_PREFIX), *colon;

	if (strncmp(spec, ZD_SSH_PREFIX, strlen(ZD_SSH_PREFIX))) {
		snprintf(msg, msglen, "%s: not an ssh: destination", spec);
		return -1;
	}
	/* [USER@][V6]:PATH keeps the brackets for ssh to strip */
	const char *at = strchr(h, '@'), *host = at ? at + 1 : h;
	if (*host == '[') {
		const char *close = strchr(host, ']');
		if (!close) {
			snprintf(msg, msglen, "%s: bad host (want [V6])", spec);
			return -1;
		}
		colon = close[1] == ':' ? close + 1 : NULL;
		if (!colon && close[1]) {
			snprintf(msg, msglen, "%s: bad destination (want ssh:[USER@]HOST[:PATH])", spec);
			return -1;
		}
	} else {
		colon = strchr(host, ':');
	}
	size_t n = colon ? (size_t)(colon - h) : strlen(h);
	if (!n || host == (colon ? colon : h + n) || (at && at == h)) {
		snprintf(msg, msglen, "%s: no host (want ssh:[USER@]HOST[:PATH])", spec);
		return -1;
	}
	if (colon && !colon[1]) {
		snprintf(msg, msglen, "%s: empty PATH (want ssh:[USER@]HOST[:PATH])", spec);
		return -1;
	}
	if (n >= uhlen || (colon && strlen(colon + 1) >= plen)) {
		snprintf(msg, msglen, "%s: destination too long", spec);
		return -1;
	}
	memcpy(userhost, h, n);
	userhost[n] = '\0';
	snprintf(path, plen, "%s", colon ? colon + 1 : ZD_SSH_DEFAULT_PATH);
	return 0;
}

/* Append one word for the remote shell: 'it'\''s'. false if it overflows. */
static bool quote(char *b, size_t cap, const char *s)
{
	size_t n = strlen(b);

	if (n + 2 >= cap)
		return false;
	b[n++] = ' ';
	b[n++] = '\'';
	for (; *s; s++) {
		if (n + 5 >= cap)
			return false;
		if (*s == '\'') {
			memcpy(b + n, "'\\''", 4);
			n += 4;
		} else {
			b[n++] = *s;
		}
	}
	if (n + 2 >= cap)
		return false;
	b[n++] = '\'';
	b[n] = '\0';
	return true;
}

int zd_net_ssh(const char *spec, const char *const *args, struct zd_conn *c, char *msg, size_t msglen)
{
	char uh[256], path[1024];
	const char *ssh = getenv("ZD_SSH"), *remote = getenv("ZD_REMOTE_RECV");
	char *sshw = NULL, *argv[64], cmd[8192];
	bool fits;
	int argc = 0, in[2] = { -1, -1 }, out[2] = { -1, -1 };
	pid_t pid;

	memset(c, 0, sizeof(*c));
	c->rfd = c->wfd = -1;
	if (zd_net_ssh_split(spec, uh, sizeof(uh), path, sizeof(path), msg, msglen) < 0)
		return -1;
	sshw = zd_xstrdup(ssh && *ssh ? ssh : "ssh");
	for (char *save = NULL, *w = strtok_r(sshw, " \t", &save); w && argc < 56;
	     w = strtok_r(NULL, " \t", &save))
		argv[argc++] = w;
	if (!argc) {
		free(sshw);
		snprintf(msg, msglen, "ZD_SSH: empty");
		return -1;
	}
	/* The remote shell runs this line: PATH and the arguments quoted,
	 * the program as given (it may carry its own options). */
	fits = (size_t)snprintf(cmd, sizeof(cmd), "exec %s --stdio --replica",
				remote && *remote ? remote : "zd-recv") < sizeof(cmd) &&
	       quote(cmd, sizeof(cmd), path);
	for (; fits && args && *args; args++)
		fits = quote(cmd, sizeof(cmd), *args);
	if (!fits) {
		free(sshw);
		snprintf(msg, msglen, "%s: remote command too long", spec);
		return -1;
	}
	argv[argc++] = "--";
	argv[argc++] = uh;
	argv[argc++] = cmd;
	argv[argc] = NULL;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		snprintf(msg, msglen, "%s: pipe: %s", spec, strerror(errno));
		goto fail;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(msg, msglen, "%s: fork: %s", spec, strerror(errno));
		goto fail;
	}
	if (pid == 0) {
		/* stdin from us, stdout to us, stderr shared: the far side's
		 * diagnostics are the user's to read */
		if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "%s: %s: %s\n", zd_progname, argv[0], strerror(errno));
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	c->wfd = in[1];
	c->rfd = out[0];
	c->owned = true;
	c->child = pid;
	snprintf(c->name, sizeof(c->name), "ssh %.120s", uh);
	free(sshw);
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	free(sshw);
	return -1;
}

void zd__conn_reap(struct zd_conn *c)
{
	int st;

	/* Its pipes are closed: ssh ends once the far side does. A far side
	 * that hangs gets 5 s, then SIGTERM. */
	for (int i = 0; i < 500; i++) {
		pid_t r = waitpid(c->child, &st, WNOHANG);
		if (r == c->child || (r < 0 && errno != EINTR))
			goto done;
		usleep(10000);
	}
	kill(c->child, SIGTERM);
	while (waitpid(c->child, &st, 0) < 0 && errno == EINTR)
		;
done:
	if (WIFEXITED(st) && WEXITSTATUS(st) == 255)
		zd_warnx("%s: ssh exited 255 (connection or authentication failed)", c->name);
	c->child = 0;
}
