/* SPDX-License-Identifier: MIT */
/*
 * zd-vm's life: set the VM up (KVM, RAM, guest), open the service and the
 * control socket, start the vCPU, then serve events until STOP, a signal,
 * or the guest's death. With --restore the guest comes from a replica
 * instead (vm_restore.c) and the rest is the same. The control socket is bound last, so its
 * existence tells a waiting script that the VM is running; only the
 * service's listen() follows it, at once, so that no client connection is
 * taken by a zd-vm that could still fail to start (its exit would reset
 * it).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/util.h"

int zd_vm_parse_workload(const char *s, struct zd_vm_workload *wl, char *msg, size_t msglen)
{
	char *dup = zd_xstrdup(s), *save = NULL, *tok;
	int rc = 0;

	memset(wl, 0, sizeof(*wl));
	wl->hot = 0.8;
	for (tok = strtok_r(dup, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *k = tok, *v;

		if (!eq) {
			snprintf(msg, msglen, "'%s': want KEY=VALUE", tok);
			rc = -1;
			break;
		}
		*eq = 0;
		v = eq + 1;
		if (!strcmp(k, "dirty")) {
			if (zd_parse_u64(v, &wl->dirty_rate) < 0 || wl->dirty_rate > 100000000)
				rc = -1;
		} else if (!strcmp(k, "hot")) {
			if (zd_parse_double(v, &wl->hot) < 0 || !(wl->hot >= 0 && wl->hot <= 1))
				rc = -1;
		} else if (!strcmp(k, "span")) {
			if (zd_parse_size(v, &wl->span_bytes) < 0 || wl->span_bytes < ZDG_PAGE)
				rc = -1;
		} else if (!strcmp(k, "hotset")) {
			if (zd_parse_size(v, &wl->hotset_bytes) < 0 || wl->hotset_bytes < ZDG_PAGE)
				rc = -1;
		} else if (!strcmp(k, "seed")) {
			if (zd_parse_u64(v, &wl->seed) < 0)
				rc = -1;
		} else if (!strcmp(k, "disk")) {
			if (zd_parse_u64(v, &wl->disk_rate) < 0 || wl->disk_rate > 100000)
				rc = -1;
		} else {
			snprintf(msg, msglen, "'%s': unknown key (want dirty, hot, span, hotset, seed, disk)", k);
			rc = -1;
			break;
		}
		if (rc)
			snprintf(msg, msglen, "%s=%s: %s", k, v,
				 !strcmp(k, "hot") ? "want a fraction from 0 to 1" :
				 !strcmp(k, "dirty") ? "want pages per second, 0 to 100000000" :
				 !strcmp(k, "disk") ? "want block writes per second, 0 to 100000" :
				 !strcmp(k, "seed") ? "want a number" : "want a size of at least 4K");
	}
	free(dup);
	return rc;
}

int zd_vm_check_config(const struct zd_vm_config *cfg, char *msg, size_t msglen)
{
	uint64_t room = cfg->mem_bytes > ZDG_WORK_GPA ? cfg->mem_bytes - ZDG_WORK_GPA : 0;

	if (cfg->mem_bytes < ZDG_MIN_MEM || cfg->mem_bytes > ZD_VM_MAX_MEM ||
	    cfg->mem_bytes % (2ull << 20)) {
		snprintf(msg, msglen, "--mem %llu: want a multiple of 2M from 8M to 32G",
			 (unsigned long long)cfg->mem_bytes);
		return -1;
	}
	if (cfg->wl.span_bytes > room) {
		snprintf(msg, msglen, "--workload span=%llu: larger than the %llu bytes of RAM "
			 "above the guest's fixed 4 MiB", (unsigned long long)cfg->wl.span_bytes,
			 (unsigned long long)room);
		return -1;
	}
	if (cfg->wl.disk_rate && !cfg->disk_path) {
		snprintf(msg, msglen, "--workload disk=%llu needs --disk FILE",
			 (unsigned long long)cfg->wl.disk_rate);
		return -1;
	}
	if (cfg->wl.hotset_bytes > (cfg->wl.span_bytes ? cfg->wl.span_bytes : room)) {
		snprintf(msg, msglen, "--workload hotset=%llu: larger than the span",
			 (unsigned long long)cfg->wl.hotset_bytes);
		return -1;
	}
	return 0;
}

static struct zd_vm *vm_new(const struct zd_vm_config *cfg)
{
	struct zd_vm *vm = zd_xcalloc(1, sizeof(*vm));

	vm->cfg = *cfg;
	vm->mem_bytes = cfg->mem_bytes;
	vm->npages = cfg->mem_bytes / ZDG_PAGE;
	vm->kvm_fd = vm->vm_fd = vm->vcpu_fd = vm->memfd = vm->bmfd = -1;
	vm->evfd = vm->ctl_lfd = vm->svc_lfd = vm->uffd = -1;
	vm->disk_fd = vm->dlog_fd = vm->copy.fd = vm->pre.fd = vm->ctl_busy_fd = -1;
	pthread_mutex_init(&vm->mu, NULL);
	pthread_mutex_init(&vm->out_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	/* Idle waits are deadlines on CLOCK_MONOTONIC. */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cv, &ca);
	pthread_condattr_destroy(&ca);
	return vm;
}

