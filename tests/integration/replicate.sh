#!/usr/bin/env bash
# Replication end to end with real processes over loopback TCP and pipes:
# zd-track (synth) → [zd-swap] → zd-send → zd-recv, the replica checked
# against the primary's memory checksum computed by an independent run.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

SPEC=synth:pages=65536,dirty=1024,hot=0.8,seed=7
N=100

# 1. The full pipeline, remus mode: zd-track waits for every ACK, so the run
# only finishes if ACKs travel back zd-recv → zd-send → zd-track. (fsync at
# every commit is exercised by the smaller runs below and recv_crash.sh; here
# it would only make the test slow on a slow disk.)
start_recv recv1 --replica "$TMP/r1" --once --no-fsync || exit 1
zd-track "$SPEC" --epochs $N --interval 0 --verify --timeout 20000 2>"$TMP/track1.err" |
	zd-swap 2>"$TMP/swap1.err" |
	zd-send --json-log 127.0.0.1:"$RECV_PORT" >"$TMP/log1.json" 2>"$TMP/send1.err"
rcs=("${PIPESTATUS[@]}")
wait_recv
if [ "${rcs[*]}" = "0 0 0" ] && [ "$RECV_EXIT" = 0 ]; then
	ok "track | swap | send → recv: every stage exits 0"
else
	not_ok "track | swap | send → recv: every stage exits 0" \
		"exits ${rcs[*]} recv $RECV_EXIT: $(cat "$TMP"/track1.err "$TMP"/swap1.err "$TMP"/send1.err "$RECV_ERR")"
fi
want=$(synth_memsum "$SPEC" $N $N)
[ "$(replica_field "$TMP/r1" epoch)" = $N ] && ok "replica is at epoch $N" ||
	not_ok "replica is at epoch $N" "$(zd-recv --replica "$TMP/r1" --status 2>&1)"
got=$(replica_field "$TMP/r1" memsum)
[ -n "$want" ] && [ "$got" = "$want" ] && ok "replica memory checksum = primary's at epoch $N ($want)" ||
	not_ok "replica memory checksum = primary's at epoch $N" "replica $got, primary $want"
acks=$(jq -s '[.[] | select(.type == "ack")] | length' "$TMP/log1.json")
[ "$acks" = $N ] && ok "zd-send logged $N ACKs" || not_ok "zd-send logged $N ACKs" "got $acks"
lat=$(jq -s '[.[] | select(.type == "ack" and .latency_ns > 0)] | length' "$TMP/log1.json")
[ "$lat" = $N ] && ok "every ACK carries a T1 → ACK latency" || not_ok "every ACK carries a T1 → ACK latency" "$lat of $N"
# raw_bytes: the stream with raw pages; wire_bytes is less with --compress
# (delta by default; tests/integration/wire.sh checks the compression)
wire=$(jq -s '[.[] | select(.type == "stat" and .source == "send") | .values.raw_bytes] | add' "$TMP/log1.json")
min=$((N * 1024 * 4096))
[ -n "$wire" ] && [ "${wire%.*}" -ge $min ] && ok "STAT send: $wire raw bytes (>= $min of pages)" ||
	not_ok "STAT send reports the raw bytes" "raw_bytes $wire, want >= $min"
grep -q "open loop" "$TMP/swap1.err" "$TMP/send1.err" &&
	not_ok "zd-swap and zd-send joined the control socket" "$(cat "$TMP"/swap1.err "$TMP"/send1.err)" ||
	ok "zd-swap and zd-send joined the control socket"
[ "$(jq -s '[.[] | select(.type == "end")] | length' "$TMP/log1.json")" = 1 ] &&
	[ "$(jq -s '.[-1].type' "$TMP/log1.json")" = '"end"' ] && ok "the log stream ends with END after the last ACK" ||
	not_ok "the log stream ends with END after the last ACK"
zd-stat <"$TMP/log1.json" --json >"$TMP/stat1.json" 2>&1 && ok "zd-stat reads zd-send's log" ||
	not_ok "zd-stat reads zd-send's log" "$(cat "$TMP/stat1.json")"

