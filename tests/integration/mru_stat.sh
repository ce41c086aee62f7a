#!/usr/bin/env bash
# The foundation's done-when checks, and zd-mru / zd-stat around them:
#   zd-track synth:… --epochs 200 | zd-mru --policy P | zd-stat --json
# for every policy; the JSON encoding gives the same summary; jq reads the
# stream; a recorded stream replays through trace: with the same DIRTY
# sets; zd-mru's STANDBY reaches zd-track over the feedback socket.
. "$(dirname "$0")/../lib/tap.sh"

SPEC=synth:pages=262144,dirty=1024,hot=0.8,seed=1

for p in mru lfu lru none; do
	zd-track $SPEC --epochs 200 --interval 0 2>/dev/null | zd-mru --policy $p | zd-stat --json >"$TMP/$p.json"
done
zd-track $SPEC --epochs 200 --interval 0 --json 2>/dev/null | zd-mru --policy mru | zd-stat --json >"$TMP/mru-j.json"

r() { jq -r ".standby_recall_mean // 0" "$TMP/$1.json"; }
echo "# recall mean: mru $(r mru), lfu $(r lfu), lru $(r lru), none $(r none)"
check "200 epochs summarised" test "$(jq .epochs "$TMP/mru.json")" = 200
check "dirty 1024 per epoch" test "$(jq .dirty_mean "$TMP/mru.json")" = 1024
check "mru recall > 0.5" jq -e '.standby_recall_mean > 0.5' "$TMP/mru.json"
check "mru recall >= 3x none's" awk -v m="$(r mru)" -v n="$(r none)" 'BEGIN { exit !(m > 0 && m >= 3 * n) }'
check "none predicts nothing" test "$(r none)" = 0
check "mru recall above lru's" awk -v m="$(r mru)" -v l="$(r lru)" 'BEGIN { exit !(m > l) }'
check "lfu recall above lru's" awk -v f="$(r lfu)" -v l="$(r lru)" 'BEGIN { exit !(f > l) }'
check "precision is reported where there was a standby set" jq -e '.standby_precision_mean > 0 and .standby_precision_mean <= 1' "$TMP/mru.json"

# The two encodings are interchangeable: the same summary but for the
# stream's size and the timings of two different runs.
strip='del(.bytes, .pause_ns, .stall_ns, .latency_ns, .output_delay_ns, .wire_bytes)'
a=$(jq -c "$strip" "$TMP/mru.json")
b=$(jq -c "$strip" "$TMP/mru-j.json")
[ "$a" = "$b" ] && ok "binary and JSON streams give the same summary" || not_ok "encodings differ" "$a / $b"
check "both summaries carry stream bytes and pause percentiles" jq -e '.bytes > 0 and .pause_ns.p50 > 0 and .pause_ns.p99 >= .pause_ns.p50 and .pause_ns.max >= .pause_ns.p99' "$TMP/mru-j.json"

zd-track $SPEC --epochs 20 --interval 0 --json 2>/dev/null >"$TMP/s.json"
check "zd-track --json | jq . works" sh -c "jq . '$TMP/s.json' >/dev/null && test \$(jq -s length '$TMP/s.json') -eq $((2 + 20 * 5))"