static void vm_free(struct zd_vm *vm)
{
	zd_vm_stop_vcpu(vm);
	zd_vm_ctl_close(vm);
	zd_vm_service_close(vm);
	zd_vm_replay_free(vm);
	zd_vm_kvm_close(vm);
	zd_vm_disk_close(vm);
	if (vm->evfd >= 0)
		close(vm->evfd);
	pthread_mutex_destroy(&vm->mu);
	pthread_mutex_destroy(&vm->out_mu);
	pthread_cond_destroy(&vm->cv);
	free(vm);
}

static int serve(struct zd_vm *vm, int sigfd)
{
	struct pollfd pfds[256];

	for (;;) {
		int n = 0, nctl, nsvc;

		pfds[n++] = (struct pollfd){ .fd = sigfd, .events = POLLIN };
		pfds[n++] = (struct pollfd){ .fd = vm->evfd, .events = POLLIN };
		nctl = zd_vm_ctl_pollfds(vm, pfds + n, 32);
		n += nctl;
		nsvc = zd_vm_service_pollfds(vm, pfds + n, (int)ZD_ARRAY_SIZE(pfds) - n);
		n += nsvc;
		if (poll(pfds, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			zd_warn("poll");
			return ZD_EXIT_FAIL;
		}
		if (pfds[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				zd_debug("signal %u: stopping", si.ssi_signo);
			return ZD_EXIT_OK;
		}
		if (pfds[1].revents & POLLIN) {
			uint64_t cnt;
			bool dead;

			if (read(vm->evfd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
				zd_warn("eventfd");
			zd_vm_service_release(vm);
			pthread_mutex_lock(&vm->mu);
			dead = vm->dead;
			pthread_mutex_unlock(&vm->mu);
			if (dead) {
				zd_warnx("%s", vm->dead_msg);
				return ZD_EXIT_TARGET;
			}
		}
		if (zd_vm_ctl_events(vm, pfds + 2, nctl) == 1) {
			zd_debug("STOP from the control socket");
			return ZD_EXIT_OK;
		}
		zd_vm_service_events(vm, pfds + 2 + nctl, nsvc);
	}
}

int zd_vm_main(const struct zd_vm_config *cfg_in)
{
	struct zd_vm_config c = *cfg_in, *cfg = &c;
	struct zd_vm_restore *rs = NULL;
	struct zd_vm *vm;
	char msg[768] = "";
	sigset_t ss;
	int sigfd = -1, rc = ZD_EXIT_FAIL;

	/* A replica decides the VM's size and addresses: read and check it
	 * before anything exists. */
	if (cfg->restore_dir && (rc = zd_vm_restore_prepare(cfg, &rs, msg, sizeof(msg)))) {
		zd_warnx("%s", msg);
		return rc;
	}
	vm = vm_new(cfg);

	/* Blocked before any thread exists, so every thread inherits it and
	 * the signals reach only the signalfd. */
	sigemptyset(&ss);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigfd = signalfd(-1, &ss, SFD_CLOEXEC);
	vm->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sigfd < 0 || vm->evfd < 0) {
		zd_warn("signalfd/eventfd");
		goto out;
	}
	if (zd_vm_kvm_open(vm, msg, sizeof(msg)) < 0 || zd_vm_disk_open(vm, msg, sizeof(msg)) < 0 ||
	    (!rs && zd_vm_setup_guest(vm, msg, sizeof(msg)) < 0)) {
		zd_warnx("%s", msg);
		rc = ZD_EXIT_TARGET;
		goto out;
	}
	if (rs && (rc = zd_vm_restore_apply(vm, rs, msg, sizeof(msg)))) {
		zd_warnx("%s", msg);
		goto out;
	}
	rc = ZD_EXIT_FAIL;
	if (zd_vm_service_open(vm, msg, sizeof(msg)) < 0 ||
	    zd_vm_start(vm, msg, sizeof(msg)) < 0 ||
	    zd_vm_ctl_open(vm, msg, sizeof(msg)) < 0 ||
	    zd_vm_service_listen(vm, msg, sizeof(msg)) < 0) {
		zd_warnx("%s", msg);
		goto out;
	}
	zd_debug("running: %s, control %s%s%s", vm->pvm ? "kvm_pvm" : "hardware KVM",
		 cfg->control_path, vm->serve_addr[0] ? ", service " : "", vm->serve_addr);
	rc = serve(vm, sigfd);
out:
	if (sigfd >= 0)
		close(sigfd);
	vm_free(vm);
	zd_vm_restore_free(rs);
	return rc;
}
