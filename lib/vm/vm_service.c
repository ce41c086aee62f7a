/* SPDX-License-Identifier: MIT */
/*
 * The guest's service on --serve ADDR:PORT, and output commit.
 *
 * Each line a client sends is one request; the vCPU thread passes requests
 * to the guest one at a time through the mailbox, and the guest's answer
 * "seq N" comes back as an entry of the output queue tagged with the epoch
 * that produced it (1 + the epoch of the last PAUSE). An answer is
 * released to its client only when COMMIT has reached its epoch, i.e. the
 * backup holds a checkpoint that includes the state behind the answer
 * (Remus's output commit, in user space because our kernels lack
 * sch_plug). --no-output-commit releases at once.
 *
 * --output-log records every release: "SEQ EPOCH PRODUCED_NS RELEASED_NS
 * RELEASED_WALL_NS" (the first two CLOCK_MONOTONIC, the last
 * CLOCK_REALTIME), which the output-commit tests compare with the
 * backup's commit times.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

#define MAX_QUEUED 65536

static int split_addr(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *colon = strrchr(s, ':');
	size_t n;

	if (!colon || !colon[1])
		return -1;
	n = (size_t)(colon - s);
	if (n && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n >= hlen || strlen(colon + 1) >= plen)
		return -1;
	memcpy(host, s, n);
	host[n] = 0;
	strcpy(port, colon + 1);
	return 0;
}

int zd_vm_service_open(struct zd_vm *vm, char *msg, size_t msglen)
{
	struct addrinfo hints, *ai = NULL;
	char host[256], port[32];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, one = 1, r;

	vm->svc_lfd = -1;
	if (vm->cfg.output_log) {
		vm->out_log = fopen(vm->cfg.output_log, "w");
		if (!vm->out_log) {
			snprintf(msg, msglen, "%s: %s", vm->cfg.output_log, strerror(errno));
			return -1;
		}
		setvbuf(vm->out_log, NULL, _IOLBF, 0);
	}
	if (!vm->cfg.serve)
		return 0;
	if (split_addr(vm->cfg.serve, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(msg, msglen, "--serve %s: want ADDR:PORT", vm->cfg.serve);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (r) {
		snprintf(msg, msglen, "--serve %s: %s", vm->cfg.serve, gai_strerror(r));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	/* Bound now, so a taken address fails before anything starts;
	 * listening only in zd_vm_service_listen, when nothing can fail any
	 * more: a connection the kernel accepted for a zd-vm that then
	 * exits is reset, and a client took it for the VM's answer. */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		snprintf(msg, msglen, "--serve %s: %s", vm->cfg.serve, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	vm->svc_lfd = fd;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		char h[48], p[8];

		if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
				NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			snprintf(vm->serve_addr, sizeof(vm->serve_addr), "%s%s%s:%s",
				 strchr(h, ':') ? "[" : "", h, strchr(h, ':') ? "]" : "", p);
	}
	return 0;
}

int zd_vm_service_listen(struct zd_vm *vm, char *msg, size_t msglen)
{
	if (vm->svc_lfd < 0)
		return 0;
	if (listen(vm->svc_lfd, 64) < 0) {
		snprintf(msg, msglen, "--serve %s: %s", vm->cfg.serve, strerror(errno));
		return -1;
	}
	zd_debug("service on %s, output commit %s", vm->serve_addr,
		 vm->cfg.output_commit ? "on" : "off");
	return 0;
}

/* Keep the listening socket's descriptor above every client's. A killed
 * process's files are released last descriptor first (the kernel defers
 * each close to task work, a LIFO list): with the listener below its
 * clients, a client whose connection had just closed reconnected in the
 * microseconds before the listener went, the kernel completed the
 * handshake, and the connection was reset a moment later. Released first,
 * the listener refuses the reconnection instead, and the client's next
 * attempt reaches whoever takes the address over. */
static void listener_on_top(struct zd_vm *vm, int client_fd)
{
	int nfd;

	if (client_fd < vm->svc_lfd)
		return;
	nfd = fcntl(vm->svc_lfd, F_DUPFD_CLOEXEC, client_fd + 1);
	if (nfd < 0) {
		zd_debug("service: cannot move the listener above descriptor %d: %s", client_fd,
			 strerror(errno));
		return;
	}
	close(vm->svc_lfd);
	vm->svc_lfd = nfd;
}

