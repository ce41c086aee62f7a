#!/usr/bin/env bash
# Fuzz smoke run (suite "fuzz" of tests/run): replay the seed corpus, then
# fuzz the zd-stream(5) decoder, lib/wire's payload/MAC paths and zd-recv's
# record handling (fuzz_recv) for
# FUZZ_SMOKE_TIME seconds each (default 10).
# The long run is `make fuzz`.
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 2
BUILD=${BUILD:-build}
bin=$BUILD/fuzz/fuzz_decode
secs=${FUZZ_SMOKE_TIME:-10}

if ! command -v "${FUZZ_CC:-clang}" >/dev/null; then
	skip "fuzz_decode builds" "no clang"
	done_testing
fi
if ! make -s "$bin" >"$TMP/build.log" 2>&1; then
	not_ok "fuzz_decode builds" "$(tail -5 "$TMP/build.log")"
	done_testing
fi
ok "fuzz_decode builds"

# every seed decodes without a finding (and -runs=0 replays them only)
check "seed corpus replays clean" "$bin" -runs=0 -artifact_prefix="$TMP/" tests/fuzz/seeds-decode

mkdir -p "$TMP/corpus"
if "$bin" -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$TMP/" -dict=tests/fuzz/stream.dict "$TMP/corpus" tests/fuzz/seeds-decode >"$TMP/fuzz.log" 2>&1; then
	ok "fuzz_decode ${secs}s: $(grep -oE 'Done [0-9]+ runs' "$TMP/fuzz.log" | tail -1), no finding"
else
	not_ok "fuzz_decode ${secs}s finds nothing" "$(grep -E 'ERROR|SUMMARY|fuzz_decode:|Test unit written' "$TMP/fuzz.log" | head -10)"
	# keep the reproducer for whoever looks at the log
	cp "$TMP"/crash-* "$TMP"/leak-* "$TMP"/timeout-* "$TMP"/oom-* "$BUILD/fuzz/" 2>/dev/null
fi

# fuzz_wire: lib/wire's PAGES payload decoder and record MAC check
wbin=$BUILD/fuzz/fuzz_wire
if ! make -s "$wbin" >"$TMP/build-wire.log" 2>&1; then
	not_ok "fuzz_wire builds" "$(tail -5 "$TMP/build-wire.log")"
	done_testing
fi
ok "fuzz_wire builds"
check "wire seed corpus replays clean" "$wbin" -runs=0 -artifact_prefix="$TMP/" tests/fuzz/seeds-wire
mkdir -p "$TMP/corpus-wire"
if "$wbin" -max_total_time="$secs" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$TMP/" "$TMP/corpus-wire" tests/fuzz/seeds-wire >"$TMP/fuzz-wire.log" 2>&1; then
	ok "fuzz_wire ${secs}s: $(grep -oE 'Done [0-9]+ runs' "$TMP/fuzz-wire.log" | tail -1), no finding"
else
	not_ok "fuzz_wire ${secs}s finds nothing" "$(grep -E 'ERROR|SUMMARY|fuzz_wire:|Test unit written' "$TMP/fuzz-wire.log" | head -10)"
	cp "$TMP"/crash-* "$TMP"/leak-* "$TMP"/timeout-* "$TMP"/oom-* "$BUILD/fuzz/" 2>/dev/null
fi

# fuzz_recv: zd-recv's record handling into a replica, MAC and delta paths
rbin=$BUILD/fuzz/fuzz_recv
if ! make -s "$rbin" >"$TMP/build-recv.log" 2>&1; then
	not_ok "fuzz_recv builds" "$(tail -5 "$TMP/build-recv.log")"
	done_testing
fi
ok "fuzz_recv builds"
check "recv seed corpus replays clean" "$rbin" -runs=0 -artifact_prefix="$TMP/" tests/fuzz/seeds-recv
mkdir -p "$TMP/corpus-recv"
if "$rbin" -max_total_time="$secs" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
	-artifact_prefix="$TMP/" -dict=tests/fuzz/stream.dict "$TMP/corpus-recv" tests/fuzz/seeds-recv >"$TMP/fuzz-recv.log" 2>&1; then
	ok "fuzz_recv ${secs}s: $(grep -oE 'Done [0-9]+ runs' "$TMP/fuzz-recv.log" | tail -1), no finding"
else
	not_ok "fuzz_recv ${secs}s finds nothing" "$(grep -E 'ERROR|SUMMARY|fuzz_recv:|Test unit written' "$TMP/fuzz-recv.log" | head -10)"
	cp "$TMP"/crash-* "$TMP"/leak-* "$TMP"/timeout-* "$TMP"/oom-* "$BUILD/fuzz/" 2>/dev/null
fi
done_testing
