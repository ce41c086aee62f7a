#!/usr/bin/env bash
# bench/wire.sh [CSV]: the wire through the real tools on loopback, per
# --compress: a recorded synth stream (zd-track | zd-swap, pages inline) is
# replayed into zd-send → TCP 127.0.0.1 → zd-recv --no-fsync, and zd-send's
# STAT "send" records give raw and wire bytes. Throughput is raw page bytes
# over zd-send's wall time from start to its exit (the last ACK in), so it
# includes zd-recv decoding and applying on the same host. On a shared,
# loaded machine the wall time measures the neighbours too: the CPU seconds
# of zd-send and zd-recv are recorded beside it, and raw_gbps_cpu is raw
# bytes over the busier of the two (what two free cores would approach,
# the two processes running side by side).
#
#   BENCH_WIRE_SPEC   synth spec (default 64Ki pages of 4 KiB, 4096 dirty/epoch)
#   BENCH_WIRE_EPOCHS epochs (default 32)
#   BENCH_WIRE_RUNS   runs per setting, the fastest kept (default 2)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/bin:$PATH"
out=${1:-$top/bench/results/wire.csv}
spec=${BENCH_WIRE_SPEC:-synth:pages=65536,dirty=4096,hot=0.8,seed=5}
epochs=${BENCH_WIRE_EPOCHS:-32}
runs=${BENCH_WIRE_RUNS:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zd-bench-wire.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

zd-track "$spec" --epochs "$epochs" --interval 0 --mode buffered 2>/dev/null | zd-swap >"$tmp/stream.bin" 2>"$tmp/swap.err" ||
	{ echo "bench-wire: recording the stream failed: $(cat "$tmp/swap.err")" >&2; exit 1; }

echo "workload,enc,level,epochs,pages,raw_bytes,wire_bytes,ratio,seconds,raw_gbps,wire_gbps,send_cpu_s,recv_cpu_s,raw_gbps_cpu,loadavg" >"$out"
TIMEFORMAT='%U %S'
one() {	# ENC LEVEL: one run; prints "seconds raw wire pages send-cpu recv-cpu"
	local enc=$1 level=$2 port t0 t1 lv=()
	[ "$enc" != none ] && lv=(--level "$level")
	rm -rf "$tmp/r" "$tmp/recv.err"
	{ time zd-recv --listen 127.0.0.1:0 --replica "$tmp/r" --once --no-fsync 2>"$tmp/recv.err"; } 2>"$tmp/recv.cpu" &
	local rp=$!
	for _ in $(seq 100); do
		port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/recv.err" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.05
	done
	t0=$(date +%s%N)
	{ time zd-send --compress "$enc" "${lv[@]}" --json-log --timeout 0 127.0.0.1:"$port" <"$tmp/stream.bin" \
		>"$tmp/log.json" 2>"$tmp/send.err"; } 2>"$tmp/send.cpu" ||
		{ echo "bench-wire: zd-send --compress $enc failed: $(cat "$tmp/send.err")" >&2; kill $rp; return 1; }
	t1=$(date +%s%N)
	wait $rp || { echo "bench-wire: zd-recv failed: $(cat "$tmp/recv.err")" >&2; return 1; }
	local sc rc
	sc=$(tail -1 "$tmp/send.cpu" | awk '{ print $1 + $2 }')
	rc=$(tail -1 "$tmp/recv.cpu" | awk '{ print $1 + $2 }')
	jq -s --arg s "$(( (t1 - t0) / 1000 ))" '[.[] | select(.type == "stat" and .source == "send") | .values] |
		"\($s | tonumber / 1e6) \(map(.raw_bytes) | add) \(map(.wire_bytes) | add) \(map(.pages) | add)"' \
		-r "$tmp/log.json" | tr '\n' ' '
	echo "$sc $rc"
}
for setting in none:0 zstd:1 delta:1 delta:3; do
	enc=${setting%:*} level=${setting#*:}
	best=
	for _ in $(seq "$runs"); do
		r=$(one "$enc" "$level") || exit 1
		if [ -z "$best" ] || awk -v a="${r%% *}" -v b="${best%% *}" 'BEGIN { exit !(a < b) }'; then
			best=$r
		fi
	done
	read -r secs raw wire pages scpu rcpu <<<"$best"
	load=$(cut -d' ' -f1 /proc/loadavg)
	awk -v w="synth" -v e="$enc" -v l="$level" -v n="$epochs" -v p="$pages" -v r="$raw" -v x="$wire" \
		-v s="$secs" -v sc="$scpu" -v rc="$rcpu" -v ld="$load" 'BEGIN {
		m = sc > rc ? sc : rc
		printf "%s,%s,%s,%d,%d,%d,%d,%.2f,%.3f,%.3f,%.3f,%.2f,%.2f,%.3f,%s\n", w, e, l, n, p, r, x, r / x, s,
			r / s / 1e9, x / s / 1e9, sc, rc, (m > 0 ? r / m / 1e9 : 0), ld }' >>"$out"
	tail -1 "$out" | awk -F, '{ printf "bench-wire: %-5s L%s: ratio %5.2fx  %6.3f GB/s raw wall  %6.3f GB/s raw per busier-process CPU (send %s s, recv %s s cpu; %s s wall, load %s)\n",
		$2, $3, $8, $10, $14, $12, $13, $9, $15 }' >&2
done
