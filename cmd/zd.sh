#!/usr/bin/env bash
# zd — the driver: assembles the zd-* tools into the pipelines of DESIGN.md.
# Thin on purpose: every figure and every check is in the tools; this file
# only starts them, wires them and waits. See zd(1).
#
#   zd run [--mode M] [--interval MS] [--epochs N] [--verify] [--precopy P]
#          [--policy P] [--timeout MS] [--heartbeat MS] [--peer-timeout MS]
#          [--json] [-v] VM_CONTROL_SOCKET BACKUP
#   zd status DIR
#   zd failover DIR [zd-vm flags]   take over: zd-vm --restore DIR
#   zd measure [options] DIR      one protected run with a client, one JSON line
#   zd demo [--seconds S] [--keep DIR]
#   zd bench [--quick]
set -u
ZD_VERSION=0.1.0
prog=zd

die() { # die CODE MESSAGE
	echo "$prog: $2" >&2
	exit "$1"
}
usage_die() { die 2 "$1 (try 'zd --help')"; }
say() { echo "zd: $*" >&2; }

# The tools next to this script come first: bin/zd runs bin/zd-*.
self=$(readlink -f "$0")
here=$(dirname "$self")
case ":$PATH:" in *":$here:"*) ;; *) PATH="$here:$PATH" ;; esac
export PATH
# A source tree (bin/zd inside it) has the QEMU harness and the bench.
src_top=
[ -x "$here/../tests/lib/vmhost.sh" ] && [ -f "$here/../Makefile" ] && src_top=$(cd "$here/.." && pwd)

usage() {
	cat <<'EOF'
usage: zd run [--mode M] [--interval MS] [--epochs N] [--verify] [--precopy P]
              [--policy P] [--timeout MS] [--heartbeat MS] [--peer-timeout MS]
              [--no-failover] [--json] [-v] VM_CONTROL_SOCKET BACKUP
       zd status DIR
       zd failover DIR [--serve ADDR:PORT] [--control PATH] [-v]
       zd measure [--mode M] [--interval MS] [--epochs N] [--mem SIZE]
                  [--dirty RATE] [--hot F] [--no-output-commit] DIR
       zd demo [--seconds S] [--keep DIR]
       zd bench [--quick]
       zd --help | --version

Protect a VM run by zd-vm: checkpoint it continuously and keep a replica on
a backup (zd-track | zd-mru | zd-swap | zd-send → zd-recv).

  run      VM_CONTROL_SOCKET is zd-vm's --control socket; BACKUP is HOST:PORT
           (a zd-recv --listen already there) or local:DIR (zd-recv is started
           on loopback with the replica in DIR). zd-send's log stream goes to
           stdout (pipe it into zd-stat).
             --mode M        remus, buffered or zddspt (default remus)
             --interval MS   checkpoint interval (default 25)
             --epochs N      stop after N epochs (default: until SIGINT)
             --verify        whole-memory checksum in every COMMIT, checked
                             by zd-recv
             --precopy P     zddspt: pre-copy P% of the interval (default 20)
             --policy P      zd-mru's standby policy (default mru)
             --timeout MS    zd-track's longest wait for the backup
                             (default 10000)
             --heartbeat MS, --peer-timeout MS
                             zd-send's (and with local:, zd-recv's)
                             --heartbeat and --timeout (their defaults:
                             100 and 500; 0 = only a closed connection)
             --no-failover   local: zd-recv only reports a lost primary
             --reconnect MS  zd-send reconnects a lost link for up to MS and
                             resends what the backup lost (man zd-send)
             --json          the log stream as JSON lines
  status   the replica in DIR: last committed epoch and memory checksum
  failover take over by hand on the backup: zd-vm --restore DIR, serving the
           primary's address and control socket (zd-recv does the same by
           itself when it loses the primary)
  measure  start zd-vm (workload, service) and a zd-recv on loopback, protect
           the VM for N epochs while zd-client asks the service, print one
           JSON line: zd-stat's figures (from epoch 2), the client's, the
           parameters. The building block of demo and bench.
             --mem SIZE (default 32M)   --dirty RATE pages/s (default 4000)
             --hot F (default 0.2)      --epochs N (default 100)
             --no-output-commit         release answers at once (remus-no-net)
  demo     protect a VM in each mode for a few seconds while a client talks
           to it, and show the figures side by side; then kill the primary
           with SIGKILL, let the backup take over and show the client carry on
             --seconds S     per mode (default 5)
             --keep DIR      keep the runs' files in DIR
  bench    the paper's Table 1 and Figure 4 (bench/table1.sh; --quick: short)

