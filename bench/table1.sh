#!/usr/bin/env bash
# bench/table1: the paper's Table 1 (response delay by dirty pages per
# epoch, at 25 ms) and Figure 4 (by checkpoint interval, at 1024 dirty pages
# per epoch), for remus, buffered and zddspt in the same run, each without
# output commit (the paper's remus-no-net) and with it, plus how the pause
# grows up to 65536 dirty pages. Each point is BENCH_REPEAT (3) rounds of
# one `zd measure` per mode, the modes one after the other and their order
# turned by one each round (so a change of machine load biases their ratios
# least): a fresh zd-vm whose workload dirties about
# that many pages per epoch, replicated to a zd-recv on loopback, zd-client
# asking the guest's service in closed loop; and once per point the same
# VM unprotected, for the guest's throughput without zd. Writes
#   bench/results/table1.csv     series table1 (25 ms, by dirty pages),
#                                scale (longer intervals, so the guest can
#                                reach the large dirty counts) and cold (1024
#                                pages in a 512M VM): per point and mode the
#                                median of the rounds, with the spread
#                                (_lo, _hi) of the main figures
#   bench/results/intervals.csv  1024 dirty pages, by interval
#   bench/results/table1.runs.csv, intervals.runs.csv  every round's row
#   bench/results/table1.png, table1.ratio.png, table1.pause.png,
#   table1.stall.png, intervals.png  (gnuplot, the paper's numbers beside ours)
# A point that fails is a row with failed=1 and the reason.
#
#   bench/table1.sh [--plot]   (--plot: only redraw the PNGs from the CSVs)
#   env: BENCH_QUICK=1 (a short version), BENCH_REPEAT, BENCH_DIRTY, BENCH_INTERVALS,
#        BENCH_PLAN, BENCH_APPEND, BENCH_POINT_TIMEOUT, BENCH_SCALE, BENCH_SCALE_EPOCHS, BENCH_SCALE_WARM, BENCH_MODES, BENCH_OC, BENCH_EPOCHS, BENCH_MEM,
#        BENCH_HOT, BENCH_BASE_SECONDS, BENCH_OUT (default bench/results),
#        ZD_WARM_EPOCHS, BENCH_VMHOST_MEM
# Without /dev/kvm it runs itself inside tests/lib/vmhost.sh (KVM nested in
# QEMU TCG): the timings are emulated, compare ratios only.
set -u
# One brace group, parsed whole before it runs: editing this file during a
# run (hours under TCG) does not change the run.
{
cd "$(dirname "$0")/.." || exit 1
top=$PWD
export PATH="$top/bin:$PATH"

# --plot: only redraw the PNGs from the CSVs already in BENCH_OUT.
plot_only=
[ "${1:-}" = --plot ] && plot_only=1
if [ -z "$plot_only" ] && ! { [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; }; then
	[ -n "${ZD_VMHOST_GUEST:-}" ] && { echo "bench/table1: no usable /dev/kvm in the QEMU guest" >&2; exit 4; }
	echo "bench/table1: no /dev/kvm here: running inside QEMU TCG with nested KVM (tests/lib/vmhost.sh); timings are emulated, compare ratios only" >&2
	# The 65536-page points need a 516M VM and its replica (tmpfs) at once.
	ZD_VMHOST_ENV="${ZD_VMHOST_ENV:-} BENCH_QUICK BENCH_REPEAT BENCH_DIRTY BENCH_INTERVALS BENCH_PLAN BENCH_APPEND BENCH_POINT_TIMEOUT BENCH_SCALE BENCH_SCALE_EPOCHS BENCH_SCALE_WARM BENCH_MODES BENCH_OC BENCH_EPOCHS BENCH_MEM BENCH_HOT BENCH_BASE_SECONDS BENCH_OUT ZD_WARM_EPOCHS ZD_KVM_GUARD ZD_CLIENT_RATE" \
		exec tests/lib/vmhost.sh run --timeout 14400 --mem "${BENCH_VMHOST_MEM:-4096}" -- bash "$0"
fi

emulated=0
grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo && emulated=1
if [ -n "${BENCH_QUICK:-}" ]; then
	dirty=${BENCH_DIRTY:-"128 1024"}
	intervals=${BENCH_INTERVALS:-"200 25"}
	scale=${BENCH_SCALE:-"16384:800"}
	epochs=${BENCH_EPOCHS:-50}
	ocs=${BENCH_OC:-off}
	export ZD_WARM_EPOCHS=${ZD_WARM_EPOCHS:-10}
else
	dirty=${BENCH_DIRTY:-"50 128 256 310 400 512 632 745 854 1024 4096 16384 65536"}
	intervals=${BENCH_INTERVALS:-"200 100 50 25"}
	# target:interval — long enough for the guest to write that many
	# distinct pages in one epoch under TCG (see README)
	scale=${BENCH_SCALE:-"4096:200 16384:800 65536:3200"}
	epochs=${BENCH_EPOCHS:-$([ $emulated = 1 ] && echo 10 || echo 200)}
	ocs=${BENCH_OC:-"off on"}
	export ZD_WARM_EPOCHS=${ZD_WARM_EPOCHS:-$([ $emulated = 1 ] && echo 12 || echo 20)}
fi
# At least 50 epochs a point: a p99 of fewer is their maximum.
scale_epochs=${BENCH_SCALE_EPOCHS:-50} scale_warm=${BENCH_SCALE_WARM:-3}
repeat=${BENCH_REPEAT:-3}
modes=${BENCH_MODES:-"remus buffered zddspt"}
# The plan: SERIES:INTERVAL:PAGES:OC[:MEM] items run in this order, OC
# "off", "on" or "off+on", MEM the VM's size (default: vm_size); BENCH_PLAN
# replaces it (e.g. to run the points that matter most first when time is
# short).
plan=${BENCH_PLAN:-$(
	for p in $dirty; do echo "table1:25:$p:${ocs// /+}"; done
	# Figure 4: 1024 pages per epoch at each interval (25 ms: Table 1's row)
	for i in $intervals; do [ "$i" = 25 ] || echo "intervals:$i:1024:${ocs// /+}"; done
	# The pause's growth: the large dirty counts at intervals the guest
	# can fill (under TCG it cannot write 16384 distinct pages in 25 ms).
	for s in $scale; do echo "scale:${s#*:}:${s%%:*}:off"; done
	# A large VM whose workload spreads 1024 pages an epoch over 508M:
	# cold pages, and a large dirty log to harvest and protect.
	echo "cold:25:1024:off:512M"
)}
hot=${BENCH_HOT:-0.2}
base_s=${BENCH_BASE_SECONDS:-6}
point_timeout=${BENCH_POINT_TIMEOUT:-1200}
out=${BENCH_OUT:-bench/results}
mkdir -p "$out"

cols="series mode interval_ms dirty_target output_commit mem hot rate_model dirty_rate dirty_mean epochs answers client_errors
pause_p50_ns pause_p99_ns stall_p50_ns stall_p99_ns stall_mean_ns guest_stall_p50_ns guest_stall_p99_ns guest_stall_mean_ns
guest_lost_mean_ns cow_faults_mean cow_block_p50_ns precopy_redirtied_mean wfault_ns
latency_p50_ns latency_p99_ns response_mean_ns response_p50_ns response_p99_ns
output_delay_p50_ns wire_bytes_per_epoch guest_pages_per_s unprotected_pages_per_s throughput_ratio
guard emulated failed reason"
# every round's row: the columns, the round, the load average then
runs_header=$(echo $cols rep load1 | tr ' ' ,)
# table1.csv: the median of the rounds that did not fail, their spread
# (lowest, highest) for the figures below, how many rounds counted
spread="dirty_mean pause_p50_ns stall_p50_ns guest_stall_p50_ns latency_p50_ns response_mean_ns throughput_ratio"
# shellcheck disable=SC2046 # one word a column
header=$(echo $cols runs $(for c in $spread; do echo "${c}_lo ${c}_hi"; done) load1_max | tr ' ' ,)

# vm_size PAGES: the VM's RAM for a target of PAGES distinct dirty pages per
# epoch: the workload's span (all RAM above 4M) twice the target, at least
# 8M, in whole 2M; BENCH_MEM overrides.
vm_size() {
	[ -n "${BENCH_MEM:-}" ] && { echo "$BENCH_MEM"; return; }
	local span=$(($1 * 2)) mb
	[ $span -lt 1024 ] && span=1024
	mb=$((4 + (span + 255) / 256))
	echo "$(((mb + 1) / 2 * 2))M"
}

# writes_rate PAGES INTERVAL MEM: page writes per second of running time whose
# expected number of distinct pages per epoch is PAGES. The workload writes
# a fraction hot of its pages into a hot set of span/16 (at most 1024
# pages), the rest anywhere in the span, so n writes touch about
#   H(1 - e^(-hot n/H)) + S(1 - e^(-(1-hot) n/S))
# distinct pages (S span pages, H hot pages); solved for n by bisection.
writes_rate() {
	awk -v t="$1" -v iv="$2" -v mem="${3%M}" -v h="$hot" 'BEGIN {
		s = (mem - 4) * 256; hh = s / 16; if (hh > 1024) hh = 1024
		lo = 0; hi = 64 * t
		for (k = 0; k < 100; k++) {
			n = (lo + hi) / 2
			u = hh * (1 - exp(-h * n / hh)) + s * (1 - exp(-(1 - h) * n / s))
			if (u < t) lo = n; else hi = n
		}
		printf "%d\n", n * 1000 / iv + 0.999
	}'
}

# unprotected MEM RATE: sets base to the workload's page writes per second
# in the same VM without zd (the client asking all along, answers released
# at once), over BENCH_BASE_SECONDS; empty when it could not be measured.
declare -A base_cache
unprotected() {
	local key="$1/$2" d s vm cl sp g0 g1 t0 t1 rate_opt=()
	if [ -z "${base_cache[$key]+x}" ]; then
		d=$(mktemp -d "$work/base.XXXXXX")
		s=$d/vm.sock
		zd-vm --control "$s" --mem "$1" --workload "dirty=$2,hot=$hot" --serve 127.0.0.1:0 \
			--no-output-commit 2>"$d/vm.err" &
		vm=$!
		for _ in $(seq 3000); do [ -S "$s" ] && break; kill -0 $vm 2>/dev/null || break; sleep 0.1; done
		sp=$(zd-vm --ctl "$s" info 2>/dev/null | sed -n 's/^serve=//p')
		[ "${ZD_CLIENT_RATE:-100}" != 0 ] && rate_opt=(--rate "${ZD_CLIENT_RATE:-100}")
		zd-client --duration 3600s --timeout 600s "${rate_opt[@]}" "$sp" >/dev/null 2>&1 &
		cl=$!
		sleep 1
		g0=$(timeout 60 zd-vm --ctl "$s" stats 2>/dev/null | sed -n 's/^guest_pages=//p') t0=$(date +%s%N)
		sleep "$base_s"
		g1=$(timeout 60 zd-vm --ctl "$s" stats 2>/dev/null | sed -n 's/^guest_pages=//p') t1=$(date +%s%N)
		kill $cl 2>/dev/null
		timeout 60 zd-vm --ctl "$s" stop >/dev/null 2>&1 || kill -9 $vm 2>/dev/null
		wait $cl $vm 2>/dev/null
		base_cache[$key]=
		[ -n "$g0" ] && [ -n "$g1" ] && base_cache[$key]=$(awk -v a="$g0" -v b="$g1" -v t0="$t0" -v t1="$t1" \
			'BEGIN {printf "%.1f", (b - a) * 1e9 / (t1 - t0)}')
		[ -n "${base_cache[$key]}" ] || echo "bench/table1: unprotected $key: not measured: $(tail -1 "$d/vm.err")" >&2
		rm -rf "$d"
	fi
	base=${base_cache[$key]}
}

# calibrate MEM RATE: sets rate, the workload rate to ask for so that the
# unprotected guest writes RATE pages per second, and base, what it wrote at
# that rate. Under TCG the guest's pacing oversleeps (each idle exit and
# wake-up is slow, and a gap longer than twice the wait loses its credit):
# asked for a few thousand pages/s it writes about 40%. Up to three
# corrections by the measured shortfall (at most 10x RATE in all); a guest
# at its limit stays there. A correction never crosses spin_rate: from that
# rate on the guest spins between writes instead of exiting to zd-vm, and
# zd-vm hands it a request only at its next exit (a checkpoint's pause), so
# the service would answer once per epoch.
spin_rate=20000
calibrate() {
	local k
	rate=$2
	unprotected "$1" "$rate"
	for k in 1 2 3; do
		[ -n "$base" ] && awk -v a="$base" -v r="$2" 'BEGIN {exit !(a > 0 && a < 0.9 * r)}' || break
		rate=$(awk -v a="$base" -v q="$rate" -v r="$2" -v s="$spin_rate" 'BEGIN {
			n = q * r / a; if (n > 10 * r) n = 10 * r
			if (r < s && n >= s) n = s - 1
			printf "%d\n", n + 0.5}')
		[ -n "${base_cache[$1/$rate]+x}" ] && break
		unprotected "$1" "$rate"
	done
}

# one SERIES MODE INTERVAL PAGES OC(on|off) MEM MODEL_RATE RATE BASE REP: one
# measured run as a CSV row (of the runs file).
one() {
	local series=$1 mode=$2 interval=$3 pages=$4 oc=$5 mem=$6 model=$7 rate=$8 base=$9 rep=${10} flag='' d
	[ "$oc" = off ] && flag=--no-output-commit
	d="$work/$series-$mode-$interval-$pages-$oc-$rep"
	# A wedged point costs BENCH_POINT_TIMEOUT, not the rest of the run
	# (timeout signals zd measure's whole process group).
	timeout -k 30 "$point_timeout" zd measure --mode "$mode" --interval "$interval" --epochs "$epochs" \
		--mem "$mem" --hot "$hot" --dirty "$rate" $flag "$d" >"$work/m.json" 2>"$work/m.err"
	local rc=$?
	[ $rc = 124 ] && echo "timed out after $point_timeout s (BENCH_POINT_TIMEOUT)" >"$work/m.err"
	# A failure must say why: zd measure's stderr, else zd run's.
	if [ $rc != 0 ] || ! jq -e . "$work/m.json" >/dev/null 2>&1; then
		local why
		why=$(grep -v '^ *$' "$work/m.err" | head -1)
		[ -n "$why" ] || why=$(grep -v '^ ' "$d/run.err" 2>/dev/null | head -1)
		jq -cn --arg why "zd measure exit $rc: ${why:-no message}" '{failed: true, reason: $why}' >"$work/m.json"
	fi
	# A run whose measured window holds no epoch measured nothing.
	jq -c 'if (.failed | not) and ((.epochs // 0) == 0) then
		. + {failed: true, reason: "no epoch measured: the first checkpoint was committed only after the run (from_epoch \(.from_epoch))"}
		else . end' "$work/m.json" >"$work/m2.json"
	jq -r --arg series "$series" --arg m "$mode" --arg i "$interval" --arg p "$pages" --arg oc "$oc" \
		--arg mem "$mem" --arg hot "$hot" --arg model "$model" --arg r "$rate" --arg em "$emulated" --arg base "$base" \
		--arg guard "${ZD_KVM_GUARD:-1}" --arg rep "$rep" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
		'[$series, $m, $i, $p, $oc, $mem, $hot, $model, $r, (.dirty_mean // ""), (.epochs // ""), (.answers // ""),
		  (.client_errors // ""), (.pause_ns.p50 // ""), (.pause_ns.p99 // ""),
		  (.stall_ns.p50 // ""), (.stall_ns.p99 // ""), (.stall_ns.mean // ""),
		  (.guest_stall_ns.p50 // ""), (.guest_stall_ns.p99 // ""), (.guest_stall_ns.mean // ""),
		  (.guest_lost_ns.mean // ""), (.cow_faults_mean // ""), (.cow_block_ns.p50 // ""),
		  (.precopy_redirtied_mean // ""), (.wfault_ns_mean // ""), (.latency_ns.p50 // ""),
		  (.latency_ns.p99 // ""), (.response_delay_ns.mean // ""), (.response_delay_ns.p50 // ""),
		  (.response_delay_ns.p99 // ""), (.output_delay_ns.p50 // ""), (.wire_bytes_per_epoch.mean // ""),
		  (.guest_pages_per_s // ""), $base,
		  (if .guest_pages_per_s and ($base != "") and ($base | tonumber) > 0
		   then (.guest_pages_per_s / ($base | tonumber) * 1000 | round / 1000) else "" end),
		  $guard, $em, (if .failed then 1 else 0 end), (.reason // "" | gsub("[,\n]"; ";")), $rep, $load] | @csv' \
		"$work/m2.json" | tr -d '"'
	rm -rf "$d"
}

# rotate N WORDS...: the words turned left by N.
rotate() {
	local n=$1
	shift
	local a=("$@") i k=$#
	for ((i = 0; i < k; i++)); do echo "${a[$(((i + n) % k))]}"; done
}

# point SERIES INTERVAL PAGES RUNS_CSV OCS [MEM]: every mode at one point,
# consecutively, BENCH_REPEAT rounds; each round starts with the next
# mode (remus buffered zddspt, buffered zddspt remus, ...), so none always
# runs first on a fresh machine or last after the others' debris.
point() {
	local series=$1 interval=$2 pages=$3 csv=$4 oc m base mem=${6:-} model rate rep
	[ -n "$mem" ] || mem=$(vm_size "$pages")
	model=$(writes_rate "$pages" "$interval" "$mem")
	calibrate "$mem" "$model"
	for oc in $5; do
		for ((rep = 1; rep <= repeat; rep++)); do
			for m in $(rotate $((rep - 1)) $modes); do
				one "$series" "$m" "$interval" "$pages" "$oc" "$mem" "$model" "$rate" "$base" "$rep" | tee -a "$csv"
			done
		done
	done
}

# aggregate RUNS_CSV CSV: per point and mode (series, mode, interval,
# pages, output commit, VM size) the median of each figure over the rounds
# that did not fail, the spread of the figures in $spread, the rounds
# counted; a point whose every round failed keeps its first failure.
aggregate() {
	awk -F, -v cols="$cols" -v spread="$spread" -v header="$header" '
		function fmt(x) {return x == int(x) ? sprintf("%.0f", x) : sprintf("%.10g", x)}
		function med(v, n,   i, j, t) {
			for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) {t = v[j]; v[j] = v[j - 1]; v[j - 1] = t}
			return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		}
		NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; nc = split(cols, cn, " "); ns = split(spread, sn, " "); next}
		{
			k = $(c["series"]) SUBSEP $(c["mode"]) SUBSEP $(c["interval_ms"]) SUBSEP $(c["dirty_target"]) SUBSEP $(c["output_commit"]) SUBSEP $(c["mem"])
			if (!(k in seen)) {seen[k] = 1; order[++nk] = k; first[k] = $0}
			if ($(c["load1"]) + 0 > lmax[k]) lmax[k] = $(c["load1"]) + 0
			if ($(c["failed"]) == 1) {if (!nfail[k]++) why[k] = $(c["reason"]); next}
			ok[k]++; good[k] = $0
			errs[k] += $(c["client_errors"])
			for (i = 1; i <= nc; i++) {x = $(c[cn[i]]); if (x ~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/) {n = ++cnt[k, i]; val[k, i, n] = x + 0}}
		}
		END {
			print header
			for (q = 1; q <= nk; q++) {
				k = order[q]
				split(ok[k] ? good[k] : first[k], f, ",")
				line = ""
				for (i = 1; i <= nc; i++) {
					x = f[c[cn[i]]]
					# the rounds agree on these: they name the point
					if (ok[k] && cnt[k, i] > 0 && cn[i] !~ /^(interval_ms|dirty_target|hot|rate_model|dirty_rate|unprotected_pages_per_s|guard|emulated|failed)$/) {
						split("", v); for (n = 1; n <= cnt[k, i]; n++) v[n] = val[k, i, n]
						x = fmt(med(v, cnt[k, i]))
					}
					# an answer out of sequence in any round counts
					if (ok[k] && cn[i] == "client_errors")
						x = errs[k]
					if (ok[k] && cn[i] == "reason" && nfail[k])
						x = nfail[k] " of " (nfail[k] + ok[k]) " rounds failed: " why[k]
					line = line (i > 1 ? "," : "") x
				}
				line = line "," (ok[k] + 0)
				for (s = 1; s <= ns; s++) {
					for (i = 1; i <= nc; i++) if (cn[i] == sn[s]) break
					lo = hi = ""
					for (n = 1; n <= cnt[k, i]; n++) {x = val[k, i, n]; if (lo == "" || x < lo) lo = x; if (hi == "" || x > hi) hi = x}
					line = line "," (lo == "" ? "" : fmt(lo)) "," (hi == "" ? "" : fmt(hi))
				}
				print line "," lmax[k]
			}
		}' "$1" >"$2"
}


measure_all() {
	work=$(mktemp -d "${TMPDIR:-/tmp}/zd-bench.XXXXXX")
	# One build for the whole run: a `make` elsewhere rewrites bin/zd in
	# place, under the feet of a bash reading it.
	# (zd and zd-measure source ../lib/sh/zd-common.bash from beside bin/)
	cp -a "$top/bin" "$work/bin" && mkdir -p "$work/lib/sh" && cp -a "$top/lib/sh/zd-common.bash" "$work/lib/sh/" &&
		export PATH="$work/bin:$PATH"
	t0=$SECONDS
	echo "bench/table1: $(date -u '+%F %T') UTC, emulated=$emulated, modes: $modes, epochs $epochs (+${ZD_WARM_EPOCHS} warm-up), ZD_KVM_GUARD=${ZD_KVM_GUARD:-1} (the copy-on-write guard of zddspt: 1 on, the default)" >&2
	# BENCH_APPEND=1: add to the CSVs (a plan run in several parts).
	if [ -z "${BENCH_APPEND:-}" ] || ! [ -s "$out/table1.runs.csv" ]; then
		echo "$runs_header" >"$out/table1.runs.csv"
		echo "$runs_header" >"$out/intervals.runs.csv"
	fi
	local item series iv pages oc mem
	for item in $plan; do
		IFS=: read -r series iv pages oc mem <<<"$item"
		oc=${oc//+/ }
		case $series in
		table1 | cold) point "$series" "$iv" "$pages" "$out/table1.runs.csv" "$oc" "$mem" ;;
		intervals) point intervals "$iv" "$pages" "$out/intervals.runs.csv" "$oc" "$mem" ;;
		# Long epochs: fewer warm-up ones, the first copy commits within a few.
		scale) epochs=$scale_epochs ZD_WARM_EPOCHS=$scale_warm point scale "$iv" "$pages" "$out/table1.runs.csv" "$oc" "$mem" ;;
		*) echo "bench/table1: BENCH_PLAN: '$item': unknown series" >&2 ;;
		esac
		aggregate "$out/table1.runs.csv" "$out/table1.csv"
	done
	aggregate "$out/table1.runs.csv" "$out/table1.csv"
	aggregate "$out/intervals.runs.csv" "$work/iv.agg.csv"
	# Figure 4's 25 ms point is Table 1's 1024-page row (measured once).
	grep -v '^intervals,[a-z]*,25,' "$work/iv.agg.csv" >"$work/iv.csv"
	grep "^table1,[a-z]*,25,1024," "$out/table1.csv" | sed 's/^table1,/intervals,/' >>"$work/iv.csv"
	cp "$work/iv.csv" "$out/intervals.csv"
	rm -rf "$work"
	echo "bench/table1: $((SECONDS - t0)) s" >&2
}
[ -n "$plot_only" ] || measure_all

# ---- plots ------------------------------------------------------------------

# sel CSV FILTER X Y: "x y" lines of the rows where FILTER holds (awk, with
# c["name"] the column's field number), sorted by x.
sel() {
	awk -F, -v filt="$2" -v xe="$3" -v ye="$4" '
		NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next}
		{ok = 1; n = split(filt, f, " ")
		 for (k = 1; k <= n; k++) {split(f[k], kv, "="); if ($(c[kv[1]]) != kv[2]) ok = 0}}
		ok && $(c["failed"]) == 0 && $(c[xe]) != "" && $(c[ye]) != "" {print $(c[xe]), $(c[ye])}' "$1" | sort -g
}

# mcol MODE: one colour per mode in every plot.
mcol() { case $1 in remus) echo 1 ;; buffered) echo 2 ;; zddspt) echo 7 ;; *) echo 4 ;; esac; }

