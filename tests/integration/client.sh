#!/usr/bin/env bash
# zd-client against a real TCP peer (tests/integration/fakesvc.py, a
# stand-in for zd-vm's service that can misbehave on purpose): answers
# counted and timed, the log, open and closed loop, the sequence rules
# (a skip, a step back, garbage: exit 3), a lost connection (exit 5, or a
# reconnect that carries on), an unreachable address, a late answer, bad
# flags. zd-client against the real zd-vm runs in the KVM tests and the demo.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/wait.sh"
FAKE="$ZD_TOP/tests/integration/fakesvc.py"

# serve NAME ARGS...: start a fake service; its port in $PORT.
serve() {
	local name=$1 i; shift
	python3 "$FAKE" "$TMP/$name.port" "$@" 2>"$TMP/$name.err" &
	at_exit "kill $!"
	PORT=$(read_port "$TMP/$name.port" $! 5)
}

# 1. Closed loop: every answer counted, logged and timed.
serve s1 --start 7 --delay-ms 2
zd-client --requests 50 --log "$TMP/c1.log" 127.0.0.1:"$PORT" >"$TMP/c1.json" 2>"$TMP/c1.err"
rc=$?
[ $rc = 0 ] && [ ! -s "$TMP/c1.err" ] && ok "closed loop: 50 requests, exit 0, quiet" ||
	not_ok "closed loop: 50 requests, exit 0, quiet" "exit $rc: $(cat "$TMP/c1.err")"
got=$(jq -c '[.count, .sent, .first_seq, .last_seq, .errors, .reconnects]' "$TMP/c1.json")
[ "$got" = "[50,50,7,56,0,0]" ] && ok "summary: 50 answers, seq 7..56, no errors" ||
	not_ok "summary: 50 answers, seq 7..56, no errors" "$got"
bad=$(awk 'NF != 4 || $1 != NR + 6 || $3 - $2 != $4 || $4 < 2000000 {print NR ": " $0}' "$TMP/c1.log" | head -3)
[ "$(wc -l <"$TMP/c1.log")" = 50 ] && [ -z "$bad" ] &&
	ok "log: 50 lines SEQ SENT RECEIVED DELAY, delay = received - sent >= the peer's 2 ms" ||
	not_ok "log: 50 lines SEQ SENT RECEIVED DELAY" "${bad:-$(wc -l <"$TMP/c1.log") lines}"
# The summary's percentiles are those of the logged delays (nearest rank).
want=$(sort -n -k4 "$TMP/c1.log" | awk '{d[NR] = $4; s += $4} END {printf "[%d,%d,%d,%d]", d[25], d[50], d[50], int(s / NR + 0.5)}')
got=$(jq -c '[.delay_ns.p50, .delay_ns.p99, .delay_ns.max, .delay_ns.mean]' "$TMP/c1.json")
[ "$got" = "$want" ] && ok "p50/p99/max/mean delay = the log's ($got)" || not_ok "p50/p99/max/mean delay = the log's" "summary $got, log $want"

# 2. Open loop: --rate sends on a schedule, answers or not.
serve s2
zd-client --rate 200/s --requests 40 127.0.0.1:"$PORT" >"$TMP/c2.json" 2>"$TMP/c2.err"
rc=$?
got=$(jq -c '[.count, .errors]' "$TMP/c2.json")
el=$(jq '.elapsed_ns' "$TMP/c2.json")
[ $rc = 0 ] && [ "$got" = "[40,0]" ] && [ "$el" -ge 195000000 ] &&
	ok "open loop: 40 requests at 200/s take >= 195 ms ($el ns)" ||
	not_ok "open loop: 40 requests at 200/s" "exit $rc $got elapsed $el: $(cat "$TMP/c2.err")"
# Pipelined: 8 outstanding against a peer that takes 20 ms per answer.
serve s2b --delay-ms 20
zd-client --rate 1000 --concurrency 8 --requests 16 --log "$TMP/c2b.log" 127.0.0.1:"$PORT" >"$TMP/c2b.json" 2>&1
mx=$(awk '$4 > m {m = $4} END {print m}' "$TMP/c2b.log")
[ "$(jq .count "$TMP/c2b.json")" = 16 ] && [ "$mx" -ge 140000000 ] &&
	ok "--concurrency 8: requests queue at the peer (max delay $mx ns >= 7 x 20 ms)" ||
	not_ok "--concurrency 8: requests queue at the peer" "$(cat "$TMP/c2b.json") max $mx"

