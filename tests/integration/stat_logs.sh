#!/usr/bin/env bash
# zd-stat's side inputs: zd-vm's --output-log (output delay), zd-client's
# --log (response delay, written here by zd-client against a real TCP
# peer), bytes per epoch, --from; bad log lines and bad flags: one line,
# exit 3 or 2, no report.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/wait.sh"

zd-track synth:pages=4096,dirty=64,seed=3 --epochs 20 --interval 0 --grace 0 2>/dev/null >"$TMP/s.zds"
# An output log as zd-vm writes it: SEQ EPOCH PRODUCED RELEASED WALL.
for i in $(seq 10); do echo "$i 2 $((1000 * i)) $((1000 * i + 500 * i)) 17"; done >"$TMP/out.log"

# A client log from zd-client against a real peer.
python3 "$ZD_TOP/tests/integration/fakesvc.py" "$TMP/port" --delay-ms 1 &
at_exit "kill $!"
zd-client --requests 30 --log "$TMP/client.log" 127.0.0.1:"$(read_port "$TMP/port" $! 5)" >"$TMP/client.json"

zd-stat --json --output-log "$TMP/out.log" --client-log "$TMP/client.log" "$TMP/s.zds" >"$TMP/j" 2>"$TMP/err"
rc=$?
[ $rc = 0 ] && ok "zd-stat --output-log --client-log: exit 0" || not_ok "zd-stat with both logs: exit 0" "exit $rc: $(cat "$TMP/err")"
# Output delays 500..5000 ns: nearest-rank p50 = 5th = 2500, p99 = 10th.
got=$(jq -c '.output_delay_ns' "$TMP/j")
[ "$got" = '{"p50":2500,"p99":5000,"max":5000,"mean":2750}' ] && ok "output delay from the log: $got" ||
	not_ok "output delay from the log" "$got"
got=$(jq -c '[.response_delay_ns.p50, .response_delay_ns.p99, .response_delay_ns.max, .response_delay_ns.mean]' "$TMP/j")
want=$(jq -c '[.delay_ns.p50, .delay_ns.p99, .delay_ns.max, .delay_ns.mean]' "$TMP/client.json")
[ "$got" = "$want" ] && ok "response delay from zd-client's log = zd-client's own summary ($got)" ||
	not_ok "response delay = zd-client's own summary" "zd-stat $got, zd-client $want"
# Bytes per epoch: the stream's records per epoch (no wire bytes here).
want=$(zd-stat --csv "$TMP/s.zds" | awk -F, 'NR > 1 {print $10}' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)], v[NR]}')
got=$(jq -r '"\(.bytes_per_epoch.p50) \(.bytes_per_epoch.max)"' "$TMP/j")
[ "$got" = "$want" ] && ok "bytes per epoch p50/max = the CSV's ($got)" || not_ok "bytes per epoch p50/max = the CSV's" "json $got, csv $want"
zd-stat --output-log "$TMP/out.log" --client-log "$TMP/client.log" "$TMP/s.zds" >"$TMP/t"
grep -q '^output delay (produced to released) us: p50 2.5, p99 5.0, max 5.0, mean 2.8$' "$TMP/t" &&
	grep -q '^response delay (sent to answered) us: ' "$TMP/t" && grep -q '^stream bytes per epoch: ' "$TMP/t" &&
	ok "the table's summary has output delay, response delay, bytes per epoch" ||
	not_ok "the table's summary has output delay, response delay, bytes per epoch" "$(tail -6 "$TMP/t")"
got=$(zd-stat --json --from 6 "$TMP/s.zds" | jq .epochs)
[ "$got" = 15 ] && ok "--from 6: epochs 6..20 reported" || not_ok "--from 6: epochs 6..20 reported" "$got"

# Bad logs: exit 3, one line naming file and line, nothing on stdout.
printf '1 2 3 4 5\n1 2 3\n' >"$TMP/short.log"
expect_fail "output log: a line with 3 fields" 3 "short.log: line 2: want 'SEQ EPOCH PRODUCED_NS RELEASED_NS RELEASED_WALL_NS'" \
	zd-stat --output-log "$TMP/short.log" "$TMP/s.zds"
[ ! -s "$TMP/ef.out" ] && ok "a bad log: no report" || not_ok "a bad log: no report" "$(head -3 "$TMP/ef.out")"
printf '1 2 900 800 5\n' >"$TMP/back.log"
expect_fail "output log: released before produced" 3 "back.log: line 1: times out of order" \
	zd-stat --output-log "$TMP/back.log" "$TMP/s.zds"
printf '1 100 300 150\n' >"$TMP/cl.log"
expect_fail "client log: a delay that is not received - sent" 3 "cl.log: line 1: times out of order" \
	zd-stat --client-log "$TMP/cl.log" "$TMP/s.zds"
printf '1 100 x 150\n' >"$TMP/cl2.log"
expect_fail "client log: not a number" 3 "cl2.log: line 1: want 'SEQ SENT_NS RECEIVED_NS DELAY_NS \[FAILOVER_NS\]'" \
	zd-stat --client-log "$TMP/cl2.log" "$TMP/s.zds"
# zd-client --reconnect puts the failover time on the first answer after
# a loss: a fifth number, taken; a sixth is not.
printf '1 100 300 200\n2 900 1000 100 700\n' >"$TMP/cl5.log"
if zd-stat --json --client-log "$TMP/cl5.log" "$TMP/s.zds" >"$TMP/cl5.json" 2>"$TMP/cl5.err"; then
	ok "client log: the failover time after a loss (a fifth number) is read"
else
	not_ok "client log: the failover time after a loss is read" "$(cat "$TMP/cl5.err")"
fi
printf '1 100 300 200 5 6\n' >"$TMP/cl6.log"
expect_fail "client log: six numbers" 3 "cl6.log: line 1: want 'SEQ SENT_NS RECEIVED_NS DELAY_NS \\[FAILOVER_NS\\]'" \
	zd-stat --client-log "$TMP/cl6.log" "$TMP/s.zds"
expect_fail "a log that does not exist: exit 2" 2 "--output-log $TMP/none.log: No such file" \
	zd-stat --output-log "$TMP/none.log" "$TMP/s.zds"
expect_fail "--client-log twice" 2 "--client-log given twice" \
	zd-stat --client-log "$TMP/client.log" --client-log "$TMP/client.log" "$TMP/s.zds"
expect_fail "--from x" 2 "--from 'x': want an epoch number" zd-stat --from x "$TMP/s.zds"
done_testing