# Record, replay through trace:, compare the DIRTY sets; both encodings.
zd-track $SPEC --epochs 30 --interval 0 2>/dev/null >"$TMP/rec.bin"
zd-mru --policy none --json <"$TMP/rec.bin" >"$TMP/rec.json"
zd-track "trace:$TMP/rec.bin" --interval 0 --json 2>/dev/null >"$TMP/replay.json"
zd-track "trace:$TMP/rec.json" --interval 0 --json 2>/dev/null >"$TMP/replay2.json"
dirty() { jq -c 'select(.type=="dirty")|[.epoch,.ranges]' "$1"; }
check "trace: replays the binary recording's DIRTY sets" test "$(dirty "$TMP/rec.json")" = "$(dirty "$TMP/replay.json")"
check "trace: replays the JSON recording's DIRTY sets" test "$(dirty "$TMP/rec.json")" = "$(dirty "$TMP/replay2.json")"
# A zddspt recording names pre-copied pages in PAGES only; replayed, the
# epochs dirty the same pages as a remus run of the same synth spec.
zd-track synth:pages=4096,dirty=64,seed=4 --mode zddspt --epochs 20 --interval 0 >"$TMP/z.bin" 2>/dev/null
zd-track synth:pages=4096,dirty=64,seed=4 --epochs 20 --interval 0 --grace 0 --json >"$TMP/r.json" 2>/dev/null
zd-track "trace:$TMP/z.bin" --interval 0 --grace 0 --json >"$TMP/zr.json" 2>/dev/null
check "trace: a zddspt recording replays as the epochs' whole dirty sets" test "$(dirty "$TMP/r.json")" = "$(dirty "$TMP/zr.json")"
check "trace: names the trace in its HEADER" jq -s -e ".[0].type==\"header\" and .[0].target==\"trace:$TMP/rec.bin\"" "$TMP/replay.json"

# zd-mru passes every record through, unknown types too.
zd-track synth:pages=4096,dirty=64 --epochs 5 --interval 0 --json 2>/dev/null >"$TMP/small.json"
sed '2a {"type":"x-future","epoch":1,"payload":[1,2,3],"note":"from a newer zd"}' "$TMP/small.json" >"$TMP/unk.json"
zd-mru --json <"$TMP/unk.json" >"$TMP/unk.out"
check "an unknown record passes zd-mru unchanged" grep -qxF '{"type":"x-future","epoch":1,"payload":[1,2,3],"note":"from a newer zd"}' "$TMP/unk.out"
zd-mru <"$TMP/unk.json" | zd-mru --json >"$TMP/unk2.out"
check "… and through a binary stream and back" sh -c "jq -c 'select(.type==\"x-future\")' '$TMP/unk2.out' | grep -q payload"
in=$(jq -c 'select(.type!="standby" and (.type!="stat" or .source!="mru"))' "$TMP/unk.json")
out=$(jq -c 'select(.type!="standby" and (.type!="stat" or .source!="mru"))' "$TMP/unk.out")
[ "$in" = "$out" ] && ok "zd-mru adds STANDBY and STAT mru, changes nothing else" || not_ok "zd-mru changed records" "$(diff <(echo "$in") <(echo "$out") | head -5)"
check "one STANDBY per epoch, for the next epoch" test "$(jq -c 'select(.type=="standby")|.epoch' "$TMP/unk.out" | tr '\n' ,)" = "2,3,4,5,6,"
check "STAT mru from epoch 2 with precision, recall, counts" jq -s -e '[.[]|select(.type=="stat" and .source=="mru")] | length == 4 and all(.values | has("precision") and has("recall") and has("standby") and has("dirty"))' "$TMP/unk.out"
check "--budget 10: ten pages" jq -s -e '[.[]|select(.type=="standby")|.pages] | all(. == 10)' <(zd-mru --budget 10 --json <"$TMP/small.json")
check "--budget 50%: half the last dirty count" jq -s -e '[.[]|select(.type=="standby")|.pages] | all(. == 32)' <(zd-mru --budget 50% --json <"$TMP/small.json")
check "--policy none: empty STANDBY sets" jq -s -e '[.[]|select(.type=="standby")|.pages] | all(. == 0)' <(zd-mru --policy none --json <"$TMP/small.json")
zd-mru <"$TMP/small.json" >/dev/null 2>"$TMP/quiet.err"
check "a recorded stream's dead control socket: zd-mru stays quiet" test ! -s "$TMP/quiet.err"

