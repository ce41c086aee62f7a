#!/usr/bin/env bash
# What a stream can make zd-recv spend, and who can read or redirect the
# replica:
#  - an epoch holds at most two copies of a page (one pre-copy, one final):
#    a tiny stream of compressed pre-copies repeating the same pages is
#    refused at the first repeat, before the disk or memory is spent;
#  - a compressed record decodes to no more than a raw record could carry;
#  - the replica directory is 0700, its files 0600, and a symbolic or hard
#    link planted under one of their names is refused, nothing written
#    through it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

PS=4096
NP=4096		# a 16 MiB guest
SPEC=synth:pages=$NP,dirty=64,hot=0.8,seed=5
zd-track "$SPEC" --epochs 6 --interval 0 --verify 2>/dev/null | zd-swap --json >"$TMP/s.json" 2>/dev/null
[ "$(jq -s '[.[] | select(.type == "commit")] | length' "$TMP/s.json")" = 6 ] ||
	{ echo "Bail out! no reference stream"; exit 1; }
# part A: the HEADER and epochs 1-3, cut there (an END would end the run for
# good); part B: the same run's epochs 4-6 (as a
# reconnecting zd-send resends them); "epoch 1" alone for the crafted tails.
jq -c 'select(.type != "end" and (.epoch == null or .epoch <= 3))' "$TMP/s.json" >"$TMP/a.json"
jq -c 'select(.type == "header" or .type == "end" or (.epoch != null and .epoch >= 4))' "$TMP/s.json" >"$TMP/b.json"
jq -c 'select(.type != "end" and (.epoch == null or .epoch <= 1))' "$TMP/s.json" >"$TMP/e1.json"

# peak KB: the peak RSS of CMD (its stdin, stdout, exit code kept); GNU time
# is not always there, the kernel's rusage of the children is.
peak() {
	python3 -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)' "$@"
}

# pages_json EPOCH FLAGS FRAME FIRST COUNT: a zstd PAGES record, as JSON.
pages_json() {
	printf '{"type":"pages","epoch":%s,"enc":"zstd","flags":%s,"pages":%s,"ranges":[[%s,%s]],"data":"%s"}\n' \
		"$1" "$2" "$5" "$4" "$5" "$(base64 -w0 <"$3")"
}

# 1. Pre-copies repeated without end: 48 records of the same 4096 zero pages
# (16 MiB each, ~550 bytes as a zstd frame). Before the bound this stream,
# ~30 KB, had zd-recv write a 768 MiB journal.tmp and peak at ~300 MiB.
head -c $((NP * PS)) /dev/zero | zstd -q -c --stream-size=$((NP * PS)) >"$TMP/zero.zst"
cp "$TMP/e1.json" "$TMP/flood.json"
for _ in $(seq 48); do pages_json 2 1 "$TMP/zero.zst" 0 $NP; done >>"$TMP/flood.json"
recs=$(($(wc -l <"$TMP/e1.json") + 2))	# the record of the first repeat
expect_fail "the same pages pre-copied again in one epoch: exit 3, names the record" 3 \
	"^zd-recv: stdin: byte [0-9]+: record $recs \(PAGES\): PAGES pre-copy pfn 0 again in epoch 2 .*epoch 2 discarded, replica stays at epoch 1$" \
	peak "$TMP/flood.kb" zd-recv --stdio --replica "$TMP/flood" <"$TMP/flood.json"
[ "$(replica_field "$TMP/flood" epoch)" = 1 ] && ok "... the replica stays at epoch 1" ||
	not_ok "... the replica stays at epoch 1" "$(zd-recv --replica "$TMP/flood" --status 2>&1)"
jsz=$(stat -c %s "$TMP/flood/journal.tmp")
[ "$jsz" -le $((2 * NP * PS + (1 << 20))) ] && ok "... journal.tmp stays within 2 copies of the guest ($jsz bytes)" ||
	not_ok "... journal.tmp stays within 2 copies of the guest" "$jsz bytes"
kb=$(cat "$TMP/flood.kb")
[ "$kb" -le $((128 << 10)) ] && ok "... zd-recv's peak RSS stays bounded ($kb KB)" ||
	not_ok "... zd-recv's peak RSS stays bounded" "$kb KB, want <= 128 MiB"

