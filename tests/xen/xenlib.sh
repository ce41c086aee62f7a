# Helpers for scripts running in dom0 under tests/lib/xenhost.sh.

# xen_guest_up NAME [MEM_MB]: create the PVH guest (tests/xen/guest_writer
# as its /init) and wait until it says it writes memory. XEN_GUEST_EXTRA
# goes on the guest kernel's command line (ZD_PROGRESS=1: guest_writer
# reports its progress).
xen_guest_up() {
	local name=$1 mem=${2:-96} i
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
CFG
	local try
	# A guest that stopped while it booted (the triple faults seen under
	# the emulation, see replicate.sh) or never said it writes is
	# destroyed and created again, up to 3 times, saying what Xen saw.
	for try in 1 2 3; do
		xl create -q "$TMP/$name.cfg" >"$TMP/$name.create" 2>&1 || { cat "$TMP/$name.create" >&2; return 1; }
		for i in $(seq 600); do
			grep -q ZD-GUEST-WRITING "/var/log/xen/guest-$name.log" 2>/dev/null && return 0
			xl list "$name" 2>/dev/null | awk 'NR == 2 && $5 ~ /[sc]/ {exit 1}' || break
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
