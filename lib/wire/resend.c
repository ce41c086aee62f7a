/* SPDX-License-Identifier: MIT */
/*
 * zd-send's resend log: every epoch record that went on the wire since
 * the backup's last ACK, as it went (PAGES already compressed), so that
 * after a reconnect the epochs the backup lost can go again. See zd/wire.h.
 *
 * Replaying the encoded bytes is right for delta too: a record was XORed
 * against the newest copy of each page the stream had delivered before
 * it, and after a reconnect the backup holds exactly the epochs up to its
 * last commit, which are the ones before the first record replayed.
 */
#include <stdlib.h>
#include <string.h>

#include "zd/util.h"
#include "zd/wire.h"

struct entry {
	uint64_t epoch;
	uint8_t *bin;		/* the record, binary-encoded */
	size_t len;
};

struct zd_resend {
	uint64_t cap;		/* bytes held at most */
	uint64_t bytes;
	uint64_t base;		/* every record of an epoch > base is held */
	bool lost;		/* overflowed: a gap until the next epoch */
	uint64_t lost_epoch;	/* the epoch that did not fit */
	struct entry *e;
	size_t n, slots;
};

/* The epoch a record belongs to; 0 for records the log does not keep. */
static uint64_t epoch_of(const struct zd_record *r)
{
	switch (r->type) {
	case ZD_REC_CHECKPOINT: return r->u.ckpt.epoch;
	case ZD_REC_DIRTY: return r->u.dirty.epoch;
	case ZD_REC_PAGES: return r->u.pages.epoch;
	case ZD_REC_STATE: return r->u.state.epoch;
	case ZD_REC_DISK: return r->u.disk.epoch;
	case ZD_REC_COMMIT: return r->u.commit.epoch;
	case ZD_REC_END: return UINT64_MAX;	/* never acknowledged */
	default: return 0;
	}
}

struct zd_resend *zd_resend_new(uint64_t cap_bytes)
{
	struct zd_resend *l = zd_xcalloc(1, sizeof(*l));

	l->cap = cap_bytes;
	return l;
}

static void drop_all(struct zd_resend *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->e[i].bin);
	l->n = 0;
	l->bytes = 0;
}

void zd_resend_free(struct zd_resend *l)
{
	if (!l)
		return;
	drop_all(l);
	free(l->e);
	free(l);
}

int zd_resend_keep(struct zd_resend *l, const struct zd_record *r, uint32_t page_size)
{
	uint64_t epoch = epoch_of(r);
	struct entry en = { .epoch = epoch };

	if (!epoch)
		return 0;
	/* After an overflow the log starts again with the next epoch: a
	 * backup that commits the one before it can still be caught up. */
	if (l->lost && epoch != UINT64_MAX && epoch > l->lost_epoch)
		zd_resend_restart(l, epoch);
	if (l->lost)
		return 0;
	if (epoch != UINT64_MAX && epoch <= l->base)
		return 0;	/* acknowledged already (a late pre-copy) */
	if (zd_encode_binary(r, page_size, &en.bin, &en.len) < 0)
		return -1;
	if (l->bytes + en.len > l->cap) {
		free(en.bin);
		drop_all(l);
		l->lost = true;
		l->lost_epoch = epoch;
		return 1;
	}
	if (l->n == l->slots) {
		l->slots = l->slots ? 2 * l->slots : 64;
		l->e = zd_xrealloc(l->e, l->slots * sizeof(*l->e));
	}
	l->e[l->n++] = en;
	l->bytes += en.len;
	return 0;
}

void zd_resend_acked(struct zd_resend *l, uint64_t epoch)
{
	size_t j = 0;

	if (epoch <= l->base)
		return;
	l->base = epoch;
	for (size_t i = 0; i < l->n; i++) {
		if (l->e[i].epoch <= epoch) {
			l->bytes -= l->e[i].len;
			free(l->e[i].bin);
		} else {
			l->e[j++] = l->e[i];
		}
	}
	l->n = j;
}

bool zd_resend_covers(const struct zd_resend *l, uint64_t committed)
{
	return !l->lost && committed >= l->base;
}

bool zd_resend_lost(const struct zd_resend *l)
{
	return l->lost;
}

void zd_resend_restart(struct zd_resend *l, uint64_t epoch)
{
	drop_all(l);
	l->lost = false;
	l->base = epoch ? epoch - 1 : 0;
}

void zd_resend_counts(const struct zd_resend *l, size_t *records, uint64_t *bytes)
{
	*records = l->n;
	*bytes = l->bytes;
}

int zd_resend_replay(struct zd_resend *l, const struct zd_rec_header *hdr,
		     int (*put)(void *arg, const struct zd_record *r), void *arg,
		     char *msg, size_t len)
{
	for (size_t i = 0; i < l->n; i++) {
		struct zd_record r;
		int rc;

		zd_record_init(&r, 0);
		if (zd_decode_binary(l->e[i].bin, l->e[i].len, hdr, &r, msg, len) < 0)
			return -1;
		rc = put(arg, &r);
		zd_record_free(&r);
		if (rc)
			return rc;
	}
	return 0;
}
