#!/usr/bin/env bash
# zd — the driver: assembles the zd-* tools into a protected VM's pipeline
# (zd-track | zd-mru | zd-swap | zd-send → zd-recv). Thin on purpose: every
# figure and every check is in the tools; this file only starts them, wires
# them and waits. zd measure and zd demo are zd-measure and zd-demo beside
# it. See zd(1).
#
#   zd run [--mode M] [--interval MS] [--epochs N] [--verify] [--precopy P]
#          [--policy P] [--timeout MS] [--heartbeat MS] [--peer-timeout MS]
#          [--key FILE] [--compress ENC] [--reprotect HOST:PORT]
#          [--json] [-v] TARGET BACKUP
#   zd status [DIR | --json]
#   zd failover DIR [--reprotect HOST:PORT [run flags]] [zd-vm flags]
#                                   take over: zd-vm --restore DIR
#   zd measure [options] DIR      one protected run with a client, one JSON line
#   zd demo [--seconds S] [--keep DIR]
#   zd bench [--quick]
set -u
# die, usage_die, need_value, wait_until, recv_port ...: lib/sh/zd-common.bash,
# installed in PREFIX/share/zd.
zd_lib=$(dirname "$(readlink -f "$0")")/../share/zd/zd-common.bash
[ -f "$zd_lib" ] || zd_lib=${zd_lib%/share/zd/*}/lib/sh/zd-common.bash
# shellcheck source-path=SCRIPTDIR source=../lib/sh/zd-common.bash
. "$zd_lib" || exit 1

usage() {
	cat <<'EOF'
usage: zd run [--mode M] [--interval MS] [--epochs N] [--verify] [--precopy P]
              [--policy P] [--timeout MS] [--heartbeat MS] [--peer-timeout MS]
              [--key FILE] [--compress ENC] [--reprotect HOST:PORT]
              [--no-failover] [--json] [-v] TARGET BACKUP
       zd status [DIR | --json]
       zd failover DIR [--reprotect HOST:PORT [--mode M] [--interval MS]
                       [--key FILE] [--compress ENC]] [--serve ADDR:PORT]
                       [--control PATH] [-v]
       zd measure [--mode M] [--interval MS] [--epochs N] [--mem SIZE]
                  [--dirty RATE] [--hot F] [--no-output-commit] DIR
       zd demo [--seconds S] [--keep DIR] [--xen CFG]
       zd bench [--quick]
       zd --help | --version

Protect a VM: checkpoint it continuously and keep a replica on a backup
(zd-track | zd-mru | zd-swap | zd-send → zd-recv).

  run      TARGET is zd-track's (kvm:SOCKET, xen:NAME, synth:...; a bare path
           is zd-vm's --control socket, kvm:); BACKUP is HOST:PORT (a zd-recv
           --listen already there), local:DIR (zd-recv is started on loopback
           with the replica in DIR) or ssh:[USER@]HOST:DIR (zd-send starts
           zd-recv --stdio there). zd-send's log stream goes to stdout (pipe
           it into zd-stat).
             --mode M        remus, buffered or zddspt (default remus)
             --interval MS   checkpoint interval (default 25)
             --epochs N      stop after N epochs (default: until SIGINT)
             --verify        whole-memory checksum in every COMMIT, checked
                             by zd-recv
             --precopy P     zddspt: pre-copy P% of the interval (default 2)
             --policy P      zd-mru's standby policy (default mru)
             --timeout MS    zd-track's longest wait for the backup
                             (default 10000)
             --heartbeat MS, --peer-timeout MS
                             zd-send's (and with local:, zd-recv's)
                             --heartbeat and --timeout (defaults: heartbeat
                             100; timeout 2000 for zd-send, 500 for
                             zd-recv; 0 = only a closed connection)
             --key FILE      pre-shared key: the wire authenticated and
                             encrypted (zd-send --key; local: zd-recv's too)
             --compress ENC  zd-send --compress: none, zstd or delta
             --reprotect HOST:PORT
                             local: and ssh: backups: after a takeover the
                             restored VM is protected again, to the zd-recv
                             at HOST:PORT, with the same mode, interval, key
                             and compression (zd failover --reprotect)
             --no-failover   local: zd-recv only reports a lost primary
             --reconnect MS  zd-send reconnects a lost link for up to MS and
                             resends what the backup lost (man zd-send)
             --json          the log stream as JSON lines
  status   DIR: the replica's last committed epoch and memory checksum;
           without DIR: the live status of every zd-recv and zd-track
           running here (zd-stat --live; --json for scripts)
  failover take over by hand on the backup: zd-vm --restore DIR, serving the
           primary's address and control socket (zd-recv does the same by
           itself when it loses the primary). With --reprotect HOST:PORT the
           restored VM is protected again to that zd-recv (zd run, retried
           every 2 s while the backup is not there, for as long as the VM
           runs); zd failover then ends with the VM.
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
             --xen CFG       in a Xen dom0: also (without /dev/kvm: only) the
                             takeover of the guest of xl config CFG by a
                             standby domain (ZD_DEMO_XEN_SERVICE=ADDR:PORT:
                             a client talks to the guest across it)
  bench    the paper's Table 1 and Figure 4 (bench/table1.sh; --quick: short)

Without /dev/kvm, demo, measure and bench run inside QEMU with nested KVM
(tests/lib/vmhost.sh, from a source tree): timings are emulated.

Exit status: run: the first failing stage's (zd-track, zd-mru, zd-swap,
zd-send, zd-recv: 1 runtime, 3 bad stream, 4 target, 5 peer); 2 usage;
4 no /dev/kvm and no way to get one.
EOF
}

# ---- zd run -----------------------------------------------------------------

# With local:, the zd-recv started in the background, and a directory for
# its log and port file. A background job ignores SIGINT: when the pipeline
# dies of Ctrl-C, or the run fails before its wait, the script stops that
# zd-recv on its way out.
recv_pid='' rtmp=''
run_cleanup() {
	[ -n "$recv_pid" ] && kill -TERM "$recv_pid" 2>/dev/null && wait "$recv_pid" 2>/dev/null
	[ -n "$rtmp" ] && rm -rf "$rtmp"
}

cmd_run() {
	local mode=remus interval=25 epochs='' verify='' precopy='' policy=mru timeout='' json='' verbose=''
	local hb=() local_extra=() send_extra=() key=() reprotect=
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
		--key) need_value "$@"; key=(--key "$2"); shift 2 ;;
		--compress) need_value "$@"; send_extra+=(--compress "$2"); shift 2 ;;
		--reprotect) need_value "$@"
			case $2 in *:[0-9]*) reprotect=$2 ;; *) usage_die "--reprotect '$2': want HOST:PORT" ;; esac
			shift 2 ;;
		-v | --verbose) verbose=-v; shift ;;
		--) shift; break ;;
		-*) usage_die "run: unknown option '$1'" ;;
		*) break ;;
		esac
	done
	[ $# -eq 2 ] || usage_die "run: want TARGET BACKUP, got $# arguments"
	local target=$1 backup=$2 dest rdir='' rlog=''
	case $target in
	[a-z]*:*) ;;
	*) target=kvm:$target ;;
	esac
	case $target in
	kvm:*) [ -S "${target#kvm:}" ] || die 4 "run: ${target#kvm:}: not a socket (is zd-vm --control ${target#kvm:} running?)" ;;
	esac
	# After a takeover on the backup, the restored VM is protected again:
	# the zd-recv this run starts there hands over to zd failover.
	if [ -n "$reprotect" ]; then
		case $backup in
		local:* | ssh:*) ;;
		*) usage_die "--reprotect goes with a local: or ssh: backup (a zd-recv of your own takes --on-failover 'zd failover \"\$ZD_REPLICA\" --reprotect $reprotect')" ;;
		esac
		local again
		again=$(printf ' %q' --reprotect "$reprotect" --mode "$mode" --interval "$interval" "${key[@]+"${key[@]}"}")
		local_extra+=(--on-failover "exec $(printf %q "$self") failover \"\$ZD_REPLICA\"$again")
	fi
	case $backup in
	local:?*)
		rdir=${backup#local:}
		rtmp=$(mktemp -d "${TMPDIR:-/tmp}/zd-recv.XXXXXX") || die 1 "run: mktemp failed"
		rlog=$rtmp/recv.err
		trap run_cleanup EXIT
		# Ready is when the backup holds a checkpoint (zd-track says so), not
		# when this zd-recv listens: it does not tell a service manager.
		NOTIFY_SOCKET='' zd-recv --listen 127.0.0.1:0 --port-file "$rtmp/port" --replica "$rdir" --once $verify $verbose \
			"${hb[@]+"${hb[@]}"}" "${key[@]+"${key[@]}"}" "${local_extra[@]+"${local_extra[@]}"}" \
			2> >(tee "$rlog" >&2) &
		recv_pid=$!
		if ! dest=127.0.0.1:$(recv_port "$rtmp/port" $recv_pid); then
			die 1 "run: zd-recv for $rdir did not start"
		fi
		;;
	local:) usage_die "run: local: wants a directory (local:DIR)" ;;
	ssh:?*)
		dest=$backup
		# zd-send starts the far zd-recv (--stdio) with ZD_REMOTE_RECV.
		if [ ${#local_extra[@]} -gt 0 ]; then
			ZD_REMOTE_RECV="${ZD_REMOTE_RECV:-zd-recv}$(printf ' %q' "${local_extra[@]}")"
			export ZD_REMOTE_RECV
		fi ;;
	*:[0-9]*) dest=$backup ;;
	*) usage_die "run: BACKUP '$backup': want HOST:PORT, local:DIR or ssh:[USER@]HOST:DIR" ;;
	esac
	# zd-track's own flags are checked by zd-track (one line, exit 2).
	local track_args=("$target" --mode "$mode" --interval "$interval")
	[ -n "$epochs" ] && track_args+=(--epochs "$epochs")
	[ -n "$verify" ] && track_args+=(--verify)
	[ -n "$precopy" ] && track_args+=(--precopy "$precopy")
	[ -n "$timeout" ] && track_args+=(--timeout "$timeout")
	[ -n "$verbose" ] && track_args+=(-v)
	zd-track "${track_args[@]}" | zd-mru --policy "$policy" $verbose | zd-swap $verbose |
		zd-send $json $verbose "${hb[@]+"${hb[@]}"}" "${key[@]+"${key[@]}"}" "${send_extra[@]+"${send_extra[@]}"}" "$dest"
	local rcs=("${PIPESTATUS[@]}") rc=0 c
	for c in "${rcs[@]}"; do [ "$c" != 0 ] && { rc=$c; break; }; done
	if [ -n "$recv_pid" ]; then
		wait $recv_pid
		c=$?
		recv_pid=
		[ "$c" != 0 ] && [ "$rc" = 0 ] && rc=$c
		rm -rf "$rtmp"
		rtmp=
	fi
	return "$rc"
}

cmd_status() {
	case $# in
	0) exec zd-stat --live ;;
	1) [ "$1" = --json ] && exec zd-stat --live --json
	   zd-recv --replica "$1" --status ;;
	*) usage_die "status: want DIR, --json or nothing" ;;
	esac
}

# zd failover --reprotect: the restored VM runs in the background, and
# zd run protects it to HOST:PORT, again every 2 s while the backup is not
# there or the run fails, for as long as the VM runs. Ends with the VM's
# status; SIGTERM stops both.
vm_pid=''
failover_cleanup() { [ -n "$vm_pid" ] && kill -TERM "$vm_pid" 2>/dev/null; }
failover_reprotect() {
	local dir=$1 to=$2 sock=''
	shift 2
	local run_args=() vm_args=()
	while [ $# -gt 0 ]; do
		case $1 in
		--mode | --interval | --key | --compress) need_value "$@"; run_args+=("$1" "$2"); shift 2 ;;
		--control) need_value "$@"; sock=$2; vm_args+=("$1" "$2"); shift 2 ;;
		*) vm_args+=("$1"); shift ;;
		esac
	done
	# The restored VM serves the primary's control socket unless told.
	if [ -z "$sock" ]; then
		sock=$(zd-recv --replica "$dir" --status | sed -n 's/^target kvm://p')
		[ -n "$sock" ] || die 4 "failover: $dir: not the replica of a zd-vm (kvm:) VM: --reprotect needs one"
	fi
	trap failover_cleanup EXIT TERM INT
	zd-vm --restore "$dir" "${vm_args[@]+"${vm_args[@]}"}" &
	vm_pid=$!
	if ! wait_until 30 test -S "$sock"; then
		wait "$vm_pid"
		local rc=$?
		vm_pid=
		exit $rc
	fi
	while kill -0 "$vm_pid" 2>/dev/null; do
		say "failover: protecting the restored VM again, to $to"
		"$self" run "${run_args[@]+"${run_args[@]}"}" "kvm:$sock" "$to" >/dev/null
		kill -0 "$vm_pid" 2>/dev/null || break
		sleep 2
	done
	wait "$vm_pid"
	local rc=$?
	vm_pid=
	exit $rc
}

cmd_failover() {
	[ $# -ge 1 ] || usage_die "failover: want DIR"
	case $1 in -*) usage_die "failover: want DIR first, got '$1'" ;; esac
	local dir=$1
	shift
	if [ "${1:-}" = --reprotect ]; then
		need_value "$@"
		case $2 in *:[0-9]*) ;; *) usage_die "--reprotect '$2': want HOST:PORT" ;; esac
		failover_reprotect "$dir" "$2" "${@:3}"
	fi
	# zd-vm checks the replica and its own flags (one line, exit 2-4).
	exec zd-vm --restore "$dir" "$@"
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
measure | demo) exec "$here/zd-$cmd" "$@" ;;
bench) cmd_bench "$@" ;;
-h | --help | help) usage ;;
-V | --version) echo "zd $ZD_VERSION" ;;
*) usage_die "unknown command '$cmd'" ;;
esac
