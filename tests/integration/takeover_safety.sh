#!/usr/bin/env bash
# Only the loss of the primary that owns a replica may start the backup VM.
# Real zd-recv processes on loopback TCP, real connections:
#   - a bare connect (port scan) after END, and before any HEADER, and a
#     connection that sends junk: one line each, replica unchanged, no
#     takeover;
#   - a forged second session (the same run's HEADER after its END, and
#     one more epoch): refused, nothing applied, no takeover;
#   - an idle connection beside the real primary: the primary's epochs
#     commit at once; a connection arriving during its session is refused
#     at once; a connection that stalls before its HEADER is cut after 2 s;
#   - a public --listen without --key is refused; --insecure allows it;
#   - the fence: a warning when there is none, a hung fence is killed after
#     --fence-timeout (with what it started) and stops the takeover;
#   - the failover command: kept whole past 511 bytes, run with SIGPIPE at
#     its default, and the default one finds the zd-vm beside zd-recv
#     without PATH.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

SPEC=synth:pages=256,dirty=16,seed=9

feed() {	# FILE PORT: send FILE as one connection, read the replies to the end
	python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
try:
    s.sendall(open(sys.argv[1], "rb").read())
    s.shutdown(socket.SHUT_WR)
    s.settimeout(10)
    while s.recv(65536):
        pass
except OSError:
    pass
PY
}

# A stream of 3 epochs, JSON (zd-recv reads either encoding).
zd-track "$SPEC" --epochs 3 --json 2>/dev/null | zd-swap --json >"$TMP/s3.json" 2>/dev/null
grep -v '"epoch":3,' "$TMP/s3.json" >"$TMP/first2.json"		# epochs 1-2 and END
grep -E '"type":"header"|"epoch":3,' "$TMP/s3.json" >"$TMP/forged.json"	# HEADER, epoch 3, no END

# 1. After END: a bare connect, then a forged continuation of the run.
start_recv r1 --replica "$TMP/r1" --no-fsync --on-failover "touch $TMP/hook1" || exit 1
feed "$TMP/first2.json" "$RECV_PORT"
ended() { [ "$(jq -r .ended "$1/meta.json" 2>/dev/null)" = true ]; }
wait_for 5 ended "$TMP/r1"
sum1=$(md5sum <"$TMP/r1/memory.img")
exec 3<>/dev/tcp/127.0.0.1/"$RECV_PORT"; exec 3>&-
wait_line "$RECV_ERR" "no HEADER; replica stays at epoch 2, no takeover" &&
	ok "bare connect after END: one line, no takeover" ||
	not_ok "bare connect after END: one line, no takeover" "$(cat "$RECV_ERR")"
feed "$TMP/forged.json" "$RECV_PORT"
wait_line "$RECV_ERR" "its stream cannot continue" &&
	ok "the run's HEADER after its END: refused" ||
	not_ok "the run's HEADER after its END: refused" "$(cat "$RECV_ERR")"
sleep 0.3
[ "$(jq -r .epoch "$TMP/r1/meta.json")" = 2 ] && [ "$(md5sum <"$TMP/r1/memory.img")" = "$sum1" ] &&
	ok "forged session: replica still at epoch 2, memory unchanged" ||
	not_ok "forged session: replica still at epoch 2, memory unchanged" "epoch $(jq -r .epoch "$TMP/r1/meta.json")"
[ ! -e "$TMP/hook1" ] && kill -0 "$RECV_PID" 2>/dev/null &&
	ok "no takeover after a bare connect and a forged session; zd-recv serves on" ||
	not_ok "no takeover after a bare connect and a forged session" "$(cat "$RECV_ERR")"
kill "$RECV_PID"; wait_recv

# 2. Before any HEADER: junk and a bare connect on a fresh replica with a
# failover command; then the real stream is still taken.
start_recv r2 --replica "$TMP/r2" --no-fsync --once --on-failover "touch $TMP/hook2" || exit 1
printf 'GET / HTTP/1.0\r\n\r\n' >/dev/tcp/127.0.0.1/"$RECV_PORT"
exec 3<>/dev/tcp/127.0.0.1/"$RECV_PORT"; exec 3>&-
wait_line "$RECV_ERR" "bad magic|not a zd-stream|magic" || true
feed "$TMP/s3.json" "$RECV_PORT"
wait_recv
[ "$RECV_EXIT" = 0 ] && [ "$(replica_field "$TMP/r2" epoch)" = 3 ] && [ ! -e "$TMP/hook2" ] &&
	ok "junk and a bare connect before the primary: ignored; --once serves the primary's stream" ||
	not_ok "junk and a bare connect before the primary: ignored" "exit $RECV_EXIT: $(cat "$RECV_ERR")"

