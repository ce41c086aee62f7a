#!/usr/bin/env bash
# Heartbeats and takeover with real processes over loopback TCP:
# the primary (zd-track synth | zd-send) dies by SIGKILL, or freezes (SIGSTOP:
# the connection stays open, only the heartbeats stop); zd-recv discards the
# epoch in flight, fences, and hands over to the failover command at the
# last committed epoch. A failed fence stops the takeover. zd-send notices a
# frozen zd-recv the same way.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

SPEC=synth:pages=16384,dirty=256,hot=0.8,seed=5
# The hook records what it was told; the test then compares with the replica.
HOOK='echo "$ZD_EPOCH $ZD_LAST_HEARD_NS $ZD_LOST_NS $ZD_REPLICA" >"$OUT"; exit 0'

primary() {	# start zd-track | zd-send in the background; PIDs in TRACK_PID, SEND_PID
	local extra=$1
	rm -f "$TMP/pp"; mkfifo "$TMP/pp"
	zd-track "$SPEC" --epochs 100000 --interval 20ms --mode buffered >"$TMP/pp" 2>/dev/null &
	TRACK_PID=$!
	# shellcheck disable=SC2086
	zd-send $extra 127.0.0.1:"$RECV_PORT" <"$TMP/pp" >/dev/null 2>"$TMP/send.err" &
	SEND_PID=$!
	at_exit "kill -9 $TRACK_PID $SEND_PID"
}

# 1. SIGKILL the primary: the connection ends without END.
export OUT=$TMP/hook1
start_recv r1 --replica "$TMP/r1" --once --no-fsync --on-failover "$HOOK" || exit 1
primary ""
wait_epoch "$TMP/r1" 5 || not_ok "replication started" "$(cat "$RECV_ERR" "$TMP/send.err")"
kill -9 "$TRACK_PID"
wait_recv
read -r ep heard lost dir <"$OUT" 2>/dev/null
if [ "$RECV_EXIT" = 0 ] && [ -n "$ep" ] && [ "$ep" = "$(replica_field "$TMP/r1" epoch)" ] && [ "$dir" = "$TMP/r1" ]; then
	ok "primary killed: failover command ran at the committed epoch $ep"
else
	not_ok "primary killed: failover command ran at the committed epoch" \
		"exit $RECV_EXIT hook '$ep $dir' replica $(replica_field "$TMP/r1" epoch): $(cat "$RECV_ERR")"
fi
grep -q "taking over at epoch $ep" "$RECV_ERR" && ok "zd-recv says it takes over" ||
	not_ok "zd-recv says it takes over" "$(cat "$RECV_ERR")"
want=$(synth_memsum "$SPEC" "$ep" "$ep")
[ "$(replica_field "$TMP/r1" memsum)" = "$want" ] && ok "replica = primary's memory at epoch $ep" ||
	not_ok "replica = primary's memory at epoch $ep" "$(replica_field "$TMP/r1" memsum) want $want"
wait "$SEND_PID" 2>/dev/null

# 2. Freeze the primary (SIGSTOP): only the heartbeat timeout can tell.
export OUT=$TMP/hook2
start_recv r2 --replica "$TMP/r2" --once --no-fsync --heartbeat 50 --timeout 300 --on-failover "$HOOK" || exit 1
primary "--heartbeat 50 --timeout 300"
wait_epoch "$TMP/r2" 5 || not_ok "replication started" "$(cat "$RECV_ERR" "$TMP/send.err")"
kill -STOP "$TRACK_PID" "$SEND_PID"
wait_recv
kill -9 "$TRACK_PID" "$SEND_PID"; kill -CONT "$SEND_PID" 2>/dev/null
read -r ep heard lost dir <"$OUT" 2>/dev/null
if [ "$RECV_EXIT" = 0 ] && [ -n "$heard" ] && grep -q "no record or heartbeat for" "$RECV_ERR"; then
	ms=$(( (lost - heard) / 1000000 ))
	if [ "$ms" -ge 290 ] && [ "$ms" -lt 2000 ]; then
		ok "frozen primary: declared dead after $ms ms of silence (--timeout 300)"
	else
		not_ok "frozen primary: declared dead after ~300 ms of silence" "$ms ms"
	fi
	[ "$ep" = "$(replica_field "$TMP/r2" epoch)" ] && ok "takeover at the committed epoch $ep" ||
		not_ok "takeover at the committed epoch" "hook $ep replica $(replica_field "$TMP/r2" epoch)"
