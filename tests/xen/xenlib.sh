# Helpers for scripts running in dom0 under tests/lib/xenhost.sh.

# xen_guest_up NAME [MEM_MB]: create the PVH guest (tests/xen/guest_writer
# as its /init) and wait until it says it writes memory. XEN_GUEST_EXTRA
# goes on the guest kernel's command line (ZD_PROGRESS=1: guest_writer
# reports its progress). XEN_GUEST_NET=1 gives the guest a vif on dom0's
# bridge xenbr0 (tests/lib/xenhost.sh) through our hotplug script
# tests/xen/vif-zd, and waits until its service listens at
# $XEN_GUEST_ADDR (10.77.0.2:7777, guest_writer's). XEN_GUEST_DISK: the
# guest's one disk, an xl disk spec (tests/xen/disk.sh: its log-writes
# device through our hotplug script tests/xen/block-zd).
XEN_GUEST_ADDR=10.77.0.2:7777
# xen_guest_stopped NAME: true when domain NAME is gone, or shut down or
# crashed by itself (xl list's state: s or c; under QEMU TCG the PVH guest
# now and then triple-faults, which Xen shows as a reboot: ---sr-).
xen_guest_stopped() {
	xl list "$1" 2>/dev/null | awk 'NR == 2 && $5 !~ /[sc]/ {up = 1} END {exit up}'
}

# track_saw_stop ERR: zd-track's stderr ERR says its guest stopped by
# itself (a domain that shut down, crashed or died); track_stop_reason
# ERR: the words it said it with.
track_saw_stop() { grep -q 'has shut down\|has crashed\|has died' "$1"; }
track_stop_reason() { grep -o 'domain [0-9]* has \(shut down\|crashed\|died\)[^;]*' "$1" | head -1; }

# xen_await_suspend NAME: wait (at most 120 s) until the guest's xenbus
# says it can suspend (control/feature-suspend): under TCG its user space
# can serve before that, and zd-track refuses a guest that has not said it.
xen_await_suspend() {
	local d t0=$SECONDS
	d=$(xl domid "$1" 2>/dev/null) || return 0
	while [ "$(xenstore-read "/local/domain/$d/control/feature-suspend" 2>/dev/null)" != 1 ]; do
		if [ $((SECONDS - t0)) -ge 120 ]; then
			echo "# guest $1 (domain $d): no control/feature-suspend after 120 s"
			return 0
		fi
		sleep 1
	done
}

# xen_why NAME: what Xen and the guest's console say of domain NAME, as
# comment lines (a test's diagnostics when the guest does not answer).
xen_why() {
	echo "# xl list: $(xl list "$1" 2>&1 | tail -n 1)"
	xl dmesg 2>/dev/null | grep -v '^(XEN) \*\*\*' | tail -n 14 | sed 's/^/#   xen: /'
	tr -d '\r' <"/var/log/xen/guest-$1.log" 2>/dev/null | tail -n 15 | sed 's/^/#   guest: /'
	# A standby renamed NAME logs under the name it was made with.
	tr -d '\r' <"/var/log/xen/guest-$1-standby.log" 2>/dev/null | grep -v 'ZD-GAP\|ZD-PROGRESS' | tail -n 25 |
		sed 's/^/#   standby: /'
}
xen_guest_up() {
	local name=$1 mem=${2:-96} vif="" disk="" ready=ZD-GUEST-WRITING
	[ -n "${XEN_GUEST_DISK:-}" ] && disk="disk = [ '$XEN_GUEST_DISK' ]"
	if [ "${XEN_GUEST_NET:-0}" = 1 ]; then
		vif="vif = [ \"mac=00:16:3e:7a:00:02,bridge=xenbr0,script=$ZD_TOP/tests/xen/vif-zd\" ]"
		ready=ZD-GUEST-SERVING
	fi
	cat >"$TMP/$name.cfg" <<CFG
name = "$name"
type = "pvh"
kernel = "$XENHOST_GUEST_KERNEL"
ramdisk = "$XENHOST_GUEST_INITRD"
extra = "console=hvc0 quiet loglevel=3 rdinit=/init ${XEN_GUEST_EXTRA:-}"
memory = $mem
vcpus = 1
on_reboot = "preserve"
on_crash = "preserve"
$vif
$disk
CFG
	local try t0
	# A guest that stopped while it booted (the triple faults seen under
	# the emulation, see replicate.sh) or never said it writes is
	# destroyed and created again, up to 3 times, saying what Xen saw.
	# The wait is by the clock: under QEMU TCG one `xl list` can take a
	# second, and a guest that spins without a word must cost 3 x 120 s,
	# not 3 x 600 polls.
	for try in 1 2 3; do
		# xl create waits for the hotplug scripts and the device
		# backends: bounded too, a create that hangs is a try that failed.
		timeout 180 xl create -q "$TMP/$name.cfg" >"$TMP/$name.create" 2>&1
		case $? in
		0) ;;
		124 | 143) echo "# guest $name: xl create still ran after 180 s (try $try)" ;;
		*) cat "$TMP/$name.create" >&2; return 1 ;;
		esac
		t0=$SECONDS
		while [ $((SECONDS - t0)) -lt 120 ]; do
			if grep -q "$ready" "/var/log/xen/guest-$name.log" 2>/dev/null; then
				xen_await_suspend "$name"
				return 0
			fi
			xen_guest_stopped "$name" && break
			sleep 0.2
		done
		echo "# guest $name did not come up in $((SECONDS - t0)) s (try $try): $(xl list "$name" 2>&1 | tail -n 1)"
		xl dmesg 2>/dev/null | grep -v '^(XEN) \*\*\*' | tail -n 5 | sed 's/^/#   xen: /'
		tr -d '\r' <"/var/log/xen/guest-$name.log" 2>/dev/null | tail -n 5 | sed 's/^/#   guest: /'
		timeout 120 xl destroy "$name" 2>/dev/null
		rm -f "/var/log/xen/guest-$name.log"
	done
	return 1
}