static void drop_client(struct zd_vm *vm, size_t i)
{
	close(vm->cl[i].fd);
	vm->cl[i] = vm->cl[--vm->ncl];
}

void zd_vm_service_close(struct zd_vm *vm)
{
	while (vm->ncl)
		drop_client(vm, 0);
	free(vm->cl);
	vm->cl = NULL;
	if (vm->svc_lfd >= 0)
		close(vm->svc_lfd);
	vm->svc_lfd = -1;
	pthread_mutex_lock(&vm->out_mu);
	while (vm->out_head) {
		struct zd_vm_out *o = vm->out_head;

		vm->out_head = o->next;
		free(o);
	}
	vm->out_tail = NULL;
	pthread_mutex_unlock(&vm->out_mu);
	pthread_mutex_lock(&vm->mu);
	while (vm->rq_head) {
		struct zd_vm_req *r = vm->rq_head;

		vm->rq_head = r->next;
		free(r);
	}
	vm->rq_tail = NULL;
	free(vm->inflight);
	vm->inflight = NULL;
	pthread_mutex_unlock(&vm->mu);
	if (vm->out_log)
		fclose(vm->out_log);
	vm->out_log = NULL;
}

int zd_vm_service_pollfds(struct zd_vm *vm, struct pollfd *pfds, int max)
{
	int n = 0;

	if (vm->svc_lfd < 0)
		return 0;
	if (n < max)
		pfds[n++] = (struct pollfd){ .fd = vm->svc_lfd, .events = POLLIN };
	for (size_t i = 0; i < vm->ncl && n < max; i++)
		pfds[n++] = (struct pollfd){ .fd = vm->cl[i].fd,
					     .events = vm->rq_len < MAX_QUEUED ? POLLIN : 0 };
	return n;
}

static void queue_request(struct zd_vm *vm, uint64_t client, const char *text, size_t len)
{
	struct zd_vm_req *r;

	/* A restored VM first answers resent requests whose answers its
	 * checkpoint already holds (vm_restore.c). */
	if (vm->replay && zd_vm_replay_claim(vm, client, text, len)) {
		vm->n_requests++;
		return;
	}
	r = zd_xcalloc(1, sizeof(*r));

	r->client = client;
	r->len = (uint32_t)ZD_MIN(len, (size_t)ZDG_REQ_MAX);
	memcpy(r->text, text, r->len);
	pthread_mutex_lock(&vm->mu);
	if (vm->rq_tail)
		vm->rq_tail->next = r;
	else
		vm->rq_head = r;
	vm->rq_tail = r;
	vm->rq_len++;
	vm->wake = true;
	pthread_cond_broadcast(&vm->cv);
	pthread_mutex_unlock(&vm->mu);
	zd_vm_kick_for_request(vm);
	vm->n_requests++;
}

/* Returns false when the client is gone. */
static bool read_client(struct zd_vm *vm, struct zd_vm_client *c)
{
	char buf[4096];
	ssize_t n = read(c->fd, buf, sizeof(buf));

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return false;
	for (ssize_t i = 0; i < n; i++) {
		char ch = buf[i];

		if (ch == '\n') {
			if (c->len && c->buf[c->len - 1] == '\r')
				c->len--;
			queue_request(vm, c->id, c->buf, c->len);
			c->len = 0;
			c->overlong = false;
		} else if (c->len < ZDG_REQ_MAX) {
			c->buf[c->len++] = ch;
		} else {
			/* The guest sees the first ZDG_REQ_MAX bytes of a
			 * long line; the rest is dropped. */
			c->overlong = true;
		}
	}
	return true;
}

