/* SPDX-License-Identifier: MIT */
/*
 * The wire between zd-send and zd-recv: page compression of
 * PAGES records and a pre-shared-key authentication of the link.
 *
 * Compression (lib/wire/pages.c, shadow.c). A PAGES record carries raw
 * pages, or a compressed payload (zd-stream(5) "COMPRESSED PAGES"):
 *   enc 1 zstd:  one zstd frame of the pages * page_size raw bytes;
 *   enc 2 delta: a bitmap of ceil(pages/8) bytes (bit i, LSB first, set:
 *                page i is XORed with the receiver's copy of that pfn),
 *                then one zstd frame of the pages, XORed where flagged.
 * The sender keeps a shadow copy of the pages it sent (bounded by a byte
 * budget, least recently sent evicted first); a page without a shadow goes
 * plain inside the delta frame. The receiver's copy of a pfn is the
 * replica's memory as of the last committed epoch with the PAGES already
 * staged in the open epoch on top, i.e. the newest contents of the pfn the
 * stream has delivered. Sender and receiver agree on it as long as every
 * encoded record reaches the receiver and is staged, in order: after a
 * reconnect, or when the receiver threw an epoch away, the sender must
 * zd_wire_enc_reset() (the first records after it go plain zstd).
 *
 * An encoder or decoder is one thread's: no global state, one per worker.
 *
 * Keyed link (lib/wire/auth.c). Both ends hold a key file, stretched with
 * Argon2id; at connect each proves it knows the key over both ends' fresh
 * nonces, and every binary unit (preamble, record) then travels encrypted
 * and authenticated (AES-256-GCM where both CPUs have it, else
 * XChaCha20-Poly1305) under a per-direction session key with the unit's
 * number as nonce, so a changed, dropped, replayed or reordered record is
 * refused and no stream byte is readable on the wire.
 */
#ifndef ZD_WIRE_H
#define ZD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "zd/stream.h"

/* ------------------------------------------------------------------ */
/* Page compression                                                    */

/* The wire's version, announced by zd-recv in its STAT "wire" record
 * (keys "version", "accept": highest PAGES encoding it decodes, "key":
 * 1 if the link is authenticated) right after the HEADER it sends back. */
#define ZD_WIRE_VERSION 2	/* 2: delta pages as their changed words */
#define ZD_WIRE_LEVEL_DEFAULT 1
#define ZD_WIRE_CACHE_DEFAULT (256ull << 20)	/* --delta-cache default */

struct zd_wire_opts {
	enum zd_page_enc enc;	/* RAW (pass through), ZSTD or DELTA */
	int level;		/* zstd level, ZSTD_minCLevel()..ZSTD_maxCLevel() */
	uint64_t cache_bytes;	/* DELTA: shadow budget in bytes (0: every page misses) */
	uint32_t page_size;	/* from the HEADER */
};

/* What an encoder did, summed since it was made (or zeroed by the caller). */
struct zd_wire_stats {
	uint64_t records;	/* PAGES records encoded */
	uint64_t pages;
	uint64_t raw_bytes;	/* page bytes in */
	uint64_t wire_bytes;	/* data bytes out (payloads, not record headers) */
	uint64_t delta_pages;	/* XORed against a shadow */
	uint64_t miss_pages;	/* DELTA wanted, no shadow: sent plain */
	uint64_t evictions;	/* shadows dropped for the budget */
	uint64_t raw_records;	/* records sent raw because compression did not pay */
};

struct zd_wire_enc;

/* 0, or -1 with msg: errno EINVAL for a bad level, page size or
 * encoding, else (ENOMEM) the memory it needs (--delta-cache) is not to
 * be had. */
int zd_wire_enc_new(struct zd_wire_enc **e, const struct zd_wire_opts *o, char *msg, size_t len);
void zd_wire_enc_free(struct zd_wire_enc *e);
/* Forget every shadow: the receiver's copy is no longer known. */
void zd_wire_enc_reset(struct zd_wire_enc *e);
/* Encode one raw PAGES record: *out becomes a copy of *in (the set is
 * borrowed from in) with enc and data as they go on the wire; out->data
 * points into the encoder and stays valid until its next call. A record
 * whose compressed form would not be smaller goes raw (enc 0). Updates the
 * shadows of in's pages. 0, or -1 with msg (in is not raw or not whole). */
