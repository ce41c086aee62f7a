/* SPDX-License-Identifier: MIT */
/*
 * zd-vm --restore DIR: the backup takes over. DIR is a zd-recv replica
 * (lib/zd/replica.h): memory.img and state.bin of the last committed
 * epoch. The VM starts from them, not from the built-in guest's entry:
 *
 *   prepare  open the replica (its lock keeps a zd-recv off it meanwhile;
 *            opening completes a commit a crash interrupted), check that it
 *            is a committed replica of a zd-vm guest, parse state.bin, and
 *            take the RAM size, the service address (SERVE) and the control
 *            socket (CONTROL) from it where the command line gave none;
 *   apply    (the VM made with that RAM size) copy memory.img into guest
 *            RAM and check its recorded checksum, load the vCPU sections,
 *            then rebuild the device state from RAM and the DEVICE section.
 *
 * Everything is checked before anything is served: a bad replica ends
 * zd-vm with one line and no socket bound.
 *
 * What a client is owed. Output commit held every answer until the backup
 * had its epoch, so the replica is never behind what a client saw; it may
 * be ahead of it. The dead primary's held answers are gone, and two kinds
 * of request come back when the client resends (zd-client --reconnect
 * resends its unanswered requests, same text):
 *
 *   - one the checkpoint had answered (its "seq N" is in the guest's log
 *     ring, N above the last answer released before the checkpoint): the
 *     answer was produced but perhaps never released. Executing the resend
 *     again would skip N; the restored VM answers it from the ring, as the
 *     guest's TCP would retransmit in Remus;
 *   - the one in the mailbox unanswered at the checkpoint: the restored
 *     guest executes it again (that is output commit's promise) and its
 *     answer goes to the client that resends it.
 *
 * So a client that got seq 5 next sees seq 6, whatever the moment the
 * primary died. Resends are matched by their text, in order, until the
 * first request that is not one: from there on the window is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "vm/vm_impl.h"
#include "zd/replica.h"
#include "zd/stream.h"
#include "zd/util.h"

#define STATE_MAX (1u << 20)	/* a zd-vm blob is ~5 KiB */
#define STATE_KIND_KVM 1	/* zd_rec_state.kind of zd-vm */

struct zd_vm_restore {
	struct zd_replica *rep;
	uint8_t *blob;
	struct zd_vm_state_view v;
	char control[256];
	char serve[64];
	char disk[4096];	/* DIR/disk.img, the restored VM's disk */
	uint64_t wall_ns;
};

void zd_vm_restore_free(struct zd_vm_restore *r)
{
	if (!r)
		return;
	zd_replica_close(r->rep);
	free(r->blob);
	free(r);
}

static int read_state(struct zd_vm_restore *r, const char *dir, size_t *len, char *msg, size_t msglen)
{
	struct stat st;
	ssize_t n;
	int fd;

	/* Not followed if a link: the replica's own file or nothing. */
	if (zd_replica_open_file(r->rep, "state.bin", O_RDONLY, &fd)) {
		snprintf(msg, msglen, "%s", r->rep->err);
		return ZD_EXIT_TARGET;
	}
	if (fstat(fd, &st) < 0 || st.st_size > STATE_MAX) {
		snprintf(msg, msglen, "%s/state.bin: %s", dir,
			 st.st_size > STATE_MAX ? "larger than 1 MiB, not a zd-vm state" : strerror(errno));
		close(fd);
		return ZD_EXIT_DATA;
	}
	r->blob = zd_xmalloc((size_t)st.st_size + 1);
	n = zd_read_full(fd, r->blob, (size_t)st.st_size);
	close(fd);
	if (n != (ssize_t)st.st_size) {
		snprintf(msg, msglen, "%s/state.bin: %s", dir, n < 0 ? strerror(errno) : "short read");
		return ZD_EXIT_FAIL;
	}
	*len = (size_t)st.st_size;
	return 0;
}

