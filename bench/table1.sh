#!/usr/bin/env bash
# bench/table1: the paper's Table 1 (response delay by dirty pages per
# epoch, at 25 ms) and Figure 4 (by checkpoint interval, at 1024 dirty pages
# per epoch), for remus, buffered and zddspt in the same run, each with and
# without output commit (without = the paper's remus-no-net). Each point is
# one `zd measure`: a fresh zd-vm whose workload dirties about that many
# pages per epoch, replicated to a zd-recv on loopback, zd-client asking
# the guest's service in closed loop. Writes
#   bench/results/table1.csv     one row per mode x dirty pages x output commit
#   bench/results/intervals.csv  one row per mode x interval x output commit
#   bench/results/table1.png, bench/results/intervals.png (gnuplot)
# A mode that cannot run on this target is a row with failed=1 and the reason.
#
#   bench/table1.sh [--plot]   (--plot: only redraw the PNGs from the CSVs)
#                       env: BENCH_QUICK=1 (a short version), BENCH_DIRTY,
#                       BENCH_INTERVALS, BENCH_MODES, BENCH_EPOCHS, BENCH_MEM,
#                       BENCH_OUT (default bench/results)
# Without /dev/kvm it runs itself inside tests/lib/vmhost.sh (KVM nested in
# QEMU TCG): the timings are emulated, compare ratios only.
set -u
cd "$(dirname "$0")/.." || exit 1
top=$PWD
export PATH="$top/bin:$PATH"