int zd_wire_encode(struct zd_wire_enc *e, const struct zd_rec_pages *in,
		   struct zd_rec_pages *out, char *msg, size_t len);
const struct zd_wire_stats *zd_wire_enc_stats(const struct zd_wire_enc *e);
/* Pages holding a shadow now (for tests and zd-stat). */
uint64_t zd_wire_enc_cached(const struct zd_wire_enc *e);

/* The receiver's copy of pfn (page_size bytes), or NULL if it has none.
 * The decoder asks for every base of a record before it uses them: the
 * pointers must stay valid until the decode returns. */
typedef const uint8_t *(*zd_wire_base_fn)(void *arg, uint64_t pfn);

struct zd_wire_dec;

int zd_wire_dec_new(struct zd_wire_dec **d, uint32_t page_size, char *msg, size_t len);
void zd_wire_dec_free(struct zd_wire_dec *d);
/* Decode one PAGES record of any enc into raw pages: *out becomes a copy
 * of *in with enc 0 and data pointing into the decoder (valid until its
 * next call; for enc 0 the data is in's). base may be NULL when no delta
 * record is expected. On any error out is untouched and msg says what is
 * wrong, e.g. "delta payload: page 17 (pfn 4242): no copy to XOR with" or
 * "zstd payload: frame holds 4000 bytes, want 8192": nothing partial
 * escapes. Returns 0 or -1. */
int zd_wire_decode(struct zd_wire_dec *d, const struct zd_rec_pages *in,
		   zd_wire_base_fn base, void *arg, struct zd_rec_pages *out,
		   char *msg, size_t len);
/* zd_wire_decode that also hands the raw pages to sink as they come out,
 * in order, a chunk at a time while the chunk is in the cache (zd-recv
 * writes and hashes its journal there: one pass over memory less than
 * doing it after). The frame's checksum is at its end: what sink got is
 * good only if the decode returns 0. sink returns 0, or nonzero to stop
 * the decode, which then fails with msg empty (the sink knows why). */
typedef int (*zd_wire_sink_fn)(void *arg, const uint8_t *pages, size_t len);
/* The buffer the last decode of a compressed record left its pages in,
 * now the caller's to free (the next decode takes a new one); NULL after
 * a raw record, whose pages are its own. */
uint8_t *zd_wire_dec_take(struct zd_wire_dec *d);
int zd_wire_decode_to(struct zd_wire_dec *d, const struct zd_rec_pages *in,
		      zd_wire_base_fn base, void *arg, zd_wire_sink_fn sink, void *sink_arg,
		      struct zd_rec_pages *out, char *msg, size_t len);

/* "none"/"raw", "zstd", "delta" -> enc; -1 if unknown. */
int zd_wire_enc_parse(const char *s, enum zd_page_enc *enc);

/* A 2-thread pipeline: the caller's thread puts records, a worker encodes
 * PAGES and calls emit with every record, in order. emit runs on the
 * worker thread. Records put are copied (the caller keeps its own). */
typedef int (*zd_wire_emit)(void *arg, const struct zd_record *r);
struct zd_wire_pipe;
/* depth: records queued at most before put blocks (>= 1). The encoder is
 * the pipeline's until zd_wire_pipe_finish. 0, or -1 with msg (its thread
 * cannot start). */
int zd_wire_pipe_new(struct zd_wire_pipe **p, struct zd_wire_enc *e, unsigned depth,
		     zd_wire_emit emit, void *arg, char *msg, size_t len);
/* 0, or -1 once the worker failed (emit returned non-zero, or an encode
 * error: zd_wire_pipe_error says which); later puts fail at once. */
int zd_wire_pipe_put(struct zd_wire_pipe *p, const struct zd_record *r);
/* As put, but a PAGES record's page set and data (a malloc'd buffer, as
 * the stream decoders give) are taken rather than copied: r keeps neither
 * (zd_record_free on it stays right). Other records are copied. */