# 3. An idle connection first, then the real primary: its epochs commit
# without waiting for the idle one; a connection during the session is
# refused at once.
start_recv r3 --replica "$TMP/r3" --no-fsync --once --no-failover || exit 1
exec 4<>/dev/tcp/127.0.0.1/"$RECV_PORT"
t0=$(date +%s%N)
zd-track "$SPEC" --epochs 100000 --interval 20ms 2>/dev/null | zd-send 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send3.err" &
PIPE3=$!
at_exit "pkill -f 'zd-track $SPEC --epochs 100000'"
wait_epoch "$TMP/r3" 5 2
e=$(replica_epoch "$TMP/r3")
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "${e:-0}" -ge 5 ] && [ "$ms" -lt 1500 ] && ok "idle connection beside the primary: 5 epochs committed in $ms ms" ||
	not_ok "idle connection beside the primary: epochs commit at once" "epoch ${e:-none} after $ms ms: $(cat "$RECV_ERR")"
t0=$(date +%s%N)
exec 5<>/dev/tcp/127.0.0.1/"$RECV_PORT"
timeout 2 cat <&5 >/dev/null; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
exec 5<&-
[ "$rc" = 0 ] && [ "$ms" -lt 1000 ] && wait_line "$RECV_ERR" "refused: the replica is fed by peer" &&
	ok "a connection during the session: refused at once ($ms ms), with a line" ||
	not_ok "a connection during the session: refused at once" "rc $rc after $ms ms: $(cat "$RECV_ERR")"
grep -q "refused: the replica is fed by another connection" "$RECV_ERR" &&
	ok "the idle connection is closed when the primary binds the replica" ||
	not_ok "the idle connection is closed when the primary binds the replica" "$(cat "$RECV_ERR")"
exec 4<&-
pkill -f "zd-track $SPEC --epochs 100000"; wait "$PIPE3" 2>/dev/null; wait_recv

# 4. A connection that starts and stalls before its HEADER is cut after 2 s,
# then the primary is served.
start_recv r4 --replica "$TMP/r4" --no-fsync --once --no-failover || exit 1
exec 4<>/dev/tcp/127.0.0.1/"$RECV_PORT"
printf '\211ZDS' >&4
t0=$(date +%s%N)
zd-track "$SPEC" --epochs 3 2>/dev/null | zd-send 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send4.err"
src=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait_recv
exec 4<&-
[ "$src" = 0 ] && [ "$RECV_EXIT" = 0 ] && [ "$ms" -lt 4000 ] && grep -q "no HEADER within 2000 ms: dropped" "$RECV_ERR" &&
	ok "a stalled connection is cut after 2 s; the primary then replicates ($ms ms in all)" ||
	not_ok "a stalled connection is cut after 2 s" "send $src recv $RECV_EXIT after $ms ms: $(cat "$RECV_ERR" "$TMP/send4.err")"

# 5. Listening beyond loopback.
expect_fail "--listen :PORT without --key: refused (exit 2)" 2 "not a loopback address, and no --key" \
	zd-recv --listen :0 --replica "$TMP/r5"
expect_fail "--listen 0.0.0.0:PORT without --key: refused (exit 2)" 2 "not a loopback address" \
	zd-recv --listen 0.0.0.0:0 --replica "$TMP/r5"
zd-recv --listen 0.0.0.0:0 --insecure --replica "$TMP/r5" 2>"$TMP/r5.err" &
p5=$!
wait_line "$TMP/r5.err" "listening on" && ok "--insecure listens on 0.0.0.0" ||
	not_ok "--insecure listens on 0.0.0.0" "$(cat "$TMP/r5.err")"
kill "$p5"; wait "$p5" 2>/dev/null
expect_fail "--fence-timeout without --fence: exit 2" 2 "goes with --fence" \
	zd-recv --listen 127.0.0.1:0 --replica "$TMP/r5" --fence-timeout 100

