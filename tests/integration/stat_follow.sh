#!/usr/bin/env bash
# zd-stat for people watching a run, with real tools and
# real pipes:
#   --follow prints lines while the stream runs (a live zd-track through a
#     FIFO; a stalled stream; every N epochs);
#   SIGINT and SIGTERM print the report so far and exit 130 and 143, also
#     while blocked on a silent pipe, also as Ctrl-C to a whole pipeline;
#   a cut stream gets its report, exit 3 and one line naming where it was cut;
#   pages sent on zd-send's log are those zd-recv received (not 0).
# A shell's background job ignores SIGINT (and zd-stat keeps it ignored, as
# it should): env --default-signal gives it back to the ones signalled here.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/wait.sh"

SPEC=synth:pages=4096,dirty=64,seed=3
FOLLOW_LINE='^\[ *[0-9]+\.[0-9]s\] epoch [0-9]+: [0-9]+ epochs, sent [0-9]+ pages, [0-9]+ bytes'
zd-track $SPEC --epochs 20 --interval 0 --grace 0 2>/dev/null >"$TMP/s.zds"
python3 "$ZD_TOP/tests/lib/zdrecords.py" "$TMP/s.zds" >"$TMP/s.recs"
# the epoch a follow line names: "[   1.0s] epoch 12: ..." -> 12
line_epoch() { sed -n 's/^\[[^]]*\] epoch \([0-9]*\):.*/\1/p' "$1" | tail -n "${2:-1}" | head -1; }
lines() { grep -cE -- "$2" "$1" 2>/dev/null; }
# PID has its SIGINT handler (SigCgt bit 2): signalled before that, a slow
# start would die of it, report or not
catches_sigint() { local m; m=$(awk '$1 == "SigCgt:" { print $2 }' "/proc/$1/status" 2>/dev/null); [ -n "$m" ] && (((0x$m & 2) != 0)); }
_has_lines() { local n; n=$(lines "$1" "$2"); [ "${n:-0}" -ge "$3" ]; }

# 1. A live run: zd-track into a FIFO, zd-stat --follow reading it. A line
# must come while both still run (the old zd-stat printed nothing before
# the end), the next ones further on; then SIGINT: the report, exit 130.
mkfifo "$TMP/live"
zd-track $SPEC --epochs 1000000 --interval 20ms --grace 0 >"$TMP/live" 2>"$TMP/live.track.err" &
TRACK=$!
at_exit "kill $TRACK"
env --default-signal=INT zd-stat --follow=200ms <"$TMP/live" >"$TMP/live.out" 2>"$TMP/live.err" &
STAT=$!
at_exit "kill $STAT"
if wait_for 10 _has_lines "$TMP/live.out" "$FOLLOW_LINE" 1 && alive $TRACK && alive $STAT; then
	ok "--follow: a line while the stream still runs ($(head -1 "$TMP/live.out"))"
else
	not_ok "--follow: a line while the stream still runs" "out: $(cat "$TMP/live.out"); err: $(cat "$TMP/live.err" "$TMP/live.track.err")"
fi
first=$(line_epoch "$TMP/live.out")
wait_for 10 _has_lines "$TMP/live.out" "$FOLLOW_LINE" 4
last=$(line_epoch "$TMP/live.out")
[ -n "$first" ] && [ -n "$last" ] && [ "$last" -gt "$first" ] && alive $TRACK &&
	ok "--follow: later lines name later epochs ($first, then $last)" ||
	not_ok "--follow: later lines name later epochs" "first '$first' last '$last': $(cat "$TMP/live.out")"
kill -INT $STAT
wait_for 10 eval "! alive $STAT" || kill -KILL $STAT
wait $STAT
rc=$?
epochs=$(sed -n 's/^epochs \([0-9]*\), mode remus, target .*/\1/p' "$TMP/live.out")
if [ $rc = 130 ] && [ -n "$epochs" ] && [ "$epochs" -ge "$last" ]; then
	ok "SIGINT mid-stream: the report so far ($epochs epochs), exit 130"
else
	not_ok "SIGINT mid-stream: the report so far, exit 130" "exit $rc, epochs '$epochs' (last follow line: epoch $last): $(tail -5 "$TMP/live.out")"