int zd_wire_pipe_take(struct zd_wire_pipe *p, struct zd_record *r);
/* Wait for the queue to drain (every record put so far emitted). */
int zd_wire_pipe_flush(struct zd_wire_pipe *p);
/* Drain, stop the worker, free. 0 or -1 as put. */
int zd_wire_pipe_finish(struct zd_wire_pipe *p, char *msg, size_t len);
const char *zd_wire_pipe_error(struct zd_wire_pipe *p);

/* ------------------------------------------------------------------ */
/* The resend log (lib/wire/resend.c)                                  */

/* zd-send's copy of every epoch record (CHECKPOINT, DIRTY, PAGES, STATE,
 * COMMIT; and END) it put on the wire since the backup's last ACK, as
 * encoded for the wire, bounded by a byte budget. After a reconnect the
 * backup says which epoch it committed last; if the log holds every record
 * after it, those go again, else the gap needs a full resync. */
#define ZD_RESEND_DEFAULT (256ull << 20)	/* --resend-buffer default */

struct zd_resend;

struct zd_resend *zd_resend_new(uint64_t cap_bytes);
void zd_resend_free(struct zd_resend *l);
/* Keep a copy of r if it is an epoch record of an epoch not acknowledged.
 * 1 if it did not fit: the log drops everything and is lost (a gap); it
 * keeps again from the next epoch on. -1 if r cannot be encoded (nothing
 * kept). 0 otherwise. */
int zd_resend_keep(struct zd_resend *l, const struct zd_record *r, uint32_t page_size);
/* The backup committed every epoch up to `epoch`: drop them. */
void zd_resend_acked(struct zd_resend *l, uint64_t epoch);
/* Does the log hold every record of the epochs after `committed`? */
bool zd_resend_covers(const struct zd_resend *l, uint64_t committed);
bool zd_resend_lost(const struct zd_resend *l);
/* Keep again from `epoch` on (a full epoch: nothing before it is needed). */
void zd_resend_restart(struct zd_resend *l, uint64_t epoch);
void zd_resend_counts(const struct zd_resend *l, size_t *records, uint64_t *bytes);
/* put() every record held, oldest first (decoded against hdr); stops at
 * the first non-zero put() and returns it; -1 with msg if a copy does not
 * decode. */
int zd_resend_replay(struct zd_resend *l, const struct zd_rec_header *hdr,
		     int (*put)(void *arg, const struct zd_record *r), void *arg,
		     char *msg, size_t len);

/* ------------------------------------------------------------------ */
/* Keyed link: authentication and encryption                           */

#define ZD_AUTH_KEY_MIN 16		/* bytes a key file must hold at least */
#define ZD_AUTH_KEY_FILE_MAX 4096
#define ZD_AUTH_TAG 16			/* AEAD tag after each unit */
#define ZD_AUTH_LEN 4			/* clear length before each unit */
#define ZD_AUTH_NONCE 32
#define ZD_AUTH_TIMEOUT_MS 10000	/* zd-send/zd-recv: the handshake's bound */
/* What every version's hello starts with: a keyless end that reads it
 * where a stream's magic belongs can say the peer has a key. */
#define ZD_AUTH_HELLO_ANY "ZDAUTH"
#define ZD_AUTH_HELLO_ANY_LEN 6
/* Argon2id's cost for stretching a key file: ~0.1 s on this project's
 * hosts; both ends must use the same (a change is a new "zd-key-vN"). */
#define ZD_AUTH_KDF_OPS 2
#define ZD_AUTH_KDF_MEM (64u << 20)

struct zd_auth_key {
	uint8_t k[32];			/* Argon2id of the key file's bytes */
	bool no_aes;			/* offer XChaCha20-Poly1305 only (tests) */
};

/* Read --key FILE and stretch it. 0, or -1 with msg ("KEY: 5 bytes, a key
 * needs at least 16", "KEY: readable by others (chmod 600 it)"...). */