# 3. The sequence rules: exit 3, one line naming the answer.
serve s3 --skip-at 10
expect_fail "a skipped seq: exit 3" 3 "answer 10: seq 11 after seq 9: 1 answers skipped" \
	zd-client --requests 20 127.0.0.1:"$PORT"
[ "$(jq .errors "$TMP/ef.out")" = 1 ] && [ "$(jq .count "$TMP/ef.out")" = 20 ] &&
	ok "a skipped seq: the run goes on, errors 1 in the summary" || not_ok "a skipped seq: errors 1 in the summary" "$(cat "$TMP/ef.out")"
serve s4 --back-at 5
expect_fail "a seq going back: exit 3" 3 "answer 5: seq 3 after seq 4: the sequence went back" \
	zd-client --requests 10 127.0.0.1:"$PORT"
serve s5 --garbage-at 3
expect_fail "an answer that is not 'seq N': exit 3" 3 "answer 3: not 'seq N': 'hello'" \
	zd-client --requests 10 127.0.0.1:"$PORT"
serve s6 --skip-at 4
check "--shared: a gap is another client's answer, exit 0" zd-client --shared --requests 10 127.0.0.1:"$PORT"
serve s6b --back-at 4
expect_fail "--shared: a seq going back still contradicts" 3 "went back" \
	zd-client --shared --requests 10 127.0.0.1:"$PORT"

# 4. A lost connection: exit 5; with --reconnect the run carries on.
serve s7 --close-after 10
expect_fail "connection closed by the peer: exit 5" 5 "connection closed by the peer after 10 answers" \
	zd-client --requests 20 127.0.0.1:"$PORT"
[ "$(jq .count "$TMP/ef.out")" = 10 ] && ok "connection closed: the summary covers the 10 answers got" ||
	not_ok "connection closed: the summary covers the 10 answers got" "$(cat "$TMP/ef.out")"
serve s8 --close-after 10 --sessions 3
zd-client --reconnect --requests 25 --log "$TMP/c8.log" 127.0.0.1:"$PORT" >"$TMP/c8.json" 2>"$TMP/c8.err"
rc=$?
got=$(jq -c '[.count, .reconnects, .errors, .first_seq, .last_seq]' "$TMP/c8.json")
[ $rc = 0 ] && [ "$got" = "[25,2,0,1,25]" ] && ok "--reconnect: two closes, 25 answers seq 1..25 (resent $(jq .resent "$TMP/c8.json"))" ||
	not_ok "--reconnect: two closes, 25 answers seq 1..25" "exit $rc $got: $(cat "$TMP/c8.err")"
# Each loss is one failover, timed on the client from its last answer
# before it to its first after: the log's fifth number, the summary's count.
got=$(awk 'NF == 5 {n++; if ($3 - p != $5) bad = NR} {p = $3} END {print n + 0, bad + 0}' "$TMP/c8.log")
[ "$got" = "2 0" ] && [ "$(jq -c '[.failovers, .resets]' "$TMP/c8.json")" = "[2,0]" ] &&
	[ "$(jq '.failover_ns.max >= .failover_ns.p50 and .failover_ns.p50 >= .failover_ns.min and .failover_ns.min > 0' "$TMP/c8.json")" = true ] &&
	ok "--reconnect: two failovers, each timed in the log (last answer before -> first after) and the summary" ||
	not_ok "--reconnect: two failovers timed" "log (count, bad line) $got; $(jq -c '[.failovers, .resets, .failover_ns]' "$TMP/c8.json")"
# A reconnection the server accepts and drops unanswered is a reset, and
# part of the same failover.
serve s8d --close-after 5 --drop 1 --sessions 2
zd-client --reconnect --requests 10 --log "$TMP/c8d.log" -v 127.0.0.1:"$PORT" >"$TMP/c8d.json" 2>"$TMP/c8d.err"
rc=$?
got=$(jq -c '[.count, .reconnects, .failovers, .resets, .errors]' "$TMP/c8d.json")
[ $rc = 0 ] && [ "$got" = "[10,2,1,1,0]" ] && [ "$(awk 'NF == 5' "$TMP/c8d.log" | wc -l)" = 1 ] &&
	grep -q "dropped before any answer" "$TMP/c8d.err" && grep -q "answered again .* ms after the last answer before the loss" "$TMP/c8d.err" &&
	ok "--reconnect: a reconnection dropped unanswered is counted in resets, one failover" ||
	not_ok "--reconnect: a reconnection dropped unanswered is a reset" "exit $rc $got: $(cat "$TMP/c8d.err")"
