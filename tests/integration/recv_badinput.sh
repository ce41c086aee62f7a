#!/usr/bin/env bash
# zd-recv never applies a broken epoch: corrupt, inconsistent or truncated
# input is refused with one line naming where, and the replica stays at the
# previous committed epoch with the primary's checksum for it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"
REC="python3 $(dirname "$0")/../lib/zdrecords.py"

SPEC=synth:pages=4096,dirty=256,hot=0.8,seed=9
N=6
K=4	# the epoch the tests break
zd-track "$SPEC" --epochs $N --interval 0 --verify 2>/dev/null | zd-swap >"$TMP/s.bin" 2>/dev/null
zd-swap --json <"$TMP/s.bin" >"$TMP/s.json" 2>/dev/null
$REC "$TMP/s.bin" >"$TMP/s.idx" || exit 1
jq -r 'select(.type == "commit") | "\(.epoch) \(.memsum)"' "$TMP/s.json" >"$TMP/sums"
[ "$(wc -l <"$TMP/sums")" = $N ] || { echo "Bail out! no reference stream"; exit 1; }
sum_at() { awk -v e="$1" '$1 == e { print $2 }' "$TMP/sums"; }

# at_epoch WHAT DIR E: the replica in DIR is at epoch E with the right checksum.
at_epoch() {
	local e s
	e=$(replica_field "$2" epoch)
	s=$(replica_field "$2" memsum)
	[ "$e" = "$3" ] && [ "$s" = "$(sum_at "$3")" ] && ok "$1: replica kept at epoch $3" ||
		not_ok "$1: replica kept at epoch $3" "epoch $e memsum $s want $(sum_at "$3")"
}

# (ACKs go to stdout: keep them out of check's captured output.)
check "the intact stream replicates" bash -c 'zd-recv --stdio --replica "$1" <"$2" >/dev/null' _ "$TMP/good" "$TMP/s.bin"
at_epoch "intact stream" "$TMP/good" $N

# 1. A flipped byte inside a PAGES record of epoch K: CRC mismatch.
read -r idx off _ len _ < <(awk -v k=$K '$3 == "PAGES" && $5 == k' "$TMP/s.idx" | head -1)
python3 -c '
import sys
d = bytearray(open(sys.argv[1], "rb").read()); d[int(sys.argv[3])] ^= 0x40
open(sys.argv[2], "wb").write(d)' "$TMP/s.bin" "$TMP/flip.bin" $((off + 12 + len / 2))
expect_fail "flipped byte in PAGES of epoch $K: exit 3, names offset and record" 3 \
	"stdin: byte $off: record $idx \(PAGES\): crc mismatch.*epoch $K discarded, replica stays at epoch $((K - 1))" \
	zd-recv --stdio --replica "$TMP/flip" <"$TMP/flip.bin"
at_epoch "flipped byte" "$TMP/flip" $((K - 1))

# 2. PAGES that do not cover the DIRTY set: one page fewer in DIRTY (and in
# COMMIT's count) than PAGES carry; then PAGES missing altogether.
jq -c --argjson k $K 'if .epoch == $k and .type == "dirty" then
		(if .ranges[0][1] > 1 then .ranges[0] = [.ranges[0][0] + 1, .ranges[0][1] - 1]
		 else .ranges |= .[1:] end) | .pages -= 1
	elif .epoch == $k and .type == "commit" then .pages -= 1 else . end' "$TMP/s.json" >"$TMP/extra.json"
expect_fail "PAGES beyond the DIRTY set: refused, exit 3" 3 \
	"record [0-9]+ \(COMMIT\): epoch $K: PAGES carry 1 pages beyond the [0-9]+ DIRTY ones.*replica stays at epoch $((K - 1))" \
	zd-recv --stdio --replica "$TMP/extra" <"$TMP/extra.json"
at_epoch "PAGES beyond DIRTY" "$TMP/extra" $((K - 1))
jq -c --argjson k $K 'select(.epoch != $k or .type != "pages")' "$TMP/s.json" >"$TMP/miss.json"
expect_fail "DIRTY pages without PAGES: refused, exit 3" 3 \
	"\(COMMIT\): epoch $K: PAGES miss 256 of 256 DIRTY pages" \
	zd-recv --stdio --replica "$TMP/miss" <"$TMP/miss.json"
