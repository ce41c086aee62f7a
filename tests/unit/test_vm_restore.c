/* SPDX-License-Identifier: MIT */
/*
 * zd-vm --restore's pieces that need no KVM: the STATE blob parser (every
 * truncation refused with a byte offset, unknown sections skipped, the
 * DEVICE section's appended field optional) and the answers a restored VM
 * owes resent requests, delivered to real sockets. The restore itself runs
 * on real KVM in tests/e2e/kvm_failover.sh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vm/vm_impl.h"
#include "zd/replica.h"
#include "zd/util.h"

struct blob {
	uint8_t b[16384];
	size_t len;
	uint32_t nsec;
};

static void sec(struct blob *b, uint32_t tag, const void *d, uint32_t len)
{
	memcpy(b->b + b->len, &tag, 4);
	memcpy(b->b + b->len + 4, &len, 4);
	memcpy(b->b + b->len + 8, d, len);
	b->len += 8 + ((len + 7u) & ~7u);
	b->nsec++;
}

static void finish(struct blob *b)
{
	uint32_t magic = 0x5356445a, total = (uint32_t)b->len;
	uint16_t ver = 1, z = 0;

	memcpy(b->b, &magic, 4);
	memcpy(b->b + 4, &ver, 2);
	memcpy(b->b + 6, &z, 2);
	memcpy(b->b + 8, &total, 4);
	memcpy(b->b + 12, &b->nsec, 4);
}

static void make_blob(struct blob *b, uint32_t devlen)
{
	struct kvm_regs regs = { .rip = 0x100123, .rsp = 0x2fff00 };
	struct kvm_sregs sregs = { .cr3 = 0x10000 };
	struct zd_vm_devstate dev = { .epoch = 9, .mem_bytes = 16 << 20, .mmio_gpa = 16 << 20,
				      .abi = ZDG_ABI_VERSION, .released_seq = 41 };
	uint8_t junk[5] = { 1, 2, 3, 4, 5 };

	memset(b, 0, sizeof(*b));
	b->len = 16;
	sec(b, 1, &regs, sizeof(regs));
	sec(b, 2, &sregs, sizeof(sregs));
	sec(b, 99, junk, sizeof(junk));		/* a newer writer's section */
	sec(b, 6, &dev, devlen);
	sec(b, 7, "127.0.0.1:7000", 14);
	sec(b, 8, "/run/zd/vm1.sock", 16);
	finish(b);
}

static void parse_ok(void **state)
{
	struct blob b;
	struct zd_vm_state_view v;
	char msg[256] = "";

	(void)state;
	make_blob(&b, sizeof(struct zd_vm_devstate));
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), 0);
	assert_int_equal(v.regs->rip, 0x100123);
	assert_int_equal(v.sregs->cr3, 0x10000);
	assert_null(v.xsave);
	assert_int_equal(v.dev.epoch, 9);
	assert_int_equal(v.dev.mem_bytes, 16 << 20);
	assert_true(v.have_released_seq);
	assert_int_equal(v.dev.released_seq, 41);
	assert_string_equal(v.serve, "127.0.0.1:7000");
	assert_string_equal(v.control, "/run/zd/vm1.sock");
}

/* A blob written before DEVICE had released_seq. */
static void parse_old_device(void **state)
{
	struct blob b;
	struct zd_vm_state_view v;
	char msg[256] = "";

	(void)state;
	make_blob(&b, ZD_VM_DEVSTATE_V1_LEN);
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), 0);
	assert_false(v.have_released_seq);
	assert_int_equal(v.dev.released_seq, 0);
	assert_int_equal(v.dev.abi, ZDG_ABI_VERSION);
}

/* Every cut of a good blob is refused, with the header's length or a
 * section's overrun named (ASan checks that no byte past the cut is read). */
static void parse_truncated(void **state)
{
	struct blob b;
	char msg[256];

	(void)state;
	make_blob(&b, sizeof(struct zd_vm_devstate));
	for (size_t cut = 0; cut < b.len; cut++) {
		struct zd_vm_state_view v;
		uint8_t *copy = malloc(cut ? cut : 1);
		uint32_t total = (uint32_t)cut;

		memcpy(copy, b.b, cut);
		msg[0] = 0;
		assert_int_equal(zd_vm_state_parse(copy, cut, &v, msg, sizeof(msg)), -1);
		assert_non_null(strstr(msg, "byte "));
		/* The header made to agree with the cut: the sections overrun. */
		if (cut >= 16) {
			memcpy(copy + 8, &total, 4);
			assert_int_equal(zd_vm_state_parse(copy, cut, &v, msg, sizeof(msg)), -1);
			assert_non_null(strstr(msg, "byte "));
		}
		free(copy);
	}
}

