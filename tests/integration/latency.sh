#!/usr/bin/env bash
# Where T1 → ACK goes (zd-stream(5) STAT "recv" and "latency"): a
# synthetic pipeline zd-track | zd-mru | zd-swap | zd-send over loopback
# to a zd-recv that fsyncs. For every acknowledged epoch zd-send's log has
# a STAT "latency"; none of its parts is negative; the parts that follow
# one another (zd-send's, the network's, zd-recv's up to its ACK: it
# applies the epoch after the ACK) add up to latency_ns;
# the parts of parts are no larger than what they are part of; and zd-stat
# prints the breakdown in text, JSON and CSV. A zd-recv that sends no STAT
# "recv" (an older one; here a relay drops them) still gets zd-send's own
# parts, with no recv_* keys.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

command -v jq >/dev/null || { skip "T1 → ACK breakdown" "no jq"; done_testing; }

# (recv_apply_ns is not among them: zd-recv applies after the ACK.)
SUM='["to_ckpt_ns","to_commit_ns","to_wire_ns","net_ns","recv_verify_ns","recv_fsync_ns","recv_commit_ns","recv_ack_ns"]'
OWN='["to_ckpt_ns","to_commit_ns","to_wire_ns","to_ack_ns"]'
TOL=1000	# ns: the parts are differences of the same clock readings

# run NAME SPEC EPOCHS MODE "TRACK ARGS" "SEND ARGS" "RECV ARGS": the
# pipeline at 25 ms epochs; zd-send's JSON log in $TMP/NAME.log. RELAY=FUNC
# as in tests/lib/replicate.sh.
run() {
	local name=$1 spec=$2 n=$3 mode=$4 targs=$5 sargs=$6 rargs=$7 port
	# shellcheck disable=SC2086
	start_recv "$name.recv" --replica "$TMP/$name" --once $rargs || return 1
	port=$RECV_PORT RELAY_PID=
	if [ -n "${RELAY:-}" ]; then
		"$RELAY" "$RECV_PORT" "$name" || return 1
		port=$RELAY_PORT
	fi
	# shellcheck disable=SC2086
	timeout 120 zd-track "$spec" --epochs "$n" --interval 25 --mode "$mode" --timeout 20000 $targs \
		2>"$TMP/$name.track.err" |
		timeout 120 zd-mru 2>"$TMP/$name.mru.err" |
		timeout 120 zd-swap 2>"$TMP/$name.swap.err" |
		timeout 120 zd-send $sargs --json-log 127.0.0.1:"$port" >"$TMP/$name.log" 2>"$TMP/$name.send.err"
	SEND_EXIT=${PIPESTATUS[3]}
	wait_recv
	if [ -n "$RELAY_PID" ]; then
		wait_for 30 gone "$RELAY_PID" || kill "$RELAY_PID" 2>/dev/null
		wait "$RELAY_PID" 2>/dev/null
	fi
	return 0
}

ran_ok() {	# WHAT NAME EPOCHS
	if [ "$SEND_EXIT" = 0 ] && [ "$RECV_EXIT" = 0 ] && [ "$(replica_field "$TMP/$2" epoch)" = "$3" ]; then
		ok "$1: replicated $3 epochs"
	else
		not_ok "$1: replicated" "send exit $SEND_EXIT, recv exit $RECV_EXIT
$(tail -3 "$TMP/$2".*.err "$RECV_ERR" 2>/dev/null)"
	fi
}

# every_ack WHAT LOG: one STAT "latency" per ACK, for the same epochs
every_ack() {
	local acks lats
	acks=$(jq -cs '[.[] | select(.type == "ack") | .epoch] | sort' "$2")
	lats=$(jq -cs '[.[] | select(.type == "stat" and .source == "latency") | .epoch] | sort' "$2")
	if [ "$acks" = "$lats" ] && [ "$(jq length <<<"$acks")" -gt 0 ]; then
		ok "$1: a STAT \"latency\" for each of the $(jq length <<<"$acks") acknowledged epochs"
	else
		not_ok "$1: a STAT \"latency\" per ACK" "ACKs $acks
STAT latency $lats"
	fi
}

