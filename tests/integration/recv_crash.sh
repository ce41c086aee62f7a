#!/usr/bin/env bash
# zd-recv killed with SIGKILL mid-epoch: restarted on the same DIR it is at
# the last committed epoch, and its memory is the primary's at that epoch.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"
REC="python3 $(dirname "$0")/../lib/zdrecords.py"

SPEC=synth:pages=65536,dirty=8192,hot=0.8,seed=3
N=6
zd-track "$SPEC" --epochs $N --interval 0 --verify 2>/dev/null | zd-swap >"$TMP/s.bin" 2>/dev/null
$REC "$TMP/s.bin" >"$TMP/s.idx" || exit 1
zd-track "$SPEC" --epochs $N --interval 0 --verify --json 2>/dev/null |
	jq -r 'select(.type == "commit") | "\(.epoch) \(.memsum)"' >"$TMP/sums"
sum_at() { awk -v e="$1" '$1 == e { print $2 }' "$TMP/sums"; }

# 1. The sender stalls in the middle of epoch k's second PAGES record (half of it
# delivered), zd-recv has staged part of the epoch; SIGKILL it there.
for k in 2 5; do
	read -r _ off _ len _ < <(awk -v k="$k" '$3 == "PAGES" && $5 == k' "$TMP/s.idx" | sed -n 2p)
	cut=$((off + 12 + len / 2))
	dir=$TMP/c$k
	rm -f "$TMP/fifo"; mkfifo "$TMP/fifo"
	( head -c "$cut" "$TMP/s.bin"; exec sleep 60 ) >"$TMP/fifo" &
	feeder=$!
	at_exit "kill $feeder"
	zd-recv --stdio --replica "$dir" <"$TMP/fifo" >/dev/null 2>"$TMP/c$k.err" &
	pid=$!
	wait_epoch "$dir" $((k - 1)) 10
	# Let it read up to the stall: then it is blocked inside epoch k.
	sleep 0.5
	# journal.tmp is reused from epoch to epoch: its size proves nothing,
	# zd-recv's write position in it does.
	staged=0
	for fd in /proc/"$pid"/fd/*; do
		[ "$(readlink "$fd")" = "$dir/journal.tmp" ] &&
			staged=$(awk '$1 == "pos:" { print $2 }' /proc/"$pid"/fdinfo/"${fd##*/}")
	done
	kill -9 "$pid"; wait "$pid" 2>/dev/null
	kill "$feeder"; wait "$feeder" 2>/dev/null
	# (at least the first PAGES record, not the epoch's 8192 pages)
	[ "$staged" -gt $((256 * 4096)) ] && [ "$staged" -lt $((8192 * 4096)) ] &&
		ok "epoch $k: killed with $staged bytes of it staged" ||
		not_ok "epoch $k: killed with part of it staged" "journal.tmp $staged bytes"
	e=$(replica_field "$dir" epoch)
	s=$(replica_field "$dir" memsum)
	[ "$e" = $((k - 1)) ] && [ "$s" = "$(sum_at $((k - 1)))" ] &&
		ok "after SIGKILL inside epoch $k: --status says epoch $e, checksum = primary's at $e" ||
		not_ok "after SIGKILL inside epoch $k: replica at epoch $((k - 1))" "epoch $e sum $s want $(sum_at $((k - 1)))"
done

# 2. Live over TCP: a paced primary, zd-recv killed once it has committed a
# few epochs (at a moment that falls anywhere in the epoch cycle).
SPEC2=synth:pages=16384,dirty=512,hot=0.8,seed=5
for after in 2 5 9; do
	dir=$TMP/t$after
	start_recv "t$after" --replica "$dir" --once || exit 1
	zd-track "$SPEC2" --epochs 10000 --interval 20 --mode buffered 2>/dev/null |
		zd-swap 2>/dev/null | zd-send 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send.err" &
	sendpid=$!
	wait_epoch "$dir" $after 30
	sleep "0.0$((RANDOM % 10))"
	kill -9 "$RECV_PID"; wait_recv
	wait $sendpid
	rc=$?
	e=$(replica_field "$dir" epoch)
	want=$(synth_memsum "$SPEC2" "$e" "$e")
	[ -n "$e" ] && [ "$e" -ge $after ] && [ "$(replica_field "$dir" memsum)" = "$want" ] &&
		ok "SIGKILL after epoch $after: replica at epoch $e equals the primary at $e" ||
		not_ok "SIGKILL after epoch $after: replica equals the primary at its epoch" "epoch $e"
	[ $rc = 5 ] && [ "$(grep -c . "$TMP/send.err")" = 1 ] && ok "zd-send: backup killed → one line, exit 5" ||
		not_ok "zd-send: backup killed → one line, exit 5" "exit $rc: $(cat "$TMP/send.err")"
done
done_testing