# 2. Without zd-swap: zd-send captures the pages itself (zd-send(1)).
SPEC2=synth:pages=16384,dirty=512,hot=0.8,seed=11
N2=40
start_recv recv2 --replica "$TMP/r2" --once --verify || exit 1
zd-track "$SPEC2" --epochs $N2 --interval 0 --verify --mode buffered 2>/dev/null |
	zd-send 127.0.0.1:"$RECV_PORT" >"$TMP/log2.bin" 2>"$TMP/send2.err"
src=$?
wait_recv
want=$(synth_memsum "$SPEC2" $N2 $N2)
if [ $src = 0 ] && [ "$RECV_EXIT" = 0 ] && [ "$(replica_field "$TMP/r2" epoch)" = $N2 ] &&
	[ "$(replica_field "$TMP/r2" memsum)" = "$want" ]; then
	ok "track | send (no zd-swap): zd-send captures, replica = primary at epoch $N2"
else
	not_ok "track | send (no zd-swap): zd-send captures, replica = primary at epoch $N2" \
		"send $src recv $RECV_EXIT: $(cat "$TMP/send2.err" "$RECV_ERR"); status $(replica_field "$TMP/r2" epoch) $(replica_field "$TMP/r2" memsum) want $want"
fi

# 3. Over a pipe, as ssh would carry it: zd-send - | zd-recv --stdio.
zd-track "$SPEC2" --epochs $N2 --interval 0 --verify --mode buffered 2>/dev/null |
	zd-swap 2>/dev/null | zd-send - 2>"$TMP/send3.err" |
	zd-recv --stdio --replica "$TMP/r3" >"$TMP/acks3.bin" 2>"$TMP/recv3.err"
rcs=("${PIPESTATUS[@]}")
if [ "${rcs[2]}" = 0 ] && [ "${rcs[3]}" = 0 ] && [ "$(replica_field "$TMP/r3" epoch)" = $N2 ] &&
	[ "$(replica_field "$TMP/r3" memsum)" = "$want" ]; then
	ok "send - | recv --stdio: replica = primary at epoch $N2"
else
	not_ok "send - | recv --stdio: replica = primary at epoch $N2" \
		"exits ${rcs[*]}: $(cat "$TMP/send3.err" "$TMP/recv3.err")"
fi
# The ACKs zd-recv wrote on stdout are a zd-stream of their own.
n=$(zd-stat --json <"$TMP/acks3.bin" 2>&1 | jq -r '.epochs // empty')
[ "$n" = $N2 ] && ok "zd-stat reads zd-recv's ACK stream ($N2 epochs)" || not_ok "zd-stat reads zd-recv's ACK stream" "got $n: $(zd-stat --json <"$TMP/acks3.bin" 2>&1 | head -3)"
n=$(zd-swap --json <"$TMP/acks3.bin" 2>/dev/null | jq -s '[.[] | select(.type == "ack")] | length')
[ "$n" = $N2 ] && ok "zd-recv --stdio writes $N2 ACK records on stdout" || not_ok "zd-recv --stdio writes $N2 ACK records" "got $n"

# 3b. zddspt mode: pre-copied PAGES arrive before their CHECKPOINT, DIRTY
# holds only what was written after T0; zd-swap recaptures re-dirtied pages.
zd-track "$SPEC2" --epochs $N2 --interval 5 --verify --mode zddspt 2>/dev/null |
	zd-swap 2>/dev/null | zd-send - 2>/dev/null | zd-recv --stdio --replica "$TMP/rz" >/dev/null 2>"$TMP/recvz.err"
rc=$?
[ $rc = 0 ] && [ "$(replica_field "$TMP/rz" epoch)" = $N2 ] && [ "$(replica_field "$TMP/rz" memsum)" = "$want" ] &&
	ok "zddspt (pre-copy): replica = primary at epoch $N2" ||
	not_ok "zddspt (pre-copy): replica = primary at epoch $N2" "exit $rc: $(cat "$TMP/recvz.err")"

# 4. A server without --once serves connections one after another. A new
# primary run must not be applied over another run's replica: refused, the
# replica stays as it was, the server keeps serving.
start_recv recv4 --replica "$TMP/r4" || exit 1
S4=synth:pages=16384,dirty=512,hot=0.8,seed=11
zd-track "$S4" --epochs 5 --interval 0 --verify 2>/dev/null |
	zd-send 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send4a.err"