fi
if [ "$(grep -c . "$TMP/live.err")" = 1 ] && grep -qE '^zd-stat: stdin: byte [0-9]+: after record [0-9]+: SIGINT' "$TMP/live.err"; then
	ok "SIGINT: one stderr line naming where reading stopped"
else
	not_ok "SIGINT: one stderr line naming where reading stopped" "$(cat "$TMP/live.err")"
fi
grep -qE '^ +1 +64 ' "$TMP/live.out" && ok "SIGINT: the per-epoch table is there too" ||
	not_ok "SIGINT: the per-epoch table is there too" "$(head -12 "$TMP/live.out")"
kill $TRACK 2>/dev/null
wait $TRACK 2>/dev/null

# The stream cut after record $1 (at a record boundary), held open: a
# primary that went silent. The writer is sleep itself ($! is its pid).
stall() {
	local off
	off=$(awk -v n="$1" '$1 == n + 1 { print $2 }' "$TMP/s.recs")
	rm -f "$TMP/stall"
	mkfifo "$TMP/stall"
	{ head -c "$off" "$TMP/s.zds"; exec sleep 60; } >"$TMP/stall" &
	WRITER=$!
	at_exit "kill $WRITER"
}
# checkpoints among the first $1 records
ckpts_before() { awk -v n="$1" '$1 <= n && $3 == "CHECKPOINT"' "$TMP/s.recs" | wc -l; }

# 2. A stalled stream: --follow goes on printing (the same epoch) while
# nothing comes; SIGTERM then gives the report of what came, exit 143.
CUT=$(awk '$3 == "COMMIT" && $5 == 9 { print $1 }' "$TMP/s.recs")
stall "$CUT"
zd-stat --json --follow=100ms <"$TMP/stall" >"$TMP/stall.out" 2>"$TMP/stall.err" &
STAT=$!
at_exit "kill $STAT"
# three more lines once the writer is down to its sleep (all was written)
wait_for 10 eval '[ "$(cat /proc/$WRITER/comm 2>/dev/null)" = sleep ]'
n=$(lines "$TMP/stall.out" '^\{"follow":true')
if wait_for 10 _has_lines "$TMP/stall.out" '^\{"follow":true' $((${n:-0} + 3)) && alive $STAT; then
	got=$(jq -r 'select(.follow) | .epoch' "$TMP/stall.out" | tail -n 2 | sort -u | tr '\n' ' ')
	[ "$got" = "9 " ] && ok "--follow --json: lines go on while the stream is silent (epoch $got)" ||
		not_ok "--follow --json: lines go on while the stream is silent, at epoch 9" "epochs $got: $(head -3 "$TMP/stall.out")"
else
	not_ok "--follow --json: lines go on while the stream is silent" "$(cat "$TMP/stall.out" "$TMP/stall.err")"
fi
kill -TERM $STAT
# (not ended 10 s after the signal: killed, and the exit checked fails)
wait_for 10 eval "! alive $STAT" || kill -KILL $STAT
wait $STAT
rc=$?
got=$(tail -1 "$TMP/stall.out" | jq -c '[.follow, .epochs]')
want=$(ckpts_before "$CUT")
[ $rc = 143 ] && [ "$got" = "[null,$want]" ] &&
	grep -qE '^zd-stat: stdin: byte [0-9]+: after record '"$CUT"': SIGTERM' "$TMP/stall.err" &&
	ok "SIGTERM on a silent stream: the summary last ($want epochs), exit 143, one line" ||
	not_ok "SIGTERM on a silent stream: the summary, exit 143" "exit $rc, last line $got (want [null,$want]): $(cat "$TMP/stall.err")"
kill $WRITER 2>/dev/null