int zd_vm_restore_prepare(struct zd_vm_config *cfg, struct zd_vm_restore **out,
			  char *msg, size_t msglen)
{
	const char *dir = cfg->restore_dir;
	struct zd_vm_restore *r = zd_xcalloc(1, sizeof(*r));
	const struct zd_replica_meta *m;
	struct stat st = { 0 };
	char why[256];
	size_t len = 0;
	int rc;

	*out = NULL;
	r->wall_ns = zd_wall_ns();
	/* zd_replica_open would make a missing directory a new replica. */
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(msg, msglen, "--restore %s: %s", dir,
			 S_ISDIR(st.st_mode) || !st.st_mode ? strerror(errno) : "not a directory");
		rc = ZD_EXIT_TARGET;
		goto fail;
	}
	rc = zd_replica_open(&r->rep, dir, msg, msglen);
	if (rc)
		goto fail;
	m = &r->rep->meta;
	rc = ZD_EXIT_TARGET;
	if (!r->rep->initialised) {
		snprintf(msg, msglen, "%s: not a zd replica (no meta.json)", dir);
		goto fail;
	}
	if (m->epoch == 0) {
		snprintf(msg, msglen, "%s: no epoch committed yet: nothing to restore", dir);
		goto fail;
	}
	if (strncmp(m->target, "kvm:", 4)) {
		snprintf(msg, msglen, "%s: a replica of '%s', not of a zd-vm guest (kvm:)", dir, m->target);
		goto fail;
	}
	if (m->state_kind != STATE_KIND_KVM || m->page_size != ZDG_PAGE) {
		snprintf(msg, msglen, "%s: state kind %u, %u-byte pages: not a zd-vm guest's replica",
			 dir, m->state_kind, m->page_size);
		goto fail;
	}
	if ((rc = read_state(r, dir, &len, msg, msglen)))
		goto fail;
	rc = ZD_EXIT_DATA;
	if (zd_vm_state_parse(r->blob, len, &r->v, why, sizeof(why)) < 0) {
		snprintf(msg, msglen, "%s/state.bin: %s", dir, why);
		goto fail;
	}
	if (r->v.dev.mem_bytes != m->page_count * m->page_size) {
		snprintf(msg, msglen, "%s/state.bin: DEVICE says %" PRIu64 " bytes of RAM, meta.json %" PRIu64,
			 dir, r->v.dev.mem_bytes, m->page_count * m->page_size);
		goto fail;
	}
	if (r->v.dev.abi != ZDG_ABI_VERSION) {
		snprintf(msg, msglen, "%s/state.bin: guest ABI %" PRIu64 ", this zd-vm runs %u", dir,
			 r->v.dev.abi, ZDG_ABI_VERSION);
		goto fail;
	}
	cfg->mem_bytes = r->v.dev.mem_bytes;
	if (zd_vm_check_config(cfg, why, sizeof(why)) < 0) {
		snprintf(msg, msglen, "%s/state.bin: %s", dir, why);
		goto fail;
	}
	/* The replica's disk is the VM's disk from here on, written in
	 * place (zd-vm(1) DISK). */
	if (m->disk_size) {
		snprintf(r->disk, sizeof(r->disk), "%s/disk.img", dir);
		cfg->disk_path = r->disk;
	}
	/* The command line wins; else where the primary was. */
	if (!cfg->serve && r->v.serve[0]) {
		snprintf(r->serve, sizeof(r->serve), "%s", r->v.serve);
		cfg->serve = r->serve;
	}
	if (!cfg->control_path) {
		if (!r->v.control[0]) {
			snprintf(msg, msglen, "%s: the replica records no control socket: give --control PATH", dir);
			rc = ZD_EXIT_USAGE;
			goto fail;
		}
		snprintf(r->control, sizeof(r->control), "%s", r->v.control);
		cfg->control_path = r->control;
	}
	*out = r;
	return 0;
fail:
	zd_vm_restore_free(r);
	return rc;
}

