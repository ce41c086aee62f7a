/* SPDX-License-Identifier: MIT */
/*
 * zd-stream(5): the record stream that joins the zd tools. man/zd-stream.5
 * is the normative description; this header is its C form.
 *
 * Two encodings, detected on input from the first byte:
 *   binary — an 8-byte preamble "\x89ZDS" u16 major u16 minor, then records
 *            of a 12-byte header {u16 type, u16 flags, u32 length, u32 crc32c}
 *            and `length` body bytes; little-endian; CRC32C covers the first
 *            8 header bytes and the body.
 *   JSON   — one object per line ("JSON lines"), the first byte is '{'.
 *
 * A reader decodes into struct zd_record; a writer encodes one. Records of a
 * type this version does not know are kept as raw bytes (binary) or as the
 * raw JSON object, and written back unchanged by every tool.
 */
#ifndef ZD_STREAM_H
#define ZD_STREAM_H

#include <signal.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include "zd/pageset.h"

#define ZD_STREAM_MAGIC "\x89ZDS"
#define ZD_STREAM_MAJOR 1
#define ZD_STREAM_MINOR 0
#define ZD_PREAMBLE_LEN 8
#define ZD_RECHDR_LEN 12
/* Largest record body accepted: bounds memory a hostile stream can claim. */
#define ZD_REC_MAX (64u << 20)
/* Writers split PAGES so one record carries at most this many pages. */
#define ZD_PAGES_PER_RECORD 4096u

enum zd_rec_type {
	ZD_REC_HEADER = 1,
	ZD_REC_CHECKPOINT = 2,
	ZD_REC_DIRTY = 3,
	ZD_REC_STANDBY = 4,
	ZD_REC_PAGES = 5,
	ZD_REC_STATE = 6,
	ZD_REC_COMMIT = 7,
	ZD_REC_ACK = 8,
	ZD_REC_STAT = 9,
	ZD_REC_END = 10,
	ZD_REC_DISK = 11,
	ZD_REC_TYPE_MAX,	/* types >= this are "unknown": passed through */
};

enum zd_mode { ZD_MODE_REMUS = 0, ZD_MODE_BUFFERED = 1, ZD_MODE_ZDDSPT = 2, ZD_MODE_MAX };
const char *zd_mode_name(enum zd_mode m);
int zd_mode_parse(const char *s, enum zd_mode *m);	/* 0 or -1 */

enum zd_encoding { ZD_ENC_BINARY = 0, ZD_ENC_JSON = 1 };

/* HEADER: first record of every stream. */
struct zd_rec_header {
	uint16_t major, minor;		/* stream version (JSON: "version":"1.0") */
	uint32_t page_size;		/* bytes, a power of two */
	uint64_t page_count;		/* pfns are < page_count */
	uint8_t mode;			/* enum zd_mode */
	uint32_t interval_us;		/* checkpoint interval */
	uint64_t start_ns;		/* wall clock at start */
	char *target;			/* target spec, e.g. "synth:pages=..." */
	char *control;			/* control socket path, "" if none */
};

/* CHECKPOINT: one per epoch, opens the epoch's records. Times are
 * CLOCK_MONOTONIC ns on the primary; 0 = not applicable. */
#define ZD_CKPT_PAGES_INLINE 0x1	/* PAGES for the whole DIRTY set follow from the tracker */
#define ZD_CKPT_FINAL 0x2		/* last epoch before END */
#define ZD_CKPT_FULL 0x4		/* DIRTY is every page: a resync (zd-send asked) */
#define ZD_CKPT_WP_EXACT 0x8	/* zddspt: exactly the pages of DIRTY that the tracker's
				 * PAGES of the epoch leave out are write-protected */
struct zd_rec_checkpoint {
	uint64_t epoch;			/* 1, 2, 3 … strictly increasing */
	uint64_t t0_ns;			/* pre-copy start (zddspt) */
	uint64_t t1_ns;			/* checkpoint: VM paused */
	uint64_t resume_ns;		/* VM resumed */
	uint64_t pause_ns;		/* time the VM was stopped */
	uint32_t flags;			/* ZD_CKPT_* */
};

/* DIRTY and STANDBY: a page set for an epoch. */
struct zd_rec_pageset {
	uint64_t epoch;
	struct zd_pageset set;
};