# 3. No --follow, blocked in a read on a silent pipe: SIGINT still ends
# it at once with the report (the signal is not lost between the flag
# check and the wait).
stall "$CUT"
env --default-signal=INT zd-stat <"$TMP/stall" >"$TMP/quiet.out" 2>"$TMP/quiet.err" &
STAT=$!
at_exit "kill $STAT"
# signalled once all there is was read: the writer is down to its sleep,
# zd-stat waits in poll (where the kernel says: else give it a second)
_drained() {
	[ "$(cat "/proc/$WRITER/comm" 2>/dev/null)" = sleep ] && catches_sigint $STAT || return 1
	case $(cat "/proc/$STAT/wchan" 2>/dev/null) in *poll*) return 0 ;; "" | 0) sleep 1 ;; *) return 1 ;; esac
}
wait_for 10 _drained
kill -INT $STAT
if wait_for 5 eval "! alive $STAT"; then
	wait $STAT
	rc=$?
	[ $rc = 130 ] && grep -q "^epochs $want, " "$TMP/quiet.out" &&
		ok "SIGINT while blocked on a silent pipe: report ($want epochs), exit 130" ||
		not_ok "SIGINT while blocked on a silent pipe: report, exit 130" "exit $rc: $(tail -3 "$TMP/quiet.out") $(cat "$TMP/quiet.err")"
else
	not_ok "SIGINT while blocked on a silent pipe: zd-stat ends" "still running 5 s later"
fi
kill $WRITER 2>/dev/null
# A SIGINT ignored when zd-stat started (a shell's background job, as
# here without env) stays ignored: it reads on.
stall "$CUT"
zd-stat <"$TMP/stall" >"$TMP/ign.out" 2>"$TMP/ign.err" &
STAT=$!
at_exit "kill $STAT"
sleep 0.3
kill -INT $STAT
sleep 0.5
alive $STAT && [ ! -s "$TMP/ign.out" ] && ok "a SIGINT ignored at the start stays ignored" ||
	not_ok "a SIGINT ignored at the start stays ignored" "$(cat "$TMP/ign.err")"
kill $WRITER 2>/dev/null
wait $STAT
rc=$?
[ $rc = 0 ] || [ $rc = 3 ] && grep -q "^epochs $want, " "$TMP/ign.out" &&
	ok "... and the stream's end gives the report" || not_ok "... and the stream's end gives the report" "exit $rc: $(cat "$TMP/ign.err")"

# 4. Ctrl-C as a terminal sends it: SIGINT to the whole pipeline's process
# group (setsid: a group of its own). zd-track ends its stream, zd-stat
# reports and exits 130.
setsid env --default-signal=INT bash -c 'zd-track "$1" --interval 20ms --grace 0 2>/dev/null |
	zd-stat --follow=200ms >"$2/pg.out" 2>"$2/pg.err"; echo "${PIPESTATUS[*]}" >"$2/pg.rc"' _ "$SPEC" "$TMP" &
PG=$!
at_exit "kill -KILL -- -$PG"
wait_line "$TMP/pg.out" "$FOLLOW_LINE" 10
kill -INT -- -$PG
wait_for 10 test -s "$TMP/pg.rc"
rc=$(cat "$TMP/pg.rc" 2>/dev/null)
[ "${rc#* }" = 130 ] && grep -qE '^epochs [1-9][0-9]*, ' "$TMP/pg.out" && grep -q SIGINT "$TMP/pg.err" &&
	ok "Ctrl-C to 'zd-track | zd-stat --follow': the report, zd-stat exits 130" ||
	not_ok "Ctrl-C to the pipeline: the report, zd-stat exits 130" "exits '$rc': $(tail -3 "$TMP/pg.out") $(cat "$TMP/pg.err")"

# 5. --follow=epochs:N, deterministic on a file: a line as epochs 5, 10,
# 15 are complete (the next CHECKPOINT came), none at the end.
zd-stat --follow=epochs:5 "$TMP/s.zds" >"$TMP/ep.out" 2>"$TMP/ep.err"
rc=$?
got=$(sed -n 's/^\[[^]]*\] epoch \([0-9]*\): \([0-9]*\) epochs, .*/\1:\2/p' "$TMP/ep.out" | tr '\n' ' ')
[ $rc = 0 ] && [ "$got" = "5:5 10:10 15:15 " ] && grep -q '^epochs 20, ' "$TMP/ep.out" &&
	ok "--follow=epochs:5: lines at epochs 5, 10, 15, then the report" ||
	not_ok "--follow=epochs:5: lines at epochs 5, 10, 15" "exit $rc, got '$got': $(cat "$TMP/ep.err")"