at_epoch "PAGES missing" "$TMP/miss" $((K - 1))

# 3. Page contents that are not the primary's (JSON has no CRC to catch it):
# the memory checksum in COMMIT does.
jq -c --argjson k $K 'if .epoch == $k and .type == "pages" then
		.data = (.data[0:100] + (if .data[100:101] == "A" then "B" else "A" end) + .data[101:]) else . end' \
	"$TMP/s.json" >"$TMP/memsum.json"
expect_fail "wrong page contents: memory checksum mismatch, exit 3" 3 \
	"epoch $K: replica memory checksum 0x[0-9a-f]+ differs from the primary's" \
	zd-recv --stdio --replica "$TMP/memsum" <"$TMP/memsum.json"
at_epoch "wrong contents" "$TMP/memsum" $((K - 1))
check "--no-verify skips the memory checksum" \
	bash -c 'zd-recv --stdio --no-verify --replica "$1" <"$2" >/dev/null' _ "$TMP/nover" "$TMP/memsum.json"

# 4. The input stops inside epoch K (the sender died): exit 5.
head -c $((off + 12 + len / 2)) "$TMP/s.bin" >"$TMP/trunc.bin"
expect_fail "truncated inside epoch $K: exit 5" 5 \
	"record $idx \(PAGES\): truncated.*epoch $K discarded, replica stays at epoch $((K - 1))" \
	zd-recv --stdio --replica "$TMP/trunc" <"$TMP/trunc.bin"
at_epoch "truncated" "$TMP/trunc" $((K - 1))
read -r _ coff _ < <(awk -v k=$K '$3 == "COMMIT" && $5 == k' "$TMP/s.idx")
head -c "$coff" "$TMP/s.bin" >"$TMP/cut.bin"
expect_fail "input ends between records, before COMMIT $K: exit 5" 5 \
	"input ended without END; epoch $K discarded" \
	zd-recv --stdio --replica "$TMP/cut" <"$TMP/cut.bin"
at_epoch "cut before COMMIT" "$TMP/cut" $((K - 1))

# 5. A stream that does not fit the replica, or a replica that does not fit.
zd-track synth:pages=8192,dirty=16,seed=1 --epochs 2 --interval 0 2>/dev/null | zd-swap >"$TMP/big.bin" 2>/dev/null
expect_fail "stream for another page count: refused, exit 3" 3 \
	"stream has 8192 pages of 4096 bytes, replica .* has 4096 of 4096" \
	zd-recv --stdio --replica "$TMP/good" <"$TMP/big.bin"
at_epoch "other page count" "$TMP/good" $N
zd-track "$SPEC" --epochs 2 --interval 0 2>/dev/null | zd-swap >"$TMP/nosum.bin" 2>/dev/null
expect_fail "--verify and a COMMIT without checksum: exit 3" 3 \
	"COMMIT of epoch 1 has no memory checksum" \
	zd-recv --stdio --verify --replica "$TMP/nosum" <"$TMP/nosum.bin"
expect_fail "a second run over a replica of another run: exit 3" 3 "holds another run" \
	zd-recv --stdio --replica "$TMP/good" <"$TMP/nosum.bin"
at_epoch "another run" "$TMP/good" $N

mkdir "$TMP/notrep"; echo hello >"$TMP/notrep/notes.txt"
expect_fail "a directory that is not a replica: exit 4" 4 "notrep: not a zd replica \(no meta.json, holds 'notes.txt'\)" \
	zd-recv --stdio --replica "$TMP/notrep" <"$TMP/s.bin"
[ "$(ls "$TMP/notrep")" = notes.txt ] && ok "... and it is left alone" || not_ok "... and it is left alone" "$(ls "$TMP/notrep")"
expect_fail "--status on a directory that is not a replica: exit 4" 4 "not a zd replica" \
	zd-recv --replica "$TMP/notrep" --status