# After a reconnect the new peer may be ahead (answers lost in flight), never behind.
serve s9 --close-after 5 --sessions 2 --skip-at 6
zd-client --reconnect --requests 10 127.0.0.1:"$PORT" >"$TMP/c9.json" 2>"$TMP/c9.err"
rc=$?
got=$(jq -c '[.count, .gaps, .errors]' "$TMP/c9.json")
[ $rc = 0 ] && [ "$got" = "[10,1,0]" ] && ok "--reconnect: a gap right after the reconnect is counted, not an error" ||
	not_ok "--reconnect: a gap right after the reconnect is counted" "exit $rc $got: $(cat "$TMP/c9.err")"
serve s10 --close-after 5 --sessions 2 --back-at 6
expect_fail "--reconnect: a peer behind the last answer contradicts" 3 "answer 6: seq 4 after seq 5: the sequence went back" \
	zd-client --reconnect --requests 10 127.0.0.1:"$PORT"
serve s11 --close-after 5
expect_fail "--reconnect: nobody back within --retry-for: exit 5" 5 "connect: Connection refused \(reconnecting for 300 ms\)" \
	zd-client --reconnect --retry-for 300 --requests 10 127.0.0.1:"$PORT"

# 5. Unreachable, late.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
expect_fail "unreachable address: exit 5" 5 "^zd-client: 127\.0\.0\.1:$port: connect: Connection refused$" \
	zd-client 127.0.0.1:"$port"
[ ! -s "$TMP/ef.out" ] && ok "unreachable address: nothing on stdout" || not_ok "unreachable address: nothing on stdout" "$(cat "$TMP/ef.out")"
serve s12 --delay-ms 3000
expect_fail "an answer later than --timeout: exit 5" 5 "no answer to request 1 in 200 ms after 0 answers" \
	zd-client --timeout 200 --requests 2 127.0.0.1:"$PORT"

# SIGTERM ends the run early with the summary of what was got.
serve s14 --delay-ms 50
zd-client --duration 60s 127.0.0.1:"$PORT" >"$TMP/c14.json" 2>"$TMP/c14.err" &
cl=$!
sleep 1
kill -TERM $cl
wait $cl
rc=$?
n=$(jq .count "$TMP/c14.json" 2>/dev/null)
[ $rc = 0 ] && [ "${n:-0}" -ge 1 ] && ok "SIGTERM: exit 0 and the summary of $n answers" ||
	not_ok "SIGTERM: exit 0 and the summary" "exit $rc: $(cat "$TMP/c14.json" "$TMP/c14.err")"

# 6. Flags.
expect_fail "no address" 2 "missing ADDR:PORT" zd-client
expect_fail "two addresses" 2 "unexpected argument 'b:2'" zd-client a:1 b:2
expect_fail "an address without a port" 2 "'localhost': want ADDR:PORT" zd-client localhost
expect_fail "--requests 0" 2 "--requests '0': want a whole number above 0" zd-client --requests 0 a:1
expect_fail "--requests 1x" 2 "--requests '1x'" zd-client --requests 1x a:1
expect_fail "--rate -5" 2 "--rate '-5': want requests per second" zd-client --rate -5 a:1
expect_fail "--rate 5/m" 2 "--rate '5/m'" zd-client --rate 5/m a:1
expect_fail "--concurrency 0" 2 "--concurrency '0'" zd-client --concurrency 0 a:1
expect_fail "--timeout 0" 2 "--timeout '0': want a duration above 0" zd-client --timeout 0 a:1
expect_fail "--duration abc" 2 "--duration 'abc'" zd-client --duration abc a:1
expect_fail "--retry-for without --reconnect" 2 "--retry-for needs --reconnect" zd-client --retry-for 100 a:1
expect_fail "--log ''" 2 "--log: empty file name" zd-client --log '' a:1
expect_fail "unknown option" 2 "unknown option '--bogus'" zd-client --bogus a:1
expect_fail "option without its value" 2 "option '--rate' needs a value" zd-client a:1 --rate
serve s13
expect_fail "--log in a missing directory: exit 1" 1 "$TMP/nodir/x.log" zd-client --log "$TMP/nodir/x.log" 127.0.0.1:"$PORT"
out=$(zd-client --help)
[ $? = 0 ] && [[ $out == "usage: zd-client [--requests N]"* ]] && [[ $out == *"default 30000"* ]] &&
	ok "--help: usage on stdout, defaults shown" || not_ok "--help: usage on stdout, defaults shown" "$out"
[ "$(zd-client --version)" = "zd-client 0.1.0" ] && ok "--version" || not_ok "--version" "$(zd-client --version)"
done_testing
