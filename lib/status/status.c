/* SPDX-License-Identifier: MIT */
/*
 * The live status socket (zd/status.h). One thread accepts; each
 * connection gets the JSON object built under the lock, then is closed: a
 * client never holds the tool up, and there is no request to parse.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "zd/status.h"
#include "zd/util.h"

#define WINDOW_NS (60ull * 1000000000ull)
#define SERIES_MAX 8
#define SAMPLES_MAX 4096	/* per series: a minute at 15 ms epochs */
#define MARKS_MAX 8

struct series {
	char name[32];
	struct { uint64_t t; double v; } s[SAMPLES_MAX];
	size_t head, n;
};

struct zd_status {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd, stop[2];
	pthread_t thr;
	pthread_mutex_t lock;
	json_t *obj;
	struct { char name[32]; uint64_t t; } marks[MARKS_MAX];
	size_t nmarks;
	struct series ser[SERIES_MAX];
	size_t nser;
};

const char *zd_status_dir(char *buf, size_t len)
{
	const char *d = getenv("ZD_RUN_DIR");

	if (d && *d)
		snprintf(buf, len, "%s", d);
	else if (geteuid() == 0)
		snprintf(buf, len, "/run/zd");
	else if ((d = getenv("XDG_RUNTIME_DIR")) && *d)
		snprintf(buf, len, "%s/zd", d);
	else
		return NULL;
	return buf;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Under the lock: the answer to one query. */
static char *answer(struct zd_status *st)
{
	uint64_t now = zd_now_ns();
	json_t *o = json_deep_copy(st->obj);
	double *v = malloc(SAMPLES_MAX * sizeof(*v));
	char key[48], *text;

	for (size_t i = 0; i < st->nmarks; i++) {
		snprintf(key, sizeof(key), "%s_age_ms", st->marks[i].name);
		json_object_set_new(o, key, json_integer((json_int_t)((now - st->marks[i].t) / 1000000u)));
	}
	for (size_t i = 0; v && i < st->nser; i++) {
		struct series *s = &st->ser[i];
		size_t n = 0;

		for (size_t k = 0; k < s->n; k++) {
			size_t j = (s->head + SAMPLES_MAX - s->n + k) % SAMPLES_MAX;

			if (now - s->s[j].t <= WINDOW_NS)
				v[n++] = s->s[j].v;
		}
		qsort(v, n, sizeof(*v), cmp_double);
		json_object_set_new(o, s->name, json_pack("{s:f, s:f, s:I}",
			"p50", n ? v[(n - 1) / 2] : 0.0, "p99", n ? v[(size_t)ceil(0.99 * (double)n) - 1] : 0.0,
			"n", (json_int_t)n));
	}
	free(v);
	text = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return text;
}

static void *serve(void *arg)
{
	struct zd_status *st = arg;
	struct pollfd p[2] = { { .fd = st->lfd, .events = POLLIN }, { .fd = st->stop[0], .events = POLLIN } };

	for (;;) {
		int c;
		char *text;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		c = accept4(st->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (c < 0)
			continue;
		pthread_mutex_lock(&st->lock);
		text = answer(st);
		pthread_mutex_unlock(&st->lock);
		if (text) {
			size_t len = strlen(text);

			/* Non-blocking: a client that does not read loses its answer. */
			text[len] = '\n';
			(void)!write(c, text, len + 1);
			free(text);
		}
		close(c);
	}
	return NULL;
}

struct zd_status *zd_status_open(const char *tool)
{
	struct zd_status *st;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char dir[sizeof(a.sun_path) - 32];

	if (getenv("ZD_STATUS") && !strcmp(getenv("ZD_STATUS"), "0"))
		return NULL;
	if (!zd_status_dir(dir, sizeof(dir)))
		return NULL;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		zd_debug("status socket: mkdir %s: %s", dir, strerror(errno));
		return NULL;
	}
	st = zd_xcalloc(1, sizeof(*st));
	st->lfd = st->stop[0] = st->stop[1] = -1;
	snprintf(st->path, sizeof(st->path), "%s/%s.%d.sock", dir, tool, (int)getpid());
	memcpy(a.sun_path, st->path, sizeof(a.sun_path));
	unlink(st->path);
	st->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (st->lfd < 0 || bind(st->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    chmod(st->path, 0600) < 0 || listen(st->lfd, 8) < 0 || pipe2(st->stop, O_CLOEXEC) < 0) {
		zd_warnx("status socket %s: %s (no live status)", st->path, strerror(errno));
		if (st->lfd >= 0)
			close(st->lfd);
		unlink(st->path);
		free(st);
		return NULL;
	}
	pthread_mutex_init(&st->lock, NULL);
	st->obj = json_pack("{s:s, s:i}", "tool", tool, "pid", (int)getpid());
	if (pthread_create(&st->thr, NULL, serve, st)) {
		zd_warnx("status socket %s: no thread (no live status)", st->path);
		close(st->lfd);
		unlink(st->path);
		json_decref(st->obj);
		free(st);
		return NULL;
	}
	return st;
}

void zd_status_close(struct zd_status *st)
{
	if (!st)
		return;
	(void)!write(st->stop[1], "x", 1);
	pthread_join(st->thr, NULL);
	close(st->lfd);
	close(st->stop[0]);
	close(st->stop[1]);
	unlink(st->path);
	json_decref(st->obj);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

void zd_status_set(struct zd_status *st, const char *key, json_t *value)
{
	if (!st) {
		json_decref(value);
		return;
	}
	pthread_mutex_lock(&st->lock);
	json_object_set_new(st->obj, key, value);
	pthread_mutex_unlock(&st->lock);
}

void zd_status_mark(struct zd_status *st, const char *key)
{
	size_t i;

	if (!st)
		return;
	pthread_mutex_lock(&st->lock);
	for (i = 0; i < st->nmarks && strcmp(st->marks[i].name, key); i++)
		;
	if (i < MARKS_MAX) {
		if (i == st->nmarks) {
			st->nmarks++;
			snprintf(st->marks[i].name, sizeof(st->marks[i].name), "%s", key);
		}
		st->marks[i].t = zd_now_ns();
	}
	pthread_mutex_unlock(&st->lock);
}

void zd_status_sample(struct zd_status *st, const char *series, double value)
{
	size_t i;

	if (!st)
		return;
	pthread_mutex_lock(&st->lock);
	for (i = 0; i < st->nser && strcmp(st->ser[i].name, series); i++)
		;
	if (i < SERIES_MAX) {
		struct series *s = &st->ser[i];

		if (i == st->nser) {
			st->nser++;
			snprintf(s->name, sizeof(s->name), "%s", series);
		}
		s->s[s->head].t = zd_now_ns();
		s->s[s->head].v = value;
		s->head = (s->head + 1) % SAMPLES_MAX;
		if (s->n < SAMPLES_MAX)
			s->n++;
	}
	pthread_mutex_unlock(&st->lock);
}

/* --- the reading side --- */

static json_t *query(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	char buf[8192];
	size_t got = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	json_t *o = NULL;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0)
		return NULL;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		/* Nobody listens: its tool died, or became the restored VM
		 * (zd-recv execs the failover command). */
		if (errno == ECONNREFUSED)
			unlink(path);
	} else {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		while (got < sizeof(buf) - 1 && poll(&p, 1, 2000) > 0) {
			ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);

			if (n <= 0)
				break;
			got += (size_t)n;
		}
		buf[got] = '\0';
		o = json_loads(buf, 0, NULL);
	}
	close(fd);
	return o;
}

