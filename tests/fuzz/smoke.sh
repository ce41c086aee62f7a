#!/usr/bin/env bash
# Fuzz smoke run (suite "fuzz" of tests/run): for each harness, build it,
# replay its seed corpus, then fuzz for FUZZ_SMOKE_TIME seconds (default
# 10): the zd-stream(5) decoder (fuzz_decode), lib/wire's payload and MAC
# paths (fuzz_wire) and zd-recv's record handling into a replica, MAC and
# delta paths (fuzz_recv). The long run is `make fuzz`.
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 2
BUILD=${BUILD:-build}
secs=${FUZZ_SMOKE_TIME:-10}

if ! command -v "${FUZZ_CC:-clang}" >/dev/null; then
	skip "fuzz harnesses build" "no clang"
	done_testing
fi

# smoke NAME SEEDS MAX_LEN [libFuzzer flags...]: one harness; a build
# failure ends the run (the next harnesses share its objects).
smoke() {
	local name=$1 seeds=tests/fuzz/$2 maxlen=$3 bin=$BUILD/fuzz/$1
	shift 3
	if ! make -s "$bin" >"$TMP/build-$name.log" 2>&1; then
		not_ok "$name builds" "$(tail -5 "$TMP/build-$name.log")"
		done_testing
	fi
	ok "$name builds"
	# every seed runs without a finding (-runs=0 replays them only)
	check "$name: seed corpus replays clean" "$bin" -runs=0 -artifact_prefix="$TMP/" "$seeds"
	mkdir -p "$TMP/corpus-$name"
	if "$bin" -max_total_time="$secs" -max_len="$maxlen" -timeout=10 -rss_limit_mb=2048 \
		-artifact_prefix="$TMP/" "$@" "$TMP/corpus-$name" "$seeds" >"$TMP/$name.log" 2>&1; then
		ok "$name ${secs}s: $(grep -oE 'Done [0-9]+ runs' "$TMP/$name.log" | tail -1), no finding"
	else
		not_ok "$name ${secs}s finds nothing" \
			"$(grep -E "ERROR|SUMMARY|$name:|Test unit written" "$TMP/$name.log" | head -10)"
		# keep the reproducer for whoever looks at the log
		cp "$TMP"/crash-* "$TMP"/leak-* "$TMP"/timeout-* "$TMP"/oom-* "$BUILD/fuzz/" 2>/dev/null
	fi
}

smoke fuzz_decode seeds-decode 16384 -dict=tests/fuzz/stream.dict
smoke fuzz_wire seeds-wire 70000
smoke fuzz_recv seeds-recv 70000 -dict=tests/fuzz/stream.dict
done_testing
