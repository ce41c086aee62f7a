/* SPDX-License-Identifier: MIT */
/*
 * Pre-shared-key authentication and encryption of the zd-send <-> zd-recv
 * link (zd-stream(5) "KEYED LINK").
 *
 * Key. The key file's bytes are stretched once, at load time:
 *   K = Argon2id(bytes, salt = BLAKE2b-128("zd-key-v2"),
 *                ops ZD_AUTH_KDF_OPS, mem ZD_AUTH_KDF_MEM) -> 32 bytes
 * The salt is fixed (both ends must reach the same K with nothing
 * exchanged) and names the version, so a changed KDF is a new label. What
 * it buys: the handshake below lets an eavesdropper check a guessed key
 * offline, and with Argon2id each guess costs ~0.1 s and 64 MiB here, not
 * one BLAKE2b.
 *
 * Handshake, each way at once:
 *   hello = "ZDAUTH2\n" nonce[32] cipher[1]    then    proof[32]
 *   cipher: 'A' this end can do AES-256-GCM fast (AES-NI and PCLMUL:
 *           crypto_aead_aes256gcm_is_available), 'X' it cannot;
 *           AES-256-GCM when both said 'A', else XChaCha20-Poly1305-IETF.
 *   master = BLAKE2b-256 keyed with K over "zd-session-v2" hello_C hello_S
 *   crypto_kdf_derive_from_key(32, id, "zd-wire2", master):
 *     id 1: proof_C   id 2: proof_S   id 3: key C->S   id 4: key S->C
 * (C = the connecting side, zd-send; S = the accepting side.) Both hellos,
 * fresh nonces and the cipher offers included, go into every derived key:
 * a proof is single-use, cannot be reflected (C's and S's differ), and a
 * changed offer fails the proofs. A wrong key fails at the proof, before
 * any stream byte is sent.
 *
 * Units. The 8-byte preamble is unit 0, record N (12-byte header + body)
 * unit N. Each goes as
 *   len u32le | ciphertext[len] | tag[16]
 *   AEAD(key of the direction, nonce = u64le(N) zero-padded, AD = len)
 * The length stays in the clear so the receiver can frame a unit before
 * opening it; it is authenticated as the AD. The receiver counts units
 * itself, so a changed, reordered, replayed or dropped unit, or a changed
 * length, fails to open. Every session has its own keys (fresh nonces),
 * so the counter never repeats a nonce under one key.
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

#define HELLO "ZDAUTH2\n"
#define HELLO_LEN 8
#define HELLO_ALL (HELLO_LEN + ZD_AUTH_NONCE + 1)
#define KDF_CTX "zd-wire2"	/* crypto_kdf_CONTEXTBYTES: 8 */
#define LEN_BYTES 4		/* a unit's clear length */

_Static_assert(ZD_AUTH_TAG == crypto_aead_aes256gcm_ABYTES, "tag size");
_Static_assert(ZD_AUTH_TAG == crypto_aead_xchacha20poly1305_ietf_ABYTES, "tag size");
_Static_assert(sizeof(KDF_CTX) - 1 == crypto_kdf_CONTEXTBYTES, "kdf context");

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

static int init_sodium(char *msg, size_t len)
{
	/* idempotent and thread-safe after the first call */
	if (sodium_init() < 0)
		return fail(msg, len, -1, "libsodium: cannot initialise");
	return 0;
}

int zd_auth_key_from_bytes(struct zd_auth_key *key, const void *bytes, size_t n,
			   char *msg, size_t len)
{
	static const char label[] = "zd-key-v2";
	uint8_t salt[crypto_pwhash_SALTBYTES];

	if (init_sodium(msg, len) < 0)
		return -1;
	memset(key, 0, sizeof(*key));
	crypto_generichash(salt, sizeof(salt), (const uint8_t *)label, sizeof(label) - 1, NULL, 0);
	if (crypto_pwhash(key->k, sizeof(key->k), bytes, n, salt, ZD_AUTH_KDF_OPS,
			  ZD_AUTH_KDF_MEM, crypto_pwhash_ALG_ARGON2ID13) != 0)
		return fail(msg, len, -1, "cannot stretch the key (Argon2id, %u MiB): out of memory",
			    (unsigned)(ZD_AUTH_KDF_MEM >> 20));
	return 0;
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
	char why[128];
	int rc = zd_auth_key_from_bytes(key, buf, (size_t)n, why, sizeof(why));
	sodium_memzero(buf, sizeof(buf));
	if (rc < 0)
		return fail(msg, len, -1, "%s: %s", path, why);
	return 0;
}