void zd_vm_service_events(struct zd_vm *vm, const struct pollfd *pfds, int n)
{
	int k = 0;
	size_t ncl = vm->ncl;

	if (vm->svc_lfd < 0 || n == 0)
		return;
	if (pfds[k++].revents & POLLIN) {
		int fd = accept4(vm->svc_lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd >= 0) {
			int one = 1;

			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			if (vm->ncl == vm->capcl) {
				vm->capcl = vm->capcl ? 2 * vm->capcl : 8;
				vm->cl = zd_xrealloc(vm->cl, vm->capcl * sizeof(*vm->cl));
			}
			memset(&vm->cl[vm->ncl], 0, sizeof(vm->cl[0]));
			vm->cl[vm->ncl].fd = fd;
			vm->cl[vm->ncl].id = ++vm->next_client;
			vm->ncl++;
			listener_on_top(vm, fd);
		}
	}
	/* Walk the clients that were polled, backwards so drop_client's
	 * swap-with-last never skips one. */
	for (size_t i = ZD_MIN(ncl, (size_t)(n - k)); i-- > 0;) {
		short re = pfds[k + i].revents;

		if ((re & (POLLIN | POLLHUP | POLLERR)) && !read_client(vm, &vm->cl[i]))
			drop_client(vm, i);
	}
}

void zd_vm_output_push(struct zd_vm *vm, uint64_t client, uint64_t seq)
{
	struct zd_vm_out *o = zd_xcalloc(1, sizeof(*o));

	o->client = client;
	o->seq = seq;
	o->epoch = __atomic_load_n(&vm->last_pause_epoch, __ATOMIC_ACQUIRE) + 1;
	o->produced_ns = zd_now_ns();
	pthread_mutex_lock(&vm->out_mu);
	if (vm->out_tail)
		vm->out_tail->next = o;
	else
		vm->out_head = o;
	vm->out_tail = o;
	pthread_mutex_unlock(&vm->out_mu);
}

void zd_vm_service_send(struct zd_vm *vm, uint64_t client, uint64_t seq)
{
	char line[64];
	int len = snprintf(line, sizeof(line), "seq %llu\n", (unsigned long long)seq);

	for (size_t i = 0; i < vm->ncl; i++) {
		if (vm->cl[i].id != client)
			continue;
		/* Answers are short; a client that does not read its socket
		 * until the kernel buffer is full loses it. */
		if (write(vm->cl[i].fd, line, (size_t)len) != len)
			zd_debug("client %llu: answer seq %llu not written: %s",
				 (unsigned long long)client, (unsigned long long)seq,
				 strerror(errno));
		else if (vm->restored && !vm->first_answer_done)
			zd_vm_restore_first_answer(vm, seq);
		break;
	}
}

static void deliver(struct zd_vm *vm, const struct zd_vm_out *o)
{
	uint64_t now = zd_now_ns(), wall = zd_wall_ns();

	if (o->client == ZD_VM_CLIENT_ORPHAN)
		zd_vm_replay_orphan(vm, o->seq);
	else
		zd_vm_service_send(vm, o->client, o->seq);
	vm->n_released++;
	if (o->seq > vm->released_seq)
		vm->released_seq = o->seq;
	if (vm->out_log)
		fprintf(vm->out_log, "%llu %llu %llu %llu %llu\n", (unsigned long long)o->seq,
			(unsigned long long)o->epoch, (unsigned long long)o->produced_ns,
			(unsigned long long)now, (unsigned long long)wall);
}

void zd_vm_service_release(struct zd_vm *vm)
{
	for (;;) {
		struct zd_vm_out *o;

		pthread_mutex_lock(&vm->out_mu);
		o = vm->out_head;
		/* Epochs in the queue never decrease: release the prefix.
		 * A restored VM that no tracker protects yet has no backup
		 * to wait for. */
		if (!o || (vm->cfg.output_commit && !vm->unprotected &&
			   o->epoch > vm->committed)) {
			pthread_mutex_unlock(&vm->out_mu);
			return;
		}
		vm->out_head = o->next;
		if (!vm->out_head)
			vm->out_tail = NULL;
		pthread_mutex_unlock(&vm->out_mu);
		deliver(vm, o);
		free(o);
	}
}

uint64_t zd_vm_service_held(struct zd_vm *vm)
{
	uint64_t n = 0;

	pthread_mutex_lock(&vm->out_mu);
	for (struct zd_vm_out *o = vm->out_head; o; o = o->next)
		n++;
	pthread_mutex_unlock(&vm->out_mu);
	return n;
}