# The feedback socket: with ZD_ZDDSPT_PRECOPY_ALL=0 zddspt pre-copies what
# zd-mru predicts (the paper's standby set; by default every page dirtied
# so far). With --policy none every STANDBY is empty and pre-copy stops
# once the first one arrives; with mru it goes on.
pre() {
	ZD_ZDDSPT_PRECOPY_ALL=0 zd-track synth:pages=65536,dirty=512,hot=0.9,seed=3 --mode zddspt --epochs 40 --interval 10 --precopy 20 2>/dev/null |
		zd-mru --policy "$1" | zd-stat --json | jq .precopy_total
}
pm=$(pre mru)
pn=$(pre none)
echo "# pre-copied pages in 40 epochs: mru $pm, none $pn"
check "STANDBY reaches zd-track: pre-copy follows the policy" test "$pm" -gt $((20 * 100)) -a "$pn" -lt $((4 * 512))

# zd-stat's other outputs.
zd-track synth:pages=4096,dirty=64 --epochs 50 --interval 0 --mode buffered 2>/dev/null | zd-mru >"$TMP/b.bin"
check "--csv: a header and one row per epoch" sh -c "zd-stat --csv '$TMP/b.bin' >'$TMP/b.csv' && test \$(wc -l <'$TMP/b.csv') -eq 51 && head -1 '$TMP/b.csv' | grep -qx 'epoch,dirty,precopy,standby,precision,recall,pause_ns,latency_ns,pages_sent,bytes,wire_bytes,stall_ns,cow_faults,cow_block_ns,guest_stall_ns,guest_lost_ns,to_ckpt_ns,to_commit_ns,to_wire_ns,to_ack_ns,net_ns,recv_total_ns,recv_verify_ns,recv_checksum_ns,recv_fsync_ns,recv_commit_ns,recv_apply_ns,recv_ack_ns,recv_receive_ns,recv_stage_ns,recv_decode_ns,recv_journal_ns'"
check "--csv: 32 fields a row, pages sent = dirty in buffered mode" awk -F, 'NR > 1 && (NF != 32 || $2 != $9) { bad = 1 } END { exit bad }' "$TMP/b.csv"
zd-stat "$TMP/b.bin" >"$TMP/b.txt"
check "table: one row per epoch, then the summary" sh -c "test \$(grep -cE '^ +[0-9]+ +64 ' '$TMP/b.txt') -eq 50 && grep -q '^epochs 50, mode buffered' '$TMP/b.txt' && grep -q '^pause us: p50' '$TMP/b.txt'"
check "--plot writes a PNG" sh -c "zd-stat --json --plot '$TMP/p.png' '$TMP/b.bin' >/dev/null && head -c 4 '$TMP/p.png' | od -c | grep -q 'P   N   G'"
expect_fail "--plot into a missing directory: one line, exit 1" 1 '^zd-stat: --plot .*gnuplot failed' \
	zd-stat --json --plot /nonexistent/dir/p.png "$TMP/b.bin"
check "zd-stat reads stdin and '-' alike" sh -c "test \"\$(zd-stat --json <'$TMP/b.bin')\" = \"\$(zd-stat --json - <'$TMP/b.bin')\""

# --help and the man page agree on the synopsis; --version.
for t in zd-track zd-mru zd-stat; do
	check "$t --version" test "$($t --version)" = "$t 0.1.0"
	help=$($t --help | sed -n '/^usage:/,/^$/p' | sed 's/^usage: //' | tr -s ' \n' '  ' | sed 's/ $//')
	man=$(sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$ZD_TOP/man/$t.1" | grep -v '^\.' | sed 's/\\-/-/g; s/\\f[BIR]//g; s/\\(em/-/g' | tr -s ' \n' '  ' | sed 's/ $//')
	[ -n "$help" ] && [ "$help" = "$man" ] && ok "$t: --help usage = man SYNOPSIS" || not_ok "$t synopsis" "help: $help / man: $man"
done

done_testing
