/* SPDX-License-Identifier: MIT */
/*
 * Pre-shared-key authentication of the zd-send <-> zd-recv link.
 *
 * Handshake, each way at once:  "ZDAUTH1\n" nonce[32]   then   proof[32]
 *   proof(role) = BLAKE2b-256 keyed with K over
 *                 "zd-auth-proof" role nonce_C nonce_S
 * (role 'C' = the connecting side, 'S' = the accepting side; the role byte
 * keeps a proof from being reflected back). Fresh nonces from both sides
 * make every proof single-use.
 * Session MAC keys, one per direction (sender's role):
 *   BLAKE2b-256 keyed with K over "zd-auth-mac" role nonce_C nonce_S
 * Every unit of the stream — the 8-byte preamble as unit 0, then record N
 * (12-byte header + body) as unit N — is followed by
 *   tag = BLAKE2b-256 keyed with the direction's key over u64le(N) unit
 * so the receiver, counting units itself, refuses a changed, reordered,
 * replayed or dropped one.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>

#include "zd/util.h"
#include "zd/wire.h"

#define HELLO "ZDAUTH1\n"
#define HELLO_LEN 8

static int fail(char *msg, size_t len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(char *msg, size_t len, int code, const char *fmt, ...)
{
	va_list ap;

	if (msg && len) {
		va_start(ap, fmt);
		vsnprintf(msg, len, fmt, ap);
		va_end(ap);
	}
	return code;
}

static void init_sodium(void)
{
	/* idempotent and thread-safe after the first call */
	if (sodium_init() < 0)
		zd_die(ZD_EXIT_FAIL, "libsodium: cannot initialise");
}

void zd_auth_key_from_bytes(struct zd_auth_key *key, const void *bytes, size_t n)
{
	init_sodium();
	crypto_generichash(key->k, sizeof(key->k), bytes, n, NULL, 0);
}

