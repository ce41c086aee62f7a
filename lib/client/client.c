/* SPDX-License-Identifier: MIT */
/*
 * zd-client's loop (zd/client.h). One thread, one connection, poll():
 *
 *   connect (retrying with --reconnect) → while answers are wanted:
 *     send the requests that are due (closed loop: while fewer than
 *     concurrency are outstanding; open loop: on the --rate schedule)
 *     → wait for an answer, the next send or the oldest request's timeout
 *     → match each answer line to the oldest outstanding request, check
 *     the sequence, log it
 *   → on a lost connection: give up (exit 5), or reconnect and send the
 *     unanswered requests again.
 *
 * Times are CLOCK_MONOTONIC, the clock of zd-vm's --output-log, so both
 * logs of one host can be joined.
 *
 * A loss's failover time is what a user of the service waited: from the
 * last answer before the connection was lost to the first answer after
 * it, whatever happened between (refused attempts, connections accepted
 * and dropped, resent requests). The servers' own figures start later
 * (when the backup noticed) and end earlier (when it wrote the answer).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zd/client.h"
#include "zd/net.h"
#include "zd/stat.h"
#include "zd/util.h"

/* Between connection attempts while nobody listens: a refused connect on
 * a LAN costs the server side next to nothing, and every step is time the
 * client adds to its failover after the restored VM is listening. */
#define RETRY_STEP_NS 2000000ull
/* One attempt's longest wait: a SYN to a host that is down goes
 * unanswered, and the kernel's own retries (1 s, 3 s, 7 s, ...) would
 * outlast the takeover of its address by far. */
#define CONNECT_WAIT_MS 1000u

struct req {
	uint64_t k;		/* the client's request number */
	uint64_t sent_ns;
};

struct client {
	const struct zd_client_opts *o;
	const volatile sig_atomic_t *stop;	/* set by the tool's SIGINT/SIGTERM */
	int fd;
	FILE *log;
	/* outstanding requests, FIFO (a ring) */
	struct req *q;
	size_t qcap, qhead, qlen;
	/* requests to send again after a reconnect, oldest first */
	uint64_t *resend;
	size_t nresend, capresend;
	uint64_t next_k;	/* next new request number */
	uint64_t next_due;	/* open loop: when the next request is due */
	uint64_t start_ns;
	char line[128];
	size_t linelen;
	bool line_long;
	/* the sequence */
	bool have_last, after_reconnect;
	uint64_t last_seq, first_seq;
	/* figures */
	double *delay;
	size_t ndelay, capdelay;
	uint64_t sent, reconnects, resent, gaps, contradictions;
	bool contradicted;
	/* failover: last_answer_ns is when the latest answer came; a loss
	 * opens a failover timed from it, the next answer closes it */
	uint64_t last_answer_ns;
	bool in_failover;
	uint64_t failover_from_ns, refused;
	double *failover;
	size_t nfailover, capfailover;
	/* connections the peer accepted and dropped before any answer */
	uint64_t conn_answers, resets;
};

static bool sending_done(const struct client *c, uint64_t now)
{
	const struct zd_client_opts *o = c->o;

	if (c->nresend)
		return false;
	if (o->duration_ns && now - c->start_ns >= o->duration_ns)
		return true;
	return o->requests && c->next_k > o->requests;
}

static bool run_done(const struct client *c, uint64_t now)
{
	if (c->o->requests && c->ndelay >= c->o->requests)
		return true;
	return sending_done(c, now) && c->qlen == 0;
}

static void q_push(struct client *c, uint64_t k, uint64_t now)
{
	if (c->qlen == c->qcap) {
		size_t ncap = c->qcap ? 2 * c->qcap : 64;
		struct req *nq = zd_xcalloc(ncap, sizeof(*nq));

		for (size_t i = 0; i < c->qlen; i++)
			nq[i] = c->q[(c->qhead + i) % c->qcap];
		free(c->q);
		c->q = nq;
		c->qcap = ncap;
		c->qhead = 0;
	}
	c->q[(c->qhead + c->qlen) % c->qcap] = (struct req){ .k = k, .sent_ns = now };
	c->qlen++;
}