static void parse_bad(void **state)
{
	struct blob b;
	struct zd_vm_state_view v;
	char msg[256];
	struct kvm_regs regs = { 0 };
	struct zd_vm_devstate dev = { .mem_bytes = 8 << 20 };

	(void)state;
	make_blob(&b, sizeof(struct zd_vm_devstate));
	b.b[0] = 'X';
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "byte 0: magic"));

	make_blob(&b, sizeof(struct zd_vm_devstate));
	b.b[4] = 2;
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "byte 4: state version 2"));

	/* REGS of the wrong size */
	memset(&b, 0, sizeof(b));
	b.len = 16;
	sec(&b, 1, &regs, sizeof(regs) - 8);
	finish(&b);
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), -1);
	assert_string_equal(msg, "byte 16: section tag 1 has a bad length (136 bytes)");

	/* no SREGS */
	memset(&b, 0, sizeof(b));
	b.len = 16;
	sec(&b, 1, &regs, sizeof(regs));
	sec(&b, 6, &dev, sizeof(dev));
	finish(&b);
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "no SREGS (2) section"));

	/* a SERVE with a NUL in it */
	make_blob(&b, sizeof(struct zd_vm_devstate));
	memset(&b, 0, sizeof(b));
	b.len = 16;
	sec(&b, 7, "a\0b", 3);
	finish(&b);
	assert_int_equal(zd_vm_state_parse(b.b, b.len, &v, msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "section tag 7 has a bad length"));
}

/* --- what a restored VM owes its clients --- */

struct fixture {
	struct zd_vm vm;
	int peer[2];		/* the clients' ends */
};

static struct zd_vm_replay *entry(struct zd_vm *vm, uint64_t seq, const char *text, bool orphan)
{
	struct zd_vm_replay *e = calloc(1, sizeof(*e)), **pp = &vm->replay;

	e->seq = seq;
	e->orphan = orphan;
	e->len = e->text_len = (uint32_t)strlen(text);
	memcpy(e->text, text, e->len);
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	return e;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->vm.cl = calloc(2, sizeof(*f->vm.cl));
	for (int i = 0; i < 2; i++) {
		int sp[2];

		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp), 0);
		f->vm.cl[i].fd = sp[0];
		f->vm.cl[i].id = (uint64_t)i + 1;
		f->peer[i] = sp[1];
	}
	f->vm.ncl = f->vm.capcl = 2;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	zd_vm_replay_free(&f->vm);
	for (int i = 0; i < 2; i++) {
		close(f->vm.cl[i].fd);
		close(f->peer[i]);
	}
	free(f->vm.cl);
	free(f);
	return 0;
}

/* What client i (1-based) has received so far. */
static const char *got(struct fixture *f, int client)
{
	static char buf[256];
	ssize_t n = read(f->peer[client - 1], buf, sizeof(buf) - 1);

	buf[n > 0 ? n : 0] = 0;
	return buf;
}

static bool claim(struct fixture *f, uint64_t client, const char *text)
{
	return zd_vm_replay_claim(&f->vm, client, text, strlen(text));
}

/* Checkpoint: seq 6 answered (never released), "req 6" in flight. The
 * client resends both: seq 6 from the ring, then the re-executed answer. */
static void replay_answered_then_inflight(void **state)
{
	struct fixture *f = *state;

	entry(&f->vm, 6, "req 5", false);
	entry(&f->vm, 0, "req 6", true);
	f->vm.released_seq = 5;
	assert_true(claim(f, 1, "req 5"));
	assert_string_equal(got(f, 1), "seq 6\n");
	assert_int_equal(f->vm.released_seq, 6);
	assert_true(claim(f, 1, "req 6"));
	assert_string_equal(got(f, 1), "");		/* the guest has not answered */
	zd_vm_replay_orphan(&f->vm, 7);
	assert_string_equal(got(f, 1), "seq 7\n");
	assert_null(f->vm.replay);
	/* From here every request is new. */
	assert_false(claim(f, 1, "req 5"));
}

/* The guest answered the in-flight request before the client came back. */
static void replay_orphan_first(void **state)
{
	struct fixture *f = *state;

	entry(&f->vm, 0, "req 6", true);
	zd_vm_replay_orphan(&f->vm, 7);
	assert_string_equal(got(f, 2), "");
	assert_true(claim(f, 2, "req 6"));
	assert_string_equal(got(f, 2), "seq 7\n");
	assert_null(f->vm.replay);
}

/* The client had seq 6 (released after the checkpoint): it resends only
 * "req 6", and the older entry goes. */
static void replay_skips_received(void **state)
{
	struct fixture *f = *state;

	entry(&f->vm, 6, "req 5", false);
	entry(&f->vm, 7, "req 6", false);
	assert_true(claim(f, 1, "req 6"));
	assert_string_equal(got(f, 1), "seq 7\n");
	assert_null(f->vm.replay);
}

