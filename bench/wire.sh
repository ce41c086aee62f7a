#!/usr/bin/env bash
# bench/wire.sh [CSV]: the wire through the real tools on loopback, per
# --compress, --key (none, or a key: the link encrypted) and workload: a
# recorded stream (pages inline) is replayed into
# zd-send → TCP 127.0.0.1 → zd-recv --no-fsync, and zd-send's STAT "send"
# records give raw and wire bytes. Two workloads:
#   synth  zd-track synth:… | zd-swap, to a file;
#   zd-vm  a real KVM guest (zd-vm's built-in workload) checkpointed by
#          zd-track kvm: --mode buffered | zd-swap, to a file — where
#          /dev/kvm works here (BENCH_WIRE_GUEST=0: not at all).
# Throughput is raw page bytes over zd-send's wall time from start to its
# exit (the last ACK in), so it includes zd-recv decoding and applying on
# the same host. On a shared, loaded machine the wall time measures the
# neighbours too: the CPU seconds of zd-send and zd-recv are recorded
# beside it, raw_gbps_cpu is raw bytes over the busier of the two (what
# two free cores, one a process, would approach) and cpu_s_per_gb the two
# processes' CPU seconds per GB of raw pages (on this 2-core host 2 GB/s
# wants at most 1.0).
#
#   BENCH_WIRE_SPEC   synth spec (default 64Ki pages of 4 KiB, 4096 dirty/epoch)
#   BENCH_WIRE_EPOCHS synth epochs (default 128: 2 GiB of pages, so the
#                     one-time first touches of shadows and replica weigh little)
#   BENCH_WIRE_RUNS   runs per setting, the fastest kept (default 3); a
#                     setting with and without --key runs interleaved
#   BENCH_WIRE_KEY    1 (default): --key rows for none and delta 1; 0: none
#   BENCH_WIRE_GUEST  1 (default): the zd-vm row where /dev/kvm works; 0: none
#   BENCH_WIRE_GUEST_EPOCHS  guest epochs of 25 ms (default 400, ~2.4 GB of pages)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/bin:$PATH"
# shellcheck source=../tests/lib/wait.sh
. "$top/tests/lib/wait.sh"	# read_port, wait_for
out=${1:-$top/bench/results/wire.csv}
spec=${BENCH_WIRE_SPEC:-synth:pages=65536,dirty=4096,hot=0.8,seed=5}
epochs=${BENCH_WIRE_EPOCHS:-128}
runs=${BENCH_WIRE_RUNS:-3}
gepochs=${BENCH_WIRE_GUEST_EPOCHS:-400}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zd-bench-wire.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
head -c 64 /dev/urandom >"$tmp/key" && chmod 600 "$tmp/key"

zd-track "$spec" --epochs "$epochs" --interval 0 --mode buffered 2>/dev/null | zd-swap >"$tmp/synth.bin" 2>"$tmp/swap.err" ||
	{ echo "bench-wire: recording the synth stream failed: $(cat "$tmp/swap.err")" >&2; exit 1; }
workloads=synth

# The guest's stream: zd-vm's workload (the e2e tests' kvm_replicate one:
# 32 MiB, page writes over a 24 MiB span, a fifth of them to a hot set)
# checkpointed every 25 ms. Its pages change a few words at a time.
guest() {
	local S=$tmp/vm.sock vm i
	[ "${BENCH_WIRE_GUEST:-1}" = 1 ] || return 1
	if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
		echo "bench-wire: no usable /dev/kvm here: no zd-vm row" >&2
		return 1
	fi
	zd-vm --control "$S" --mem 32M --workload dirty=200000,hot=0.2,span=24M 2>"$tmp/vm.err" &
	vm=$!
	wait_for 10 test -S "$S"
	zd-track "kvm:$S" --mode buffered --interval 25 --epochs "$gepochs" 2>"$tmp/gtrack.err" |
		zd-swap >"$tmp/zd-vm.bin" 2>"$tmp/gswap.err"
	local rc="${PIPESTATUS[*]}"
	zd-vm --ctl "$S" stop >/dev/null 2>&1
	wait "$vm"
	if [ "$rc" != "0 0" ]; then
		echo "bench-wire: recording the zd-vm guest failed (exits $rc): $(tail -n 2 "$tmp/gtrack.err" "$tmp/gswap.err" "$tmp/vm.err")" >&2
		return 1
	fi
}
guest && workloads="synth zd-vm"