/* memory.img into guest RAM, data extents only (the image is sparse and the
 * memfd starts zeroed), hashed on the way. The copy goes through the
 * memfd's file, not its mapping: pages written through the mapping were
 * each faulted in and zeroed first, ~5 us a page under nested paging, and
 * hashing the RAM afterwards faulted in every hole as well; that was most
 * of a restored VM's start (40 ms for 32 MiB) and grew with its size. */
static int load_memory(struct zd_vm *vm, struct zd_replica *rep, char *msg, size_t msglen)
{
	enum { CHUNK = 1 << 20 };
	off_t end = (off_t)vm->mem_bytes, pos = 0;
	uint8_t *buf = zd_xmalloc(CHUNK), *zero = zd_xcalloc(1, CHUNK);
	XXH3_state_t *h = rep->meta.have_memsum ? XXH3_createState() : NULL;
	int rc = 0;

	if (h)
		XXH3_64bits_reset(h);
	while (pos < end && !rc) {
		off_t data = lseek(rep->memfd, pos, SEEK_DATA), hole;

		if (data < 0 && errno == ENXIO)
			data = end;
		else if (data < 0)
			data = pos;	/* no SEEK_DATA here: read it all */
		hole = data < end ? lseek(rep->memfd, data, SEEK_HOLE) : end;
		if (hole < 0 || hole > end)
			hole = end;
		for (off_t z = pos; h && z < data; z += CHUNK)
			zd_hash64_update(h, zero, (size_t)ZD_MIN(data - z, (off_t)CHUNK));
		while (data < hole) {
			ssize_t n = pread(rep->memfd, buf, (size_t)ZD_MIN(hole - data, (off_t)CHUNK), data);

			if (n <= 0) {
				snprintf(msg, msglen, "%s/memory.img: byte %jd: %s", rep->dir, (intmax_t)data,
					 n < 0 ? strerror(errno) : "shorter than meta.json says");
				rc = ZD_EXIT_TARGET;
				break;
			}
			if (pwrite(vm->memfd, buf, (size_t)n, data) != n) {
				snprintf(msg, msglen, "guest RAM: byte %jd: %s", (intmax_t)data,
					 strerror(errno ? errno : ENOSPC));
				rc = ZD_EXIT_FAIL;
				break;
			}
			if (h)
				zd_hash64_update(h, buf, (size_t)n);
			data += n;
		}
		pos = hole;
	}
	if (!rc && h) {
		uint64_t sum = XXH3_64bits_digest(h);

		if (sum != rep->meta.memsum) {
			snprintf(msg, msglen, "%s/memory.img: checksum %#018" PRIx64 ", meta.json recorded %#018"
				 PRIx64 " for epoch %" PRIu64 ": the replica is damaged", rep->dir, sum,
				 rep->meta.memsum, rep->meta.epoch);
			rc = ZD_EXIT_TARGET;
		}
	}
	XXH3_freeState(h);
	free(buf);
	free(zero);
	return rc;
}

static struct zd_vm_replay *replay_add(struct zd_vm *vm, struct zd_vm_replay **tail)
{
	struct zd_vm_replay *e = zd_xcalloc(1, sizeof(*e));

	if (*tail)
		(*tail)->next = e;
	else
		vm->replay = e;
	*tail = e;
	return e;
}

/* The answers the checkpoint produced after the last one it had released,
 * from the guest's log ring; then the request in flight, if any. */