# spin CSV SERIES X: "x y(ms)" of the rows whose workload rate made the guest
# spin (see calibrate): their response delay is the time to a checkpoint.
spin() {
	awk -F, -v series="$2" -v xe="$3" -v s="$spin_rate" '
		NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next}
		$(c["series"]) == series && $(c["failed"]) == 0 && $(c["dirty_rate"]) >= s && $(c["response_mean_ns"]) != "" {
			print $(c[xe]), $(c["response_mean_ns"]) / 1e6}' "$1" | sort -g
}

# plot_ms F CSV FILTER X Y WITH: sel's "x y" with y in ms into the file F
# and, when it has any, a plot of it onto the caller's cmds (WITH: gnuplot's
# style and title).
plot_ms() {
	sel "$2" "$3" "$4" "$5" | awk '{print $1, $2 / 1e6}' >"$1"
	if [ -s "$1" ]; then cmds+=("'$1' using 1:2 with $6"); fi
}

# plot_response NAME CSV SERIES X [FILTER]: onto cmds, the mean response
# delay by X of every mode with output commit off and on (the rows FILTER
# also selects), and the rows of SERIES where the guest spun; the data in
# the caller's $tmp/NAME.*.
plot_response() {
	local m oc
	for m in $modes; do
		for oc in off on; do
			plot_ms "$tmp/$1.$m.$oc" "$2" "${5:-}mode=$m output_commit=$oc" "$4" response_mean_ns \
				"linespoints lc $(mcol $m)$(dash $oc) title '$m, output commit $oc'"
		done
	done
	spin "$2" "$3" "$4" >"$tmp/$1.spin"
	if [ -s "$tmp/$1.spin" ]; then
		cmds+=("'$tmp/$1.spin' using 1:2 with points pt 6 ps 3 lc rgb 'gray' title 'guest spinning: requests seen at checkpoints only'")
	fi
}