static struct req q_pop(struct client *c)
{
	struct req r = c->q[c->qhead];

	c->qhead = (c->qhead + 1) % c->qcap;
	c->qlen--;
	return r;
}

static void contradiction(struct client *c, const char *what)
{
	/* The first one tells the story; later ones are counted. */
	if (!c->contradicted)
		zd_warnx("%s: answer %zu: %s", c->o->addr, c->ndelay + 1, what);
	c->contradicted = true;
	c->contradictions++;
}

/* Connect to o->addr; with --reconnect keep trying for retry_for. */
static int connect_peer(struct client *c, bool again)
{
	struct zd_conn conn;
	char msg[256];
	uint64_t t0 = zd_now_ns();
	int flags;

	for (;;) {
		uint64_t left = c->o->retry_for_ns - ZD_MIN(c->o->retry_for_ns, zd_now_ns() - t0);
		unsigned wait_ms = again ? (unsigned)ZD_MIN((left + 999999) / 1000000, CONNECT_WAIT_MS) : 0;

		if (zd_net_connect_within(c->o->addr, again ? ZD_MAX(wait_ms, 1u) : 0, &conn, msg,
					  sizeof(msg)) == 0)
			break;
		if (again)
			c->refused++;
		if (!(again && c->o->reconnect) || zd_now_ns() - t0 >= c->o->retry_for_ns ||
		    *c->stop) {
			if (again)
				zd_warnx("%s (reconnecting for %llu ms)", msg,
					 (unsigned long long)(c->o->retry_for_ns / 1000000));
			else
				zd_warnx("%s", msg);
			return -1;
		}
		zd_sleep_ns(RETRY_STEP_NS);
	}
	c->fd = conn.rfd;
	flags = fcntl(c->fd, F_GETFL);
	fcntl(c->fd, F_SETFL, flags | O_NONBLOCK);
	c->linelen = 0;
	c->line_long = false;
	c->conn_answers = 0;
	zd_debug("connected to %s", c->o->addr);
	return 0;
}

/* The connection is gone: give up, or connect again and queue the
 * unanswered requests to be sent first. by_peer: the peer closed or reset
 * it (not our --timeout). */
static int lost(struct client *c, const char *why, bool by_peer)
{
	close(c->fd);
	c->fd = -1;
	/* A server that accepts a connection and drops it before answering
	 * what was sent on it (a dying listener's backlog, a restored VM not
	 * ready) costs the client a round trip and hides the real outage. */
	if (by_peer && !c->conn_answers) {
		c->resets++;
		zd_debug("%s: the connection was dropped before any answer", c->o->addr);
	}
	if (!c->in_failover) {
		c->in_failover = true;
		c->failover_from_ns = c->last_answer_ns ? c->last_answer_ns : c->start_ns;
	}
	if (!c->o->reconnect) {
		zd_warnx("%s: %s after %zu answers", c->o->addr, why, c->ndelay);
		return -1;
	}
	zd_debug("%s: %s; reconnecting", c->o->addr, why);
	/* Unanswered requests go before any earlier resend still queued. */
	size_t n = c->qlen;

	if (c->nresend + n > c->capresend) {
		c->capresend = c->nresend + n + 64;
		c->resend = zd_xrealloc(c->resend, c->capresend * sizeof(*c->resend));
	}
	memmove(c->resend + n, c->resend, c->nresend * sizeof(*c->resend));
	for (size_t i = 0; i < n; i++)
		c->resend[i] = q_pop(c).k;
	c->nresend += n;
	return 0;
}

static void push(double **a, size_t *n, size_t *cap, double v)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 1024;
		*a = zd_xrealloc(*a, *cap * sizeof(**a));
	}
	(*a)[(*n)++] = v;
}

static bool parse_seq(const char *s, uint64_t *seq)
{
	if (strncmp(s, "seq ", 4) != 0 || s[4] < '0' || s[4] > '9')
		return false;
	return zd_parse_u64(s + 4, seq) == 0;
}

