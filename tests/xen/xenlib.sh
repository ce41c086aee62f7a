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

# xen_why NAME: what Xen and the guest's console say of domain NAME, as
# comment lines (a test's diagnostics when the guest does not answer).
xen_why() {
	echo "# xl list: $(xl list "$1" 2>&1 | tail -n 1)"
	xl dmesg 2>/dev/null | grep -v '^(XEN) \*\*\*' | tail -n 8 | sed 's/^/#   xen: /'
	tr -d '\r' <"/var/log/xen/guest-$1.log" 2>/dev/null | tail -n 15 | sed 's/^/#   guest: /'
}
xen_guest_up() {
	local name=$1 mem=${2:-96} i vif="" disk="" ready=ZD-GUEST-WRITING
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
	local try
	# A guest that stopped while it booted (the triple faults seen under
	# the emulation, see replicate.sh) or never said it writes is
	# destroyed and created again, up to 3 times, saying what Xen saw.
	for try in 1 2 3; do
		xl create -q "$TMP/$name.cfg" >"$TMP/$name.create" 2>&1 || { cat "$TMP/$name.create" >&2; return 1; }
		for i in $(seq 600); do
			grep -q "$ready" "/var/log/xen/guest-$name.log" 2>/dev/null && return 0
			xen_guest_stopped "$name" && break
			sleep 0.2
		done
		echo "# guest $name did not come up (try $try): $(xl list "$name" 2>&1 | tail -n 1)"
		xl dmesg 2>/dev/null | grep -v '^(XEN) \*\*\*' | tail -n 5 | sed 's/^/#   xen: /'
		tr -d '\r' <"/var/log/xen/guest-$name.log" 2>/dev/null | tail -n 5 | sed 's/^/#   guest: /'
		xl destroy "$name" 2>/dev/null
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