/* PAGES: contents of a set of pages, in increasing pfn order. */
enum zd_page_enc { ZD_PENC_RAW = 0, ZD_PENC_ZSTD = 1, ZD_PENC_DELTA = 2 };
#define ZD_PAGES_PRECOPY 0x1	/* sent at T0, before the checkpoint (zddspt) */
#define ZD_PAGES_PREIMAGE 0x2	/* saved by a copy-on-write fault */
struct zd_rec_pages {
	uint64_t epoch;
	uint8_t enc;			/* enum zd_page_enc, of `data` as carried */
	uint8_t flags;			/* ZD_PAGES_* */
	struct zd_pageset set;
	uint32_t data_len;		/* bytes in data as carried */
	uint8_t *data;			/* raw: set.pages * page_size bytes */
	/* Non-NULL (and data NULL): the data was not read; it waits in this
	 * reader's input, and zd_writer_put moves it on unread, CRC and all
	 * (zd_reader.pass_pages). */
	struct zd_reader *pass;
};

/* STATE: an opaque device/vCPU state blob of the target. */
struct zd_rec_state {
	uint64_t epoch;
	uint32_t kind;			/* 1 = KVM x86 vCPU (zd-vm), 2 = Xen HVM context, 3 = synth */
	uint32_t len;
	uint8_t *data;
};

/* COMMIT: closes an epoch. The receiver applies the epoch only on COMMIT,
 * after checking that PAGES covered exactly the DIRTY set. */
#define ZD_COMMIT_HAS_MEMSUM 0x1
#define ZD_COMMIT_HAS_DISKSUM 0x2	/* disksum follows memsum (zd-stream(5) DISK) */
struct zd_rec_commit {
	uint64_t epoch;
	uint64_t pages;			/* pages in the epoch's DIRTY set */
	uint32_t flags;
	uint64_t memsum;		/* zd_hash64 over the whole memory at T1 (--verify) */
	uint64_t disksum;		/* zd_hash64 over the whole disk at T1, with HAS_DISKSUM */
};

/* DISK: bytes the guest wrote to its disk before the epoch's pause, in the
 * order it wrote them (a later record of an epoch wins where two overlap). */
enum zd_disk_enc { ZD_DENC_RAW = 0, ZD_DENC_ZSTD = 1 };
#define ZD_DISK_FULL 0x1		/* part of a copy of the whole disk */
/* Largest write one DISK record carries (writers split bigger ones). */
#define ZD_DISK_PER_RECORD (1u << 20)
/* Largest disk a DISK record may describe. */
#define ZD_DISK_MAX (1ull << 44)
struct zd_rec_disk {
	uint64_t epoch;
	uint64_t disk_size;		/* bytes, the same in every record of a stream */
	uint64_t offset;		/* byte offset of the write */
	uint32_t len;			/* bytes written: 1..ZD_DISK_PER_RECORD */
	uint8_t enc;			/* enum zd_disk_enc, of data as carried */
	uint8_t flags;			/* ZD_DISK_* */
	uint32_t data_len;		/* bytes of data as carried */
	uint8_t *data;			/* raw: len bytes */
};

/* ACK: the backup committed an epoch (travels backward, and is logged forward). */
struct zd_rec_ack {
	uint64_t epoch;
	uint64_t commit_wall_ns;	/* backup's CLOCK_REALTIME at commit */
	uint64_t latency_ns;		/* T1 → ack seen at the primary, 0 if unknown */
	uint32_t status;		/* 0 = committed */
};

/* STAT: named figures from a stage about an epoch, e.g. source "mru",
 * keys "precision", "recall". Values are doubles. */
#define ZD_STAT_MAX_KV 64
struct zd_stat_kv {
	char key[32];
	double value;
};
struct zd_rec_stat {
	uint64_t epoch;
	char source[16];
	uint32_t n;
	struct zd_stat_kv kv[ZD_STAT_MAX_KV];
};

/* END: last record; status 0 = clean end, 1 = interrupted, 2 = error,
 * 3 = the VM died on the primary (the backup takes over). */
enum { ZD_END_CLEAN, ZD_END_INTERRUPTED, ZD_END_ERROR, ZD_END_VM_DIED };
struct zd_rec_end {
	uint64_t epochs;
	uint32_t status;
};

/* A record of a type this version does not know. */
struct zd_rec_unknown {
	uint16_t type;			/* binary type code, 0 if it came from JSON */
	uint16_t flags;
	uint32_t len;
	uint8_t *data;			/* binary body, or the JSON object text */
	bool from_json;
};

