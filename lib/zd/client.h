/* SPDX-License-Identifier: MIT */
/*
 * zd-client (lib/client/): a client of zd-vm's line service (--serve) that
 * measures each request's response delay and checks that the answers are
 * consistent with one guest that never lost state.
 *
 * One TCP connection; each request is the line "req K" (K = 1, 2, ... the
 * client's own request number), each answer must be "seq N". Answers come
 * back in request order on a connection (the guest serves its request
 * queue in order and output commit releases a prefix), so the i-th answer
 * belongs to the i-th outstanding request.
 *
 * The sequence rules (a breach is a contradiction, exit 3):
 *   - on one connection, N must be exactly the previous N + 1 (the client
 *     is the service's only client), or, with shared, greater than it;
 *   - the first answer after a reconnect must be greater than the last
 *     answer received before it; a gap is allowed there (requests whose
 *     answers were lost with the connection may have been executed and
 *     committed) and counted;
 *   - the first answer of the run may have any N >= 1.
 * A line that is not "seq N", or an answer with no request outstanding,
 * is a contradiction too.
 */
#ifndef ZD_CLIENT_H
#define ZD_CLIENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct zd_client_opts {
	const char *addr;		/* HOST:PORT */
	uint64_t requests;		/* answers wanted; 0: until duration_ns */
	uint64_t duration_ns;		/* stop sending after this; 0: no limit */
	double rate;			/* requests per second; 0: closed loop */
	uint64_t concurrency;		/* most requests outstanding; 0: no limit */
	uint64_t timeout_ns;		/* longest wait for one answer */
	bool reconnect;			/* on a lost connection, connect again */
	uint64_t retry_for_ns;		/* ... for at most this long each time */
	bool shared;			/* other clients use the service too */
	const char *log_path;		/* one line per answer, or NULL */
	/* given on the command line: unset, requests is 100 without a
	 * duration, concurrency 1 without a rate; retry_for needs reconnect */
	bool requests_set, concurrency_set, retry_for_set;
};

/* Run the client until done or *stop is set (the tool sets it from its
 * SIGINT/SIGTERM handler, installed without SA_RESTART so a wait returns);
 * prints the JSON summary on stdout and returns the exit code (0 ok, 1
 * runtime failure, 3 contradiction, 5 peer). */
int zd_client_run(const struct zd_client_opts *o, const volatile sig_atomic_t *stop);

/* zd-client as a whole: ZD_EXIT_USAGE with msg if the flags do not go
 * together or addr is not ADDR:PORT; else fill in the defaults above and
 * zd_client_run (msg empty). */
int zd_client_main(struct zd_client_opts *o, const volatile sig_atomic_t *stop, char *msg, size_t msglen);

#endif