got=$(zd-stat --json --follow=epochs:5 "$TMP/s.zds" | jq -c 'select(.follow) | .epochs' | tr '\n' ' ')
[ "$got" = "5 10 15 " ] && ok "--follow=epochs:5 --json: three follow objects" || not_ok "--follow=epochs:5 --json" "$got"

# 6. Cut streams get their report, exit 3 and one line naming where.
# Inside a record (the DIRTY of epoch 12, 5 bytes into its body):
read -r idx off type len _ < <(awk '$3 == "DIRTY" && $5 == 12' "$TMP/s.recs")
head -c $((off + 12 + 5)) "$TMP/s.zds" >"$TMP/cut.zds"
zd-stat --json "$TMP/cut.zds" >"$TMP/cut.json" 2>"$TMP/cut.err"
rc=$?
want=$(ckpts_before $((idx - 1)))
got=$(jq .epochs "$TMP/cut.json" 2>/dev/null)
[ $rc = 3 ] && [ "$got" = "$want" ] && ok "cut inside record $idx: the report of the $want epochs before, exit 3" ||
	not_ok "cut inside a record: report, exit 3" "exit $rc, epochs '$got' want $want: $(cat "$TMP/cut.err")"
pat="^zd-stat: $TMP/cut.zds: byte $off: record $idx \\($type\\): truncated: stream ends at byte $((off + 17)) inside a $len-byte body; the report covers"
[ "$(grep -c . "$TMP/cut.err")" = 1 ] && grep -qE "$pat" "$TMP/cut.err" &&
	ok "cut inside a record: one stderr line with its byte offset and record" ||
	not_ok "cut inside a record: one line naming byte $off, record $idx" "$(cat "$TMP/cut.err")"
# Between records, without END (a log whose writer died between writes):
head -c "$(awk -v n="$CUT" '$1 == n + 1 { print $2 }' "$TMP/s.recs")" "$TMP/s.zds" >"$TMP/cut2.zds"
expect_fail "cut between records: exit 3, one line" 3 \
	"^zd-stat: stdin: byte [0-9]+: after record $CUT: truncated: the stream ends without END; the report covers" \
	sh -c "zd-stat <'$TMP/cut2.zds'"
grep -q "^epochs $(ckpts_before "$CUT"), " "$TMP/ef.out" && ok "cut between records: the report too" ||
	not_ok "cut between records: the report too" "$(tail -3 "$TMP/ef.out")"
# JSON lines, cut inside a line:
zd-track $SPEC --epochs 5 --interval 0 --grace 0 --json 2>/dev/null | head -c 1500 >"$TMP/cut.jsonl"
expect_fail "JSON stream cut inside a line: exit 3, one line" 3 \
	"^zd-stat: stdin: line [0-9]+: record [0-9]+: truncated: .*; the report covers" sh -c "zd-stat <'$TMP/cut.jsonl'"
grep -qE '^epochs [0-9]+, mode remus' "$TMP/ef.out" && ok "JSON cut: the report too" || not_ok "JSON cut: the report too" "$(cat "$TMP/ef.out")"
# Other damage still gets no report (a flipped byte in the middle: CRC).
python3 -c 'import sys; d = bytearray(open(sys.argv[1], "rb").read()); d[int(sys.argv[2])] ^= 4; sys.stdout.buffer.write(d)' \
	"$TMP/s.zds" $((off + 14)) >"$TMP/flip.zds"
expect_fail "a flipped bit: exit 3, one line" 3 "^zd-stat: $TMP/flip.zds: byte $off: record $idx" zd-stat "$TMP/flip.zds"
[ ! -s "$TMP/ef.out" ] && ok "a flipped bit: no report" || not_ok "a flipped bit: no report" "$(head -3 "$TMP/ef.out")"