struct zd_record {
	uint16_t type;			/* enum zd_rec_type, or an unknown code */
	union {
		struct zd_rec_header header;
		struct zd_rec_checkpoint ckpt;
		struct zd_rec_pageset dirty;	/* DIRTY and STANDBY */
		struct zd_rec_pages pages;
		struct zd_rec_state state;
		struct zd_rec_commit commit;
		struct zd_rec_ack ack;
		struct zd_rec_stat stat;
		struct zd_rec_end end;
		struct zd_rec_disk disk;
		struct zd_rec_unknown unknown;
	} u;
};

const char *zd_rec_type_name(uint16_t type);	/* "HEADER", …, "UNKNOWN" */
void zd_record_init(struct zd_record *r, uint16_t type);
/* A STAT's next figure, key = v (none when it holds ZD_STAT_MAX_KV). */
void zd_stat_put(struct zd_rec_stat *st, const char *key, double v);
void zd_record_free(struct zd_record *r);	/* frees owned memory, keeps type */

/* --- reading --- */

/* Why a read failed; msg is the whole diagnostic without the tool prefix,
 * e.g. "stdin: byte 4120: record 7 (PAGES): crc mismatch". */
enum zd_read_err {
	ZD_RERR_NONE = 0,
	ZD_RERR_IO,		/* read(2) failed */
	ZD_RERR_TRUNCATED,	/* EOF inside a record or the preamble */
	ZD_RERR_MAGIC,		/* neither binary magic nor '{' */
	ZD_RERR_VERSION,	/* unknown major version */
	ZD_RERR_CRC,
	ZD_RERR_TOO_BIG,	/* length over ZD_REC_MAX */
	ZD_RERR_MALFORMED,	/* body does not parse / invalid JSON */
	ZD_RERR_RANGE,		/* pfn beyond page_count, bad page size … */
	ZD_RERR_ORDER,		/* epoch out of order, record before HEADER … */
};

struct zd_reader {
	FILE *fp;
	int fd;			/* the reader reads fd with its own buffer */
	const char *name;	/* for messages: "stdin", a path, "peer 10.0.0.2:7070" */
	enum zd_encoding enc;
	bool detected;
	uint64_t offset;	/* byte offset of the next record */
	uint64_t line;		/* JSON: line number of the next record */
	uint64_t nrec;		/* records read so far */
	struct zd_rec_header hdr;	/* copy of the HEADER once seen */
	bool have_header;
	uint64_t last_epoch;	/* highest CHECKPOINT epoch seen */
	enum zd_read_err err;
	char msg[256];
	/* -1, or an fd that, once readable, ends a read waiting on fd
	 * (ZD_RERR_IO, ECANCELED): another thread's way to stop this one */
	int stop_fd;
	/* NULL, or a flag a signal handler sets (zd-stat's SIGINT): a read
	 * waiting on fd ends once it is set (ZD_RERR_IO, EINTR). The signals
	 * in stop_sigs are blocked from the check of the flag until the wait
	 * (ppoll(2)) lets them in, so one that comes in between is not lost. */
	volatile sig_atomic_t *stop_flag;
	sigset_t stop_sigs;
	/* NULL, or called before each wait on fd: returns how long that wait
	 * may last in ms (-1: no limit), and is called again when it ran out
	 * (zd-stat --follow prints its lines from here while input stalls) */
	int (*idle)(void *arg);
	void *idle_arg;
	/* A stage that passes PAGES on without looking at their contents
	 * (zd-mru, zd-swap) sets this: a big PAGES record then comes back
	 * with its data still in fd (zd_rec_pages.pass), for zd_writer_put
	 * to move to the next stage with splice(2), not copied. Spliced, the
	 * data is not checked here: its CRC travels with it, and the stage
	 * that reads the data (zd-send, zd-recv) checks it; where splice
	 * cannot (neither end a pipe), it is read, written and checked.
	 * Binary input only, and no stop_fd, stop_flag or idle. */
	bool pass_pages;
	/* buffering, private */
	uint8_t *buf;
	size_t buf_len, buf_pos, buf_cap;
	bool eof;
	bool pass_open;		/* a passed record's bytes are still to go */
	size_t pass_head;	/* of them, in buf from buf_pos */
	uint64_t pass_left;	/* of them, still in fd */
};

