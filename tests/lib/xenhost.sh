#!/usr/bin/env bash
# xenhost.sh — run a script in dom0 of a real Xen, booted in QEMU.
#
#   tests/lib/xenhost.sh run [--timeout SEC] -- SCRIPT [ARG...]
#
# The xen: target needs a Xen hypervisor, dom0 and a guest domain. Our
# build and CI machines have none, so this harness boots one (all Debian
# packages, unpacked into $BUILD/debroot by tests/lib/debroot.sh, never
# installed here; a machine that has them installed is used as it is):
#
#   QEMU (TCG, -cpu qemu64 + SVM + NPT) ── Xen 4.17 (xen-4.17-amd64.gz)
#       └── dom0: Debian's kernel + an initramfs built here, holding
#           busybox, bash, the Xen tools (xl, xenstored, xenconsoled,
#           xen-init-dom0, libxl-save-helper), ZD_TOP's bin/ and tests/,
#           $BUILD/tests/xen_*, every shared library they need (ldd, plus
#           ld-linux and libgcc_s: xl aborts without it), and /guest: the
#           same kernel and an initramfs with busybox, the xen-netfront
#           and xen-blkfront modules and tests/xen/guest_writer (a PVH
#           guest that keeps writing 8 MiB and serves "seq N" on TCP port
#           7777); its /init configures eth0 (10.77.0.2/24, or
#           ZD_GUEST_IP= on the guest's command line) when the domain has
#           a vif, and loads blkfront when it has a disk.
#
# dom0's network: the bridge xenbr0 at 10.77.0.1/24, no uplink; a guest
# created with vif="bridge=xenbr0,script=/zd/tests/xen/vif-zd" is on it
# (tests/xen/xenlib.sh). The modules output commit needs (ifb,
# sch_ingress, act_mirred, cls_matchall) are loaded; sch_plug is only
# copied to /mod/sch_plug.ko, so a test sees zd-track refuse without it
# before it loads it (tests/xen/netbuf.sh).
#
# dom0's /init loads the Xen modules, mounts xenfs, starts xenstored,
# xen-init-dom0 and xenconsoled, brings lo up, then runs
# "bash SCRIPT ARG..." in ZD_TOP (/zd in dom0) with ZD_XENHOST_GUEST=1 and
# XENHOST_GUEST_KERNEL / XENHOST_GUEST_INITRD set. SCRIPT's stdout and
# stderr come back line by line over dom0's console (hvc0 → Xen → serial);
# the harness prints them on its own stdout and stderr.
#
# Exit status: SCRIPT's own; 77 no Xen possible (one line on stdout says
# why: no qemu-system-x86_64, no xen-hypervisor-4.17-amd64 or xen-utils-4.17,
# no Debian kernel with the Xen modules); 124 --timeout hit (only our own
# QEMU is killed, by PID); 125 dom0 ended without a status (the console's
# tail goes to stderr); 2 usage.
#
# Costs on a 2-core machine: ~10 s to dom0's shell, ~20 s more for a PVH
# guest to boot. Everything inside runs under TCG: assert on counts and
# equality, never on absolute times.
#
# What it shares with vmhost.sh (the kernel and its modules, busybox, the
# libraries, the lock, starting and watching QEMU) is in tests/lib/qemuhost.sh.
#
# Environment: XENHOST_TIMEOUT (default 600), XENHOST_KEEP=1 keeps the run
# directory ($BUILD/xenhost/run.*: console log, initramfs), XENHOST_VERBOSE=1
# says on stderr what it does and how long the boot took.
set -u

XENHOST_SELF=$(readlink -f "${BASH_SOURCE[0]}")
# Where the kernel comes from (QEMUHOST_KROOT: debroot.sh's unpacked tree,
# else this machine) is qemuhost.sh's. Xen and its tools come from the
# same place.
# shellcheck source=qemuhost.sh
. "$(dirname "$XENHOST_SELF")/qemuhost.sh"
XENHOST_DIR=$(qemuhost_dir xenhost)
XEN_ROOT=
[ -r "$DEBROOT_ROOT/boot/xen-4.17-amd64.gz" ] && XEN_ROOT=$DEBROOT_ROOT
XEN_GZ=${XENHOST_XEN:-$XEN_ROOT/boot/xen-4.17-amd64.gz}
# The tools' directory in dom0; on this machine they are under XEN_ROOT.
XEN_TOOLS=/usr/lib/xen-4.17/bin

xenhost_err() { echo "xenhost: $*" >&2; }
xenhost_say() { [ "${XENHOST_VERBOSE:-0}" = 1 ] && echo "xenhost: $*" >&2; return 0; }
xenhost_usage() { echo "usage: xenhost.sh run [--timeout SEC] -- SCRIPT [ARG...]"; }