Without /dev/kvm, demo, measure and bench run inside QEMU with nested KVM
(tests/lib/vmhost.sh, from a source tree): timings are emulated.

Exit status: run: the first failing stage's (zd-track, zd-mru, zd-swap,
zd-send, zd-recv: 1 runtime, 3 bad stream, 4 target, 5 peer); 2 usage;
4 no /dev/kvm and no way to get one.
EOF
}

need_value() { [ $# -ge 2 ] || usage_die "option '$1' needs a value"; }
is_count() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ] 2>/dev/null; }
check_mode() { case $1 in remus | buffered | zddspt) ;; *) usage_die "--mode '$1': want remus, buffered or zddspt" ;; esac; }

# ---- kvm: here, or inside the QEMU harness -------------------------------

kvm_here() { [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; }

# in_kvm SUBCOMMAND ARGS...: return where /dev/kvm works; else re-run this
# subcommand inside tests/lib/vmhost.sh and exit with its status.
in_kvm() {
	kvm_here && return 0
	[ -n "${ZD_VMHOST_GUEST:-}" ] && die 4 "$1: no usable /dev/kvm, even inside the QEMU harness"
	[ -n "$src_top" ] || die 4 "$1: needs /dev/kvm (or a zd source tree, whose tests/lib/vmhost.sh brings KVM nested in QEMU)"
	say "no /dev/kvm here: running '$1' inside QEMU TCG with nested KVM (tests/lib/vmhost.sh); timings are emulated, compare ratios only"
	local rc
	ZD_VMHOST_ENV="${ZD_VMHOST_ENV:-} ZD_DEMO_SECONDS BENCH_QUICK BENCH_DIRTY BENCH_INTERVALS BENCH_EPOCHS BENCH_OUT" \
		"$src_top/tests/lib/vmhost.sh" run --timeout "${ZD_VMHOST_TIMEOUT:-3600}" -- "$self" "$@"
	rc=$?
	[ $rc = 77 ] && die 4 "$1: no /dev/kvm and no QEMU to bring one"
	exit $rc
}

emulated() { grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo 2>/dev/null; }

# ---- zd run -----------------------------------------------------------------

cmd_run() {
	local mode=remus interval=25 epochs= verify= precopy= policy=mru timeout= json= verbose=
	local hb=() local_extra=() send_extra=()
	while [ $# -gt 0 ]; do
		case $1 in
		--mode | -m) need_value "$@"; check_mode "$2"; mode=$2; shift 2 ;;
		--interval | -i) need_value "$@"; interval=$2; shift 2 ;;
		--epochs | -n) need_value "$@"; is_count "$2" || usage_die "--epochs '$2': want a whole number above 0"; epochs=$2; shift 2 ;;
		--verify) verify=--verify; shift ;;
		--precopy | -p) need_value "$@"; precopy=$2; shift 2 ;;
		--policy) need_value "$@"; policy=$2; shift 2 ;;
		--timeout | -t) need_value "$@"; timeout=$2; shift 2 ;;
		--json | -j) json=--json-log; shift ;;
		--heartbeat) need_value "$@"; hb+=(--heartbeat "$2"); shift 2 ;;
		--peer-timeout) need_value "$@"; hb+=(--timeout "$2"); shift 2 ;;
		--no-failover) local_extra+=(--no-failover); shift ;;
		--reconnect) need_value "$@"; send_extra+=(--reconnect "$2"); shift 2 ;;
		-v | --verbose) verbose=-v; shift ;;
		--) shift; break ;;
		-*) usage_die "run: unknown option '$1'" ;;
		*) break ;;
		esac
	done
	[ $# -eq 2 ] || usage_die "run: want VM_CONTROL_SOCKET BACKUP, got $# arguments"
	local sock=$1 backup=$2 dest recv_pid= rdir= rlog=
	[ -S "$sock" ] || die 4 "run: $sock: not a socket (is zd-vm --control $sock running?)"
	case $backup in
	local:?*)
		rdir=${backup#local:}
		rlog=$(mktemp "${TMPDIR:-/tmp}/zd-recv.XXXXXX") || die 1 "run: mktemp failed"
		zd-recv --listen 127.0.0.1:0 --replica "$rdir" --once $verify $verbose \
			"${hb[@]+"${hb[@]}"}" "${local_extra[@]+"${local_extra[@]}"}" 2>"$rlog" &
		recv_pid=$!
		local i
		for i in $(seq 200); do
			dest=$(grep -o '127\.0\.0\.1:[0-9]*' "$rlog" | head -1)
			[ -n "$dest" ] && break
			kill -0 $recv_pid 2>/dev/null || break
			sleep 0.05
		done
		if [ -z "$dest" ]; then
			cat "$rlog" >&2
			rm -f "$rlog"
			die 1 "run: zd-recv for $rdir did not start"
		fi
		;;
	local:) usage_die "run: local: wants a directory (local:DIR)" ;;
	*:[0-9]*) dest=$backup ;;
	*) usage_die "run: BACKUP '$backup': want HOST:PORT or local:DIR" ;;
	esac
	# zd-track's own flags are checked by zd-track (one line, exit 2).
	local track_args=("kvm:$sock" --mode "$mode" --interval "$interval")
	[ -n "$epochs" ] && track_args+=(--epochs "$epochs")
	[ -n "$verify" ] && track_args+=(--verify)
	[ -n "$precopy" ] && track_args+=(--precopy "$precopy")
	[ -n "$timeout" ] && track_args+=(--timeout "$timeout")
	[ -n "$verbose" ] && track_args+=(-v)
	zd-track "${track_args[@]}" | zd-mru --policy "$policy" $verbose | zd-swap $verbose |
		zd-send $json $verbose "${hb[@]+"${hb[@]}"}" "${send_extra[@]+"${send_extra[@]}"}" "$dest"
	local rcs=("${PIPESTATUS[@]}") rc=0 c
	for c in "${rcs[@]}"; do [ "$c" != 0 ] && { rc=$c; break; }; done
	if [ -n "$recv_pid" ]; then
		wait $recv_pid
		c=$?
		[ $c != 0 ] && { sed 's/^/  /' "$rlog" | tail -3 >&2; [ $rc = 0 ] && rc=$c; }
		rm -f "$rlog"
	fi
	return $rc
}