static void build_replay(struct zd_vm *vm, const struct zd_vm_devstate *dev, bool have_released_seq)
{
	const struct zdg_svc *svc = (const struct zdg_svc *)(vm->ram + ZDG_SVC_GPA);
	const struct zdg_ring_ent *ring = (const struct zdg_ring_ent *)(vm->ram + ZDG_RING_GPA);
	struct zdg_mbox *mb = (struct zdg_mbox *)(vm->ram + ZDG_MBOX_GPA);
	struct zd_vm_replay *tail = NULL;
	uint64_t counter = svc->counter, released;

	/* Without the field (an older blob), the held answers were the last
	 * answers - released ones the guest counted. */
	released = have_released_seq ? dev->released_seq :
		   counter - ZD_MIN(counter, dev->answers - ZD_MIN(dev->answers, dev->released));
	vm->released_seq = ZD_MIN(released, counter);
	for (uint64_t s = vm->released_seq + 1; s <= counter; s++) {
		uint64_t back = counter - s;
		const struct zdg_ring_ent *re;
		struct zd_vm_replay *e;

		if (back >= ZDG_RING_ENTRIES || svc->ring_head < back + 1)
			continue;
		re = &ring[(svc->ring_head - 1 - back) % ZDG_RING_ENTRIES];
		if (re->seq != s || re->len > ZDG_REQ_MAX)
			continue;
		e = replay_add(vm, &tail);
		e->seq = s;
		e->len = re->len;
		e->text_len = (uint32_t)ZD_MIN((size_t)re->len, sizeof(re->text));
		memcpy(e->text, re->text, e->text_len);
	}
	vm->mbox_seq = mb->req_seq;
	if (mb->req_seq != mb->ans_req) {
		struct zd_vm_req *rq = zd_xcalloc(1, sizeof(*rq));
		struct zd_vm_replay *e = replay_add(vm, &tail);

		/* The guest sees req_seq != ans_req and answers it as soon as
		 * it runs; the answer comes back for ZD_VM_CLIENT_ORPHAN. */
		rq->client = ZD_VM_CLIENT_ORPHAN;
		rq->len = (uint32_t)ZD_MIN(mb->req_len, (uint64_t)ZDG_REQ_MAX);
		memcpy(rq->text, (const char *)mb->req, rq->len);
		vm->inflight = rq;
		e->orphan = true;
		e->len = e->text_len = rq->len;
		memcpy(e->text, rq->text, rq->len);
	}
}

int zd_vm_restore_apply(struct zd_vm *vm, struct zd_vm_restore *r, char *msg, size_t msglen)
{
	const struct zd_vm_devstate *dev = &r->v.dev;
	uint64_t mmio = (vm->mem_bytes + (2ull << 20) - 1) & ~((2ull << 20) - 1);
	const char *e;
	int rc;
	size_t pending = 0;

	if ((rc = load_memory(vm, r->rep, msg, msglen)))
		return rc;
	if (dev->mmio_gpa != mmio) {
		snprintf(msg, msglen, "%s/state.bin: MMIO window at %#" PRIx64 ", this zd-vm puts it at %#" PRIx64,
			 r->rep->dir, dev->mmio_gpa, mmio);
		return ZD_EXIT_DATA;
	}
	vm->mmio_gpa = mmio;
	if ((rc = zd_vm_disk_restore_check(vm, msg, msglen)))
		return rc;
	if (zd_vm_state_load_vcpu(vm, &r->v, msg, msglen) < 0)
		return ZD_EXIT_TARGET;
	/* The guest keeps the TSC frequency it was started with (its
	 * parameter page); on another host its pacing drifts by the ratio. */
	if (((const struct zdg_params *)(vm->ram + ZDG_PARAM_GPA))->tsc_hz != vm->tsc_hz)
		zd_debug("restore: the guest paces with %llu Hz, this host's TSC runs at %llu Hz",
			 (unsigned long long)((const struct zdg_params *)(vm->ram + ZDG_PARAM_GPA))->tsc_hz,
			 (unsigned long long)vm->tsc_hz);
	build_replay(vm, dev, r->v.have_released_seq);
	for (struct zd_vm_replay *p = vm->replay; p; p = p->next)
		pending++;
	/* A new protection run: a tracker that attaches numbers its epochs
	 * from 1, and until it does there is no backup to wait for. */
	vm->restored = true;
	vm->unprotected = true;
	vm->guest_ready = true;
	vm->restored_epoch = r->rep->meta.epoch;
	vm->last_pause_epoch = 0;
	vm->committed = 0;
	vm->restore_wall_ns = r->wall_ns;
	if ((e = getenv("ZD_LAST_HEARD_NS")))
		zd_parse_u64(e, &vm->last_heard_wall_ns);
	if ((e = getenv("ZD_LOST_NS")))
		zd_parse_u64(e, &vm->lost_wall_ns);
	zd_warnx("restored %s at epoch %" PRIu64 " (%s, run %" PRIu64 "): %zu answer%s owed to resent requests%s",
		 r->rep->dir, r->rep->meta.epoch, r->rep->meta.mode, r->rep->meta.run, pending,
		 pending == 1 ? "" : "s", vm->inflight ? ", one request in flight" : "");
	/* The replica is ours no longer: a new zd-recv may take it. */
	zd_replica_close(r->rep);
	r->rep = NULL;
	return 0;
}