static void print_one(FILE *out, json_t *o)
{
	const char *k;
	json_t *v;

	fprintf(out, "%s (pid %lld)\n", json_string_value(json_object_get(o, "tool")),
		(long long)json_integer_value(json_object_get(o, "pid")));
	json_object_foreach(o, k, v) {
		char *s;

		if (!strcmp(k, "tool") || !strcmp(k, "pid"))
			continue;
		s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(6));
		fprintf(out, "  %-22s %s\n", k, s ? s : "?");
		free(s);
	}
}

int zd_status_query_all(FILE *out, int json)
{
	char dir[200], path[512];
	DIR *d;
	struct dirent *e;
	json_t *all = json_array();
	int n = 0;

	if (zd_status_dir(dir, sizeof(dir)) && (d = opendir(dir))) {
		while ((e = readdir(d))) {
			size_t l = strlen(e->d_name);
			json_t *o;

			if (l < 6 || strcmp(e->d_name + l - 5, ".sock"))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			/* A socket nobody answers on is a tool that died: not listed. */
			if ((o = query(path)))
				json_array_append_new(all, o);
		}
		closedir(d);
	}
	n = (int)json_array_size(all);
	if (json) {
		char *s = json_dumps(all, JSON_INDENT(2) | JSON_REAL_PRECISION(6));

		fprintf(out, "%s\n", s ? s : "[]");
		free(s);
	} else {
		size_t i;
		json_t *o;

		json_array_foreach(all, i, o)
			print_one(out, o);
		if (!n)
			fprintf(out, "no zd-recv or zd-track running here (%s)\n", dir[0] ? dir : "no run directory");
	}
	json_decref(all);
	return n;
}