/* A new request closes the window, but a claimed in-flight answer still
 * reaches its client; an unclaimed one is dropped. */
static void replay_window_closes(void **state)
{
	struct fixture *f = *state;

	entry(&f->vm, 0, "req 6", true);
	assert_true(claim(f, 1, "req 6"));
	assert_false(claim(f, 1, "req 7"));
	assert_non_null(f->vm.replay);
	zd_vm_replay_orphan(&f->vm, 7);
	assert_string_equal(got(f, 1), "seq 7\n");
	assert_null(f->vm.replay);

	entry(&f->vm, 9, "req 8", false);
	entry(&f->vm, 0, "req 9", true);
	assert_false(claim(f, 2, "hello"));
	assert_null(f->vm.replay);
	zd_vm_replay_orphan(&f->vm, 10);	/* nobody resent it */
	assert_string_equal(got(f, 2), "");
}

/* The ring keeps a 44-byte prefix and the length: both must match. */
static void replay_match_prefix(void **state)
{
	struct fixture *f = *state;
	static const char *line = "a request longer than forty-four bytes, yes it is";
	struct zd_vm_replay *e = entry(&f->vm, 3, line, false);

	e->text_len = 44;
	assert_false(claim(f, 1, "a request longer than forty-four bytes, yes it is!"));
	assert_null(f->vm.replay);
	entry(&f->vm, 3, line, false)->text_len = 44;
	assert_true(claim(f, 1, line));
	assert_string_equal(got(f, 1), "seq 3\n");
}

/* The replica's state.bin is read as itself: a symbolic link planted in
 * its place (zd-vm runs as root) is refused, not followed. */
static void restore_state_link_refused(void **state)
{
	struct zd_rec_header h = { .page_size = ZDG_PAGE, .page_count = 16, .start_ns = 1,
				   .target = "kvm:/run/zd/test.sock", .control = "" };
	struct zd_rec_state st = { .epoch = 1, .kind = 1, .len = 5, .data = (uint8_t *)"state" };
	struct zd_rec_pages p = { .epoch = 1, .enc = ZD_PENC_RAW };
	struct zd_rec_commit c = { .epoch = 1, .pages = 1 };
	struct zd_vm_config cfg = { 0 };
	struct zd_vm_restore *r = NULL;
	struct zd_replica *rep;
	char dir[64], path[96], target[96], msg[512];
	uint8_t page[ZDG_PAGE] = { 1 };
	FILE *fp;

	snprintf(dir, sizeof(dir), "/tmp/zd-test-restore.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(zd_replica_open(&rep, dir, msg, sizeof(msg)), 0);
	assert_int_equal(zd_replica_bind(rep, &h), 0);
	assert_int_equal(zd_replica_stage_begin(rep, 1), 0);
	zd_pageset_init(&p.set);
	zd_pageset_add_range(&p.set, 0, 1);
	p.data = page;
	p.data_len = sizeof(page);
	assert_int_equal(zd_replica_stage_dirty(rep, &p.set), 0);
	assert_int_equal(zd_replica_stage_pages(rep, &p), 0);
	assert_int_equal(zd_replica_stage_state(rep, &st), 0);
	assert_int_equal(zd_replica_commit(rep, &c, ZD_VERIFY_NEVER), 0);
	zd_replica_close(rep);
	zd_pageset_free(&p.set);

	snprintf(path, sizeof(path), "%s/state.bin", dir);
	snprintf(target, sizeof(target), "%s.target", dir);
	fp = fopen(target, "w");
	assert_non_null(fp);
	fputs("precious", fp);
	fclose(fp);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink(target, path), 0);
	cfg.restore_dir = dir;
	assert_int_equal(zd_vm_restore_prepare(&cfg, &r, msg, sizeof(msg)), ZD_EXIT_TARGET);
	assert_null(r);
	assert_non_null(strstr(msg, "state.bin: a symbolic link: refusing to follow it"));

	snprintf(msg, sizeof(msg), "rm -rf %s %s", dir, target);
	assert_int_equal(system(msg), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_ok),
		cmocka_unit_test(parse_old_device),
		cmocka_unit_test(parse_truncated),
		cmocka_unit_test(parse_bad),
		cmocka_unit_test_setup_teardown(replay_answered_then_inflight, setup, teardown),
		cmocka_unit_test_setup_teardown(replay_orphan_first, setup, teardown),
		cmocka_unit_test_setup_teardown(replay_skips_received, setup, teardown),
		cmocka_unit_test_setup_teardown(replay_window_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(replay_match_prefix, setup, teardown),
		cmocka_unit_test(restore_state_link_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