static void replay_drop(struct zd_vm *vm, struct zd_vm_replay *e)
{
	struct zd_vm_replay **pp = &vm->replay;

	while (*pp && *pp != e)
		pp = &(*pp)->next;
	if (*pp)
		*pp = e->next;
	free(e);
}

void zd_vm_replay_free(struct zd_vm *vm)
{
	while (vm->replay)
		replay_drop(vm, vm->replay);
}

static bool replay_match(const struct zd_vm_replay *e, const char *text, size_t len)
{
	return e->len == len && !memcmp(e->text, text, e->text_len);
}

static void replay_answer(struct zd_vm *vm, uint64_t client, uint64_t seq)
{
	zd_debug("restore: answered a resent request from the checkpoint: seq %llu",
		 (unsigned long long)seq);
	zd_vm_service_send(vm, client, seq);
	if (seq > vm->released_seq)
		vm->released_seq = seq;
}

bool zd_vm_replay_claim(struct zd_vm *vm, uint64_t client, const char *text, size_t len)
{
	struct zd_vm_replay *e;

	len = ZD_MIN(len, (size_t)ZDG_REQ_MAX);
	for (e = vm->replay; e; e = e->next)
		if (!e->claimant && replay_match(e, text, len))
			break;
	if (!e) {
		/* Not a resend: the client has every answer before it. Only
		 * a claimed in-flight request still waits for its answer. */
		for (struct zd_vm_replay *p = vm->replay, *nx; p; p = nx) {
			nx = p->next;
			if (!p->claimant)
				replay_drop(vm, p);
		}
		return false;
	}
	/* Unclaimed entries before it were answers the client had. */
	while (vm->replay != e && !vm->replay->claimant)
		replay_drop(vm, vm->replay);
	if (e->seq) {
		replay_answer(vm, client, e->seq);
		replay_drop(vm, e);
	} else {
		e->claimant = client;
	}
	return true;
}

void zd_vm_replay_orphan(struct zd_vm *vm, uint64_t seq)
{
	struct zd_vm_replay *e;

	for (e = vm->replay; e && !e->orphan; e = e->next)
		;
	if (!e) {
		zd_debug("restore: seq %llu answers the request in flight at the checkpoint, "
			 "which no client resent", (unsigned long long)seq);
		return;
	}
	if (e->claimant) {
		replay_answer(vm, e->claimant, seq);
		replay_drop(vm, e);
	} else {
		e->seq = seq;	/* for the client that resends it */
		e->orphan = false;
	}
}

void zd_vm_restore_first_answer(struct zd_vm *vm, uint64_t seq)
{
	uint64_t now = zd_wall_ns();

	vm->first_answer_done = true;
	if (vm->last_heard_wall_ns && vm->lost_wall_ns)
		zd_warnx("restored VM answered seq %llu: %.1f ms after the primary was last heard, "
			 "%.1f ms after it was declared lost, %.1f ms after zd-vm --restore began",
			 (unsigned long long)seq, (double)(int64_t)(now - vm->last_heard_wall_ns) / 1e6,
			 (double)(int64_t)(now - vm->lost_wall_ns) / 1e6,
			 (double)(int64_t)(now - vm->restore_wall_ns) / 1e6);
	else
		zd_warnx("restored VM answered seq %llu: %.1f ms after zd-vm --restore began",
			 (unsigned long long)seq, (double)(int64_t)(now - vm->restore_wall_ns) / 1e6);
}