# 7. zd-send's log: pages sent are the pages zd-recv received. zd-recv runs
# behind a stand-in for ssh that keeps a copy of what reaches it (with
# --compress none that is a zd-stream with the PAGES zd-recv read).
cat >"$TMP/teessh" <<'EOF'
#!/bin/sh
# teessh [OPTS] -- HOST COMMAND: COMMAND here, its input copied to $WIRE
while [ "$1" != "--" ]; do shift; done
shift 2
exec sh -c "tee \"\$WIRE\" | $*"
EOF
chmod +x "$TMP/teessh"
SPEC2=synth:pages=16384,dirty=512,hot=0.8,seed=5
timeout 120 zd-track $SPEC2 --epochs 30 --interval 0 --verify --timeout 20000 2>"$TMP/t.err" | timeout 120 zd-swap 2>"$TMP/w.err" |
	WIRE=$TMP/wire.zds ZD_SSH=$TMP/teessh ZD_REMOTE_RECV="$ZD_BIN/zd-recv --no-fsync" \
	timeout 120 zd-send --compress none "ssh:backup:$TMP/rep" >"$TMP/send.log" 2>"$TMP/s.err"
rcs="${PIPESTATUS[*]}"
if [ "$rcs" = "0 0 0" ] && [ "$(zd-recv --replica "$TMP/rep" --status | awk '$1 == "epoch" {print $2}')" = 30 ]; then
	ok "track | swap | send → (tee) recv: replica at epoch 30"
else
	not_ok "track | swap | send → (tee) recv" "exits $rcs: $(cat "$TMP/t.err" "$TMP/w.err" "$TMP/s.err")"
fi
sent=$(zd-stat --json "$TMP/send.log" | jq .pages_sent)
recv=$(zd-stat --json "$TMP/wire.zds" | jq .pages_sent)
[ -n "$sent" ] && [ "$sent" -gt 0 ] && [ "$sent" = "$recv" ] &&
	ok "zd-send's log: $sent pages sent = the pages in what zd-recv read" ||
	not_ok "zd-send's log: pages sent > 0 and = what zd-recv read" "log '$sent', zd-recv read '$recv'"
zd-stat "$TMP/send.log" >"$TMP/send.txt"
grep -qE "; sent $sent\$" "$TMP/send.txt" && grep -qE '^stream bytes: [0-9]+, on the wire [1-9][0-9]+$' "$TMP/send.txt" &&
	ok "zd-send's log, table: 'sent $sent' beside the wire bytes" ||
	not_ok "zd-send's log, table: sent and wire bytes" "$(tail -4 "$TMP/send.txt")"

# 8. Flags.
expect_fail "--follow=2: a duration wants its unit" 2 "^zd-stat: --follow=2: want a duration" zd-stat --follow=2 "$TMP/s.zds"
expect_fail "--follow=epochs:0" 2 "^zd-stat: --follow=epochs:0: want epochs:N, N >= 1" zd-stat --follow=epochs:0 "$TMP/s.zds"
expect_fail "--follow=1h" 2 "^zd-stat: --follow=1h: want a duration" zd-stat --follow=1h "$TMP/s.zds"
expect_fail "--follow=86401s: over a day" 2 "^zd-stat: --follow=86401s: want a duration from 1ms to 86400s" \
	zd-stat --follow=86401s "$TMP/s.zds"
expect_fail "--follow with --csv" 2 "^zd-stat: --follow and --csv: choose one" zd-stat --csv --follow "$TMP/s.zds"
zd-stat --help | grep -q -- '--follow\[=EVERY\]' && zd-stat --help | grep -q '130 SIGINT' &&
	ok "--help: --follow and the exit status of a signal" || not_ok "--help: --follow and 130" "$(zd-stat --help)"
# Bash completion of the joined value (readline splits at '=' and ':').
if [ -f /usr/share/bash-completion/bash_completion ]; then
	got=$(bash -c '. /usr/share/bash-completion/bash_completion; . "$1/completions/bash/zd-stat"
		COMP_LINE="zd-stat --follow=epochs:1"; COMP_POINT=${#COMP_LINE}
		COMP_WORDS=(zd-stat --follow = epochs : 1); COMP_CWORD=5
		_zd_stat zd-stat 1 :; echo "${COMPREPLY[*]}"' _ "$ZD_TOP")
	[ "$got" = "10 100" ] && ok "completion: --follow=epochs:N" || not_ok "completion: --follow=epochs:N" "got '$got'"
else
	skip "completion: --follow=epochs:N" "no bash-completion (Debian package bash-completion)"
fi
done_testing
