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
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

struct zd_cmd {
	const char *shortopts;		/* getopt's, without the leading ':' */
	const struct option *longopts;	/* -h/--help and -V/--version among them */
	void (*help)(void);		/* the usage and what each flag does */
	void (*version_note)(void);	/* lines after "zd-TOOL VERSION", or NULL */
};

/* The end of every tool's option table: -v, -h, -V. */
#define ZD_CMD_COMMON_OPTS                              \
	{ "verbose", no_argument, NULL, 'v' },          \
	{ "help", no_argument, NULL, 'h' },             \
	{ "version", no_argument, NULL, 'V' },          \
	{ NULL, 0, NULL, 0 }

/* getopt_long over argv, where -h (help, exit 0) and -V (version, exit 0)
 * are answered here, and an unknown option or a missing value ends the
 * tool through zd_usage. Returns the next option, or -1 at the end of the
 * options (optind: the first operand). */
int zd_getopt(const struct zd_cmd *cmd, int argc, char *const argv[]);

/* err(3) and errx(3) of the tools: "zd-TOOL: <fmt...>[: strerror(errno)]"
 * on stderr, exit code. Here, not in libzd: the library never exits. */
_Noreturn void zd_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
_Noreturn void zd_diex(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "zd-TOOL: <fmt...> (try --help)" on stderr, exit 2. */
_Noreturn void zd_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* After the options (optind): the one operand, which name names in
 * "missing NAME"; or no operand at all. Anything else ends the tool
 * through zd_usage. */
const char *zd_cmd_operand(int argc, char *const argv[], const char *name);
void zd_cmd_no_operands(int argc, char *const argv[]);

/* A flag's value, checked: each ends the tool through zd_usage, naming
 * opt, when arg is not one. */
unsigned zd_opt_ms(const char *opt, const char *arg, unsigned max);	/* whole ms, 0..max */
uint64_t zd_opt_size(const char *opt, const char *arg);		/* bytes up to 1T: 512M, 2G */
uint64_t zd_opt_count(const char *opt, const char *arg);		/* a whole number >= 1 */
uint64_t zd_opt_duration_ns(const char *opt, const char *arg, bool zero_ok); /* 25, 25ms, 1s */
const char *zd_opt_name(const char *opt, const char *arg, const char *what); /* not "": a WHAT */

/* The end of a tool whose main() made its one call into libzd: rc is its
 * exit status and msg its reason. ZD_EXIT_USAGE with a msg ends through
 * zd_usage;
 * another rc prints "zd-TOOL: msg"; an empty msg, nothing (the library
 * said it already). Returns rc. */
int zd_cmd_exit(int rc, const char *msg);

/* SIGINT and SIGTERM set zd_cmd_stop (to the signal's number), without
 * SA_RESTART so that a wait returns and the run ends cleanly (a flag and no
 * work in the handler); SIGPIPE is ignored: a reader that went away is a
 * failed write. */
extern volatile sig_atomic_t zd_cmd_stop;
void zd_cmd_catch_stop(void);
/* zd-stat's: the same flag, but with SA_RESTART (a write to stdout goes on
 * after the signal; ppoll(2) is never restarted, so a wait for input still
 * ends), a signal ignored at the start (a shell's background job ignores
 * SIGINT) left ignored, and SIGPIPE as it was; *caught gets the signals
 * caught. zd_cmd_uncatch_stop puts back what was there before. */
void zd_cmd_catch_stop_restart(sigset_t *caught);
void zd_cmd_uncatch_stop(void);

#endif
