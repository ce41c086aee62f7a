/* SPDX-License-Identifier: MIT */
/* The command layer every zd tool shares; see opt.h. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "opt.h"
#include "zd/util.h"

void zd_die(int code, const char *fmt, ...)
{
	int e = errno;
	va_list ap;

	va_start(ap, fmt);
	zd_verror(e, fmt, ap);
	va_end(ap);
	exit(code);
}

void zd_diex(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	zd_verror(0, fmt, ap);
	va_end(ap);
	exit(code);
}

void zd_usage(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	zd_diex(ZD_EXIT_USAGE, "%s (try --help)", line);
}

static _Noreturn void done(void)
{
	if (fflush(stdout) == EOF || ferror(stdout))
		zd_die(ZD_EXIT_FAIL, "stdout");
	exit(0);
}

int zd_getopt(const struct zd_cmd *cmd, int argc, char *const argv[])
{
	const char *shortopts = cmd->shortopts;
	char opts[128];
	int c;

	/* ':' first: a missing value is told apart from an unknown option,
	 * and getopt prints nothing of its own. */
	if (*shortopts == '+')
		snprintf(opts, sizeof(opts), "+:%s", shortopts + 1);
	else
		snprintf(opts, sizeof(opts), ":%s", shortopts);
	opterr = 0;
	c = getopt_long(argc, argv, opts, cmd->longopts, NULL);
	switch (c) {
	case 'h':
		cmd->help();
		done();
	case 'V':
		printf("%s " ZD_VERSION "\n", zd_progname);
		if (cmd->version_note)
			cmd->version_note();
		done();
	case ':':
		zd_usage("option '%s' needs a value", argv[optind - 1]);
	case '?':
		if (optopt)
			zd_usage("unknown option '-%c'", optopt);
		zd_usage("unknown option '%s'", argv[optind - 1]);
	default:
		return c;
	}
}

const char *zd_cmd_operand(int argc, char *const argv[], const char *name)
{
	if (optind == argc)
		zd_usage("missing %s", name);
	if (argc - optind > 1)
		zd_usage("unexpected argument '%s'", argv[optind + 1]);
	return argv[optind];
}

void zd_cmd_no_operands(int argc, char *const argv[])
{
	if (optind < argc)
		zd_usage("unexpected argument '%s'", argv[optind]);
}

unsigned zd_opt_ms(const char *opt, const char *arg, unsigned max)
{
	uint64_t v;

	if (zd_parse_u64(arg, &v) < 0 || v > max)
		zd_usage("%s: '%s' is not a number of ms in 0..%u", opt, arg, max);
	return (unsigned)v;
}

uint64_t zd_opt_size(const char *opt, const char *arg)
{
	uint64_t v;

	if (zd_parse_size(arg, &v) < 0 || v > (1ull << 40))
		zd_usage("%s: '%s' is not a size up to 1T (e.g. 512M)", opt, arg);
	return v;
}

uint64_t zd_opt_count(const char *opt, const char *arg)
{
	uint64_t v;

	if (zd_parse_u64(arg, &v) < 0 || v == 0)
		zd_usage("%s '%s': want a whole number above 0", opt, arg);
	return v;
}

uint64_t zd_opt_duration_ns(const char *opt, const char *arg, bool zero_ok)
{
	uint64_t ns;

	if (zd_parse_duration_ns(arg, &ns) < 0 || (!zero_ok && ns == 0))
		zd_usage("%s '%s': want a duration%s", opt, arg, zero_ok ? "" : " above 0");
	return ns;
}

const char *zd_opt_name(const char *opt, const char *arg, const char *what)
{
	if (!*arg)
		zd_usage("%s: empty %s", opt, what);
	return arg;
}

int zd_cmd_exit(int rc, const char *msg)
{
	if (rc && msg && *msg) {
		if (rc == ZD_EXIT_USAGE)
			zd_usage("%s", msg);
		zd_warnx("%s", msg);
	}
	return rc;
}

volatile sig_atomic_t zd_cmd_stop;

static void on_stop(int sig)
{
	zd_cmd_stop = sig;
}

void zd_cmd_catch_stop(void)
{
	struct sigaction sa = { .sa_handler = on_stop };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static const int stop_sigs[2] = { SIGINT, SIGTERM };
static struct sigaction stop_old[2];

void zd_cmd_catch_stop_restart(sigset_t *caught)
{
	struct sigaction sa = { .sa_handler = on_stop, .sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	sigemptyset(caught);
	for (int i = 0; i < 2; i++) {
		sigaction(stop_sigs[i], NULL, &stop_old[i]);
		if (stop_old[i].sa_handler == SIG_IGN)
			continue;
		sigaction(stop_sigs[i], &sa, NULL);
		sigaddset(caught, stop_sigs[i]);
	}
}

void zd_cmd_uncatch_stop(void)
{
	for (int i = 0; i < 2; i++)
		sigaction(stop_sigs[i], &stop_old[i], NULL);
}