/* Read exactly n bytes within the deadline. 0, or an exit code. */
static int read_exact(int fd, uint8_t *buf, size_t n, uint64_t deadline, const char *what,
		      bool first, char *msg, size_t len)
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
			return fail(msg, len, ZD_EXIT_PEER, got || !first
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
	uint8_t mine[HELLO_ALL], theirs[HELLO_ALL];
	uint8_t master[crypto_kdf_KEYBYTES], proof[32], want[32];
	uint64_t deadline = timeout_ms > 0 ? zd_now_ns() + (uint64_t)timeout_ms * 1000000 : 0;
	bool client = role == ZD_AUTH_CLIENT;
	int rc;

	memset(a, 0, sizeof(*a));
	if (init_sodium(msg, len) < 0)
		return ZD_EXIT_FAIL;
	memcpy(mine, HELLO, HELLO_LEN);
	randombytes_buf(mine + HELLO_LEN, ZD_AUTH_NONCE);
	mine[HELLO_ALL - 1] = !key->no_aes && crypto_aead_aes256gcm_is_available() ? 'A' : 'X';
	if (write_all(wfd, mine, sizeof(mine)) < 0)
		return fail(msg, len, ZD_EXIT_PEER, "key handshake: %s", strerror(errno));
	/* the version first: an older or keyless peer gets named, not waited for */
	if ((rc = read_exact(rfd, theirs, HELLO_LEN, deadline, "hello", true, msg, len)))
		return rc;
	if (memcmp(theirs, HELLO, HELLO_LEN)) {
		uint8_t v = theirs[HELLO_LEN - 2];
		if (!memcmp(theirs, HELLO, HELLO_LEN - 2) && v >= '0' && v <= '9' &&
		    theirs[HELLO_LEN - 1] == '\n')
			return fail(msg, len, ZD_EXIT_PEER,
				    "peer speaks key handshake version %c, this end %c (update zd on both ends)",
				    v, HELLO[HELLO_LEN - 2]);
		return fail(msg, len, ZD_EXIT_PEER,
			    "peer does not speak the key handshake (no --key there?)");
	}
	if ((rc = read_exact(rfd, theirs + HELLO_LEN, HELLO_ALL - HELLO_LEN, deadline, "hello",
			     false, msg, len)))
		return rc;
	if (!memcmp(theirs + HELLO_LEN, mine + HELLO_LEN, ZD_AUTH_NONCE))
		return fail(msg, len, ZD_EXIT_PEER, "key handshake: the peer echoed our nonce");
	uint8_t offer = theirs[HELLO_ALL - 1];
	if (offer != 'A' && offer != 'X')
		return fail(msg, len, ZD_EXIT_PEER, "key handshake: unknown cipher offer 0x%02x", offer);

	crypto_generichash_state h;
	static const char label[] = "zd-session-v2";
	crypto_generichash_init(&h, key->k, sizeof(key->k), sizeof(master));
	crypto_generichash_update(&h, (const uint8_t *)label, sizeof(label) - 1);
	crypto_generichash_update(&h, client ? mine : theirs, HELLO_ALL);
	crypto_generichash_update(&h, client ? theirs : mine, HELLO_ALL);
	crypto_generichash_final(&h, master, sizeof(master));

	crypto_kdf_derive_from_key(proof, sizeof(proof), client ? 1 : 2, KDF_CTX, master);
	if (write_all(wfd, proof, sizeof(proof)) < 0) {
		rc = fail(msg, len, ZD_EXIT_PEER, "key handshake: %s", strerror(errno));
		goto out;
	}
	if ((rc = read_exact(rfd, proof, sizeof(proof), deadline, "proof", false, msg, len)))
		goto out;
	crypto_kdf_derive_from_key(want, sizeof(want), client ? 2 : 1, KDF_CTX, master);
	if (sodium_memcmp(proof, want, sizeof(want)) != 0) {
		rc = fail(msg, len, ZD_EXIT_PEER, "peer does not know the key");
		goto out;
	}
	crypto_kdf_derive_from_key(a->send_key, sizeof(a->send_key), client ? 3 : 4, KDF_CTX, master);
	crypto_kdf_derive_from_key(a->recv_key, sizeof(a->recv_key), client ? 4 : 3, KDF_CTX, master);
	a->aes = mine[HELLO_ALL - 1] == 'A' && offer == 'A';
out:
	sodium_memzero(master, sizeof(master));
	return rc;
}

