/* SPDX-License-Identifier: MIT */
/*
 * The command layer every zd tool shares (cmd/opt.c): flags read with
 * getopt_long, -h/--help and -V/--version answered the same way, and a bad
 * flag or argument reported in one line, "zd-TOOL: what is wrong (try
 * --help)", exit 2. A tool's main() is its flags, then one call into libzd.
 */
#ifndef ZD_CMD_OPT_H
#define ZD_CMD_OPT_H

#include <getopt.h>

struct zd_cmd {
	const char *shortopts;		/* getopt's, without the leading ':' */
	const struct option *longopts;	/* -h/--help and -V/--version among them */
	void (*help)(void);		/* the usage and what each flag does */
	void (*version_note)(void);	/* lines after "zd-TOOL VERSION", or NULL */
};

/* getopt_long over argv, where -h (help, exit 0) and -V (version, exit 0)
 * are answered here, and an unknown option or a missing value ends the
 * tool through zd_usage. Returns the next option, or -1 at the end of the
 * options (optind: the first operand). */
int zd_getopt(const struct zd_cmd *cmd, int argc, char *const argv[]);

/* "zd-TOOL: <fmt...> (try --help)" on stderr, exit 2. */
_Noreturn void zd_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