static int answer(struct client *c, uint64_t now)
{
	char what[96];
	uint64_t seq;
	struct req r;

	c->line[c->linelen] = 0;
	if (c->qlen == 0) {
		contradiction(c, "an answer with no request outstanding");
		return 0;
	}
	r = q_pop(c);
	if (c->line_long || !parse_seq(c->line, &seq)) {
		snprintf(what, sizeof(what), "not 'seq N': '%.40s'", c->line);
		contradiction(c, what);
		return 0;
	}
	if (!c->have_last) {
		c->first_seq = seq;
	} else if (seq <= c->last_seq) {
		snprintf(what, sizeof(what), "seq %llu after seq %llu: the sequence went back",
			 (unsigned long long)seq, (unsigned long long)c->last_seq);
		contradiction(c, what);
	} else if (c->after_reconnect) {
		c->gaps += seq - c->last_seq - 1;
	} else if (!c->o->shared && seq != c->last_seq + 1) {
		snprintf(what, sizeof(what), "seq %llu after seq %llu: %llu answers skipped",
			 (unsigned long long)seq, (unsigned long long)c->last_seq,
			 (unsigned long long)(seq - c->last_seq - 1));
		contradiction(c, what);
	}
	if (!c->have_last || seq > c->last_seq)
		c->last_seq = seq;
	c->have_last = true;
	c->after_reconnect = false;
	c->conn_answers++;
	c->last_answer_ns = now;
	push(&c->delay, &c->ndelay, &c->capdelay, (double)(now - r.sent_ns));
	if (c->in_failover) {
		uint64_t f = now - c->failover_from_ns;

		c->in_failover = false;
		push(&c->failover, &c->nfailover, &c->capfailover, (double)f);
		zd_debug("%s: answered again %.1f ms after the last answer before the loss "
			 "(seq %llu; %llu connection attempts failed, %llu connections dropped "
			 "unanswered so far)", c->o->addr, (double)f / 1e6, (unsigned long long)seq,
			 (unsigned long long)c->refused, (unsigned long long)c->resets);
		if (c->log && fprintf(c->log, "%llu %llu %llu %llu %llu\n", (unsigned long long)seq,
				      (unsigned long long)r.sent_ns, (unsigned long long)now,
				      (unsigned long long)(now - r.sent_ns), (unsigned long long)f) < 0)
			return -1;
		return 0;
	}
	if (c->log && fprintf(c->log, "%llu %llu %llu %llu\n", (unsigned long long)seq,
			      (unsigned long long)r.sent_ns, (unsigned long long)now,
			      (unsigned long long)(now - r.sent_ns)) < 0)
		return -1;
	return 0;
}

/* Read what the peer sent; 0 ok, 1 connection lost, -1 log write failed. */
static int receive(struct client *c)
{
	char buf[4096];
	ssize_t n = read(c->fd, buf, sizeof(buf));
	uint64_t now = zd_now_ns();

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0)
		return 1;
	for (ssize_t i = 0; i < n; i++) {
		if (buf[i] == '\n') {
			if (c->linelen && c->line[c->linelen - 1] == '\r')
				c->linelen--;
			if (answer(c, now) < 0)
				return -1;
			c->linelen = 0;
			c->line_long = false;
		} else if (c->linelen < sizeof(c->line) - 1) {
			c->line[c->linelen++] = buf[i];
		} else {
			c->line_long = true;
		}
	}
	return 0;
}

/* Send every request that is due; 0 ok, 1 connection lost. */
static int send_due(struct client *c, uint64_t now)
{
	const struct zd_client_opts *o = c->o;
	uint64_t period = o->rate > 0 ? (uint64_t)(1e9 / o->rate) : 0;

	while (!sending_done(c, now)) {
		char line[48];
		uint64_t k;
		int len;

		if (o->concurrency && c->qlen >= o->concurrency)
			break;
		if (period && now < c->next_due)
			break;
		k = c->nresend ? c->resend[0] : c->next_k;
		len = snprintf(line, sizeof(line), "req %llu\n", (unsigned long long)k);
		/* A request line is far below the socket buffer: a short or
		 * failed write means the peer is gone. */
		if (write(c->fd, line, (size_t)len) != len)
			return 1;
		if (c->nresend) {
			memmove(c->resend, c->resend + 1, --c->nresend * sizeof(*c->resend));
			c->resent++;
		} else {
			c->next_k++;
		}
		q_push(c, k, now);
		c->sent++;
		if (period)
			c->next_due += period;
	}
	return 0;
}

