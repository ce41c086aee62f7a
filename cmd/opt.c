/* SPDX-License-Identifier: MIT */
/* The command layer every zd tool shares; see opt.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "opt.h"
#include "zd/util.h"

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
