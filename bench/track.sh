#!/usr/bin/env bash
# bench/track: the tracker's own pause per mode on a synthetic VM, open
# loop (no backup), and what zd-mru's prediction buys zddspt's pre-copy.
# Writes bench/results/track.csv. synth "copies" a page by generating it
# (a few ns a word), about the cost of the memcpy a real VM monitor does.
#
#   bench/track.sh [OUT.csv]   (env: EPOCHS=200 INTERVAL=25 DIRTY=1024 PAGES=262144)
set -eu
cd "$(dirname "$0")/.."
out=${1:-bench/results/track.csv}
epochs=${EPOCHS:-200} interval=${INTERVAL:-25} dirty=${DIRTY:-1024} pages=${PAGES:-262144}
spec="synth:pages=$pages,dirty=$dirty,hot=0.8,seed=1"
export PATH="$PWD/bin:$PATH"
mkdir -p "$(dirname "$out")"
echo "mode,policy,pages,dirty,interval_ms,epochs,pause_p50_ns,pause_p99_ns,pause_max_ns,precopy_total,standby_recall_mean" >"$out"
for run in "remus none" "buffered none" "zddspt none" "zddspt mru" "zddspt lfu"; do
	set -- $run
	mode=$1 policy=$2
	grace=(); [ "$mode" = remus ] && grace=(--grace 0)
	zd-track "$spec" --mode "$mode" --epochs "$epochs" --interval "$interval" "${grace[@]}" 2>/dev/null |
		zd-mru --policy "$policy" | zd-stat --json |
		jq -r --arg m "$mode" --arg p "$policy" --arg pg "$pages" --arg d "$dirty" --arg i "$interval" \
			'[$m, $p, $pg, $d, $i, .epochs, .pause_ns.p50, .pause_ns.p99, .pause_ns.max, .precopy_total, (.standby_recall_mean // 0)] | @csv' |
		tr -d '"' >>"$out"
done
column -s, -t "$out" 2>/dev/null || cat "$out"