# recv_wait PID [SECONDS]: wait for the zd-recv PID, at most SECONDS (120);
# its status, or 124 after killing it. A zd-recv whose only connection
# came too late for its 2 s HEADER bound serves on even with --once: the
# pipeline's end must not become the test's.
recv_wait() {
	local i
	for i in $(seq $((${2:-120} * 5))); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$1" 2>/dev/null; then
		echo "# zd-recv $1 still runs ${2:-120} s after its stream: killed"
		kill "$1" 2>/dev/null
		wait "$1" 2>/dev/null
		return 124
	fi
	wait "$1"
}

# xen_took_over WHAT RC RECV_ERR: the TAP checks of one takeover by a Xen
# standby, from zd-recv's exit status RC and its -v stderr RECV_ERR:
# zd-recv took over exactly once (exit 0, one "taking over" line, the
# standby started once), and --verify found the standby's memory equal to
# the replica at the committed epoch before it started it.
xen_took_over() {
	local what=$1 rc=$2 err=$3 n_take n_run
	n_take=$(grep -c 'taking over at epoch' "$err")
	n_run=$(grep -c 'standby xen:.* running at epoch' "$err")
	if [ "$rc" = 0 ] && [ "$n_take" = 1 ] && [ "$n_run" = 1 ]; then
		ok "$what: zd-recv fenced the primary and started the standby, exactly once (exit 0)"
	else
		not_ok "$what: zd-recv fenced the primary and started the standby, exactly once" \
			"exit $rc, $n_take takeover(s), $n_run start(s): $(tail -n 6 "$err")"
	fi
	if grep -q "standby: --verify: memory = the replica's epoch" "$err"; then
		ok "$what: --verify: the standby's memory = the replica at the committed epoch, before it started"
	else
		not_ok "$what: --verify before the start" "$(grep -i 'verify\|standby' "$err" | tail -n 3)"
	fi
}

# xen_serving_guest NAME [UP...]: the TAP start of a script that needs a
# guest with a vif serving at $XEN_GUEST_ADDR, destroyed at exit. UP, run
# with XEN_GUEST_NET=1, brings it up: xen_guest_up NAME unless the script
# has its own (one that re-creates its guest passes the function it uses
# for that). One that does not come up is the emulation's, before zd
# touches it: the whole script is skipped, saying so.
xen_serving_guest() {
	local name=$1
	shift
	[ $# -eq 0 ] && set -- xen_guest_up "$name"
	if ! XEN_GUEST_NET=1 "$@"; then
		skip "a PVH guest with a vif boots and serves" "it did not come up in 3 tries under QEMU TCG (see the lines above)"
		done_testing
	fi
	at_exit "xl destroy $name"
	ok "a PVH guest with a vif boots and serves"
}

# jfield FILE KEY: a whole number in zd-client's one-line JSON summary.
jfield() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1"; }
