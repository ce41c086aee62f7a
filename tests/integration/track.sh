#!/usr/bin/env bash
# zd-track on the synth: and trace: targets: the records of each mode in
# the order they run, the feedback socket (ACK, DRAINED, MEMORY, a backup
# that never answers or hangs up), signals, --verify cross-checked through
# a replay, and the tool's flags.
. "$(dirname "$0")/../lib/tap.sh"

# The system's python starts in a tenth of the time of a version shim,
# which matters to a peer racing zd-track's --grace.
PY=python3; [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
PEER="$PY $(dirname "$0")/fbpeer.py"
SPEC=synth:pages=4096,dirty=64,hot=0.8,seed=5,pagesize=1024

# jqall FILE FILTER: FILTER yields a boolean per record it selects; all
# must be true and there must be at least one.
jqall() { jq -s -e "[.[] | $2] | length > 0 and all" "$1" >/dev/null; }

check "--help exits 0 and shows the defaults" sh -c 'zd-track --help | grep -q "(default 25)"'
check "--version" sh -c 'test "$(zd-track --version)" = "zd-track 0.1.0"'

# remus: CHECKPOINT DIRTY STATE COMMIT STAT per epoch, numbered from 1.
zd-track $SPEC --epochs 3 --interval 0 --json >"$TMP/remus.json" 2>"$TMP/remus.err"
types=$(jq -r .type "$TMP/remus.json" | tr '\n' ' ')
want="header checkpoint dirty state commit stat checkpoint dirty state commit stat checkpoint dirty state commit stat end "
[ "$types" = "$want" ] && ok "remus: records in the order the round runs" || not_ok "remus record order" "$types"
check "remus: epochs 1..3, the last FINAL, END clean" test "$(jq -c 'select(.type=="checkpoint")|[.epoch,.flags]' "$TMP/remus.json" | tr -d '\n')$(jq -c 'select(.type=="end")|[.epochs,.status]' "$TMP/remus.json")" = "[1,0][2,0][3,2][3,0]"
check "remus: COMMIT pages = DIRTY pages" test "$(jq -c 'select(.type=="dirty")|.pages' "$TMP/remus.json" | tr '\n' ,)" = "$(jq -c 'select(.type=="commit")|.pages' "$TMP/remus.json" | tr '\n' ,)"
check "remus: pause time in STAT track" jqall "$TMP/remus.json" 'select(.type=="stat")|.values.pause_ns > 0'
check "remus without a backup says so once" test "$(cat "$TMP/remus.err")" = "zd-track: no backup connected: running open loop"
check "HEADER names target, mode and control socket" jqall "$TMP/remus.json" "select(.type==\"header\")|.target==\"$SPEC\" and .mode==\"remus\" and .page_count==4096 and .page_size==1024 and (.control|test(\"zd-track[.][0-9]+[.]sock\$\"))"
sock=$(jq -r 'select(.type=="header")|.control' "$TMP/remus.json")
check "the control socket is gone after the run" test ! -e "$sock"

# buffered: pages copied inline; PAGES cover DIRTY exactly.
zd-track $SPEC --epochs 4 --interval 0 --mode buffered --json >"$TMP/buf.json" 2>/dev/null
check "buffered: CHECKPOINT flags PAGES_INLINE, pause in CHECKPOINT" jqall "$TMP/buf.json" 'select(.type=="checkpoint")|(.flags%2==1) and .pause_ns > 0 and .resume_ns > .t1_ns'
cover=$(jq -s -c '[range(1;5) as $e | ([.[]|select(.type=="pages" and .epoch==$e)|.ranges[]]) == ([.[]|select(.type=="dirty" and .epoch==$e)|.ranges[]])] | all' "$TMP/buf.json")
check "buffered: PAGES ranges equal DIRTY ranges in every epoch" test "$cover" = true

# zddspt: pre-copied PAGES (read at T0) go with their checkpoint, after
# its DIRTY, which is the frozen rest.
zd-track $SPEC --epochs 6 --interval 0 --mode zddspt --json >"$TMP/z.json" 2>/dev/null
check "zddspt: pre-copy PAGES (flag PRECOPY) follow their CHECKPOINT's DIRTY" test "$(jq -s -c '[foreach .[] as $r ({c:0,d:false,ok:true}; if $r.type=="checkpoint" then .c=$r.epoch | .d=false elif $r.type=="dirty" then .d=($r.epoch==.c) elif $r.type=="pages" then .ok = (.ok and $r.flags==1 and $r.epoch==.c and .d) else . end; .ok)] | all' "$TMP/z.json")" = true
check "zddspt: some pages pre-copied (last epoch's set as the hint)" jq -s -e '[.[]|select(.type=="pages")|.pages]|add > 0' "$TMP/z.json"
check "zddspt: no page copied while paused (no PAGES_INLINE)" jqall "$TMP/z.json" 'select(.type=="checkpoint")|.flags%2==0 and .t0_ns < .t1_ns'

# A failed write-protect is never taken for success: it used to be tried
# again, and a retry that worked called the frozen set guarded whatever the
# first attempt left behind. synth's stand-in guard (protect_fail=N)
# protects N-1 times, then fails; a zd-swap stand-in drains each epoch.
# Epochs to spare: the stand-in may connect late on a busy machine.
expect_fail "zddspt: a failed write-protect fails the run: exit 4" 4 '^zd-track: synth:.*: write-protect the frozen set: protect 3 fails \(protect_fail=3\)$' \
	bash -o pipefail -c "zd-track '$SPEC,protect_fail=3' --mode zddspt --epochs 500 --interval 10 --json | $PEER '$TMP/pf.json' drained 0"
check "zddspt: the epochs before the failed protect were guarded, none after" test "$(jq -c 'select(.type=="stat" and .source=="track" and .values.guarded==1)|.epoch' "$TMP/pf.json" | wc -l)" = 2
check "zddspt: the failed epoch has no COMMIT, END says failed" test "$(jq -s -c '[([.[]|select(.type=="commit")]|length) == ([.[]|select(.type=="stat" and .source=="track")]|length), (.[-1]|.type,.status)]' "$TMP/pf.json")" = '[true,"end",2]'

# --verify: synth's checksum (from its generator) equals the checksum the
# trace: target computes from the page contents recorded in the stream.
zd-track $SPEC --epochs 5 --interval 0 --mode buffered --verify >"$TMP/v.bin" 2>/dev/null
zd-track "trace:$TMP/v.bin" --interval 0 --verify --json >"$TMP/replay.json" 2>/dev/null
a=$(zd-mru --json <"$TMP/v.bin" | jq -c 'select(.type=="commit")|[.epoch,.flags,.memsum]' | tr -d '\n')
b=$(jq -c 'select(.type=="commit")|[.epoch,.flags,.memsum]' "$TMP/replay.json" | tr -d '\n')
[ -n "$a" ] && [ "$a" = "$b" ] && ok "--verify: memsums of the run equal those of its replay" || not_ok "--verify cross-check" "run $a / replay $b"
check "the replay's DIRTY sets are the run's" test "$(zd-mru --json <"$TMP/v.bin" | jq -c 'select(.type=="dirty")|.ranges')" = "$(jq -c 'select(.type=="dirty")|.ranges' "$TMP/replay.json")"
check "the replay ends with the trace: 5 epochs, clean END" test "$(jq -c 'select(.type=="end")|[.epochs,.status]' "$TMP/replay.json")" = "[5,0]"
expect_fail "trace without PAGES cannot supply page contents" 4 'zd-track: trace:.*: read pages: .*the trace has no PAGES for pfn [0-9]+' \
	sh -c "zd-track 'trace:$TMP/remus.json' --mode buffered --interval 0 >/dev/null"

# Signals end the stream cleanly: END status 1, the socket removed.
for sig in INT TERM; do
	sock=$TMP/ctl.$sig.sock
	zd-track $SPEC --interval 5 --control "$sock" >"$TMP/sig.bin" 2>/dev/null &
	pid=$!
	sleep 0.4
	live=no; [ -S "$sock" ] && live=yes
	kill -$sig $pid
	wait $pid
	rc=$?
	end=$(zd-mru --json <"$TMP/sig.bin" 2>/dev/null | jq -c 'select(.type=="end")|.status')
	if [ $rc -eq 0 ] && [ "$end" = 1 ] && [ "$live" = yes ] && [ ! -e "$sock" ]; then
		ok "SIG$sig: exit 0, END status 1, socket there while running and gone after"
	else
		not_ok "SIG$sig" "rc $rc, END status '$end', socket $sock live $live"
	fi
done

# remus closes the loop with a zd-send: the VM resumes only after the ACK.
zd-track $SPEC --epochs 5 --interval 0 --grace 30s --json 2>"$TMP/ack.err" | $PEER "$TMP/ack.json" ack 30
check "remus with a backup: no open-loop message" test ! -s "$TMP/ack.err"
check "remus with a backup: every pause lasts past the 30 ms ACK" jqall "$TMP/ack.json" 'select(.type=="stat" and .source=="track")|.values.pause_ns >= 30e6'
check "ACK records log T1-to-ACK latency" sh -c "test \$(jq -c 'select(.type==\"ack\" and .latency_ns >= 30e6)|.epoch' '$TMP/ack.json' | wc -l) -ge 4"
check "zd-stat reports the latency" sh -c "zd-stat --json '$TMP/ack.json' | jq -e '.latency_ns.p50 >= 30e6' >/dev/null"

zd-track $SPEC --epochs 3 --interval 0 --grace 30s --json 2>"$TMP/dr.err" | $PEER "$TMP/dr.json" drained 20
check "remus with zd-swap only: waits for DRAINED" jqall "$TMP/dr.json" 'select(.type=="stat" and .source=="track")|.values.pause_ns >= 20e6'

expect_fail "a backup that never acknowledges: exit 5" 5 '^zd-track: control socket: no ACK for epoch 1 within 300 ms$' \
	bash -o pipefail -c "zd-track $SPEC --epochs 3 --interval 0 --grace 30s --timeout 300 --json | $PEER '$TMP/x.json' silent"
expect_fail "a backup that hangs up mid-run: exit 5" 5 '^zd-track: control socket: the zd-send client left before epoch [0-9]+.s ACK$' \
	bash -o pipefail -c "zd-track $SPEC --epochs 3 --interval 0 --grace 30s --json | $PEER '$TMP/x.json' leave"
out=$(zd-track $SPEC --epochs 1 --interval 0 --grace 30s --json 2>/dev/null | $PEER "$TMP/x.json" memory)
check "MEMORY on synth: ERROR ENOTSUP (no fds to give)" test "$out" = "reply op 6 a 95"

# A reader that goes away: one line, exit 1, no hang.
zd-track $SPEC --interval 0 2>"$TMP/pipe.err" | head -c 100 >/dev/null
rc=${PIPESTATUS[0]}
[ "$rc" -eq 1 ] && [ "$(grep -c . "$TMP/pipe.err")" -le 2 ] && grep -q '^zd-track: stdout: Broken pipe' "$TMP/pipe.err" &&
	ok "stdout closed: exit 1 naming stdout" || not_ok "stdout closed" "rc $rc: $(cat "$TMP/pipe.err")"

# Real-time epochs: --interval 20 for 10 epochs takes about 200 ms.
t0=$(date +%s%N)
zd-track $SPEC --epochs 10 --interval 20 --mode buffered >/dev/null 2>&1
dt=$((($(date +%s%N) - t0) / 1000000))
[ $dt -ge 190 ] && [ $dt -lt 2000 ] && ok "--interval 20 paces epochs (10 in $dt ms)" || not_ok "--interval pacing" "$dt ms"

done_testing