XENHOST_MODULES="xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-netback bridge \
ifb sch_ingress act_mirred cls_matchall xen-blkback loop dm-mod dm-log-writes"
# Copied into dom0's /mod, not loaded: the tests load them when they want.
XENHOST_MODULES_LATER="sch_plug"
# The guest's (its initramfs /lib).
XENHOST_GUEST_MODULES="xen-netfront xen-blkfront"

# The newest Debian kernel whose modules include the Xen ones.
xenhost_find_kernel() {
	qemuhost_find_kernel xen-privcmd
}

# Succeeds, printing the reason, when no Xen can be booted here.
xenhost_why_not() {
	local t
	if ! command -v qemu-system-x86_64 >/dev/null; then
		echo "no qemu-system-x86_64 (Debian qemu-system-x86): Xen tests skipped"
	elif [ ! -r "$XEN_GZ" ]; then
		echo "no $XEN_GZ (Debian xen-hypervisor-4.17-amd64; make deps unpacks it into $BUILD/debroot): Xen tests skipped"
	elif for t in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
		[ -x "$XEN_ROOT$XEN_TOOLS/$t" ] || exit 0; done; false; then
		echo "no Xen tools in $XEN_ROOT$XEN_TOOLS (Debian xen-utils-4.17): Xen tests skipped"
	elif [ ! -x /bin/busybox ] || ! command -v cpio >/dev/null; then
		echo "no busybox-static or cpio: Xen tests skipped"
	elif [ -z "$(xenhost_find_kernel)" ]; then
		echo "no Debian kernel with the Xen modules (make deps unpacks one into $BUILD/debroot): Xen tests skipped"
	elif ! command -v cc >/dev/null; then
		echo "no C compiler for the guest's /init: Xen tests skipped"
	else
		return 1
	fi
}

# dom0's /init (busybox sh, PID 1): always ends with a status marker on the
# console and a poweroff, which makes Xen switch the machine off and QEMU exit.
xenhost_init_script() {
	qemuhost_init_head /bin:/sbin:/usr/bin:/usr/sbin:/usr/lib/xen-4.17/bin /dev/hvc0 \
		ZD-XENHOST-STATUS xenhost-dom0
	cat <<'EOF'
mkdir -p /dev/pts /dev/shm /run /tmp /var/run/xen /var/lib/xen /var/log/xen /var/lib/xenstored /run/xenstored
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
ln -sf /proc/self/fd /dev/fd
mount -t tmpfs run /run
mkdir -p /run/xen /run/xenstored
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t xenfs xenfs /proc/xen || { say "xenhost-dom0: cannot mount xenfs (not running on Xen?)"; finish 125; }
xenstored --pid-file=/run/xenstored.pid >/dev/null 2>&1 || { say "xenhost-dom0: xenstored failed"; finish 125; }
xen-init-dom0 >/dev/null 2>&1 || say "xenhost-dom0: xen-init-dom0 failed"
xenconsoled --log=guest --log-dir=/var/log/xen || say "xenhost-dom0: xenconsoled failed"
ip link set lo up
# The guests' network (tests/xen/vif-zd adds each vif): no uplink.
if brctl addbr xenbr0 2>/dev/null; then
	brctl setfd xenbr0 0
	ip addr add 10.77.0.1/24 dev xenbr0
	ip link set xenbr0 up
else
	say "xenhost-dom0: cannot create the bridge xenbr0"
fi
hostname zd-xenhost
. /xenhost.env
say "ZD-XENHOST-READY uptime $(cut -d' ' -f1 /proc/uptime)"
cd "$ZD_TOP"
# Each line of the script's stdout and stderr goes to the console tagged,
# so the host can tell them from the kernel's and Xen's messages.
tag() { while IFS= read -r l; do echo "$1| $l"; done >$con; }
{ { bash "$@"; echo $? >/tmp/xenhost.rc; } 2>&1 1>&3 | tag ZDE; } 3>&1 | tag ZDO
finish "$(cat /tmp/xenhost.rc 2>/dev/null || echo 125)"
EOF
}

# The guest's /init: busybox sh. With a vif (xl's vif=), netfront and eth0
# at ZD_GUEST_IP; with a disk (disk=), blkfront (/dev/xvda); then
# guest_writer, which writes memory and serves.
xenhost_guest_init() {
	cat <<'GEOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
ip link set lo up
mkdir -p /dev && mount -t devtmpfs dev /dev 2>/dev/null
# A front end only for the devices the domain has (xl's vif=, disk=):
# a guest without them stays as small as it was.
for m in $(cat /lib/mod.order); do
	case $m in
	xen-netfront.ko) [ -e /sys/bus/xen/devices/vif-0 ] || continue ;;
	xen-blkfront.ko) ls /sys/bus/xen/devices | grep -q '^vbd-' || continue ;;
	esac
	insmod "/lib/$m"