echo "workload,enc,level,key,epochs,pages,raw_bytes,wire_bytes,ratio,seconds,raw_gbps,wire_gbps,send_cpu_s,recv_cpu_s,raw_gbps_cpu,cpu_s_per_gb,loadavg" >"$out"
TIMEFORMAT='%U %S'
one() {	# STREAM ENC LEVEL KEY: one run; prints "seconds raw wire pages send-cpu recv-cpu"
	local stream=$1 enc=$2 level=$3 port t0 t1 lv=() kv=()
	[ "$enc" != none ] && lv=(--level "$level")
	[ "$4" = 1 ] && kv=(--key "$tmp/key")
	rm -rf "$tmp/r" "$tmp/recv.err" "$tmp/recv.port"
	{ time zd-recv --listen 127.0.0.1:0 --port-file "$tmp/recv.port" --replica "$tmp/r" --once --no-fsync "${kv[@]}" \
		2>"$tmp/recv.err"; } 2>"$tmp/recv.cpu" &
	local rp=$!
	# $rp is the subshell that times zd-recv: it ends when zd-recv does.
	port=$(read_port "$tmp/recv.port" $rp 5)
	t0=$(date +%s%N)
	{ time zd-send --compress "$enc" "${lv[@]}" "${kv[@]}" --json-log --timeout 0 127.0.0.1:"$port" <"$stream" \
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
# Settings in a group run round-robin, run by run: a --key row and the
# row without it see the same moments of this host's drifting speed.
groups=("none:0:0 none:0:1" "zstd:1:0" "delta:1:0 delta:1:1" "delta:3:0" "delta:-1:0")
[ "${BENCH_WIRE_KEY:-1}" = 1 ] || groups=("none:0:0" "zstd:1:0" "delta:1:0" "delta:3:0" "delta:-1:0")
for w in $workloads; do
	n=$epochs
	[ "$w" = zd-vm ] && n=$gepochs
	for group in "${groups[@]}"; do
		declare -A best=()
		for _ in $(seq "$runs"); do
			for setting in $group; do
				IFS=: read -r enc level key <<<"$setting"
				r=$(one "$tmp/$w.bin" "$enc" "$level" "$key") || exit 1
				b=${best[$setting]:-}
				if [ -z "$b" ] || awk -v a="${r%% *}" -v b="${b%% *}" 'BEGIN { exit !(a < b) }'; then
					best[$setting]=$r
				fi
			done
		done
		for setting in $group; do
			IFS=: read -r enc level key <<<"$setting"
			read -r secs raw wire pages scpu rcpu <<<"${best[$setting]}"
			load=$(cut -d' ' -f1 /proc/loadavg)
			awk -v w="$w" -v e="$enc" -v l="$level" -v k="$key" -v n="$n" -v p="$pages" -v r="$raw" -v x="$wire" \
				-v s="$secs" -v sc="$scpu" -v rc="$rcpu" -v ld="$load" 'BEGIN {
				m = sc > rc ? sc : rc
				printf "%s,%s,%s,%s,%d,%d,%.0f,%.0f,%.2f,%.3f,%.3f,%.3f,%.2f,%.2f,%.3f,%.2f,%s\n", w, e, l, k, n, p, r, x, r / x, s,
					r / s / 1e9, x / s / 1e9, sc, rc, (m > 0 ? r / m / 1e9 : 0), (sc + rc) / (r / 1e9), ld }' >>"$out"
			tail -1 "$out" | awk -F, '{ printf "bench-wire: %-5s %-5s L%-2s %-6s: ratio %6.2fx  %6.3f GB/s raw wall  %6.3f GB/s raw per busier-process CPU (send %s s, recv %s s cpu, %s cpu s/GB; %s s wall, load %s)\n",
				$1, $2, $3, ($4 == 1 ? "key" : "no key"), $9, $11, $15, $13, $14, $16, $10, $17 }' >&2
		done
		unset best
	done
done
