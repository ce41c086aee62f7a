#!/usr/bin/env bash
# zd measure: one protected run of a zd-vm with a client, one JSON line of
# figures (zd(1)). Run by the driver (zd measure ...); bench/table1.sh is a
# series of these, and zd-demo sources this file for measure_one.
#
#   zd-measure [--mode M] [--interval MS] [--epochs N] [--mem SIZE]
#              [--dirty RATE] [--hot F] [--no-output-commit] DIR
set -u
# die, usage_die, need_value, wait_until, recv_port ...: lib/sh/zd-common.bash,
# installed in PREFIX/share/zd.
zd_lib=$(dirname "$(readlink -f "$0")")/../share/zd/zd-common.bash
[ -f "$zd_lib" ] || zd_lib=${zd_lib%/share/zd/*}/lib/sh/zd-common.bash
# shellcheck source-path=SCRIPTDIR source=../lib/sh/zd-common.bash
. "$zd_lib" || exit 1

# ---- what runs in the background, and its end ------------------------------

# Background jobs of a non-interactive shell ignore SIGINT, and `zd run`
# runs in a session of its own (so that one signal takes its whole pipeline):
# Ctrl-C reaches neither. Every job is listed here and stopped on exit,
# however the script ends. A negative entry is a process group.
bg_jobs=()
# A control socket whose zd-vm must be stopped on exit: the VM that zd-recv
# restores on takeover is zd-recv's child, not ours.
bg_vm_sock=
# Temporary directories to remove on exit.
bg_tmp=()

# started PID...: remember jobs to stop on exit.
started() { bg_jobs+=("$@"); }
# settled: the jobs listed so far have been waited for; forget them (their
# PIDs may be reused).
settled() { bg_jobs=(); bg_vm_sock=; }

stop_jobs() {
	local p alive
	[ -n "$bg_vm_sock" ] && [ -S "$bg_vm_sock" ] && timeout 5 zd-vm --ctl "$bg_vm_sock" stop >/dev/null 2>&1
	for p in "${bg_jobs[@]+"${bg_jobs[@]}"}"; do kill -TERM -- "$p" 2>/dev/null; done
	# A few seconds to end cleanly (zd-client prints its summary, zd-vm
	# unmaps its guest), then SIGKILL.
	for _ in $(seq 50); do
		alive=
		for p in "${bg_jobs[@]+"${bg_jobs[@]}"}"; do kill -0 -- "$p" 2>/dev/null && alive=1; done
		[ -z "$alive" ] && break
		sleep 0.1
	done
	for p in "${bg_jobs[@]+"${bg_jobs[@]}"}"; do kill -KILL -- "$p" 2>/dev/null; done
	wait 2>/dev/null
	bg_jobs=()
	[ ${#bg_tmp[@]} -gt 0 ] && rm -rf "${bg_tmp[@]}"
	bg_tmp=()
}
trap stop_jobs EXIT
# exit runs the EXIT trap; 128 + the signal's number, as if killed by it.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- kvm: here, or inside the QEMU harness -------------------------------

kvm_here() { [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; }

# in_kvm NAME ARGS...: return where /dev/kvm works; else re-run this script
# with ARGS inside tests/lib/vmhost.sh and exit with its status. NAME is
# the subcommand, for the messages.
in_kvm() {
	local name=$1 rc
	shift
	kvm_here && return 0
	[ -n "${ZD_VMHOST_GUEST:-}" ] && die 4 "$name: no usable /dev/kvm, even inside the QEMU harness"
	[ -n "$src_top" ] || die 4 "$name: needs /dev/kvm (or a zd source tree, whose tests/lib/vmhost.sh brings KVM nested in QEMU)"
	say "no /dev/kvm here: running '$name' inside QEMU TCG with nested KVM (tests/lib/vmhost.sh); timings are emulated, compare ratios only"
	ZD_VMHOST_ENV="${ZD_VMHOST_ENV:-} ZD_DEMO_SECONDS BENCH_QUICK BENCH_DIRTY BENCH_INTERVALS BENCH_EPOCHS BENCH_OUT" \
		"$src_top/tests/lib/vmhost.sh" run --timeout "${ZD_VMHOST_TIMEOUT:-3600}" -- "$self" "$@"
	rc=$?
	[ $rc = 77 ] && die 4 "$name: no /dev/kvm and no QEMU to bring one"
	exit $rc
}

emulated() { grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo 2>/dev/null; }

# ---- one protected run with a client ----------------------------------------

# sock_up SOCK PID: zd-vm serves SOCK, or has died.
sock_up() { [ -S "$1" ] || ! kill -0 "$2" 2>/dev/null; }
vm_committed() { zd-vm --ctl "$1" stats 2>/dev/null | sed -n 's/^committed=//p'; }
# first_commit_or_gone SOCK PID: the first checkpoint is committed, or the
# replication already ended.
first_commit_or_gone() { local c; c=$(vm_committed "$1"); [ "${c:-0}" -ge 1 ] || ! kill -0 "$2" 2>/dev/null; }
committed_or_gone() { local c; c=$(vm_committed "$1"); [ "${c:-0}" -ge "$2" ] || ! kill -0 "$3" 2>/dev/null; }

cmd_measure() {
	local mode=remus interval=25 epochs=100 mem=32M dirty=4000 hot=0.2 oc='' dir
	while [ $# -gt 0 ]; do
		case $1 in
		--mode) need_value "$@"; check_mode "$2"; mode=$2; shift 2 ;;
		--interval) need_value "$@"; is_count "$2" || usage_die "--interval '$2': want milliseconds above 0"; interval=$2; shift 2 ;;
		--epochs) need_value "$@"; is_count "$2" && [ "$2" -ge 2 ] || usage_die "--epochs '$2': want 2 or more"; epochs=$2; shift 2 ;;
		--mem) need_value "$@"; mem=$2; shift 2 ;;
		--dirty) need_value "$@"; is_count "$2" || usage_die "--dirty '$2': want pages per second above 0"; dirty=$2; shift 2 ;;
		--hot) need_value "$@"; hot=$2; shift 2 ;;
		--no-output-commit) oc=--no-output-commit; shift ;;
		-h | --help) man_see zd-measure; exit 0 ;;
		-V | --version) echo "zd-measure $ZD_VERSION"; exit 0 ;;
		-*) usage_die "measure: unknown option '$1'" ;;
		*) break ;;
		esac
	done
	[ $# -eq 1 ] || usage_die "measure: want DIR"
	dir=$1
	in_kvm measure --mode "$mode" --interval "$interval" --epochs "$epochs" --mem "$mem" \
		--dirty "$dirty" --hot "$hot" $oc "$dir"
	mkdir -p "$dir" || die 1 "measure: cannot create $dir"
	rm -rf "$dir/replica" "$dir"/*.log "$dir"/*.err "$dir"/*.json "$dir/vm.sock" "$dir/recv.port"
	measure_one "$mode" "$interval" "$epochs" "$mem" "$dirty" "$hot" "$oc" "$dir"
}

# measure_one MODE INTERVAL EPOCHS MEM DIRTY HOT OC DIR: prints one JSON line.
measure_one() {
	local mode=$1 interval=$2 epochs=$3 mem=$4 dirty=$5 hot=$6 oc=$7 d=$8
	local vm recv cl sp bp rc=0 track_rc sock
	# The control socket lives in a local directory: a Unix socket cannot
	# be bound on every file system (9p in the QEMU harness), and its path
	# must stay short.
	sock=$(mktemp -d "${TMPDIR:-/tmp}/zd-vm.XXXXXX")/vm.sock || die 1 "measure: mktemp failed"
	bg_tmp+=("$(dirname "$sock")")
	# The backup here is for measuring: no takeover when the primary ends,
	# and no heartbeat verdicts (under QEMU TCG a stage can stall longer
	# than the default 500 ms); a closed connection still counts.
	rm -f "$d/recv.port"	# a stale one would be read at once
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/replica" --once --no-fsync \
		--timeout 0 --no-failover 2>"$d/recv.err" &
	recv=$!
	started $recv
	zd-vm --control "$sock" --mem "$mem" --workload "dirty=$dirty,hot=$hot" \
		--serve 127.0.0.1:0 $oc --output-log "$d/out.log" 2>"$d/vm.err" &
	vm=$!
	started $vm
	wait_until 300 sock_up "$sock" $vm
	if ! [ -S "$sock" ] || ! bp=127.0.0.1:$(recv_port "$d/recv.port" $recv); then
		kill $vm $recv 2>/dev/null
		wait $vm $recv 2>/dev/null
		die 1 "measure: zd-vm or zd-recv did not start: $(tail -n 2 "$d/vm.err" "$d/recv.err" | tr '\n' ' ')"
	fi
	sp=$(zd-vm --ctl "$sock" info | sed -n 's/^serve=//p')
	# The client asks from the start; the replication runs in the
	# background for WARM + EPOCHS epochs. The figures are those of the
	# steady state: the epochs from the one running when the first
	# checkpoint (the whole memory) was committed, and the answers those
	# epochs produced (zd-vm's output log gives each answer's epoch).
	# Buffered mode runs ahead of its commits while the first copy is
	# sent (under QEMU TCG for tens of epochs): WARM covers that.
	# (Stopping zd-track with SIGINT instead ends the stream with END
	# status 1, which zd-recv echoes and zd-send takes for a refusal.)
	local warm=${ZD_WARM_EPOCHS:-10} run from last
	emulated && warm=${ZD_WARM_EPOCHS:-80}
	# remus commits each epoch before the next: nothing runs ahead.
	[ "$mode" = remus ] && warm=2
	last=$((warm + epochs))
	# Like the paper's ping: requests at a steady rate (ZD_CLIENT_RATE per
	# second, default 100; 0 = closed loop), not a flood: a closed loop
	# answered at once keeps the guest busy serving, not dirtying pages.
	local rate=${ZD_CLIENT_RATE:-100} rate_opt=()
	[ "$rate" != 0 ] && rate_opt=(--rate "$rate")
	zd-client --duration 3600s --timeout 600s "${rate_opt[@]+"${rate_opt[@]}"}" --log "$d/client.log" "$sp" >"$d/client.json" 2>"$d/client.err" &
	cl=$!
	started $cl
	# zd run in a session of its own: its pipeline is one process group
	# for stop_jobs to end.
	setsid zd run --mode "$mode" --interval "$interval" --epochs "$last" --timeout 600000 --peer-timeout 0 \
		"$sock" "$bp" >"$d/send.log" 2>"$d/run.err" &
	run=$!
	started -$run
	# Guest throughput: zd-vm's count of the workload's page writes,
	# sampled about five times a second with the epoch then running (the
	# rate is taken over the measured epochs' samples below).
	guest_sample() {
		zd-vm --ctl "$sock" stats 2>/dev/null |
			awk -F= -v t="$(date +%s%N)" '$1 == "epoch" {e = $2} $1 == "guest_pages" {g = $2} END {if (e != "") print t, e, g}'
	}
	(while kill -0 $run 2>/dev/null; do
		guest_sample
		sleep 0.2
	done) >>"$d/guest.log" 2>/dev/null &
	local sampler=$!
	started $sampler
	wait_until 900 first_commit_or_gone "$sock" $run
	from=$(zd-vm --ctl "$sock" stats 2>/dev/null | sed -n 's/^epoch=//p')
	from=${from:-2}
	# remus commits epoch 1 before epoch 2 runs: the steady state starts
	# there, however late our polling saw it.
	[ "$mode" = remus ] && from=2
	[ "$from" -ge 2 ] || from=2
	# (and one sample at each end of the measured epochs, however slow
	# the periodic ones are)
	guest_sample >>"$d/guest.log"
	wait $run
	track_rc=$?
	guest_sample >>"$d/guest.log"
	wait $sampler
	kill -TERM $cl 2>/dev/null
	wait $cl
	local cl_rc=$?
	zd-vm --ctl "$sock" stop >/dev/null 2>&1
	wait $vm
	# zd-recv --once ends with its connection; a run that failed before
	# connecting leaves it listening.
	[ $track_rc != 0 ] && kill $recv 2>/dev/null
	wait $recv
	settled
	rm -rf "$(dirname "$sock")"
	if [ $track_rc != 0 ]; then
		# Recorded, not fatal: a mode the target cannot do (zddspt before
		# zd-vm has userfaultfd write-protect) is a result too.
		local why
		why=$(grep -v '^ ' "$d/run.err" | head -1)
		[ -n "$why" ] || why="zd run: exit $track_rc with no message (stderr: $(tail -c 200 "$d/run.err" | tr '\n' ' '))"
		jq -cn --arg mode "$mode" --argjson interval "$interval" --argjson rate "$dirty" \
			--arg oc "${oc:+off}" --arg why "$why" --argjson rc "$track_rc" \
			'{mode: $mode, interval_ms: $interval, dirty_rate: $rate, output_commit: ($oc != "off"),
			  failed: true, exit: $rc, reason: $why}'
		return 0
	fi
	# Answers of the protected epochs only: without output commit the
	# guest keeps answering after the run's last checkpoint.
	awk -v from="$from" -v last="$last" '$2 >= from && $2 <= last' "$d/out.log" >"$d/out.steady.log"
	[ -f "$d/client.log" ] || : >"$d/client.log"
	awk 'NR == FNR {ep[$1] = $2; next} ($1 in ep) && ep[$1] >= from && ep[$1] <= last' from="$from" last="$last" \
		"$d/out.log" "$d/client.log" >"$d/client.steady.log"
	zd-stat --json --from "$from" --output-log "$d/out.steady.log" --client-log "$d/client.steady.log" \
		"$d/send.log" >"$d/stat.json" 2>"$d/stat.err" ||
		die 1 "measure: zd-stat: $(head -1 "$d/stat.err")"
	# pages written per second of wall time from the first sample in a
	# measured epoch to the last one (null with fewer than two); the one
	# right after the run is in epoch last + 1
	local gps
	gps=$(awk -v from="$from" -v last="$last" '$2 >= from && $2 <= last + 1 {
			if (t0 == "" || $1 < t0) {t0 = $1; g0 = $3} if (t1 == "" || $1 > t1) {t1 = $1; g1 = $3}}
		END {if (t1 > t0) printf "{\"pages_per_s\": %.1f, \"window_s\": %.2f}", (g1 - g0) * 1e9 / (t1 - t0), (t1 - t0) / 1e9; else printf "null"}' \
		"$d/guest.log")
	jq -c --arg mode "$mode" --argjson interval "$interval" --argjson rate "$dirty" --arg mem "$mem" \
		--arg oc "${oc:+off}" --argjson cl_rc "$cl_rc" --slurpfile c "$d/client.json" \
		--argjson steady "$(wc -l <"$d/client.steady.log")" --argjson gps "$gps" \
		'. + {interval_ms: $interval, dirty_rate: $rate, mem: $mem, output_commit: ($oc != "off"),
		      mode: $mode, answers: $steady, answers_total: ($c[0].count // 0), client_errors: ($c[0].errors // 0),
		      guest_pages_per_s: ($gps.pages_per_s // null), guest_window_s: ($gps.window_s // null),
		      from_epoch: '"$from"',
		      client_exit: $cl_rc, failed: false}' "$d/stat.json"
}

# Run only when executed, not when sourced by zd-demo.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	cmd_measure "$@"
fi