static void summary(struct client *c, uint64_t end)
{
	json_t *o = json_object(), *d = json_object();
	double mean = 0, min = 0;

	for (size_t i = 0; i < c->ndelay; i++) {
		mean += c->delay[i];
		if (i == 0 || c->delay[i] < min)
			min = c->delay[i];
	}
	if (c->ndelay)
		mean /= (double)c->ndelay;
	json_object_set_new(o, "count", json_integer((json_int_t)c->ndelay));
	json_object_set_new(o, "sent", json_integer((json_int_t)c->sent));
	if (c->have_last) {
		json_object_set_new(o, "first_seq", json_integer((json_int_t)c->first_seq));
		json_object_set_new(o, "last_seq", json_integer((json_int_t)c->last_seq));
	}
	json_object_set_new(d, "p50", json_integer((json_int_t)zd_stat_percentile(c->delay, c->ndelay, 50)));
	json_object_set_new(d, "p99", json_integer((json_int_t)zd_stat_percentile(c->delay, c->ndelay, 99)));
	json_object_set_new(d, "max", json_integer((json_int_t)(c->ndelay ? c->delay[c->ndelay - 1] : 0)));
	json_object_set_new(d, "min", json_integer((json_int_t)min));
	json_object_set_new(d, "mean", json_integer((json_int_t)(mean + 0.5)));
	json_object_set_new(o, "delay_ns", d);
	json_object_set_new(o, "errors", json_integer((json_int_t)c->contradictions));
	json_object_set_new(o, "reconnects", json_integer((json_int_t)c->reconnects));
	json_object_set_new(o, "resent", json_integer((json_int_t)c->resent));
	json_object_set_new(o, "gaps", json_integer((json_int_t)c->gaps));
	/* After the others: readers that know the first fields keep working. */
	json_object_set_new(o, "failovers", json_integer((json_int_t)c->nfailover));
	if (c->nfailover) {
		json_t *f = json_object();

		json_object_set_new(f, "p50", json_integer((json_int_t)zd_stat_percentile(c->failover, c->nfailover, 50)));
		json_object_set_new(f, "max", json_integer((json_int_t)c->failover[c->nfailover - 1]));
		json_object_set_new(f, "min", json_integer((json_int_t)c->failover[0]));
		json_object_set_new(o, "failover_ns", f);
	}
	json_object_set_new(o, "resets", json_integer((json_int_t)c->resets));
	json_object_set_new(o, "refused", json_integer((json_int_t)c->refused));
	json_object_set_new(o, "elapsed_ns", json_integer((json_int_t)(end - c->start_ns)));
	json_dumpf(o, stdout, JSON_PRESERVE_ORDER | JSON_COMPACT);
	fputc('\n', stdout);
	json_decref(o);
}