int zd_auth_key_load(struct zd_auth_key *key, const char *path, char *msg, size_t len);
/* The same from bytes in memory; costs one Argon2id (~0.1 s, 64 MiB), so
 * a test program makes its keys once. 0, or -1 with msg (out of memory). */
int zd_auth_key_from_bytes(struct zd_auth_key *key, const void *bytes, size_t n,
			   char *msg, size_t len);

enum zd_auth_role { ZD_AUTH_CLIENT = 'C', ZD_AUTH_SERVER = 'S' };	/* zd-send, zd-recv */

/* Session: per-direction keys, the cipher, unit counters. */
struct zd_auth {
	uint8_t send_key[32], recv_key[32];
	uint64_t send_seq, recv_seq;	/* units sealed / opened so far */
	bool aes;			/* AES-256-GCM, else XChaCha20-Poly1305-IETF */
};

/* The handshake, the first bytes each way on a fresh connection (before
 * the stream's preamble). Both ends send "ZDAUTH2\n" + 32-byte nonce + a
 * cipher offer, then a 32-byte proof; each checks the other's. rfd/wfd may
 * be the same socket. timeout_ms bounds the wait for the peer (0: none).
 * Returns 0, or an exit code with msg: ZD_EXIT_PEER "peer does not know
 * the key" / "peer closed during the key handshake" / "peer does not speak
 * the key handshake (no --key there?)" / "peer speaks key handshake
 * version 1, this end 2 (...)", ZD_EXIT_FAIL for I/O errors. */
int zd_auth_handshake(const struct zd_auth_key *key, enum zd_auth_role role,
		      int rfd, int wfd, int timeout_ms, struct zd_auth *a,
		      char *msg, size_t len);
/* "aes256gcm" or "xchacha20poly1305": what the handshake chose. */
const char *zd_auth_cipher(const struct zd_auth *a);

/* A frame on the wire: u32le len | unit[len] encrypted | tag[16].
 * Seal the next unit sent, in place: frame holds the clear unit at
 * frame + ZD_AUTH_LEN and room for the tag after it; writes the length and
 * the tag, advances send_seq and returns the frame's length. */
size_t zd_auth_seal(struct zd_auth *a, uint8_t *frame, size_t len);
/* Open the next received frame of flen bytes in place (the clear unit at
 * frame + ZD_AUTH_LEN); advances recv_seq only when good. 0, or -1 with msg
 * "preamble: bad MAC" / "record N: bad MAC" (N counts from 1); a refused
 * frame's bytes are not kept. */
int zd_auth_open(struct zd_auth *a, uint8_t *frame, size_t flen, char *msg, size_t msglen);

/* Relays for tools that read and write the stream with zd_reader and
 * zd_writer on an fd. zd_auth_relay_start starts a thread and returns a
 * pipe end in *fd:
 *   ZD_AUTH_SIGN:   write the binary stream (preamble + records) to *fd;
 *                   the thread seals each unit and writes it to net_fd.
 *   ZD_AUTH_VERIFY: read the opened stream from *fd; the thread reads
 *                   frames from net_fd and passes on only whole records
 *                   that opened. At one that does not it stops and
 *                   closes its end: the reader sees an end of input
 *                   between records, and zd_auth_relay_join says
 *                   "record N: bad MAC". Nothing unverified is passed on.
 * The relay owns neither net_fd nor, after stop, *fd's peer end. */
enum zd_auth_dir { ZD_AUTH_SIGN, ZD_AUTH_VERIFY };
struct zd_auth_relay;
int zd_auth_relay_start(struct zd_auth_relay **rl, struct zd_auth *a, enum zd_auth_dir dir,
			int net_fd, int *fd, char *msg, size_t len);
/* Wait for the thread (SIGN: after the caller closed *fd) and free. Returns
 * 0, or an exit code with msg saying why the relay stopped: ZD_EXIT_DATA
 * for a bad MAC or a malformed record, ZD_EXIT_PEER for I/O on net_fd. */
int zd_auth_relay_join(struct zd_auth_relay *rl, char *msg, size_t len);

#endif
