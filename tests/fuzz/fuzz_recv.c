/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for zd-recv's record handling: zd_recv_session over a
 * connection, into a real replica directory, with its decoding of
 * compressed and XOR-delta PAGES against the replica and, on an
 * keyed link, the key handshake and the decrypting relay in front.
 *
 * Input: byte 0 is flags, the rest a binary zd-stream (preamble, records).
 *   bit 0  authenticated: a peer thread does the client side of the key
 *          handshake on a socketpair, then sends the stream
 *   bit 1  (authenticated) seal every unit properly, so the records
 *          behind the AEAD check are reached; else the stream goes as it
 *          is and its bytes are taken for frames
 * The harness sets each record's CRC32C right (a fuzzer cannot), so the
 * mutations reach the record decoders, the epoch state machine and the
 * page decoder rather than dying at the CRC; a length field beyond the
 * input leaves the record as it is.
 *
 * Beyond "no crash, no leak, no overrun": after the session the replica
 * reopens (a committed epoch is whole or absent), and a session that
 * failed on bad data did not move the committed epoch past what the
 * stream committed.
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zd/net.h"
#include "zd/replica.h"
#include "zd/stream.h"
#include "zd/util.h"
#include "zd/wire.h"

#define CHECK(cond)                                                                      \
	do {                                                                             \
		if (!(cond)) {                                                           \
			fprintf(stderr, "fuzz_recv: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                         \
		}                                                                        \
	} while (0)

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Recompute the CRC of every whole record. */
static void fix_crcs(uint8_t *s, size_t n)
{
	size_t off = ZD_PREAMBLE_LEN;

	while (off + ZD_RECHDR_LEN <= n) {
		uint32_t len = get32(s + off + 4);
		if (len > n - off - ZD_RECHDR_LEN)
			break;
		uint32_t crc = zd_crc32c(0, s + off, 8);
		crc = zd_crc32c(crc, s + off + ZD_RECHDR_LEN, len);
		for (int i = 0; i < 4; i++)
			s[off + 8 + i] = (uint8_t)(crc >> (8 * i));
		off += ZD_RECHDR_LEN + len;
	}
}

static struct zd_auth_key key;

struct peer {
	int fd;
	const uint8_t *s;
	size_t n;
	bool tag;
};

static void send_all(int fd, const void *p, size_t n)
{
	/* a refusing zd-recv closes: EPIPE is part of the game */
	while (n) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r <= 0)
			return;
		p = (const uint8_t *)p + r;
		n -= (size_t)r;
	}
}

/* zd-send's side: handshake, then the stream, sealed unit by unit or not. */
static void *peer_main(void *arg)
{
	struct peer *pe = arg;
	struct zd_auth a;
	char msg[256];

	if (zd_auth_handshake(&key, ZD_AUTH_CLIENT, pe->fd, pe->fd, 2000, &a, msg, sizeof(msg)))
		goto out;
	if (!pe->tag) {
		send_all(pe->fd, pe->s, pe->n);
		goto out;
	}
	size_t off = 0;
	while (off < pe->n) {
		size_t u = ZD_PREAMBLE_LEN;
		if (off) {
			if (pe->n - off < ZD_RECHDR_LEN)
				u = pe->n - off;
			else
				u = ZD_RECHDR_LEN + get32(pe->s + off + 4);
		}
		if (u > pe->n - off)
			u = pe->n - off;
		uint8_t *frame = malloc(ZD_AUTH_LEN + u + ZD_AUTH_TAG);
		memcpy(frame + ZD_AUTH_LEN, pe->s + off, u);
		send_all(pe->fd, frame, zd_auth_seal(&a, frame, u));
		free(frame);
		off += u;
	}
out:
	shutdown(pe->fd, SHUT_WR);
	/* drain zd-recv's answers until it closes, so it never blocks */
	char sink[4096];
	while (read(pe->fd, sink, sizeof(sink)) > 0)
		;
	close(pe->fd);
	return NULL;
}

static void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d) {
		while ((e = readdir(d))) {
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
				char p[512];
				snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
				unlink(p);
			}
		}
		closedir(d);
	}
	rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	char dir[] = "/tmp/zd-fuzz-recv.XXXXXX", msg[768];
	struct zd_recv_opts opts = { .verify = ZD_VERIFY_NEVER };
	struct zd_replica *rep = NULL;
	struct zd_conn conn;
	struct peer pe = { .fd = -1 };
	pthread_t tid;
	bool keyed, threaded = false;
	uint8_t *s;
	size_t n;
	int rc;

	if (!init) {
		if (zd_auth_key_from_bytes(&key, "fuzz_recv key, sixteen bytes+", 29, msg, sizeof(msg)) < 0)
			abort();
		init = true;
	}
	if (size < 1)
		return 0;
	keyed = data[0] & 1;
	n = size - 1;
	s = malloc(n ? n : 1);
	memcpy(s, data + 1, n);
	fix_crcs(s, n);
	CHECK(mkdtemp(dir));
	CHECK(zd_replica_open(&rep, dir, msg, sizeof(msg)) == 0);
	rep->sync = false;

	memset(&conn, 0, sizeof(conn));
	snprintf(conn.name, sizeof(conn.name), "fuzz");
	if (keyed) {
		int sv[2];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		pe = (struct peer){ .fd = sv[1], .s = s, .n = n, .tag = data[0] & 2 };
		CHECK(pthread_create(&tid, NULL, peer_main, &pe) == 0);
		threaded = true;
		conn.rfd = conn.wfd = sv[0];
		conn.owned = true;
		conn.sock = true;	/* shut down under the relay at close */
		opts.key = &key;
	} else {
		/* the stream from a file, the answers to nowhere */
		char path[64];
		snprintf(path, sizeof(path), "%s/in", dir);
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		CHECK(fd >= 0);
		CHECK(zd_write_full(fd, s, n) == 0);
		CHECK(lseek(fd, 0, SEEK_SET) == 0);
		unlink(path);
		conn.rfd = fd;
		conn.wfd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		conn.owned = true;
	}
	rc = zd_recv_session(rep, &conn, &opts, msg, sizeof(msg));
	CHECK(rc == 0 || rc == ZD_EXIT_DATA || rc == ZD_EXIT_PEER || rc == ZD_EXIT_FAIL ||
	      rc == ZD_EXIT_TARGET);
	CHECK(rc == 0 || msg[0]);
	CHECK(zd_replica_open_epoch(rep) == 0);	/* nothing left half staged */
	uint64_t epoch = rep->meta.epoch;
	zd_conn_close(&conn);
	if (threaded)
		pthread_join(tid, NULL);
	zd_replica_close(rep);
	rep = NULL;
	/* reopened, the replica is at the epoch the session left it */
	if (zd_replica_open(&rep, dir, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "fuzz_recv: reopen: %s\n", msg);
		abort();
	} else {
		CHECK(rep->meta.epoch == epoch);
		zd_replica_close(rep);
	}
	rm_dir(dir);
	free(s);
	return 0;
}