a=$?
zd-track synth:pages=16384,dirty=512,hot=0.8,seed=12 --epochs 5 --interval 0 --verify 2>/dev/null |
	zd-send 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send4b.err"
b=$?
sleep 0.2
kill -0 "$RECV_PID" 2>/dev/null && alive=yes || alive=no
kill "$RECV_PID"; wait_recv
want=$(synth_memsum "$S4" 5 5)
[ $a = 0 ] && [ "$(replica_field "$TMP/r4" epoch)" = 5 ] && [ "$(replica_field "$TMP/r4" memsum)" = "$want" ] &&
	ok "first connection replicated (epoch 5)" || not_ok "first connection replicated" "$(cat "$TMP/send4a.err" "$RECV_ERR")"
[ $b = 5 ] && grep -q "refused the stream" "$TMP/send4b.err" && grep -q "holds another run" "$RECV_ERR" && [ $alive = yes ] &&
	ok "a second run into the same replica is refused, the server goes on" ||
	not_ok "a second run into the same replica is refused, the server goes on" "send $b alive $alive: $(cat "$TMP/send4b.err" "$RECV_ERR")"

# 5. A backup that is not there: one line, exit 5, before reading stdin.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
expect_fail "zd-send to a closed port: exit 5" 5 "127\.0\.0\.1:$port: connect: Connection refused" \
	zd-send 127.0.0.1:"$port" </dev/null
expect_fail "zd-send without DEST: usage, exit 2" 2 "missing DEST" zd-send </dev/null
expect_fail "zd-send bad DEST: usage, exit 2" 2 "bad port" zd-send 127.0.0.1:99999 </dev/null

# 6. The peer dies mid-stream: zd-send says so in one line and exits 5.
python3 - "$TMP/port6" <<'EOF' &
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
c, _ = s.accept(); c.recv(65536); c.close()
EOF
pypid=$!
port6=$(read_port "$TMP/port6" $pypid 5)
zd-track "$SPEC2" --epochs 1000 --interval 0 --mode buffered 2>/dev/null |
	zd-send 127.0.0.1:"$port6" >/dev/null 2>"$TMP/send6.err"
rc=${PIPESTATUS[1]}
wait $pypid
[ "$rc" = 5 ] && [ "$(grep -c . "$TMP/send6.err")" = 1 ] && ok "zd-send: peer gone mid-stream → one line, exit 5 ($(cat "$TMP/send6.err"))" ||
	not_ok "zd-send: peer gone mid-stream → one line, exit 5" "exit $rc: $(cat "$TMP/send6.err")"

# 7. ":PORT" listens on both families: an IPv6 and an IPv4 sender.
for dest in "[::1]" 127.0.0.1; do
	if [ "$dest" = "[::1]" ] && ! python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
		skip "zd-recv --listen :PORT takes a sender on $dest" "no IPv6 loopback here"
		continue
	fi
	rm -rf "$TMP/r7"
	rm -f "$TMP/r7.port"
	zd-recv --listen :0 --port-file "$TMP/r7.port" --insecure --replica "$TMP/r7" --once 2>"$TMP/r7.err" &
	pid=$!
	port=$(read_port "$TMP/r7.port" $pid 5)
	zd-track "$SPEC2" --epochs 3 --interval 0 --verify 2>/dev/null | zd-send "$dest:$port" >/dev/null 2>&1
	src=$?
	wait $pid
	rrc=$?
	[ $src = 0 ] && [ $rrc = 0 ] && [ "$(replica_field "$TMP/r7" epoch)" = 3 ] &&
		ok "zd-recv --listen :PORT takes a sender on $dest" ||
		not_ok "zd-recv --listen :PORT takes a sender on $dest" "send $src recv $rrc: $(cat "$TMP/r7.err")"
done

for t in zd-send zd-recv zd-swap; do
	"$t" --version | grep -qx "$t 0.1.0" && "$t" --help | head -1 | grep -q "^usage: $t" &&
		ok "$t --version and --help" || not_ok "$t --version and --help"
done
done_testing