# What a sender does stays allowed: a pre-copy and then the final copy of a
# page in one epoch (zddspt), and pre-copies of other pages.
zd-track "$SPEC" --mode zddspt --epochs 8 --interval 0 --verify 2>/dev/null | zd-swap >"$TMP/z.bin" 2>/dev/null
check "a zddspt stream (pre-copies, final copies) still replicates" \
	bash -c 'zd-recv --stdio --verify --replica "$1" <"$2" >/dev/null' _ "$TMP/zddspt" "$TMP/z.bin"
cp "$TMP/e1.json" "$TMP/twice.json"
{ pages_json 2 1 "$TMP/zero.zst" 0 $NP; pages_json 2 0 "$TMP/zero.zst" 0 $NP; } >>"$TMP/twice.json"
expect_fail "a pre-copy then a final copy of the same pages pass (the input then ends: exit 5)" 5 \
	"input ended without END; epoch 2 discarded" zd-recv --stdio --replica "$TMP/twice" <"$TMP/twice.json"
cp "$TMP/e1.json" "$TMP/thrice.json"
{ pages_json 2 1 "$TMP/zero.zst" 0 $NP; pages_json 2 0 "$TMP/zero.zst" 0 $NP; pages_json 2 0 "$TMP/zero.zst" 0 1; } \
	>>"$TMP/thrice.json"
expect_fail "a third copy of a page: exit 3" 3 "PAGES repeat pfn 0 in epoch 2" \
	zd-recv --stdio --replica "$TMP/thrice" <"$TMP/thrice.json"

# Deltas against a page pre-copied earlier in the epoch decode against that
# copy, read back from journal.tmp (not held in memory): pre-copies of pfn
# 3, 5 (raw), a final delta of 3, a pre-copy of 7, then deltas of 5 and 7
# in one record (the journal mapped again, grown). Each delta flips word 0.
python3 - "$TMP" <<'PY'
import base64, json, subprocess, sys
tmp = sys.argv[1]
PS = 4096
def zst(b):
    return subprocess.run(["zstd", "-q", "-c", "--stream-size=%d" % len(b)], input=b,
                          stdout=subprocess.PIPE, check=True).stdout
def pages(flags, pfns, enc, data):
    ranges = [[p, 1] for p in pfns]
    return {"type": "pages", "epoch": 1, "enc": enc, "flags": flags, "pages": len(pfns),
            "ranges": ranges, "data": base64.b64encode(data).decode()}