done
if [ -e /sys/bus/xen/devices/vif-0 ]; then
	i=0
	while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	if ip addr add "${ZD_GUEST_IP:-10.77.0.2/24}" dev eth0 && ip link set eth0 up; then
		echo "ZD-GUEST-NET eth0 ${ZD_GUEST_IP:-10.77.0.2/24}"
	else
		echo "ZD-GUEST-NONET: eth0 did not come up"
	fi
fi
exec /bin/guest_writer
GEOF
}

# xenhost_initrd RUN KVER SCRIPT ARG...: dom0's initramfs, uncompressed (no
# decompression under TCG).
xenhost_initrd() {
	local run=$1 kver=$2; shift 2
	local stage=$run/stage files=() f d
	qemuhost_stage_busybox "$stage" || return 1
	mkdir -p "$stage"/{guest,etc/xen,var/log/xen}
	: >"$stage/mod/order"
	qemuhost_copy_mods xenhost "$kver" "$stage/mod" "$stage/mod/order" $XENHOST_MODULES || return 1
	qemuhost_copy_mods xenhost "$kver" "$stage/mod" "$stage/mod/later" $XENHOST_MODULES_LATER || return 1
	mkdir -p "$stage$XEN_TOOLS"
	for f in xl xenstored xenconsoled xen-init-dom0 libxl-save-helper; do
		cp -L "$XEN_ROOT$XEN_TOOLS/$f" "$stage$XEN_TOOLS/$f"
		files+=("$XEN_ROOT$XEN_TOOLS/$f")
	done
	cp "$XEN_ROOT/etc/xen/xl.conf" "$stage/etc/xen/" 2>/dev/null
	# xenstore-read/-write: the vif hotplug script (tests/xen/vif-zd);
	# xenstore-ls: the tests' diagnostics. /usr/bin/env: the script
	# tools' #! line (zd, zd-xen-disk).
	mkdir -p "$stage/usr/bin"
	ln -s /bin/busybox "$stage/usr/bin/env"
	for f in xenstore-read xenstore-write xenstore-ls; do
		cp -L "$XEN_ROOT/usr/bin/$f" "$stage/usr/bin/$f" || return 1
		files+=("$XEN_ROOT/usr/bin/$f")
	done
	# jq: zd-demo and the tests read zd-client's JSON with it; dmsetup:
	# zd-xen-disk (a guest's disk on a log-writes device).
	local shells=("$(command -v bash)" "$(command -v jq)" "$(command -v dmsetup)")
	qemuhost_stage_files "$stage" "${shells[@]}" || return 1
	files+=("${shells[@]}")
	# ZD_TOP: the tools, the tests, the test helpers built for Xen.
	for d in bin tests "$BUILD/tests"; do
		case $d in /*) ;; *) d=$ZD_TOP/$d ;; esac
		[ -d "$d" ] || continue
		mkdir -p "$stage/zd${d#"$ZD_TOP"}"
		case $d in
		*/tests) cp -a "$d/." "$stage/zd${d#"$ZD_TOP"}/" ;;
		*) for f in "$d"/*; do
			[ -f "$f" ] && [ -x "$f" ] || continue
			case $f in */bin/*|*/xen_*) ;; *) continue ;; esac
			cp -a "$f" "$stage/zd${d#"$ZD_TOP"}/"
			files+=("$f")
		   done ;;
		esac
	done
	# A script from outside tests/ (bench/xen_dom0.sh): it too.
	case $1 in
	tests/* | /*) ;;
	*) [ -f "$ZD_TOP/$1" ] && mkdir -p "$stage/zd/$(dirname "$1")" && cp "$ZD_TOP/$1" "$stage/zd/$1" ;;
	esac
	qemuhost_copy_elf_deps "$stage" "${files[@]}"
	# The guest: the same kernel, and an initramfs of busybox, netfront
	# and guest_writer.
	cp "$QEMUHOST_KROOT/boot/vmlinuz-$kver" "$stage/guest/vmlinuz"
	mkdir -p "$run/guest/bin" "$run/guest/lib" "$run/guest/proc" "$run/guest/sys"
	cp /bin/busybox "$run/guest/bin/busybox"
	: >"$run/guest/lib/mod.order"
	qemuhost_copy_mods xenhost "$kver" "$run/guest/lib" "$run/guest/lib/mod.order" $XENHOST_GUEST_MODULES || return 1
	cc -static -O2 -o "$run/guest/bin/guest_writer" "$ZD_TOP/tests/xen/guest_writer.c" || return 1
	xenhost_guest_init >"$run/guest/init"
	chmod 755 "$run/guest/init"
	qemuhost_cpio "$run/guest" "$stage/guest/initrd.cpio" || return 1
	{
		printf 'export ZD_TOP=/zd ZD_BIN=/zd/bin BUILD=%q HOME=/root TERM=dumb\n' "$BUILD"
		printf 'export ZD_XENHOST_GUEST=1 XENHOST_GUEST_KERNEL=/guest/vmlinuz XENHOST_GUEST_INITRD=/guest/initrd.cpio\n'
		qemuhost_exports '^ZD_(TOP|BIN)$'
		printf 'set --'
		printf ' %q' "$@"
		printf '\n'
	} >"$stage/xenhost.env"
	xenhost_init_script >"$stage/init"
	chmod 755 "$stage/init"
	qemuhost_cpio "$stage" "$run/dom0.cpio" || return 1
	rm -rf "$stage"
}

# xenhost_alive: xenhost_boot's check while QEMU runs. A crashed dom0
# leaves Xen idling ('noreboot'): stop at once.
xenhost_alive() {
	! grep -q 'Hardware Dom0 crashed\|Panic on CPU' "$run/console.log"
}

# xenhost_boot RUN KVER TIMEOUT: boot, relay the tagged lines, return the status.
xenhost_boot() {
	local run=$1 kver=$2 timeout=$3
	local t0 timed_out=0 rc relay
	gzip -dc "$XEN_GZ" >"$run/xen" || return 125
	# nice: KVM tests that time things share the machine.
	# dom0: 2 GiB. Its /tmp is in RAM and holds the replicas and their
	# journals, and zd-track in zddspt holds up to three copies of a
	# guest's memory at epoch 1 (seen: the OOM killer ended zd-track
	# in tests/xen/disk.sh with dom0 at 1280 MiB).
	qemuhost_start xenhost "$run" XENHOST_KEEP 19 2 3072 \
		-kernel "$run/xen" \
		-append "console=com1 com1=115200,8n1 dom0_mem=2048M,max:2048M loglvl=warning guest_loglvl=warning noreboot" \
		-initrd "$QEMUHOST_KROOT/boot/vmlinuz-$kver console=hvc0 earlyprintk=xen rdinit=/init quiet loglevel=4,$run/dom0.cpio"
	t0=$SECONDS
	# Relay the script's lines while it runs; tail ends with QEMU.
	qemuhost_follow "$run/console.log" |
		while IFS= read -r line; do
			line=${line%$'\r'}
			case $line in
			"ZDO| "*) printf '%s\n' "${line#ZDO| }" ;;
			"ZDE| "*) printf '%s\n' "${line#ZDE| }" >&2 ;;
			"ZD-XENHOST-READY"*) xenhost_say "dom0 ready after $((SECONDS - t0)) s" ;;
			esac
		done &
	relay=$!
	qemuhost_watch xenhost "$timeout" 0.5 xenhost_alive || timed_out=1
	wait "$relay" 2>/dev/null
	xenhost_say "QEMU ran $((SECONDS - t0)) s"
	if [ $timed_out = 1 ]; then
		qemuhost_tail xenhost console "$run" 25 '^ZD[OE]| '
		return 124
	fi
	rc=$(qemuhost_status "$run/console.log" ZD-XENHOST-STATUS)
	tr -d '\r' <"$run/console.log" | grep '^xenhost-dom0:' >&2
	if [ -z "$rc" ]; then
		xenhost_err "dom0 ended without a status"
		qemuhost_tail xenhost console "$run" 25 '^ZD[OE]| '
		return 125
	fi
	return "$rc"
}

xenhost_run() {
	local timeout=${XENHOST_TIMEOUT:-600}
	qemuhost_parse_run xenhost "$(xenhost_usage)" script timeout "$@" || return
	shift "$QEMUHOST_ARGS"
	local why kver run rc
	if why=$(xenhost_why_not); then
		echo "$why"
		return 77
	fi
	kver=$(xenhost_find_kernel)
	mkdir -p "$XENHOST_DIR"
	find "$XENHOST_DIR" -maxdepth 1 -name 'run.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null
	run=$(mktemp -d "$XENHOST_DIR/run.XXXXXX") || return 125
	if ! xenhost_initrd "$run" "$kver" "$@"; then
		xenhost_err "cannot build dom0's initramfs"
		rm -rf "$run"
		return 125
	fi
	xenhost_say "dom0 initramfs $(du -h "$run/dom0.cpio" | cut -f1), kernel $kver"
	xenhost_boot "$run" "$kver" "$timeout"
	rc=$?
	[ "${XENHOST_KEEP:-0}" = 1 ] && xenhost_err "run directory kept: $run" || rm -rf "$run"
	return "$rc"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	qemuhost_main xenhost xenhost_run xenhost_usage "$@"
fi
