#!/usr/bin/env bash
# Runs in dom0 (tests/lib/xenhost.sh): every check of the Xen suite, one
# after another in one boot of Xen (a boot costs minutes under QEMU TCG).
# tests/e2e/xen_replicate.sh starts it and reports the TAP of each part as
# its own (tap_relay adds up their plans). Exit 0 when every part did.
cd "$(dirname "$0")/../.." || exit 1
rc=0
# replicate.sh first: it is what the suite is for, and it ends by
# destroying its guest, so that unlogged.sh can create one of that name.
# service.sh and netbuf.sh: the guest with a vif (zdnet, zdnb), its
# service, and output commit; netbuf.sh wants sch_plug not yet loaded.
# standby.sh (its refusals, remus, and the standby made at takeover) and
# takeover.sh (every mode, three losses each, with a client) need room for
# two guests.
# disk.sh: a guest's disk on a log-writes device, replicated and taken
# over with its memory: one loss (SIGKILL) per mode (remus, buffered,
# zddspt) by default, ~10 min under TCG; ZD_XEN_DISK_KILLS=N for N each.
# takeover.sh: by default each mode once, each with another of the three
# losses (remus: the pipeline SIGKILLed, buffered: xl destroy of the
# primary, zddspt: a silent primary; ~5 min each under TCG, more when a
# retry is needed); ZD_XEN_TAKEOVER=1 runs every mode with every loss,
# one after another on the taken-over guest (~30 min), and demo.sh
# (zd demo --xen) too.
# Each part has a budget of wall-clock seconds (BUDGET below, about three
# times what it takes under TCG on 2 cores): one that overruns it is
# killed with everything it started, after what it was waiting on is
# printed (its processes, xl list, Xen's last lines), and counts as one
# failure. The parts after it still run, and the suite ends well inside
# xen_replicate.sh's XENHOST_TIMEOUT instead of at it, where nothing
# would say which step hung.
parts="tests/xen/replicate.sh tests/xen/unlogged.sh tests/xen/service.sh tests/xen/netbuf.sh tests/xen/standby.sh tests/xen/disk.sh tests/xen/takeover.sh"
[ "${ZD_XEN_TAKEOVER:-0}" = 1 ] && parts="$parts tests/xen/demo.sh"
declare -A BUDGET=([replicate]=1200 [unlogged]=420 [service]=900 [netbuf]=900 [standby]=1200
	[disk]=1500 [takeover]=1800 [demo]=1500)
[ "${ZD_XEN_TAKEOVER:-0}" = 1 ] && BUDGET[takeover]=5400

# tree_pids PID: PID and every process it started (dom0 has busybox ps).
tree_pids() {
	local c
	echo "$1"
	for c in $(ps -o pid,ppid | awk -v p="$1" '$2 == p {print $1}'); do tree_pids "$c"; done
}

# part_doing PID: what the part PID and its processes wait in, and xen's view.
part_doing() {
	local p
	for p in $(tree_pids "$1"); do
		printf '%s %s: %s\n' "$p" "$(cat "/proc/$p/wchan" 2>/dev/null)" \
			"$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160)"
	done
	echo "xl list:"; xl list 2>&1
	echo "xen's last lines:"; xl dmesg 2>&1 | grep -v '^(XEN) \*\*\*' | tail -n 8
}

# run_part SCRIPT [VAR=VALUE...]: run one part with its budget; its TAP
# goes to stdout as it comes. Status: the part's, or 124 when killed.
run_part() {
	local t=$1 name out fifo pid tee t0=$SECONDS budget n rc doing p
	shift
	name=$(basename "$t" .sh)
	budget=${BUDGET[$name]:-900}
	out=$(mktemp) fifo=$(mktemp -u)
	mkfifo "$fifo"
	tee "$out" <"$fifo" &
	tee=$!
	env "$@" bash "$t" >"$fifo" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - t0)) -lt "$budget" ]; do sleep 1; done
	if kill -0 "$pid" 2>/dev/null; then
		doing=$(part_doing "$pid")
		for p in $(tree_pids "$pid"); do kill -KILL "$p" 2>/dev/null; done
		wait "$pid" 2>/dev/null
		wait "$tee"
		n=$(grep -c '^ok \|^not ok ' "$out")
		echo "not ok $((n + 1)) - $name.sh ends within its budget of $budget s"
		printf 'killed after %s s; what it was doing:\n%s\n' "$((SECONDS - t0))" "$doing" | sed 's/^/#   /'
		# Its plan, if it printed none before it was killed, counts
		# what it did print and this line.
		if grep -q '^1\.\.' "$out"; then echo "1..1"; else echo "1..$((n + 1))"; fi
		rc=124
	else
		wait "$pid"
		rc=$?
		wait "$tee"
	fi
	echo "# $name.sh: $((SECONDS - t0)) s, exit $rc"
	rm -f "$out" "$fifo"
	return "$rc"
}

for t in $parts; do
	case $t in
	*/standby.sh) run_part "$t" ZD_XEN_MODES="${ZD_XEN_STANDBY_MODES:-remus}" || rc=1 ;;
	*/takeover.sh)
		if [ "${ZD_XEN_TAKEOVER:-0}" = 1 ]; then
			run_part "$t" || rc=1
		else
			run_part "$t" ZD_XEN_TRIES="${ZD_XEN_TRIES:-2}" \
				ZD_XEN_TAKEOVERS="${ZD_XEN_TAKEOVERS:-remus:kill buffered:destroy zddspt:silent}" || rc=1
		fi ;;
	*) run_part "$t" || rc=1 ;;
	esac
	# A part that stopped early may have left its guest (or standby) behind.
	for g in zdguest zdguest-standby zdnet zdnb zddemo zddemo-standby; do xl destroy "$g" >/dev/null 2>&1; done
done
exit $rc