# dash OC: output commit on is drawn dashed.
dash() { if [ "$1" = on ]; then echo ' dashtype 2'; fi; }

gp() { # gp PNG TITLE XLABEL YLABEL LOGSCALE PLOTCMDS...
	local png=$1 title=$2 xl=$3 yl=$4 logs=$5 note='' all c
	shift 5
	[ $# -gt 0 ] || return 0
	for c in "$@"; do all=${all:+$all, }$c; done
	[ "$emulated" = 1 ] && note='\nKVM nested in QEMU TCG: emulated timing, compare modes (ratios) only'
	gnuplot <<EOF || echo "bench/table1: gnuplot failed for $png" >&2
set terminal png size 1100,650
set output '$png'
set title "$title$note"
set xlabel '$xl'
set ylabel '$yl'
set key outside right
set grid
set logscale $logs
plot $all
EOF
}

plots() {
	local t=$out/table1.csv iv=$out/intervals.csv m oc f cmds=()
	local tmp
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/zd-plot.XXXXXX")
	grep -v '^#' bench/paper-table1.csv | tail -n +2 | tr , ' ' >"$tmp/paper.dat"
	awk '{print $1, $2 / $3}' "$tmp/paper.dat" >"$tmp/paper-ratio.dat"
	# Table 1: mean response delay by dirty pages reached.
	plot_response t1 "$t" table1 dirty_mean "series=table1 "
	cmds+=("'$tmp/paper.dat' using 1:2 with linespoints lw 3 lc 7 title 'paper: zddspt (Xen, 100 Mbit)'")
	cmds+=("'$tmp/paper.dat' using 1:3 with linespoints lw 3 lc rgb 'black' title 'paper: remus-no-net (Xen, 100 Mbit)'")
	gp "$out/table1.png" "Response delay vs dirty pages per epoch, 25 ms (Table 1)" \
		"dirty pages per epoch reached (mean)" "response delay, mean (ms)" xy "${cmds[@]}"
	# The ratio zddspt / remus without output commit, the paper's beside.
	cmds=()
	for oc in off on; do
		f=$tmp/ratio.$oc
		awk 'NR == FNR {z[$1] = $2; next} ($1 in z) && $2 > 0 {print $1, z[$1] / $2}' \
			<(sel "$t" "series=table1 mode=zddspt output_commit=$oc" dirty_target response_mean_ns) \
			<(sel "$t" "series=table1 mode=remus output_commit=$oc" dirty_target response_mean_ns) >"$f"
		[ -s "$f" ] && cmds+=("'$f' using 1:2 with linespoints title 'ours: zddspt / remus, output commit $oc'")
	done
	cmds+=("'$tmp/paper-ratio.dat' using 1:2 with linespoints lw 3 lc rgb 'black' title 'paper: zddspt / remus-no-net'")
	cmds+=("0.2 with lines dashtype 3 title 'target at 1024 pages: 0.2'")
	gp "$out/table1.ratio.png" "Response delay, zddspt / remus, 25 ms (Table 1)" \
		"dirty pages per epoch (target)" "ratio of mean response delays" xy "${cmds[@]}"
	# Pause by dirty pages reached, every series (25 ms and the longer
	# intervals of the scale series).
	cmds=()
	for m in $modes; do
		plot_ms "$tmp/pause.$m" "$t" "mode=$m output_commit=off" dirty_mean pause_p50_ns \
			"linespoints lc $(mcol $m) title '$m, pause p50'"
		plot_ms "$tmp/pause99.$m" "$t" "mode=$m output_commit=off" dirty_mean pause_p99_ns \
			"points lc $(mcol $m) title '$m, pause p99'"
	done
	gp "$out/table1.pause.png" "Pause per checkpoint vs dirty pages per epoch (25 ms, and longer intervals for the largest)" \
		"dirty pages per epoch reached (mean)" "pause (ms)" xy "${cmds[@]}"
	# The guest's stall per epoch beside the pause, by dirty pages
	# reached, every series without output commit: stall p50 with the
	# rounds' spread, pause p50 dashed, the guest's own clock as points.
	cmds=()
	for m in $modes; do
		f=$tmp/stall.$m
		awk -F, -v m="$m" 'NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next}
			$(c["mode"]) == m && $(c["output_commit"]) == "off" && $(c["failed"]) == 0 && $(c["stall_p50_ns"]) != "" {
			print $(c["dirty_mean"]), $(c["stall_p50_ns"]) / 1e6,
			      ($(c["stall_p50_ns_lo"]) != "" ? $(c["stall_p50_ns_lo"]) : $(c["stall_p50_ns"])) / 1e6,
			      ($(c["stall_p50_ns_hi"]) != "" ? $(c["stall_p50_ns_hi"]) : $(c["stall_p50_ns"])) / 1e6}' "$t" | sort -g >"$f"
		[ -s "$f" ] && cmds+=("'$f' using 1:2:3:4 with yerrorlines lw 2 lc $(mcol $m) title '$m stall p50'")
		plot_ms "$tmp/stallpause.$m" "$t" "mode=$m output_commit=off" dirty_mean pause_p50_ns \
			"linespoints pt 1 lc $(mcol $m) title '$m pause p50'"
		plot_ms "$tmp/gstall.$m" "$t" "mode=$m output_commit=off" dirty_mean guest_stall_p50_ns \
			"points pt 4 ps 1.5 lc $(mcol $m) title '$m guest clock p50'"
	done
	gp "$out/table1.stall.png" "Guest stall per epoch beside the pause; squares: the guest's own clock" \
		"dirty pages per epoch reached (mean)" "per epoch (ms)" xy "${cmds[@]}"
	# Figure 4: by interval at 1024 pages; the paper's 25 ms point (Table 1).
	cmds=()
	plot_response iv "$iv" intervals interval_ms
	echo "25 25 108" >"$tmp/paper-iv.dat"
	cmds+=("'$tmp/paper-iv.dat' using 1:2 with points pt 7 ps 2 lc 7 title 'paper: zddspt, 25 ms, 1024 pages'")
	cmds+=("'$tmp/paper-iv.dat' using 1:3 with points pt 5 ps 2 lc rgb 'black' title 'paper: remus-no-net, 25 ms, 1024 pages'")
	gp "$out/intervals.png" "Response delay vs checkpoint interval, 1024 dirty pages per epoch (Figure 4)" \
		"checkpoint interval (ms)" "response delay, mean (ms)" y "${cmds[@]}"
	rm -rf "$tmp"
}
# Issue 4's and 15's targets against this run's rows -> table1.targets.csv:
# target, the figures it compares (a, b), a/b, the limit on a/b, met
# (yes, no, or - when a figure is missing). A point is named by the pages
# its epochs reached (dirty_mean), the target it asked for in brackets.
targets() {
	local t=$out/table1.csv
	awk -F, '
		NR == 1 {for (i = 1; i <= NF; i++) c[$i] = i; next}
		$(c["failed"]) == 0 {
			k = $(c["series"]) SUBSEP $(c["mode"]) SUBSEP $(c["interval_ms"]) SUBSEP $(c["dirty_target"]) SUBSEP $(c["output_commit"])
			pause[k] = $(c["pause_p50_ns"]); p99[k] = $(c["pause_p99_ns"]); resp[k] = $(c["response_mean_ns"])
			stall[k] = $(c["stall_p50_ns"]); gstall[k] = $(c["guest_stall_p50_ns"]); lat[k] = $(c["latency_p50_ns"])
			dm[k] = sprintf("%.0f", $(c["dirty_mean"])); gps[k] = $(c["guest_pages_per_s"])
			base[k] = $(c["unprotected_pages_per_s"]); mem[k] = $(c["mem"])
			if ($(c["dirty_target"]) >= 16384 && $(c["output_commit"]) == "off") big[$(c["series"]) SUBSEP $(c["interval_ms"]) SUBSEP $(c["dirty_target"])] = 1
		}
		# met when a/b <= limit (or >= with ge)
		function row(name, a, b, lim, what, ge,   r, ok) {
			if (a == "" || a == 0 || b == "" || b == 0) {printf "%s,%s,,,,%s%s,-\n", name, what, ge ? ">=" : "<=", lim; return}
			r = a / b
			ok = ge ? r >= lim : r <= lim
			printf "%s,%s,%.3f,%.3f,%.3f,%s%s,%s\n", name, what, a, b, r, ge ? ">=" : "<=", lim, (ok ? "yes" : "no")
		}
		function key(series, mode, iv, pages) {return series SUBSEP mode SUBSEP iv SUBSEP pages SUBSEP "off"}
		# at PAGES reached (target T; MEM VM; INTERVAL ms)
		function at(kz, kb, iv, t) {return sprintf("at %s/%s pages reached (target %s; %s VM; %s ms)", dm[kz], dm[kb], t, mem[kz], iv)}
		function stall_rows(kz, kb, iv, t, lim) {
			row("guest stall zddspt/buffered " at(kz, kb, iv, t), stall[kz] / 1e6, stall[kb] / 1e6, lim,
			    "stall p50 ms (pause + copy-on-write blocked + re-armed pages) zddspt / buffered")
			row("guest stall by the guest clock zddspt/buffered " at(kz, kb, iv, t), gstall[kz] / 1e6, gstall[kb] / 1e6, lim,
			    "the guest own clock: stops >= 40 us per epoch p50 ms zddspt / buffered")
		}
		END {
			print "target,figures,a,b,a_over_b,limit,met"
			z = key("table1", "zddspt", 25, 1024); b = key("table1", "buffered", 25, 1024); r = key("table1", "remus", 25, 1024)
			cz = key("cold", "zddspt", 25, 1024); cb = key("cold", "buffered", 25, 1024)
			stall_rows(z, b, 25, 1024, 0.25)
			stall_rows(cz, cb, 25, 1024, 0.25)
			for (g in big) {
				split(g, f, SUBSEP)
				stall_rows(key(f[1], "zddspt", f[2], f[3]), key(f[1], "buffered", f[2], f[3]), f[2], f[3], 0.1)
			}
			row("zddspt pause p50 <= 0.25 ms " at(z, z, 25, 1024), pause[z] / 1e6, 0.25, 1, "pause p50 ms zddspt / 0.25 ms")
			row("zddspt pause p50 <= 0.25 ms " at(cz, cz, 25, 1024), pause[cz] / 1e6, 0.25, 1, "pause p50 ms zddspt / 0.25 ms")
			row("pause zddspt/buffered " at(z, b, 25, 1024), pause[z] / 1e6, pause[b] / 1e6, 0.25,
			    "pause p50 ms zddspt / buffered")
			for (g in big) {
				split(g, f, SUBSEP)
				z2 = key(f[1], "zddspt", f[2], f[3]); b2 = key(f[1], "buffered", f[2], f[3])
				row("pause zddspt/buffered " at(z2, b2, f[2], f[3]), pause[z2] / 1e6, pause[b2] / 1e6, 0.1,
				    "pause p50 ms zddspt / buffered")
			}
			row("stretch: zddspt pause p99 <= 100 us " at(z, z, 25, 1024), p99[z] / 1e3, 100, 1,
			    "pause p99 us zddspt / 100 us")
			row("T1 to ACK p50 <= 3 ms zddspt " at(z, z, 25, 1024), lat[z] / 1e6, 3, 1, "latency p50 ms zddspt / 3 ms")
			row("T1 to ACK p50 <= 3 ms zddspt " at(cz, cz, 25, 1024), lat[cz] / 1e6, 3, 1, "latency p50 ms zddspt / 3 ms")
			row("response delay without output commit zddspt <= buffered " at(z, b, 25, 1024),
			    resp[z] / 1e6, resp[b] / 1e6, 1, "mean ms zddspt / buffered")
			row("response delay without output commit zddspt/remus " at(z, r, 25, 1024),
			    resp[z] / 1e6, resp[r] / 1e6, 0.2, "mean ms zddspt / remus")
			row("guest throughput zddspt >= 0.97 of unprotected " at(z, z, 25, 1024),
			    gps[z], base[z], 0.97, "pages written/s zddspt / the unprotected VM", 1)
			row("guest throughput zddspt >= 0.97 of unprotected " at(cz, cz, 25, 1024),
			    gps[cz], base[cz], 0.97, "pages written/s zddspt / the unprotected VM", 1)
		}' "$t" >"$out/table1.targets.csv"
	column -s, -t "$out/table1.targets.csv" >&2
}

[ -n "$plot_only" ] && emulated=$(awk -F, 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "emulated") c = i; next} NR == 2 {print $c}' "$out/table1.csv")
plots
targets
column -s, -t "$out/table1.csv" | cut -c1-220
exit
}