const char *zd_auth_cipher(const struct zd_auth *a)
{
	return a->aes ? "aes256gcm" : "xchacha20poly1305";
}

/* nonce = u64le(unit counter), zero-padded to the cipher's size */
static void nonce_of(uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES], uint64_t seq)
{
	memset(n, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	for (int i = 0; i < 8; i++)
		n[i] = (uint8_t)(seq >> (8 * i));
}

static void put_len(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_len(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

size_t zd_auth_seal(struct zd_auth *a, uint8_t *frame, size_t len)
{
	uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	uint8_t *m = frame + ZD_AUTH_LEN;

	put_len(frame, (uint32_t)len);
	nonce_of(n, a->send_seq++);
	if (a->aes)
		crypto_aead_aes256gcm_encrypt_detached(m, m + len, NULL, m, len, frame, ZD_AUTH_LEN,
						       NULL, n, a->send_key);
	else
		crypto_aead_xchacha20poly1305_ietf_encrypt_detached(m, m + len, NULL, m, len, frame,
								     ZD_AUTH_LEN, NULL, n, a->send_key);
	return ZD_AUTH_LEN + len + ZD_AUTH_TAG;
}

static int bad_unit(const struct zd_auth *a, char *msg, size_t msglen)
{
	if (a->recv_seq == 0)
		return fail(msg, msglen, -1, "preamble: bad MAC");
	return fail(msg, msglen, -1, "record %llu: bad MAC", (unsigned long long)a->recv_seq);
}

int zd_auth_open(struct zd_auth *a, uint8_t *frame, size_t flen, char *msg, size_t msglen)
{
	uint8_t n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	uint8_t *c = frame + ZD_AUTH_LEN;
	int r;

	if (flen < ZD_AUTH_LEN + ZD_AUTH_TAG || get_len(frame) != flen - ZD_AUTH_LEN - ZD_AUTH_TAG)
		return bad_unit(a, msg, msglen);
	size_t len = flen - ZD_AUTH_LEN - ZD_AUTH_TAG;
	nonce_of(n, a->recv_seq);
	if (a->aes)
		r = crypto_aead_aes256gcm_decrypt_detached(c, NULL, c, len, c + len, frame, ZD_AUTH_LEN,
							   n, a->recv_key);
	else
		r = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(c, NULL, c, len, c + len, frame,
									 ZD_AUTH_LEN, n, a->recv_key);
	if (r != 0)
		return bad_unit(a, msg, msglen);
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
	uint8_t *buf;		/* a frame: clear length, unit, tag; sealed and opened in place */
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

/* Room for a frame of a unit of len bytes, keeping the first keep bytes. */
static void room(struct zd_auth_relay *rl, size_t len, size_t keep)
{
	size_t need = ZD_AUTH_LEN + len + ZD_AUTH_TAG;

	if (rl->cap >= need)
		return;
	size_t cap = need < (1u << 16) ? 1u << 16 : need;
	uint8_t *nb = zd_xmalloc(cap);
	if (keep)
		memcpy(nb, rl->buf, keep);
	free(rl->buf);
	rl->buf = nb;
	rl->cap = cap;
}

static uint32_t body_len(const uint8_t *hdr)
{
	return get_len(hdr + 4);
}

/* SIGN: one clear unit (preamble or record) from the stream into rl->buf
 * after the length's room; its length, 0 at a clean end, or -1 with rl->err. */
static ssize_t read_clear(struct zd_auth_relay *rl, uint64_t seq)
{
	size_t head = seq == 0 ? ZD_PREAMBLE_LEN : ZD_RECHDR_LEN, len;
	int r;

	room(rl, ZD_RECHDR_LEN, 0);
	if ((r = get(rl->in, rl->buf + ZD_AUTH_LEN, head)) <= 0)
		goto short_read;
	if (seq == 0) {
		if (rl->buf[ZD_AUTH_LEN] == '{') {
			rl->code = ZD_EXIT_DATA;
			snprintf(rl->err, sizeof(rl->err), "authenticated streams are binary, not JSON");
			return -1;
		}
		return ZD_PREAMBLE_LEN;
	}
	uint32_t body = body_len(rl->buf + ZD_AUTH_LEN);
	if (body > ZD_REC_MAX) {
		rl->code = ZD_EXIT_DATA;
		snprintf(rl->err, sizeof(rl->err), "record %llu: %u bytes, over the limit",
			 (unsigned long long)seq, body);
		return -1;
	}
	len = ZD_RECHDR_LEN + body;
	room(rl, len, ZD_AUTH_LEN + ZD_RECHDR_LEN);
	if (body && get(rl->in, rl->buf + ZD_AUTH_LEN + ZD_RECHDR_LEN, body) != 1) {
		r = -1;
		goto short_read;
	}
	return (ssize_t)len;
short_read:
	if (r == 0)
		return 0;
	rl->code = ZD_EXIT_DATA;
	snprintf(rl->err, sizeof(rl->err), "%s %llu: cut short",
		 seq ? "record" : "preamble", (unsigned long long)seq);
	return -1;
}

/* VERIFY: one frame from the peer into rl->buf; its length, 0 at a clean
 * end, or -1 with rl->err. The clear length is checked against what the
 * unit may hold before anything is allocated for it. */
static ssize_t read_frame(struct zd_auth_relay *rl, uint64_t seq)
{
	int r;

	room(rl, ZD_RECHDR_LEN, 0);
	if ((r = get(rl->in, rl->buf, ZD_AUTH_LEN)) <= 0)
		goto short_read;
	uint32_t len = get_len(rl->buf);
	if (seq == 0 ? len != ZD_PREAMBLE_LEN : len < ZD_RECHDR_LEN || len - ZD_RECHDR_LEN > ZD_REC_MAX) {
		rl->code = ZD_EXIT_DATA;
		if (seq)
			snprintf(rl->err, sizeof(rl->err), "record %llu: bad MAC (a length of %u bytes)",
				 (unsigned long long)seq, len);
		else
			snprintf(rl->err, sizeof(rl->err), "preamble: bad MAC (a length of %u bytes)", len);
		return -1;
	}
	room(rl, len, ZD_AUTH_LEN);
	if (get(rl->in, rl->buf + ZD_AUTH_LEN, len + ZD_AUTH_TAG) != 1) {
		r = -1;
		goto short_read;
	}
	return (ssize_t)(ZD_AUTH_LEN + len + ZD_AUTH_TAG);
short_read:
	if (r == 0)
		return 0;
	rl->code = ZD_EXIT_PEER;
	snprintf(rl->err, sizeof(rl->err), "%s %llu: cut short", seq ? "record" : "preamble",
		 (unsigned long long)seq);
	return -1;
}

static void *relay_main(void *arg)
{
	struct zd_auth_relay *rl = arg;
	bool verify = rl->dir == ZD_AUTH_VERIFY;

	for (uint64_t seq = 0;; seq++) {
		ssize_t n = verify ? read_frame(rl, seq) : read_clear(rl, seq);
		const uint8_t *p = rl->buf;
		if (n <= 0)
			break;
		if (verify) {
			if (zd_auth_open(rl->a, rl->buf, (size_t)n, rl->err, sizeof(rl->err)) < 0) {
				rl->code = ZD_EXIT_DATA;
				break;
			}
			p += ZD_AUTH_LEN;
			n -= ZD_AUTH_LEN + ZD_AUTH_TAG;
			/* sealed by a peer with the key: a record whose header
			 * disagrees with its frame is that peer's bug, still refused */
			if (seq && body_len(p) != (size_t)n - ZD_RECHDR_LEN) {
				rl->code = ZD_EXIT_DATA;
				snprintf(rl->err, sizeof(rl->err), "record %llu: its header says %u bytes, its unit holds %zd",
					 (unsigned long long)seq, body_len(p), n - ZD_RECHDR_LEN);
				break;
			}
		} else {
			n = (ssize_t)zd_auth_seal(rl->a, rl->buf, (size_t)n);
		}
		if (write_all(rl->out, p, (size_t)n) < 0) {
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
		return fail(msg, len, ZD_EXIT_FAIL, "cannot start the encryption relay thread");
	}
	*fd = sv[0];
	*out = rl;
	return 0;
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