cmd_status() {
	[ $# -eq 1 ] || usage_die "status: want DIR"
	zd-recv --replica "$1" --status
}

cmd_failover() {
	[ $# -ge 1 ] || usage_die "failover: want DIR"
	case $1 in -*) usage_die "failover: want DIR first, got '$1'" ;; esac
	local dir=$1
	shift
	# zd-vm checks the replica and its own flags (one line, exit 2-4).
	exec zd-vm --restore "$dir" "$@"
}

# ---- zd measure: one protected run with a client ----------------------------

# wait_until SECONDS CMD...: poll CMD every 0.1 s (a deadline, not a count:
# under QEMU TCG starting sleep(1) alone takes a while).
wait_until() {
	local end=$((SECONDS + $1)); shift
	while [ $SECONDS -le $end ]; do "$@" && return 0; sleep 0.1; done
	return 1
}
# sock_up SOCK PID: zd-vm serves SOCK, or has died.
sock_up() { [ -S "$1" ] || ! kill -0 "$2" 2>/dev/null; }
recv_up() { grep -q '127\.0\.0\.1:' "$1" || ! kill -0 "$2" 2>/dev/null; }
vm_committed() { zd-vm --ctl "$1" stats 2>/dev/null | sed -n 's/^committed=//p'; }
# first_commit_or_gone SOCK PID: the first checkpoint is committed, or the
# replication already ended.
first_commit_or_gone() { local c; c=$(vm_committed "$1"); [ "${c:-0}" -ge 1 ] || ! kill -0 "$2" 2>/dev/null; }
committed_or_gone() { local c; c=$(vm_committed "$1"); [ "${c:-0}" -ge "$2" ] || ! kill -0 "$3" 2>/dev/null; }

cmd_measure() {
	local mode=remus interval=25 epochs=100 mem=32M dirty=4000 hot=0.2 oc= dir
	while [ $# -gt 0 ]; do
		case $1 in
		--mode) need_value "$@"; check_mode "$2"; mode=$2; shift 2 ;;
		--interval) need_value "$@"; is_count "$2" || usage_die "--interval '$2': want milliseconds above 0"; interval=$2; shift 2 ;;
		--epochs) need_value "$@"; is_count "$2" && [ "$2" -ge 2 ] || usage_die "--epochs '$2': want 2 or more"; epochs=$2; shift 2 ;;
		--mem) need_value "$@"; mem=$2; shift 2 ;;
		--dirty) need_value "$@"; is_count "$2" || usage_die "--dirty '$2': want pages per second above 0"; dirty=$2; shift 2 ;;
		--hot) need_value "$@"; hot=$2; shift 2 ;;
		--no-output-commit) oc=--no-output-commit; shift ;;
		-*) usage_die "measure: unknown option '$1'" ;;
		*) break ;;
		esac
	done
	[ $# -eq 1 ] || usage_die "measure: want DIR"
	dir=$1
	in_kvm measure --mode "$mode" --interval "$interval" --epochs "$epochs" --mem "$mem" \
		--dirty "$dirty" --hot "$hot" $oc "$dir"
	mkdir -p "$dir" || die 1 "measure: cannot create $dir"
	rm -rf "$dir/replica" "$dir"/*.log "$dir"/*.err "$dir"/*.json "$dir/vm.sock"
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
	# The backup here is for measuring: no takeover when the primary ends,
	# and no heartbeat verdicts (under QEMU TCG a stage can stall longer
	# than the default 500 ms); a closed connection still counts.
	zd-recv --listen 127.0.0.1:0 --replica "$d/replica" --once --no-fsync \
		--timeout 0 --no-failover 2>"$d/recv.err" &
	recv=$!
	zd-vm --control "$sock" --mem "$mem" --workload "dirty=$dirty,hot=$hot" \
		--serve 127.0.0.1:0 $oc --output-log "$d/out.log" 2>"$d/vm.err" &
	vm=$!
	wait_until 300 sock_up "$sock" $vm
	wait_until 30 recv_up "$d/recv.err" $recv
	if ! [ -S "$sock" ] || ! grep -q '127\.0\.0\.1:' "$d/recv.err"; then
		kill $vm $recv 2>/dev/null
		wait $vm $recv 2>/dev/null
		die 1 "measure: zd-vm or zd-recv did not start: $(tail -n 2 "$d/vm.err" "$d/recv.err" | tr '\n' ' ')"
	fi
	bp=$(grep -o '127\.0\.0\.1:[0-9]*' "$d/recv.err" | head -1)
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
	"$self" run --mode "$mode" --interval "$interval" --epochs "$last" --timeout 600000 --peer-timeout 0 \
		"$sock" "$bp" >"$d/send.log" 2>"$d/run.err" &
	run=$!
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

# ---- zd demo ----------------------------------------------------------------

# The demo is a list of steps.
demo_steps=(demo_intro demo_protect demo_compare demo_failover)

demo_intro() {
	local how="real KVM"
	emulated && how="KVM nested in QEMU TCG (emulated CPU: timings are slow; compare ratios)"
	echo "== zd demo: a VM under zd-vm ($how)"
	echo "   workload: $DEMO_MEM RAM, guest writes $DEMO_DIRTY pages/s; a client asks its service"
	echo "   (closed loop); replicated to a zd-recv on loopback for $DEMO_EPOCHS epochs of"
	echo "   ${DEMO_INTERVAL} ms in each mode: ${DEMO_MODES[*]}"
}

demo_protect() {
	local m
	for m in "${DEMO_MODES[@]}"; do
		echo "== protect in $m mode: zd-track kvm:vm.sock --mode $m | zd-mru | zd-swap | zd-send → zd-recv"
		mkdir -p "$DEMO_DIR/$m"
		measure_one "$m" "$DEMO_INTERVAL" "$DEMO_EPOCHS" "$DEMO_MEM" "$DEMO_DIRTY" 0.2 "" "$DEMO_DIR/$m" >"$DEMO_DIR/$m.json"
		if jq -e '.failed' "$DEMO_DIR/$m.json" >/dev/null; then
			echo "   $m: not measured: $(jq -r .reason "$DEMO_DIR/$m.json")"
		else
			jq -r '"   \(.epochs) epochs measured, \(.answers) answers to the client"' "$DEMO_DIR/$m.json"
			zd-recv --replica "$DEMO_DIR/$m/replica" --status | tr '\n' ' ' | sed 's/^/   the replica: /; s/ $/\n/'
		fi
	done
}

demo_compare() {
	local m cols=() f
	for m in "${DEMO_MODES[@]}"; do jq -e '.failed | not' "$DEMO_DIR/$m.json" >/dev/null && cols+=("$m"); done
	echo "== zd-stat, side by side (the epochs while the client ran, after the first full copy)"
	[ ${#cols[@]} -gt 0 ] || { echo "   no mode could be measured"; return 1; }
	printf '   %-34s' "figure"; printf '%14s' "${cols[@]}"; echo
	for f in "epochs:.epochs:%d" "dirty pages/epoch (mean):.dirty_mean:%.0f" \
		"pause p50 (us):.pause_ns.p50/1e3:%.0f" "pause p99 (us):.pause_ns.p99/1e3:%.0f" \
		"latency T1->ACK p50 (ms):.latency_ns.p50/1e6:%.1f" "latency T1->ACK p99 (ms):.latency_ns.p99/1e6:%.1f" \
		"output delay p50 (ms):.output_delay_ns.p50/1e6:%.1f" \
		"response delay p50 (ms):.response_delay_ns.p50/1e6:%.1f" \
		"response delay p99 (ms):.response_delay_ns.p99/1e6:%.1f" \
		"response delay mean (ms):.response_delay_ns.mean/1e6:%.1f" \
		"answers:.answers:%d" "client errors:.client_errors:%d" \
		"wire bytes/epoch (mean):.wire_bytes_per_epoch.mean:%.0f"; do
		local label=${f%%:*} rest=${f#*:} expr fmt v
		expr=${rest%:*} fmt=${rest##*:%}
		printf '   %-34s' "$label"
		for m in "${cols[@]}"; do
			v=$(jq -r "($expr) // \"-\"" "$DEMO_DIR/$m.json" 2>/dev/null)
			if [ "$v" = - ] || [ -z "$v" ]; then printf '%14s' -; else printf "%14$fmt" "$v"; fi
		done
		echo
	done
}

# demo_failover: issue 5's story. A protected VM with a client talking to
# it; SIGKILL of the primary zd-vm; zd-recv takes over with its default
# action (zd-vm --restore) on the same address; the client carries on.
lines_at_least() { [ "$(wc -l <"$1")" -ge "$2" ]; }
commits_at_least() { [ "$(grep -c 'epoch [0-9]* committed' "$1")" -ge "$2" ] || ! kill -0 "$3" 2>/dev/null; }
demo_failover() {
	local d=$DEMO_DIR/failover mode=${ZD_DEMO_FAILOVER_MODE:-remus} sock vm recv run cl bp sp line
	local n=$((DEMO_EPOCHS / 2 + 2)) before hb=() send_hb=()
	mkdir -p "$d"
	echo "== failover: a $mode-protected VM, a client talking to it, SIGKILL of the primary"
	sock=$(mktemp -d "${TMPDIR:-/tmp}/zd-vm.XXXXXX")/vm.sock || die 1 "demo: mktemp failed"
	# Real KVM: zd-recv's defaults (heartbeat 100 ms, dead after 500 ms).
	# Under TCG a checkpoint stretches past them and a live primary would be
	# taken over; the kill closes the connection, which is seen at once.
	if emulated; then
		hb=(--heartbeat 1000 --timeout 30000)
		send_hb=(--heartbeat 1000 --peer-timeout 0)
	fi
	zd-recv --listen 127.0.0.1:0 --replica "$d/replica" --no-fsync -v "${hb[@]+"${hb[@]}"}" 2>"$d/recv.err" &
	recv=$!
	zd-vm --control "$sock" --mem "$DEMO_MEM" --workload "dirty=$DEMO_DIRTY,hot=0.2" \
		--serve 127.0.0.1:0 2>"$d/vm.err" &
	vm=$!
	wait_until 60 sock_up "$sock" $vm
	wait_until 30 recv_up "$d/recv.err" $recv
	if ! [ -S "$sock" ] || ! grep -q '127\.0\.0\.1:' "$d/recv.err"; then
		kill $vm $recv 2>/dev/null
		echo "   zd-vm or zd-recv did not start: $(tail -n 2 "$d/vm.err" "$d/recv.err" | tr '\n' ' ')"
		return 1
	fi
	bp=$(grep -o '127\.0\.0\.1:[0-9]*' "$d/recv.err" | head -1)
	sp=$(zd-vm --ctl "$sock" info | sed -n 's/^serve=//p')
	zd-client --reconnect --retry-for 60000 --timeout 600s --duration 3600s --log "$d/client.log" \
		"$sp" >"$d/client.json" 2>"$d/client.err" &
	cl=$!
	# The primary's pipeline in a session of its own, so that the kill
	# takes the whole primary side at once, as a crash of its host would.
	setsid "$self" run --mode "$mode" --interval "$DEMO_INTERVAL" --timeout 600000 --json "${send_hb[@]+"${send_hb[@]}"}" \
		"$sock" "$bp" >"$d/send.log" 2>"$d/run.err" &
	run=$!
	echo "   primary: zd-vm on $sp, replicated to zd-recv on $bp (default failover: zd-vm --restore)"
	if ! wait_until 900 commits_at_least "$d/recv.err" "$n" $recv; then
		kill -KILL -- $vm -$run 2>/dev/null
		kill $cl $recv 2>/dev/null
		echo "   the backup did not commit $n epochs: $(tail -n 2 "$d/run.err" "$d/recv.err" | tr '\n' ' ')"
		return 1
	fi
	before=$(tail -n 1 "$d/client.log" | cut -d' ' -f1)
	kill -KILL -- $vm -$run
	wait $vm 2>/dev/null	# reaped here: bash would say "Killed" on the terminal
	echo "   SIGKILL to the primary (zd-vm and its pipeline) after $n committed epochs; the client had seq ${before:-none}"
	wait $run 2>/dev/null
	if ! wait_until 600 grep -q 'restored VM answered' "$d/recv.err"; then
		kill $cl $recv 2>/dev/null
		echo "   no takeover: $(grep -v committed "$d/recv.err" | tail -n 4 | tr '\n' ' ')"
		return 1
	fi
	grep -E 'primary lost|restored .* at epoch' "$d/recv.err" | sed 's/^[^:]*: /   /'
	line=$(grep 'restored VM answered' "$d/recv.err" | head -1)
	echo "   failover time: ${line#*: }"
	# The replication figures up to the kill (the stream stops mid-epoch:
	# zd-stat wants a whole stream, so the copy is closed with END).
	(grep -v '^[^{]' "$d/send.log" | sed '$d'; echo '{"type":"end","epochs":0,"status":1}') >"$d/send.closed"
	echo "   replication before the kill:"
	zd-stat "$d/send.closed" 2>&1 | sed -n '/^$/,$p' | sed '/^$/d; s/^/     /'
	# The client carries on with the restored VM for a few answers.
	local got
	got=$(wc -l <"$d/client.log")
	wait_until 120 lines_at_least "$d/client.log" $((got + 5))
	kill -TERM $cl
	wait $cl
	local crc=$?
	jq -r --argjson crc $crc '"   the client carried on: \(.count) answers, seq \(.first_seq)..\(.last_seq), " +
		"\(.reconnects) reconnect(s), \(.gaps) gaps, \(.errors) contradictions (exit \($crc))" +
		(if (.failovers // 0) > 0 then "\n   the client waited \(.failover_ns.max / 1e6 | floor) ms from its last answer before the kill to its first after (\(.resets) connection(s) reset)" else "" end)' "$d/client.json"
	zd-vm --ctl "$sock" stop >/dev/null 2>&1
	wait $recv 2>/dev/null
	[ $crc = 0 ]
}

cmd_demo() {
	local seconds=${ZD_DEMO_SECONDS:-5} keep=
	while [ $# -gt 0 ]; do
		case $1 in
		--seconds) need_value "$@"; is_count "$2" || usage_die "--seconds '$2': want a whole number above 0"; seconds=$2; shift 2 ;;
		--keep) need_value "$@"; keep=$2; shift 2 ;;
		*) usage_die "demo: unknown argument '$1'" ;;
		esac
	done
	in_kvm demo --seconds "$seconds" ${keep:+--keep "$keep"}
	DEMO_INTERVAL=25 DEMO_MODES=(remus buffered zddspt)
	if emulated; then
		# TCG runs the guest and the pipeline ~20-50x slower: a smaller
		# VM and rate keep buffered mode's asynchronous send ahead of the
		# guest (else each epoch grows until it spans the whole memory).
		DEMO_MEM=${ZD_DEMO_MEM:-16M} DEMO_DIRTY=${ZD_DEMO_DIRTY:-500}
		DEMO_EPOCHS=$((seconds * 10))
	else
		DEMO_MEM=${ZD_DEMO_MEM:-128M} DEMO_DIRTY=${ZD_DEMO_DIRTY:-40000}
		DEMO_EPOCHS=$((seconds * 1000 / DEMO_INTERVAL))
	fi
	if [ -n "$keep" ]; then
		DEMO_DIR=$keep
		mkdir -p "$DEMO_DIR" || die 1 "demo: cannot create $keep"
	else
		DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/zd-demo.XXXXXX") || die 1 "demo: mktemp failed"
	fi
	local s rc=0
	for s in "${demo_steps[@]}"; do "$s" || { rc=1; break; }; done
	[ -z "$keep" ] && rm -rf "$DEMO_DIR"
	return $rc
}

cmd_bench() {
	local quick=${BENCH_QUICK:-}
	while [ $# -gt 0 ]; do
		case $1 in
		--quick) quick=1; shift ;;
		*) usage_die "bench: unknown argument '$1'" ;;
		esac
	done
	[ -n "$src_top" ] || die 1 "bench: needs the zd source tree (bench/table1.sh)"
	BENCH_QUICK=$quick exec "$src_top/bench/table1.sh"
}

[ $# -gt 0 ] || usage_die "missing command"
cmd=$1
shift
case $cmd in
run) cmd_run "$@" ;;
status) cmd_status "$@" ;;
failover) cmd_failover "$@" ;;
measure) cmd_measure "$@" ;;
demo) cmd_demo "$@" ;;
bench) cmd_bench "$@" ;;
-h | --help | help) usage ;;
-V | --version) echo "zd $ZD_VERSION" ;;
*) usage_die "unknown command '$cmd'" ;;
esac