# 6. Fences. The stream is cut before END: the owner is lost.
grep -v '"type":"end"' "$TMP/s3.json" >"$TMP/cut.json"
zd-recv --stdio --replica "$TMP/r6" --no-fsync --on-failover "touch $TMP/hook6" <"$TMP/cut.json" >/dev/null 2>"$TMP/r6.err"
rc=$?
[ "$rc" = 0 ] && [ -e "$TMP/hook6" ] && grep -q "warning: no --fence" "$TMP/r6.err" &&
	grep -q "taking over at epoch 3 without a fence" "$TMP/r6.err" &&
	ok "no fence: a warning at start and in the takeover line" ||
	not_ok "no fence: a warning at start and in the takeover line" "exit $rc: $(cat "$TMP/r6.err")"
t0=$(date +%s%N)
zd-recv --stdio --replica "$TMP/r7" --no-fsync --fence "sleep 60 & echo \$! >$TMP/fence7.pid; wait" --fence-timeout 300 \
	--on-failover "touch $TMP/hook7" <"$TMP/cut.json" >/dev/null 2>"$TMP/r7.err"
rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
sleep 0.1
[ "$rc" = 6 ] && [ ! -e "$TMP/hook7" ] && [ "$ms" -lt 3000 ] && grep -q "still running after 300 ms (--fence-timeout): killed; no takeover" "$TMP/r7.err" &&
	ok "a hung fence is killed after --fence-timeout: exit 6, no takeover ($ms ms)" ||
	not_ok "a hung fence is killed after --fence-timeout: exit 6, no takeover" "exit $rc after $ms ms: $(cat "$TMP/r7.err")"
st=$(ps -o stat= -p "$(cat "$TMP/fence7.pid" 2>/dev/null)" 2>/dev/null)
# (a zombie waiting for init to reap it is dead)
if [ -s "$TMP/fence7.pid" ] && { [ -z "$st" ] || [ "${st#Z}" != "$st" ]; }; then
	ok "what the hung fence started is killed with it"
else
	not_ok "what the hung fence started is killed with it" "pid $(cat "$TMP/fence7.pid" 2>/dev/null) lives"
	kill "$(cat "$TMP/fence7.pid" 2>/dev/null)" 2>/dev/null
fi

# 7. The failover command: whole past 511 bytes; SIGPIPE at its default in
# the fence and the command (SigIgn bit 12 is SIGPIPE). Read by sed: gawk
# ignores SIGPIPE itself, so its own /proc/self/status would show it.
long=": $(head -c 600 /dev/zero | tr '\0' x); sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status >$TMP/cmd8"
zd-recv --stdio --replica "$TMP/r8" --no-fsync --fence "sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status >$TMP/fence8" \
	--on-failover "$long" <"$TMP/cut.json" >/dev/null 2>"$TMP/r8.err"
rc=$?
if [ "$rc" = 0 ] && [ -s "$TMP/cmd8" ]; then
	ok "a ${#long}-byte --on-failover runs whole"
else
	not_ok "a ${#long}-byte --on-failover runs whole" "exit $rc: $(cat "$TMP/r8.err")"
fi
sig_default() { [ -s "$1" ] && [ $(( 0x$(cat "$1") & 0x1000 )) = 0 ]; }
sig_default "$TMP/fence8" && sig_default "$TMP/cmd8" &&
	ok "the fence and the failover command start with SIGPIPE at its default" ||
	not_ok "the fence and the failover command start with SIGPIPE at its default" \
		"SigIgn fence $(cat "$TMP/fence8" 2>/dev/null) cmd $(cat "$TMP/cmd8" 2>/dev/null)"

# 8. The default failover command of a kvm replica from bin/, PATH without
# bin/: the zd-vm beside zd-recv runs (and refuses this fake replica's state:
# its message, not the shell's "not found").
sed -e 's|"target":"synth[^"]*"|"target":"kvm:/nonexistent.sock"|' \
    -e 's|"kind":3,"data":"[^"]*"|"kind":1,"data":"AQAAAAAAAAABAAAAAAAAAA=="|' "$TMP/cut.json" >"$TMP/kvmcut.json"
env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$ZD_BIN/zd-recv" --stdio --replica "$TMP/r9" --no-fsync \
	<"$TMP/kvmcut.json" >/dev/null 2>"$TMP/r9.err"
rc=$?
if grep -q "failover: exec \"\$ZD_VM\" --restore" "$TMP/r9.err" && grep -q "^zd-vm: " "$TMP/r9.err" &&
	! grep -q "not found" "$TMP/r9.err"; then
	ok "default failover from bin/ without PATH: bin/zd-vm runs (exit $rc)"
else
	not_ok "default failover from bin/ without PATH: bin/zd-vm runs" "exit $rc: $(cat "$TMP/r9.err")"
fi

done_testing