# adds_up WHAT LOG PARTS: every STAT "latency" has PARTS, none of its
# values is negative, PARTS add up to latency_ns (within TOL), and the
# parts of parts fit in theirs
adds_up() {
	local bad
	bad=$(jq -c --argjson parts "$3" --argjson tol $TOL '
		select(.type == "stat" and .source == "latency") | .values as $v |
		([$parts[] | $v[.]] | add) as $sum |
		select(([$parts[] | select($v[.] == null)] | length) > 0 or
			([$v[] | select(. < 0)] | length) > 0 or
			$sum > $v.latency_ns + $tol or $sum < $v.latency_ns - $tol or
			($v.recv_checksum_ns // 0) > ($v.recv_verify_ns // 0) + $tol or
			(($v.recv_decode_ns // 0) + ($v.recv_journal_ns // 0)) > ($v.recv_stage_ns // 0) + $tol or
			($v.recv_stage_ns // 0) > ($v.recv_receive_ns // 0) + $tol or
			($v.recv_total_ns // 0) > ($v.to_ack_ns // 0) + $tol) |
		{epoch, sum: $sum, values: $v}' "$2" | head -3)
	if [ -z "$bad" ] && grep -q '"latency"' "$2"; then
		ok "$1: no part negative; $(jq -r 'join(" + ")' <<<"$3" | sed 's/_ns//g') = latency_ns"
	else
		not_ok "$1: the parts add up to latency_ns" "$bad"
	fi
}

# 1. remus, delta compression, fsync: the whole breakdown.
SPEC=synth:pages=65536,dirty=1024,hot=0.8,seed=3
run r_remus "$SPEC" 40 remus "" "" ""
ran_ok "remus" r_remus 40
every_ack "remus" "$TMP/r_remus.log"
adds_up "remus" "$TMP/r_remus.log" "$SUM"
f=$(jq -s '[.[] | select(.type == "stat" and .source == "latency") | .values.recv_fsync_ns] | max' "$TMP/r_remus.log")
awk -v f="${f:-0}" 'BEGIN { exit !(f > 0) }' && ok "remus: zd-recv's journal fsync measured (max ${f} ns)" ||
	not_ok "zd-recv's journal fsync measured" "recv_fsync_ns max $f"

# zd-stat's three forms
zd-stat "$TMP/r_remus.log" >"$TMP/r_remus.txt" 2>"$TMP/r_remus.stat.err"
if grep -q '^where T1 to ACK goes, us' "$TMP/r_remus.txt" &&
	grep -qE '^      journal fsync +[0-9.]+ +[0-9.]+$' "$TMP/r_remus.txt" &&
	grep -qE '^  backup, after the ACK: apply .* +[0-9.]+ +[0-9.]+$' "$TMP/r_remus.txt" &&
	grep -qE '^    network both ways, backup.s backlog +[0-9.]+ +[0-9.]+$' "$TMP/r_remus.txt" &&
	grep -qE '^  T1 -> CHECKPOINT read by zd-send .* +[0-9.]+ +[0-9.]+$' "$TMP/r_remus.txt"; then
	ok "zd-stat prints where T1 to ACK goes"
else
	not_ok "zd-stat prints where T1 to ACK goes" "$(cat "$TMP/r_remus.txt" "$TMP/r_remus.stat.err")"
fi
j=$(zd-stat --json "$TMP/r_remus.log" | jq -c --argjson parts "$SUM" \
	'[$parts[] as $p | .latency_parts_ns[$p] | select(.p50 >= 0 and .p99 >= .p50)] | length')
[ "$j" = "$(jq length <<<"$SUM")" ] && ok "zd-stat --json: latency_parts_ns with p50 and p99 of each part" ||
	not_ok "zd-stat --json: latency_parts_ns" "$(zd-stat --json "$TMP/r_remus.log")"
zd-stat --csv "$TMP/r_remus.log" >"$TMP/r_remus.csv"
col=$(head -1 "$TMP/r_remus.csv" | tr , '\n' | grep -nx recv_apply_ns | cut -d: -f1)
rows=$(awk -F, -v c="${col:-0}" 'NR > 1 && $c != "" && $c >= 0' "$TMP/r_remus.csv" | wc -l)
# the first epoch's ACK may come before zd-send's log has its CHECKPOINT row: >= 39
[ -n "$col" ] && [ "$rows" -ge 39 ] && ok "zd-stat --csv: recv_apply_ns in $rows rows" ||
	not_ok "zd-stat --csv: a column per part" "column $col, $rows rows: $(head -2 "$TMP/r_remus.csv")"

# 2. zddspt (pre-copied PAGES before the CHECKPOINT), a key, zstd, and
# --verify: the checksums are a part of the verify.
head -c 64 /dev/urandom >"$TMP/key" && chmod 600 "$TMP/key"
run r_zddspt synth:pages=16384,dirty=1024,hot=0.8,seed=5 20 zddspt --verify \
	"--key $TMP/key --compress zstd" "--key $TMP/key"
ran_ok "zddspt, --key, --verify" r_zddspt 20
every_ack "zddspt, --key, --verify" "$TMP/r_zddspt.log"
adds_up "zddspt, --key, --verify" "$TMP/r_zddspt.log" "$SUM"
c=$(jq -s '[.[] | select(.type == "stat" and .source == "latency") | .values.recv_checksum_ns] | min' "$TMP/r_zddspt.log")
awk -v c="${c:-0}" 'BEGIN { exit !(c > 0) }' && ok "--verify: every epoch's checksum timed (min ${c} ns)" ||
	not_ok "--verify: checksums timed" "recv_checksum_ns min $c"

# 3. A zd-recv that sends no STAT "recv": zd-send's own parts, still one
# STAT "latency" per ACK.
cat >"$TMP/relay.py" <<'EOF'
# The back direction without STAT "recv" records (an older zd-recv).
import socket, struct, sys, threading
target = int(sys.argv[1])
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(ls.getsockname()[1], flush=True)
a, _ = ls.accept()
b = socket.create_connection(("127.0.0.1", target))
def close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def forward():
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    close(b, a)
def back():
    buf, pre = b"", False
    try:
        while True:
            d = b.recv(65536)
            if not d:
                break
            buf += d
            out = b""
            if not pre and len(buf) >= 8:
                out, buf, pre = buf[:8], buf[8:], True
            while pre and len(buf) >= 12:
                rtype, _f, length, _c = struct.unpack_from("<HHII", buf, 0)
                if len(buf) < 12 + length:
                    break
                rec, buf = buf[:12 + length], buf[12 + length:]
                if rtype == 9:
                    n = struct.unpack_from("<H", rec, 20)[0]
                    if rec[22:22 + n] == b"recv":
                        continue
                out += rec
            a.sendall(out)
    except OSError:
        pass
    close(a, b)
t = threading.Thread(target=forward); t.start()
back()
t.join()
EOF
start_relay() {	# PORT NAME: sets RELAY_PORT and RELAY_PID
	python3 "$TMP/relay.py" "$1" >"$TMP/$2.relay.port" 2>"$TMP/$2.relay.err" &
	RELAY_PID=$!
	at_exit "kill $RELAY_PID"
	RELAY_PORT=$(read_port "$TMP/$2.relay.port" $RELAY_PID 5)
}
if command -v python3 >/dev/null; then
	RELAY=start_relay run r_old "$SPEC" 20 remus "" "" ""
	ran_ok "no STAT \"recv\" from zd-recv" r_old 20
	every_ack "no STAT \"recv\" from zd-recv" "$TMP/r_old.log"
	adds_up "no STAT \"recv\" from zd-recv" "$TMP/r_old.log" "$OWN"
	n=$(jq -s '[.[] | select(.type == "stat" and .source == "latency") | .values | keys[] |
		select(startswith("recv_") or . == "net_ns")] | length' "$TMP/r_old.log")
	[ "$n" = 0 ] && ok "no STAT \"recv\": no recv_* or net_ns keys" ||
		not_ok "no STAT \"recv\": no recv_* keys" "$n of them"
	zd-stat "$TMP/r_old.log" >"$TMP/r_old.txt"
	grep -qE '^  COMMIT write begun -> ACK read +[0-9.]+ +[0-9.]+$' "$TMP/r_old.txt" && ! grep -q 'journal fsync' "$TMP/r_old.txt" &&
		ok "zd-stat: zd-send's parts only" || not_ok "zd-stat: zd-send's parts only" "$(cat "$TMP/r_old.txt")"
else
	skip "a zd-recv without STAT \"recv\"" "no python3 for the relay"
fi

done_testing