int zd_auth_key_load(struct zd_auth_key *key, const char *path, char *msg, size_t len)
{
	uint8_t buf[ZD_AUTH_KEY_FILE_MAX + 1];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return fail(msg, len, -1, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return fail(msg, len, -1, "%s: not a regular file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return fail(msg, len, -1, "%s: readable by others (chmod 600 it)", path);
	}
	ssize_t n = zd_read_full(fd, buf, sizeof(buf));
	int e = errno;
	close(fd);
	if (n < 0)
		return fail(msg, len, -1, "%s: %s", path, strerror(e));
	if (n > ZD_AUTH_KEY_FILE_MAX)
		return fail(msg, len, -1, "%s: longer than %d bytes", path, ZD_AUTH_KEY_FILE_MAX);
	if (n < ZD_AUTH_KEY_MIN)
		return fail(msg, len, -1, "%s: %zd bytes, a key needs at least %d", path, n,
			    ZD_AUTH_KEY_MIN);
	zd_auth_key_from_bytes(key, buf, (size_t)n);
	sodium_memzero(buf, sizeof(buf));
	return 0;
}

static void derive(uint8_t out[32], const struct zd_auth_key *key, const char *label,
		   uint8_t role, const uint8_t nc[ZD_AUTH_NONCE], const uint8_t ns[ZD_AUTH_NONCE])
{
	crypto_generichash_state h;

	crypto_generichash_init(&h, key->k, sizeof(key->k), 32);
	crypto_generichash_update(&h, (const uint8_t *)label, strlen(label));
	crypto_generichash_update(&h, &role, 1);
	crypto_generichash_update(&h, nc, ZD_AUTH_NONCE);
	crypto_generichash_update(&h, ns, ZD_AUTH_NONCE);
	crypto_generichash_final(&h, out, 32);
}

/* Read exactly n bytes within the deadline. 0, or an exit code. */
static int read_exact(int fd, uint8_t *buf, size_t n, uint64_t deadline, const char *what,
		      char *msg, size_t len)
{
	size_t got = 0;

	while (got < n) {
		if (deadline) {
			uint64_t now = zd_now_ns();
			int ms = now >= deadline ? 0 : (int)((deadline - now) / 1000000) + 1;
			struct pollfd p = { .fd = fd, .events = POLLIN };
			int r = poll(&p, 1, ms);
			if (r < 0 && errno == EINTR)
				continue;
			if (r == 0)
				return fail(msg, len, ZD_EXIT_PEER, "key handshake: no %s from the peer in time", what);
		}
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(msg, len, ZD_EXIT_PEER, "key handshake: %s", strerror(errno));
		if (r == 0)
			return fail(msg, len, ZD_EXIT_PEER, got || strcmp(what, "hello")
				    ? "peer closed during the key handshake (does it have the key?)"
				    : "peer closed at the key handshake (no --key there?)");
		got += (size_t)r;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	while (n) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == ENOTSOCK)
			r = write(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int zd_auth_handshake(const struct zd_auth_key *key, enum zd_auth_role role,
		      int rfd, int wfd, int timeout_ms, struct zd_auth *a,
		      char *msg, size_t len)
{
	uint8_t mine[HELLO_LEN + ZD_AUTH_NONCE], theirs[HELLO_LEN + ZD_AUTH_NONCE];
	uint8_t proof[32], want[32];
	uint8_t peer = role == ZD_AUTH_CLIENT ? ZD_AUTH_SERVER : ZD_AUTH_CLIENT;
	uint64_t deadline = timeout_ms > 0 ? zd_now_ns() + (uint64_t)timeout_ms * 1000000 : 0;
	int rc;

	init_sodium();
	memset(a, 0, sizeof(*a));
	memcpy(mine, HELLO, HELLO_LEN);
	randombytes_buf(mine + HELLO_LEN, ZD_AUTH_NONCE);
	if (write_all(wfd, mine, sizeof(mine)) < 0)
		return fail(msg, len, ZD_EXIT_PEER, "key handshake: %s", strerror(errno));
	if ((rc = read_exact(rfd, theirs, sizeof(theirs), deadline, "hello", msg, len)))
		return rc;
	if (memcmp(theirs, HELLO, HELLO_LEN))
		return fail(msg, len, ZD_EXIT_PEER,
			    "peer does not speak the key handshake (no --key there?)");
	if (!memcmp(theirs + HELLO_LEN, mine + HELLO_LEN, ZD_AUTH_NONCE))
		return fail(msg, len, ZD_EXIT_PEER, "key handshake: the peer echoed our nonce");
	const uint8_t *nc = role == ZD_AUTH_CLIENT ? mine + HELLO_LEN : theirs + HELLO_LEN;
	const uint8_t *ns = role == ZD_AUTH_CLIENT ? theirs + HELLO_LEN : mine + HELLO_LEN;

	derive(proof, key, "zd-auth-proof", (uint8_t)role, nc, ns);
	if (write_all(wfd, proof, sizeof(proof)) < 0)
		return fail(msg, len, ZD_EXIT_PEER, "key handshake: %s", strerror(errno));
	if ((rc = read_exact(rfd, proof, sizeof(proof), deadline, "proof", msg, len)))
		return rc;
	derive(want, key, "zd-auth-proof", peer, nc, ns);
	if (sodium_memcmp(proof, want, sizeof(want)) != 0)
		return fail(msg, len, ZD_EXIT_PEER, "peer does not know the key");
	derive(a->send_key, key, "zd-auth-mac", (uint8_t)role, nc, ns);
	derive(a->recv_key, key, "zd-auth-mac", peer, nc, ns);
	return 0;
}

static void tag_of(const uint8_t key[32], uint64_t seq, const void *rec, size_t len,
		   uint8_t tag[ZD_AUTH_TAG])
{
	crypto_generichash_state h;
	uint8_t s[8];

	for (int i = 0; i < 8; i++)
		s[i] = (uint8_t)(seq >> (8 * i));
	crypto_generichash_init(&h, key, 32, ZD_AUTH_TAG);
	crypto_generichash_update(&h, s, sizeof(s));
	crypto_generichash_update(&h, rec, len);
	crypto_generichash_final(&h, tag, ZD_AUTH_TAG);
}

void zd_auth_mac(struct zd_auth *a, const void *rec, size_t len, uint8_t tag[ZD_AUTH_TAG])
{
	tag_of(a->send_key, a->send_seq++, rec, len, tag);
}

int zd_auth_verify(struct zd_auth *a, const void *rec, size_t len,
		   const uint8_t tag[ZD_AUTH_TAG], char *msg, size_t msglen)
{
	uint8_t want[ZD_AUTH_TAG];

	tag_of(a->recv_key, a->recv_seq, rec, len, want);
	if (sodium_memcmp(want, tag, ZD_AUTH_TAG) != 0) {
		if (a->recv_seq == 0)
			return fail(msg, msglen, -1, "preamble: bad MAC");
		return fail(msg, msglen, -1, "record %llu: bad MAC", (unsigned long long)a->recv_seq);
	}
	a->recv_seq++;
	return 0;
}

/* ------------------------------------------------------------------ */
/* relays */

struct zd_auth_relay {
	struct zd_auth *a;
	enum zd_auth_dir dir;
	int in, out;		/* SIGN: pipe -> net; VERIFY: net -> pipe */
	int mine;		/* our end of the socketpair, closed at the end */
	pthread_t thread;
	int code;
	char err[256];
	uint8_t *buf;
	size_t cap;
};

/* Read n bytes; 1 done, 0 clean EOF before any byte, -1 error/short. */
static int get(int fd, uint8_t *buf, size_t n)
{
	ssize_t r = zd_read_full(fd, buf, n);
	if (r == 0)
		return 0;
	return r == (ssize_t)n ? 1 : -1;
}

/* One unit (preamble or record) into rl->buf; its length, 0 at a clean end,
 * or -1 with rl->err set. */
static ssize_t read_unit(struct zd_auth_relay *rl, uint64_t seq, bool with_tag)
{
	/* t: tag bytes to read; the buffer always has room for a tag, which
	 * the signing relay appends */
	size_t t = with_tag ? ZD_AUTH_TAG : 0, need;
	int r;

	if (rl->cap < ZD_RECHDR_LEN + ZD_AUTH_TAG) {
		rl->cap = 1 << 16;
		rl->buf = zd_xmalloc(rl->cap);
	}
	if (seq == 0) {
		if ((r = get(rl->in, rl->buf, ZD_PREAMBLE_LEN)) <= 0)
			goto short_read;
		if (rl->buf[0] == '{') {
			rl->code = ZD_EXIT_DATA;
			snprintf(rl->err, sizeof(rl->err), "authenticated streams are binary, not JSON");
			return -1;
		}
		need = ZD_PREAMBLE_LEN;
	} else {
		if ((r = get(rl->in, rl->buf, ZD_RECHDR_LEN)) <= 0)
			goto short_read;
		uint32_t body = (uint32_t)rl->buf[4] | (uint32_t)rl->buf[5] << 8 |
				(uint32_t)rl->buf[6] << 16 | (uint32_t)rl->buf[7] << 24;
		if (body > ZD_REC_MAX) {
			rl->code = ZD_EXIT_DATA;
			snprintf(rl->err, sizeof(rl->err), "record %llu: %u bytes, over the limit",
				 (unsigned long long)seq, body);
			return -1;
		}
		need = ZD_RECHDR_LEN + body;
	}
	if (rl->cap < need + ZD_AUTH_TAG) {
		uint8_t *nb = zd_xmalloc(need + ZD_AUTH_TAG);
		memcpy(nb, rl->buf, ZD_RECHDR_LEN);
		free(rl->buf);
		rl->buf = nb;
		rl->cap = need + ZD_AUTH_TAG;
	}
	size_t have = seq == 0 ? ZD_PREAMBLE_LEN : ZD_RECHDR_LEN;
	if (need + t > have && get(rl->in, rl->buf + have, need + t - have) != 1) {
		r = -1;
		goto short_read;
	}
	return (ssize_t)need;
short_read:
	if (r == 0)
		return 0;
	rl->code = rl->dir == ZD_AUTH_VERIFY ? ZD_EXIT_PEER : ZD_EXIT_DATA;
	snprintf(rl->err, sizeof(rl->err), "%s %llu: cut short",
		 seq ? "record" : "preamble", (unsigned long long)seq);
	return -1;
}

static void *relay_main(void *arg)
{
	struct zd_auth_relay *rl = arg;
	bool verify = rl->dir == ZD_AUTH_VERIFY;

	for (uint64_t seq = 0;; seq++) {
		ssize_t n = read_unit(rl, seq, verify);
		if (n <= 0)
			break;
		if (verify) {
			if (zd_auth_verify(rl->a, rl->buf, (size_t)n, rl->buf + n, rl->err,
					   sizeof(rl->err)) < 0) {
				rl->code = ZD_EXIT_DATA;
				break;
			}
		} else {
			zd_auth_mac(rl->a, rl->buf, (size_t)n, rl->buf + n);
			n += ZD_AUTH_TAG;
		}
		if (write_all(rl->out, rl->buf, (size_t)n) < 0) {
			rl->code = verify ? ZD_EXIT_FAIL : ZD_EXIT_PEER;
			snprintf(rl->err, sizeof(rl->err), "%s: %s", verify ? "relay" : "send",
				 strerror(errno));
			break;
		}
	}
	/* our end closes: the reader sees the end, the writer gets EPIPE */
	close(rl->mine);
	rl->mine = -1;
	return NULL;
}

int zd_auth_relay_start(struct zd_auth_relay **out, struct zd_auth *a, enum zd_auth_dir dir,
			int net_fd, int *fd, char *msg, size_t len)
{
	int sv[2];

	*out = NULL;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return fail(msg, len, ZD_EXIT_FAIL, "socketpair: %s", strerror(errno));
	struct zd_auth_relay *rl = zd_xcalloc(1, sizeof(*rl));
	rl->a = a;
	rl->dir = dir;
	rl->mine = sv[1];
	rl->in = dir == ZD_AUTH_SIGN ? sv[1] : net_fd;
	rl->out = dir == ZD_AUTH_SIGN ? net_fd : sv[1];
	if (pthread_create(&rl->thread, NULL, relay_main, rl)) {
		close(sv[0]);
		close(sv[1]);
		free(rl);
		return fail(msg, len, ZD_EXIT_FAIL, "cannot start the MAC relay thread");
	}
	*fd = sv[0];
	*out = rl;
	return 0;
}

const char *zd_auth_relay_error(struct zd_auth_relay *rl)
{
	return rl->code ? rl->err : NULL;
}

int zd_auth_relay_join(struct zd_auth_relay *rl, char *msg, size_t len)
{
	pthread_join(rl->thread, NULL);
	int code = rl->code;
	if (code && msg && len)
		snprintf(msg, len, "%s", rl->err);
	free(rl->buf);
	free(rl);
	return code;
}