# --plot: only redraw the PNGs from the CSVs already in BENCH_OUT.
plot_only=
[ "${1:-}" = --plot ] && plot_only=1
if [ -z "$plot_only" ] && ! { [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; }; then
	[ -n "${ZD_VMHOST_GUEST:-}" ] && { echo "bench/table1: no usable /dev/kvm in the QEMU guest" >&2; exit 4; }
	echo "bench/table1: no /dev/kvm here: running inside QEMU TCG with nested KVM (tests/lib/vmhost.sh); timings are emulated, compare ratios only" >&2
	ZD_VMHOST_ENV="${ZD_VMHOST_ENV:-} BENCH_QUICK BENCH_DIRTY BENCH_INTERVALS BENCH_MODES BENCH_EPOCHS BENCH_MEM BENCH_OUT ZD_WARM_EPOCHS" \
		exec tests/lib/vmhost.sh run --timeout 3600 -- bash "$0"
fi

emulated=0
grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo && emulated=1
# Output commit on and off at every point; BENCH_QUICK measures with
# output commit only at the largest dirty count (25 ms) and nothing twice.
oc_all="off on" oc_last="off on"
if [ -n "${BENCH_QUICK:-}" ]; then
	dirty=${BENCH_DIRTY:-"64 1024"}
	intervals=${BENCH_INTERVALS:-"200 25"}
	epochs=${BENCH_EPOCHS:-8}
	oc_all=off
	export ZD_WARM_EPOCHS=${ZD_WARM_EPOCHS:-8}
else
	dirty=${BENCH_DIRTY:-"50 128 256 310 400 512 632 745 854 1024 4096"}
	intervals=${BENCH_INTERVALS:-"200 100 50 25"}
	epochs=${BENCH_EPOCHS:-$([ $emulated = 1 ] && echo 20 || echo 200)}
	export ZD_WARM_EPOCHS=${ZD_WARM_EPOCHS:-20}
fi
modes=${BENCH_MODES:-"remus buffered zddspt"}
mem=${BENCH_MEM:-$([ $emulated = 1 ] && echo 8M || echo 256M)}
out=${BENCH_OUT:-bench/results}
mkdir -p "$out"

cols="mode,interval_ms,dirty_target,output_commit,dirty_rate,dirty_mean,epochs,answers,client_errors,pause_p50_ns,pause_p99_ns,latency_p50_ns,latency_p99_ns,response_mean_ns,response_p50_ns,response_p99_ns,output_delay_p50_ns,wire_bytes_per_epoch,emulated,failed,reason"
# one MODE INTERVAL PAGES OC(on|off): one measured point as a CSV row.
one() {
	local mode=$1 interval=$2 pages=$3 oc=$4 rate flag=
	# pages per epoch at this interval → pages per second of guest time
	rate=$((pages * 1000 / interval))
	[ "$oc" = off ] && flag=--no-output-commit
	zd measure --mode "$mode" --interval "$interval" --epochs "$epochs" --mem "$mem" \
		--dirty "$rate" $flag "$work/$mode-$interval-$pages-$oc" >"$work/m.json" 2>"$work/m.err" ||
		echo "{\"failed\":true,\"reason\":\"zd measure: $(head -1 "$work/m.err" | tr -d '",')\"}" >"$work/m.json"
	jq -r --arg m "$mode" --arg i "$interval" --arg p "$pages" --arg oc "$oc" --arg r "$rate" --arg em "$emulated" \
		'[$m, $i, $p, $oc, $r, (.dirty_mean // ""), (.epochs // ""), (.answers // ""), (.client_errors // ""),
		  (.pause_ns.p50 // ""), (.pause_ns.p99 // ""), (.latency_ns.p50 // ""), (.latency_ns.p99 // ""),
		  (.response_delay_ns.mean // ""), (.response_delay_ns.p50 // ""), (.response_delay_ns.p99 // ""),
		  (.output_delay_ns.p50 // ""), (.wire_bytes_per_epoch.mean // ""), $em,
		  (if .failed then 1 else 0 end), (.reason // "" | gsub(","; ";"))] | @csv' "$work/m.json" | tr -d '"'
	rm -rf "${work:?}/$mode-$interval-$pages-$oc"
}

measure_all() {
work=$(mktemp -d "${TMPDIR:-/tmp}/zd-bench.XXXXXX")
t0=$SECONDS
echo "$cols" >"$out/table1.csv"
last=${dirty##* }
for p in $dirty; do
	ocs=$oc_all
	[ "$p" = "$last" ] && ocs=$oc_last
	for m in $modes; do
		for oc in $ocs; do
			one "$m" 25 "$p" "$oc" | tee -a "$out/table1.csv"
		done
	done
done
# Figure 4: 1024 pages per epoch at each interval; the 25 ms point is
# Table 1's row when it has one (measured once).
echo "$cols" >"$out/intervals.csv"
for i in $intervals; do
	for m in $modes; do
		for oc in $oc_all; do
			if [ "$i" = 25 ] && grep -q "^$m,25,1024,$oc," "$out/table1.csv"; then
				grep "^$m,25,1024,$oc," "$out/table1.csv" >>"$out/intervals.csv"
			else
				one "$m" "$i" 1024 "$oc" | tee -a "$out/intervals.csv"
			fi
		done
	done
done
rm -rf "$work"
echo "bench/table1: $((SECONDS - t0)) s" >&2
}
[ -n "$plot_only" ] || measure_all

# Plots: response delay (mean, ms) without output commit, as the paper
# measured, and with it; the paper's zddspt and remus beside ours.
plot() { # plot CSV PNG XCOL XLABEL TITLE
	local csv=$1 png=$2 x=$3 xl=$4 title=$5 m oc cmds=() f
	for m in $modes; do
		for oc in off on; do
			f="$out/.$m.$oc.dat"
			awk -F, -v m="$m" -v x="$x" -v oc="$oc" \
				'NR > 1 && $1 == m && $4 == oc && $20 == 0 && $14 != "" {print $x, $14 / 1e6}' "$csv" | sort -n >"$f"
			[ -s "$f" ] || continue
			if [ $oc = on ]; then
				cmds+=("'$f' using 1:2 with linespoints dashtype 2 title '$m (output commit)'")
			else
				cmds+=("'$f' using 1:2 with linespoints title '$m (no output commit)'")
			fi
		done
	done
	if [ "$x" = 3 ]; then
		grep -v '^#' bench/paper-table1.csv | tail -n +2 | tr , ' ' >"$out/.paper.dat"
		cmds+=("'$out/.paper.dat' using 1:2 with linespoints lw 2 title 'paper: zddspt (Xen, 100 Mbit)'")
		cmds+=("'$out/.paper.dat' using 1:3 with linespoints lw 2 title 'paper: remus-no-net (Xen, 100 Mbit)'")
	fi
	[ ${#cmds[@]} -gt 0 ] || return 0
	local IFS=, note=
	[ $emulated = 1 ] && note=' - KVM nested in QEMU TCG: emulated timing'
	gnuplot <<EOF || echo "bench/table1: gnuplot failed for $png" >&2
set terminal png size 1100,650
set output '$png'
set title "$title$note"
set xlabel '$xl'
set ylabel 'response delay, mean (ms)'
set key outside right
set logscale y
plot ${cmds[*]}
EOF
	rm -f "$out"/.*.dat
}
[ -n "$plot_only" ] && emulated=$(awk -F, 'NR == 2 {print $19}' "$out/table1.csv")
plot "$out/table1.csv" "$out/table1.png" 3 "dirty pages per epoch (25 ms interval)" "Response delay vs dirty pages (Table 1)"
plot "$out/intervals.csv" "$out/intervals.png" 2 "checkpoint interval (ms), 1024 dirty pages per epoch" "Response delay vs interval (Figure 4)"
column -s, -t "$out/table1.csv" | cut -c1-200