int zd_client_run(const struct zd_client_opts *o, const volatile sig_atomic_t *stop)
{
	struct client c = { .o = o, .stop = stop, .fd = -1, .next_k = 1 };
	int rc = ZD_EXIT_OK;
	bool connected = false;

	if (o->log_path) {
		c.log = fopen(o->log_path, "w");
		if (!c.log) {
			zd_warn("%s", o->log_path);
			return ZD_EXIT_FAIL;
		}
		/* A line per answer as it comes: the log is what the client
		 * saw, readable while it runs and whole if it is killed. */
		setvbuf(c.log, NULL, _IOLBF, 0);
	}
	if (connect_peer(&c, false) < 0) {
		rc = ZD_EXIT_PEER;
		goto out;
	}
	connected = true;
	c.start_ns = c.next_due = zd_now_ns();
	for (;;) {
		uint64_t now = zd_now_ns(), wake = UINT64_MAX;
		struct pollfd p;
		int r, t;

		if (run_done(&c, now) || *c.stop)
			break;
		r = send_due(&c, now);
		if (r == 0 && c.qlen && now - c.q[c.qhead].sent_ns >= o->timeout_ns) {
			char why[96];

			snprintf(why, sizeof(why), "no answer to request %llu in %llu ms",
				 (unsigned long long)c.q[c.qhead].k,
				 (unsigned long long)(o->timeout_ns / 1000000));
			if (lost(&c, why, false) < 0 || connect_peer(&c, true) < 0) {
				rc = ZD_EXIT_PEER;
				break;
			}
			c.reconnects++;
			c.after_reconnect = true;
			continue;
		}
		if (r == 1) {
			if (lost(&c, "connection lost", true) < 0 || connect_peer(&c, true) < 0) {
				rc = ZD_EXIT_PEER;
				break;
			}
			c.reconnects++;
			c.after_reconnect = true;
			continue;
		}
		if (c.qlen)
			wake = c.q[c.qhead].sent_ns + o->timeout_ns;
		if (o->rate > 0 && !sending_done(&c, now) &&
		    !(o->concurrency && c.qlen >= o->concurrency))
			wake = ZD_MIN(wake, c.next_due);
		if (o->duration_ns && !sending_done(&c, now))
			wake = ZD_MIN(wake, c.start_ns + o->duration_ns);
		t = wake == UINT64_MAX ? 1000 : wake <= now ? 0 : (int)ZD_MIN((wake - now + 999999) / 1000000, 1000);
		p = (struct pollfd){ .fd = c.fd, .events = POLLIN };
		r = poll(&p, 1, t);
		if (r < 0 && errno != EINTR) {
			zd_warn("poll");
			rc = ZD_EXIT_FAIL;
			break;
		}
		if (r <= 0)
			continue;
		r = receive(&c);
		if (r < 0) {
			zd_warn("%s", o->log_path);
			rc = ZD_EXIT_FAIL;
			break;
		}
		if (r == 1) {
			if (run_done(&c, zd_now_ns()))
				break;
			if (lost(&c, "connection closed by the peer", true) < 0 || connect_peer(&c, true) < 0) {
				rc = ZD_EXIT_PEER;
				break;
			}
			c.reconnects++;
			c.after_reconnect = true;
		}
	}
	/* A contradiction outweighs a lost peer: it is what the run is for. */
	if ((rc == ZD_EXIT_OK || rc == ZD_EXIT_PEER) && c.contradicted)
		rc = ZD_EXIT_DATA;	/* the first said on stderr, all counted in "errors" */
out:
	if (c.fd >= 0)
		close(c.fd);
	if (c.log && fclose(c.log) != 0 && rc == ZD_EXIT_OK) {
		zd_warn("%s", o->log_path);
		rc = ZD_EXIT_FAIL;
	}
	if (connected) {
		summary(&c, zd_now_ns());
		if (fflush(stdout) != 0 || ferror(stdout)) {
			zd_warn("stdout");
			if (rc == ZD_EXIT_OK)
				rc = ZD_EXIT_FAIL;
		}
	}
	free(c.q);
	free(c.resend);
	free(c.delay);
	free(c.failover);
	return rc;
}

int zd_client_main(struct zd_client_opts *o, const volatile sig_atomic_t *stop, char *msg, size_t msglen)
{
	const char *colon = strrchr(o->addr, ':');

	*msg = 0;
	if (o->retry_for_set && !o->reconnect)
		return zd_msg(ZD_EXIT_USAGE, msg, msglen, "--retry-for needs --reconnect");
	if (!colon || !colon[1])
		return zd_msg(ZD_EXIT_USAGE, msg, msglen, "'%s': want ADDR:PORT", o->addr);
	if (!o->requests_set && !o->duration_ns)
		o->requests = 100;
	if (!o->concurrency_set && o->rate == 0)
		o->concurrency = 1;
	return zd_client_run(o, stop);
}