/* Read from fd (not owned). name appears in messages. */
void zd_reader_init(struct zd_reader *rd, int fd, const char *name);
void zd_reader_free(struct zd_reader *rd);
/* Read the next record into r (zd_record_free it after use).
 * Returns 1 with a record, 0 at a clean end of input (EOF exactly between
 * records; an END record is returned as a record first), -1 on error with
 * rd->err and rd->msg set. Checks: magic, version, CRC, length limit, body
 * syntax, pfn < page_count, page size, CHECKPOINT epochs increasing, HEADER
 * first. */
int zd_reader_next(struct zd_reader *rd, struct zd_record *r);
/* Write the passed record r came with (zd_rec_pages.pass) to out_fd:
 * 0; -1 writing failed (errno); -2 its input failed (rd->err, rd->msg:
 * the stage before died inside the record, which then reaches out_fd cut
 * short, as it came). For zd_writer_put. */
int zd_reader_pass_out(struct zd_reader *rd, int out_fd, uint64_t *written);

/* Decode one record from a memory buffer holding one encoded record
 * (binary: header+body; JSON: one line). hdr gives page_count/page_size
 * for range checks (may be NULL). Used by the fuzzer and the network. */
int zd_decode_binary(const uint8_t *buf, size_t len, const struct zd_rec_header *hdr,
		     struct zd_record *r, char *msg, size_t msglen);
int zd_decode_json(const char *line, size_t len, const struct zd_rec_header *hdr,
		   struct zd_record *r, char *msg, size_t msglen);

/* --- writing --- */

struct zd_writer {
	int fd;
	enum zd_encoding enc;
	bool preamble_done;
	uint32_t page_size;	/* from the HEADER written, for PAGES */
	uint64_t bytes;		/* bytes written so far */
	int err;		/* errno of the first failed write, 0 if none */
	uint8_t *buf;
	size_t buf_len, buf_cap;
};

void zd_writer_init(struct zd_writer *w, int fd, enum zd_encoding enc);
void zd_writer_free(struct zd_writer *w);
/* Encode and buffer one record (a binary stream's preamble is written
 * before the first record). Returns 0 or -1 (w->err set). */
int zd_writer_put(struct zd_writer *w, const struct zd_record *r);
int zd_writer_flush(struct zd_writer *w);
/* Encoding choice for a tool's stdout: JSON if forced or a terminal. */
enum zd_encoding zd_output_encoding(int fd, bool json_flag);

/* Encode one record into a malloc'd buffer (binary: header+body, no
 * preamble; JSON: one line with '\n'). Returns 0 or -1. */
int zd_encode_binary(const struct zd_record *r, uint32_t page_size, uint8_t **out, size_t *len);
int zd_encode_json(const struct zd_record *r, uint32_t page_size, char **out, size_t *len);

/* DISK data: pack len bytes at raw into d (zstd when smaller, else a
 * copy); expand d's data into a malloc'd buffer of d->len bytes, checking
 * the frame (0, or -1 with msg). */
void zd_disk_pack(struct zd_rec_disk *d, const uint8_t *raw, uint32_t len, int level);
int zd_disk_expand(const struct zd_rec_disk *d, uint8_t **out, char *msg, size_t msglen);

/* CRC32C (Castagnoli), by ISA-L's crc32_iscsi. */
uint32_t zd_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same CRC a bit at a time, slow; for tests. */
uint32_t zd_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* Binary type code of a JSON object of a type this version does not know,
 * carried in a binary stream as its JSON text (zd-stream(5) "JSON
 * passthrough"); also the r->type of such a record read from JSON. */
#define ZD_REC_JSON 0xFFFFu
/* Most ranges one page set of one record may decode to: bounds the memory
 * a hostile bitmap can claim (64 MiB of struct zd_range). */
#define ZD_SET_MAX_RANGES (1u << 22)
/* Largest guest a HEADER may describe (page_count * page_size): 1 PiB.
 * Bounds every pfn, so a hostile set cannot name 2^60 pages. */
#define ZD_GUEST_MAX (1ull << 50)
/* Longest JSON line a reader accepts (base64 grows a body by 4/3). */
#define ZD_JSON_LINE_MAX (2u * ZD_REC_MAX)
/* zd_decode_binary/zd_decode_json return 0, or -(enum zd_read_err) with
 * msg set to what is wrong (no name/offset prefix; the reader adds it). */

#endif
