#!/usr/bin/env bash
# The failover time as a client sees it, per mode, on
# real KVM. bench/failover.sh (BENCH_QUICK: 4 losses per mode and
# setting, half crashes of the primary's host, half silent primaries that
# zd-recv's --timeout declares lost and its --fence powers off) with
# zd-recv's defaults and with --timeout 100; zd-client --reconnect reports
# each loss's time from its last answer before it to its first after.
# Asserted per setting and mode:
#   - every loss taken over, and the client back each time (the script
#     fails otherwise);
#   - the client's answers: none contradicted, none skipped (errors 0,
#     gaps 0), and no connection the peer accepted then dropped unanswered
#     (resets 0: neither the dying primary nor the restored VM);
#   - where /dev/kvm is real (not QEMU TCG): every client failover time
#     within 1 s with the defaults and within 300 ms with --timeout 100.
#     The machines are shared (2 cores, other jobs): a setting and mode
#     that misses its bound is measured once more, and passes if that
#     second run keeps it (the first run's figures are printed); --timeout
#     100's budget is ~100 ms of silence, ~30 ms of fence, ~30 ms of
#     restore and up to an epoch's commit of output commit's hold, so a
#     stalled host alone can tip one loss over.
# ZD_FAILOVER_CLIENT_KILLS changes the number of losses.
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 1

if ! have_kvm; then
	skip "the client's failover time" "no /dev/kvm here (it measures real time; QEMU TCG would not)"
	done_testing
fi
if [ "${ZD_FAILOVER_E2E:-}" = 0 ]; then
	skip "the client's failover time" "ZD_FAILOVER_E2E=0"
	done_testing
fi
OUT=$TMP/out
if BENCH_QUICK=1 BENCH_FAILOVER_KILLS=${ZD_FAILOVER_CLIENT_KILLS:-4} \
	bench/failover.sh ${ZD_FAILOVER_CLIENT_KILLS:+--kills $ZD_FAILOVER_CLIENT_KILLS} --out "$OUT" >"$TMP/bench.out" 2>"$TMP/bench.err"; then
	ok "bench/failover.sh: every loss taken over, the client back each time"
else
	not_ok "bench/failover.sh: every loss taken over, the client back each time" \
		"$(tail -n 5 "$TMP/bench.err"; tail -n 3 "$TMP/bench.out")"
	done_testing
fi
sed 's/^/# /' "$TMP/bench.out"
CSV=$OUT/failover.csv
while IFS=, read -r set mode kills p50 max cp50 cmax sp50 smax zp50 zmax resets errors gaps emulated; do
	[ "$set" = setting ] && continue
	bound=1000
	[ "$set" = timeout100 ] && bound=300
	what="$mode, $set"
	if [ "$resets" = 0 ] && [ "$errors" = 0 ] && [ "$gaps" = 0 ]; then
		ok "$what: the client's answers over $kills losses: none contradicted, none skipped, no connection reset unanswered"
	else
		not_ok "$what: none contradicted, none skipped, no connection reset unanswered" \
			"errors $errors, gaps $gaps, resets $resets ($OUT/failover_clients/$set-$mode.json)"
	fi
	first=
	if [ "$emulated" != yes ] && ! { [ -n "$max" ] && [ "$max" -le $bound ]; }; then
		first="first run p50 $p50, max $max ms: $(awk -F, -v s="$set" -v m="$mode" '$1 == s && $2 == m {printf "%s %s ms; ", $4, $5}' "$OUT/failover_kills.csv")"
		echo "# $what: over $bound ms ($first); measuring again"
		rm -rf "$TMP/again"
		if BENCH_QUICK=1 BENCH_FAILOVER_KILLS=${ZD_FAILOVER_CLIENT_KILLS:-4} bench/failover.sh \
			${ZD_FAILOVER_CLIENT_KILLS:+--kills $ZD_FAILOVER_CLIENT_KILLS} --settings "$set" --modes "$mode" \
			--out "$TMP/again" >"$TMP/again.out" 2>"$TMP/again.err" </dev/null; then
			IFS=, read -r _ _ kills p50 max cp50 cmax sp50 smax zp50 zmax _ < <(sed -n 2p "$TMP/again/failover.csv")
		else
			max=
			first="$first; the second run failed: $(tail -n 2 "$TMP/again.err")"
		fi
	fi
	if [ "$emulated" = yes ]; then
		skip "$what: the client's failover time within $bound ms (p50 $p50, max $max ms)" "QEMU TCG: emulated time"
	elif [ -n "$max" ] && [ "$max" -le $bound ]; then
		ok "$what: the client's failover time within $bound ms (p50 $p50, max $max ms over $kills losses; crashes $cp50/$cmax, silent $sp50/$smax; zd-vm's own figure $zp50/$zmax)${first:+ (measured twice)}"
	else
		not_ok "$what: the client's failover time within $bound ms" \
			"${first:+$first; again: }p50 $p50, max $max ms; per loss: $(awk -F, -v s="$set" -v m="$mode" '$1 == s && $2 == m {printf "%s %s ms; ", $4, $5}' "${TMP}/again/failover_kills.csv" 2>/dev/null)"
	fi
done <"$CSV"
done_testing