echo x >"$TMP/afile"
expect_fail "a file as replica: exit 4" 4 "afile: Not a directory" zd-recv --stdio --replica "$TMP/afile" </dev/null
mkdir "$TMP/badmeta"; echo '{"format": "zd-replica", "version": 7}' >"$TMP/badmeta/meta.json"
expect_fail "meta.json of an unknown version: exit 4" 4 "meta.json: unknown replica version" \
	zd-recv --replica "$TMP/badmeta" --status
cp -r "$TMP/good" "$TMP/damaged"
printf 'Z' | dd of="$TMP/damaged/memory.img" bs=1 seek=12345 conv=notrunc 2>/dev/null
expect_fail "--status on a damaged memory image: exit 4" 4 "checksum 0x[0-9a-f]+ differs from 0x[0-9a-f]+ recorded at epoch $N \(damaged replica\)" \
	zd-recv --replica "$TMP/damaged" --status

# 6. Usage errors: exit 2, one line.
expect_fail "no --replica: exit 2" 2 "--replica DIR is required" zd-recv --stdio
expect_fail "neither --listen nor --stdio: exit 2" 2 "exactly one of --listen" zd-recv --replica "$TMP/u"
expect_fail "both --listen and --stdio: exit 2" 2 "exactly one of --listen" zd-recv --listen :0 --stdio --replica "$TMP/u"
expect_fail "--status with --stdio: exit 2" 2 "--status takes only --replica" zd-recv --status --stdio --replica "$TMP/u"
expect_fail "--verify with --no-verify: exit 2" 2 "conflict" zd-recv --stdio --verify --no-verify --replica "$TMP/u"
expect_fail "bad port: exit 2" 2 "bad port" zd-recv --listen 127.0.0.1:http --replica "$TMP/u"
expect_fail "--port-file without --listen: exit 2" 2 "port-file goes with --listen" \
	zd-recv --stdio --port-file "$TMP/p" --replica "$TMP/u"
expect_fail "IPv6 without brackets: exit 2" 2 "write IPv6 as \[V6\]:PORT" zd-recv --listen ::1:7070 --replica "$TMP/u"
expect_fail "extra argument: exit 2" 2 "unexpected argument" zd-recv --stdio --replica "$TMP/u" extra
[ ! -e "$TMP/u" ] && ok "usage errors touch nothing" || not_ok "usage errors touch nothing"
expect_fail "zd-swap extra argument: exit 2" 2 "unexpected argument" zd-swap foo
# A recorded stream names a control socket long gone: zd-swap says once that
# it runs open loop, then the one line about the bad record.
zd-swap <"$TMP/flip.bin" >/dev/null 2>"$TMP/swap.err"
rc=$?
[ $rc = 3 ] && tail -1 "$TMP/swap.err" | grep -qE "stdin: byte $off: record $idx \(PAGES\): crc mismatch" &&
	[ "$(grep -vc "open loop" "$TMP/swap.err")" = 1 ] && ok "zd-swap on a corrupt stream: exit 3, one line" ||
	not_ok "zd-swap on a corrupt stream: exit 3, one line" "exit $rc: $(cat "$TMP/swap.err")"
# Through pipes, zd-mru and zd-swap pass big PAGES on unread (splice): the
# record's CRC comes along, and the stage that reads the pages refuses it.
cat "$TMP/flip.bin" | zd-mru 2>/dev/null | zd-swap 2>/dev/null |
	zd-recv --stdio --replica "$TMP/flip2" >/dev/null 2>"$TMP/flip2.err"
rc=$?
[ $rc = 3 ] && grep -qE "record [0-9]+ \(PAGES\): crc mismatch.*epoch $K discarded" "$TMP/flip2.err" &&
	ok "a corrupt PAGES through zd-mru | zd-swap: zd-recv refuses it, exit 3" ||
	not_ok "a corrupt PAGES through zd-mru | zd-swap: zd-recv refuses it, exit 3" "exit $rc: $(cat "$TMP/flip2.err")"
at_epoch "flipped byte through the stages" "$TMP/flip2" $((K - 1))
done_testing