else
	not_ok "frozen primary: declared dead by the heartbeat timeout" "exit $RECV_EXIT: $(cat "$RECV_ERR")"
fi

# 3. Between epochs the heartbeats keep a slow primary alive: 1 s between
# checkpoints against --timeout 800.
start_recv r3 --replica "$TMP/r3" --once --no-fsync --heartbeat 50 --timeout 800 --on-failover "touch $TMP/hook3" || exit 1
zd-track "$SPEC" --epochs 3 --interval 1s --mode buffered 2>/dev/null |
	zd-send --heartbeat 50 --timeout 800 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send3.err"
src=$?
wait_recv
[ $src = 0 ] && [ "$RECV_EXIT" = 0 ] && [ ! -e "$TMP/hook3" ] && [ "$(replica_field "$TMP/r3" epoch)" = 3 ] &&
	ok "1 s epochs with --timeout 800: heartbeats keep both sides up, no failover" ||
	not_ok "1 s epochs with --timeout 800: no failover" "send $src recv $RECV_EXIT: $(cat "$TMP/send3.err" "$RECV_ERR")"

# 4. A failing fence stops the takeover (exit 6); the failover command never runs.
start_recv r4 --replica "$TMP/r4" --once --no-fsync --fence "echo fenced >$TMP/fence4; exit 3" \
	--on-failover "touch $TMP/hook4" || exit 1
primary ""
wait_epoch "$TMP/r4" 3 || not_ok "replication started" "$(cat "$RECV_ERR")"
kill -9 "$TRACK_PID"
wait_recv
[ "$RECV_EXIT" = 6 ] && [ -e "$TMP/fence4" ] && [ ! -e "$TMP/hook4" ] && grep -q "failed (exit 3): no takeover" "$RECV_ERR" &&
	ok "fence exits 3: zd-recv exits 6, no takeover" ||
	not_ok "fence exits 3: zd-recv exits 6, no takeover" "exit $RECV_EXIT: $(cat "$RECV_ERR")"
wait "$SEND_PID" 2>/dev/null

# 5. A frozen backup: zd-send gives up after its --timeout with exit 5.
start_recv r5 --replica "$TMP/r5" --once --no-fsync --no-failover || exit 1
primary "--heartbeat 50 --timeout 300"
wait_epoch "$TMP/r5" 3 || not_ok "replication started" "$(cat "$RECV_ERR")"
kill -STOP "$RECV_PID"
src=0; wait "$SEND_PID" || src=$?
kill -9 "$RECV_PID" "$TRACK_PID"; kill -CONT "$RECV_PID"
[ $src = 5 ] && grep -q "no ACK or heartbeat for 300 ms" "$TMP/send.err" &&
	ok "frozen zd-recv: zd-send exits 5 after --timeout" ||
	not_ok "frozen zd-recv: zd-send exits 5 after --timeout" "exit $src: $(cat "$TMP/send.err")"

# 6. Flags.
expect_fail "--heartbeat >= --timeout" 2 "heartbeat must be shorter" zd-recv --listen :0 --replica "$TMP/x" --heartbeat 500 --timeout 100
expect_fail "bad --timeout" 2 "not a number of ms" zd-send --timeout 1s 127.0.0.1:1
expect_fail "--no-failover with --fence" 2 "conflicts" zd-recv --listen :0 --replica "$TMP/x" --no-failover --fence true

done_testing
