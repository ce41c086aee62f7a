#!/usr/bin/env bash
# Live status: a running zd-recv and zd-track each answer on a Unix socket
# in the run directory, and zd-stat --live shows them all (JSON with
# --json): role, epoch, last commit age, lag, peer, pause and latency over
# the last minute. Real processes, a real pipeline on loopback.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"
export ZD_RUN_DIR=$TMP/run

out=$(zd-stat --live 2>&1)
[ $? = 0 ] && case $out in "no zd-recv or zd-track running here"*) true ;; *) false ;; esac &&
	ok "nothing running: zd-stat --live says so, exit 0" || not_ok "nothing running: zd-stat --live says so" "$out"

start_recv r --replica "$TMP/rep" --no-failover
zd-track synth:pages=4096,dirty=64,seed=3 --epochs 400 --interval 20 2>"$TMP/track.err" |
	zd-send "127.0.0.1:$RECV_PORT" >/dev/null 2>"$TMP/send.err" &
PIPE=$!
at_exit "kill $PIPE"
wait_epoch "$TMP/rep" 20 20 "$RECV_PID"
zd-stat --live --json >"$TMP/live.json" 2>"$TMP/live.err"
RC=$?
TRACK_PID=$(pgrep -f 'zd-track synth:pages=4096,dirty=64,seed=3')
recv=$(jq -c '.[] | select(.tool == "zd-recv")' "$TMP/live.json")
track=$(jq -c '.[] | select(.tool == "zd-track")' "$TMP/live.json")
if [ $RC = 0 ] && echo "$recv" | jq -e --arg p "$RECV_PID" --arg d "$TMP/rep" \
	'.pid == ($p | tonumber) and .role == "backup" and .replica == $d and .epoch >= 20 and
	 .last_commit_age_ms < 5000 and (.peer | test("^127\\.0\\.0\\.1:[0-9]+$")) and .mode == "remus" and
	 .lag_epochs >= 0 and .lag_bytes >= 0' >/dev/null; then
	ok "zd-recv: backup, epoch $(echo "$recv" | jq .epoch), last commit $(echo "$recv" | jq .last_commit_age_ms) ms ago, peer $(echo "$recv" | jq -r .peer), lag $(echo "$recv" | jq .lag_bytes) bytes"
else
	not_ok "zd-recv answers its live status" "rc $RC: $recv $(cat "$TMP/live.err")"
fi
if echo "$track" | jq -e --arg p "$TRACK_PID" \
	'.pid == ($p | tonumber) and .role == "primary" and .acked_epoch >= 20 and .epoch >= .acked_epoch and
	 .lag_epochs >= 0 and .lag_epochs <= .epoch and .latency_us.n >= 20 and .latency_us.p99 >= .latency_us.p50 and
	 .latency_us.p50 > 0 and .pause_us.n >= 20 and .last_ack_age_ms < 5000' >/dev/null; then
	ok "zd-track: primary, epoch $(echo "$track" | jq .epoch), acked $(echo "$track" | jq .acked_epoch), latency p50/p99 $(echo "$track" | jq -r '"\(.latency_us.p50)/\(.latency_us.p99)"') us over $(echo "$track" | jq .latency_us.n) epochs"
else
	not_ok "zd-track answers its live status" "$track"
fi
n=$(zd status --json | jq '[.[] | select(.tool == "zd-recv" or .tool == "zd-track")] | length')
[ "$n" = 2 ] && ok "zd status --json: the same two" || not_ok "zd status --json shows the live pipeline" "$n tools"
zd-stat --live >"$TMP/live.txt"
grep -q "^zd-recv (pid $RECV_PID)" "$TMP/live.txt" && grep -q "^zd-track (pid $TRACK_PID)" "$TMP/live.txt" &&
	grep -q 'last_commit_age_ms' "$TMP/live.txt" &&
	ok "zd-stat --live: a block per tool for people" || not_ok "zd-stat --live for people" "$(cat "$TMP/live.txt")"
modes=$(stat -c '%a' "$ZD_RUN_DIR" "$ZD_RUN_DIR"/*.sock | sort -u | tr '\n' ' ')
[ "$modes" = "600 700 " ] && ok "the run directory is 0700, the sockets 0600" || not_ok "run directory 0700, sockets 0600" "$modes"

# A tool killed outright leaves its socket: not listed, and removed.
kill -STOP "$TRACK_PID"
kill -9 "$TRACK_PID"
sleep 0.3
n=$(zd-stat --live --json | jq 'map(select(.tool == "zd-track")) | length')
[ "$n" = 0 ] && [ ! -e "$ZD_RUN_DIR/zd-track.$TRACK_PID.sock" ] && ok "a SIGKILLed zd-track: not listed, its socket removed" ||
	not_ok "a SIGKILLed zd-track is not listed" "$n listed; $(ls "$ZD_RUN_DIR")"
# zd-recv dies on SIGTERM at once (its replica is whole at every commit):
# the next query finds its socket dead and removes it.
kill "$RECV_PID"
wait_recv
n=$(zd-stat --live --json | jq length)
[ "$n" = 0 ] && [ ! -e "$ZD_RUN_DIR/zd-recv.$RECV_PID.sock" ] && ok "a zd-recv that ended: not listed, its socket removed" ||
	not_ok "a zd-recv that ended: not listed, its socket removed" "$n listed; $(ls "$ZD_RUN_DIR")"
# A zd-track that ends by itself removes its own.
zd-track synth:pages=64,dirty=4 --epochs 3 --interval 10 2>/dev/null | zd-stat >/dev/null
[ -z "$(ls "$ZD_RUN_DIR")" ] && ok "a zd-track that ends removes its socket" || not_ok "a zd-track that ends removes its socket" "$(ls "$ZD_RUN_DIR")"
ZD_STATUS=0 zd-track synth:pages=64,dirty=4 --epochs 30 --interval 10 2>/dev/null | zd-stat >/dev/null &
sleep 0.2
[ -z "$(ls "$ZD_RUN_DIR")" ] && ok "ZD_STATUS=0: no socket" || not_ok "ZD_STATUS=0: no socket" "$(ls "$ZD_RUN_DIR")"
wait
done_testing
