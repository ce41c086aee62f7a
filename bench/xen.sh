#!/usr/bin/env bash
# bench/xen: zd's three modes beside Xen's own Remus (xl remus) on a real
# Xen 4.17 booted in QEMU TCG (tests/lib/xenhost.sh), the same PVH guest
# workload (tests/xen/guest_writer: an 8 MiB set written in a loop), at
# checkpoint intervals of 200, 100 and 50 ms. Runs bench/xen_dom0.sh in
# dom0 and writes bench/results/xen.csv, and the takeover a client of the
# guest sees, zd's standby beside xl remus's failover, to
# bench/results/xen_takeover.csv. Emulated: every figure is
# QEMU TCG's, good for comparing the methods with each other only.
#
#   bench/xen.sh [OUT.csv]   (env: ZD_XEN_BENCH_SECONDS=20 window a run,
#                            ZD_XEN_BENCH_INTERVALS, ZD_XEN_BENCH_METHODS)
set -u
cd "$(dirname "$0")/.."
out=${1:-bench/results/xen.csv}
export ZD_XEN_BENCH_SECONDS=${ZD_XEN_BENCH_SECONDS:-20}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
XENHOST_VERBOSE=1 tests/lib/xenhost.sh run --timeout "${XENHOST_TIMEOUT:-5400}" -- bench/xen_dom0.sh \
	>"$tmp/out" 2>"$tmp/err"
rc=$?
grep '^#' "$tmp/out"
if [ $rc -eq 77 ]; then
	echo "bench-xen: skipped: $(head -1 "$tmp/out")"
	exit 0
fi
if ! grep -q '^CSV ' "$tmp/out"; then
	echo "bench-xen: no results (exit $rc)" >&2
	tail -20 "$tmp/err" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
{
	echo "platform,date,method,interval_ms,window_s,checkpoints,pause_p50_ms,pause_p99_ms,pages_per_ckpt,guest_pages_s,progress_rel,guest_gaps,guest_gap_p50_ms,guest_state,triple_faults"
	sed -n 's/^CSV //p' "$tmp/out" | sed "s/^/xen-4.17-in-qemu-tcg-emulated,$(date -u +%F),/"
} >"$out"
column -s, -t "$out" 2>/dev/null || cat "$out"
# The takeover a client sees (bench/xen_dom0.sh, CSVT lines).
if grep -q '^CSVT ' "$tmp/out"; then
	tk=${out%.csv}_takeover.csv
	{
		echo "platform,date,method,interval_ms,wait_ms,answers_before,answers_after,errors,gaps,reconnects,delay_p50_ms,delay_p99_ms"
		sed -n 's/^CSVT //p' "$tmp/out" | sed "s/^/xen-4.17-in-qemu-tcg-emulated,$(date -u +%F),/"
	} >"$tk"
	column -s, -t "$tk" 2>/dev/null || cat "$tk"
fi
[ $rc -eq 0 ] || { echo "bench-xen: the dom0 part exited $rc" >&2; tail -20 "$tmp/err" >&2; exit 1; }