def delta(n):
    bitmap = bytes([(1 << n) - 1])
    page = bytes([1]) + bytes(PS // 64 - 1) + b"\xff" * 8
    return zst(bitmap + page * n)
recs = [{"type": "header", "version": "1.0", "page_size": PS, "page_count": 16, "mode": "zddspt",
         "interval_us": 0, "start_ns": 1, "target": "crafted", "control": ""},
        pages(1, [3], "raw", bytes([0x33]) * PS), pages(1, [5], "raw", bytes([0x55]) * PS),
        {"type": "checkpoint", "epoch": 1, "t0_ns": 0, "t1_ns": 0, "resume_ns": 0, "pause_ns": 0, "flags": 0},
        {"type": "dirty", "epoch": 1, "pages": 3, "ranges": [[3, 1], [5, 1], [7, 1]]},
        pages(0, [3], "delta", delta(1)), pages(1, [7], "raw", bytes([0x77]) * PS),
        pages(0, [5, 7], "delta", delta(2)),
        {"type": "commit", "epoch": 1, "pages": 3, "flags": 0, "memsum": "0x0"},
        {"type": "end", "epochs": 1, "status": 0}]
with open(tmp + "/precopy_delta.json", "w") as f:
    for r in recs:
        f.write(json.dumps(r) + "\n")
PY
check "deltas against pre-copied pages replicate" \
	bash -c 'zd-recv --stdio --replica "$1" <"$2" >/dev/null' _ "$TMP/pdelta" "$TMP/precopy_delta.json"
got=$(python3 -c '
import sys
m = open(sys.argv[1], "rb").read()
print(" ".join(m[p * 4096:p * 4096 + 10].hex() for p in (3, 5, 7)))' "$TMP/pdelta/memory.img")
want="cccccccccccccccc3333 aaaaaaaaaaaaaaaa5555 88888888888888887777"
[ "$got" = "$want" ] && ok "... each the pre-copy with its word flipped" ||
	not_ok "... each the pre-copy with its word flipped" "got $got, want $want"

# 2. A second STATE in an epoch (each one went to the journal).
jq -c 'if .type == "state" and .epoch == 1 then ., . else . end' "$TMP/e1.json" >"$TMP/state2.json"
expect_fail "a second STATE in one epoch: exit 3" 3 "\(STATE\): a second STATE in epoch 1 \(one an epoch\)" \
	zd-recv --stdio --replica "$TMP/state2" <"$TMP/state2.json"

# 3. 4096 pages of 64 KiB in one zstd frame of ~8 KB: 256 MiB decoded, more
# than a raw record carries (64 MiB). Refused before anything is allocated.
BPS=65536
head -c $((NP * BPS)) /dev/zero | zstd -q -c --stream-size=$((NP * BPS)) >"$TMP/big.zst"
{
	jq -c --argjson ps $BPS 'select(.type == "header") | .page_size = $ps' "$TMP/s.json"
	pages_json 1 1 "$TMP/big.zst" 0 $NP
} >"$TMP/bigpages.json"
expect_fail "a frame decoding to more than a raw record holds: exit 3" 3 \
	"record 2 \(PAGES\): zstd payload: 4096 pages of 65536 bytes, more than a record holds raw \(67108864 bytes\)" \
	peak "$TMP/big.kb" zd-recv --stdio --replica "$TMP/bigpages" <"$TMP/bigpages.json"
kb=$(cat "$TMP/big.kb")
[ "$kb" -le $((128 << 10)) ] && ok "... without decoding it ($kb KB peak)" ||
	not_ok "... without decoding it" "$kb KB peak"

# 4. Modes: DIR 0700, every file 0600, whatever the umask.
modes() { (cd "$1" && stat -c '%a %n' . * | LC_ALL=C sort -k2 | tr '\n' ' '); }
(umask 000 && zd-recv --stdio --replica "$TMP/m" <"$TMP/a.json" >/dev/null 2>"$TMP/m.err")
want=". 700|journal.tmp 600|memory.img 600|meta.json 600|state.bin 600|"
got=$(modes "$TMP/m")
[ "$(echo "$got" | awk '{for (i = 1; i < NF; i += 2) printf "%s %s|", $(i + 1), $i}')" = "$want" ] &&
	ok "a new replica: DIR 0700, its files 0600 (umask 000)" || not_ok "a new replica: DIR 0700, its files 0600" "$got"
# A replica an older zd-recv left open to others: closed as it is used.
chmod 755 "$TMP/m"
chmod 644 "$TMP/m"/*
zd-recv --stdio --replica "$TMP/m" <"$TMP/b.json" >/dev/null 2>"$TMP/m2.err"
rc=$?
[ $rc = 0 ] && [ "$(replica_field "$TMP/m" epoch)" = 6 ] &&
	grep -qE "^zd-recv: $TMP/m: mode 0755 let other users read guest memory: now 0700$" "$TMP/m2.err" &&
	ok "a replica DIR open to others: used, made 0700, with one warning" ||
	not_ok "a replica DIR open to others: used, made 0700, with one warning" "exit $rc: $(cat "$TMP/m2.err")"
got=$(modes "$TMP/m")
[ "$(echo "$got" | awk '{for (i = 1; i < NF; i += 2) printf "%s %s|", $(i + 1), $i}')" = "$want" ] &&
	ok "... and its files 0600 again" || not_ok "... and its files 0600 again" "$got"
mkdir "$TMP/empty755" && chmod 755 "$TMP/empty755"
zd-recv --stdio --replica "$TMP/empty755" <"$TMP/a.json" >/dev/null 2>"$TMP/e.err"
[ "$(stat -c %a "$TMP/empty755")" = 700 ] && ok "an empty DIR 0755 becomes a replica 0700" ||
	not_ok "an empty DIR 0755 becomes a replica 0700" "$(stat -c %a "$TMP/empty755"): $(cat "$TMP/e.err")"
mkdir "$TMP/notrep" && chmod 755 "$TMP/notrep" && echo hello >"$TMP/notrep/notes.txt"
zd-recv --stdio --replica "$TMP/notrep" <"$TMP/a.json" >/dev/null 2>&1
[ "$(stat -c %a "$TMP/notrep")" = 755 ] && ok "someone else's directory is refused and left as it was" ||
	not_ok "someone else's directory is refused and left as it was" "$(stat -c %a "$TMP/notrep")"
if [ "$(id -u)" = 0 ]; then
	mkdir "$TMP/theirs" && chown 65534 "$TMP/theirs"
	expect_fail "a DIR owned by another user: exit 4" 4 "theirs: owned by uid 65534, not by this user \(uid 0\)" \
		zd-recv --stdio --replica "$TMP/theirs" <"$TMP/a.json"
else
	skip "a DIR owned by another user: exit 4" "needs root to chown"
fi

# 5. Links planted in the replica: refused with the file's name, the target
# untouched (zd-recv usually runs as root).
echo precious >"$TMP/victim"
plant() {	# plant NAME: a copy of the replica of part A, NAME a symlink to victim
	rm -rf "$TMP/p" && cp -a "$TMP/base" "$TMP/p" && rm -f "$TMP/p/$1" && ln -s "$TMP/victim" "$TMP/p/$1"
}
zd-recv --stdio --replica "$TMP/base" <"$TMP/a.json" >/dev/null 2>&1
untouched() {
	[ "$(cat "$TMP/victim")" = precious ] && [ ! -e "$TMP/x" ] && ok "... nothing written through it" ||
		not_ok "... nothing written through it" "victim: $(head -c 100 "$TMP/victim"); $(ls -l "$TMP/x" 2>&1)"
}
for f in meta.json memory.img; do
	plant $f
	expect_fail "DIR/$f a symbolic link: exit 4, named" 4 "^zd-recv: $TMP/p/$f: a symbolic link: refusing to follow it$" \
		zd-recv --stdio --replica "$TMP/p" <"$TMP/b.json"
	untouched
done
plant meta.json
expect_fail "... --status refuses it too" 4 "$TMP/p/meta.json: a symbolic link" zd-recv --replica "$TMP/p" --status
plant journal.tmp
ln -sfn "$TMP/x" "$TMP/p/journal.tmp"	# dangling: O_CREAT would make the target
expect_fail "DIR/journal.tmp a dangling symbolic link: exit 4, the replica stays at epoch 3" 4 \
	"record [0-9]+ \(CHECKPOINT\): $TMP/p/journal.tmp: a symbolic link: refusing to follow it; replica at epoch 3" \
	zd-recv --stdio --replica "$TMP/p" <"$TMP/b.json"
untouched
[ "$(replica_field "$TMP/p" epoch)" = 3 ] && ok "... replica at epoch 3" || not_ok "... replica at epoch 3"
plant journal
expect_fail "DIR/journal a symbolic link: recovery refuses it" 4 "$TMP/p/journal: a symbolic link" \
	zd-recv --replica "$TMP/p" --status
untouched
rm -rf "$TMP/p" && cp -a "$TMP/base" "$TMP/p" && rm -f "$TMP/p/journal.tmp"
cp "$TMP/victim" "$TMP/victim2" && ln "$TMP/victim2" "$TMP/p/journal.tmp"
expect_fail "DIR/journal.tmp a hard link to another file: exit 4" 4 "$TMP/p/journal.tmp: has 2 hard links" \
	zd-recv --stdio --replica "$TMP/p" <"$TMP/b.json"
[ "$(cat "$TMP/victim2")" = precious ] && ok "... nothing written through it" ||
	not_ok "... nothing written through it" "$(head -c 100 "$TMP/victim2")"
rm -rf "$TMP/p" && cp -a "$TMP/base" "$TMP/p" && rm -f "$TMP/p/journal.tmp" && mkfifo "$TMP/p/journal.tmp"
expect_fail "DIR/journal.tmp a FIFO: exit 4, no hang" 4 "$TMP/p/journal.tmp: not a regular file" \
	timeout 20 zd-recv --stdio --replica "$TMP/p" <"$TMP/b.json"
done_testing
