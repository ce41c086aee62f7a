#!/usr/bin/env bash
# vmhost.sh — run a command where a working /dev/kvm exists.
#
#   tests/lib/vmhost.sh run [--timeout SEC] [--mem MB] [--cpus N] -- COMMAND...
#
# Our build and CI machines are themselves KVM guests (kvm_pvm) and often
# have no /dev/kvm at all. The KVM end-to-end tests still need a real one,
# so this harness brings its own:
#
#   1. /dev/kvm exists here and opens read-write: COMMAND runs directly.
#   2. Otherwise, with qemu-system-x86_64 and a Debian kernel (the one
#      tests/lib/debroot.sh unpacked into $BUILD/debroot, else one installed
#      here: boot/vmlinuz-VER plus lib/modules/VER with kvm-amd.ko), it boots
#      that kernel in QEMU TCG with an AMD CPU that offers SVM and nested
#      paging (-cpu qemu64,+svm,+npt,...). Inside, kvm_amd loads and gives a
#      real /dev/kvm: KVM runs on QEMU's emulated SVM. COMMAND runs in the
#      guest, in the caller's directory, with ZD_TOP, ZD_BIN, PATH, BUILD,
#      the sanitizer and cmocka settings and every other ZD_* variable.
#   3. Otherwise it prints one line and exits 77 (the automake "skip" code):
#      "no /dev/kvm and no qemu-system-x86_64: KVM tests skipped".
#
# What the command sees in the guest (9p mode, the default):
#   - the host's whole file tree, read-only, so bash, jq, python3 and every
#     library installed here are there; ZD_TOP read-write and shared, so
#     files it writes under ZD_TOP (e.g. $BUILD/...) are on the host after;
#   - its own /tmp, /run, /dev/shm (tmpfs), /proc, /sys, /dev (with /dev/kvm,
#     /dev/net/tun), loopback networking (lo up), hostname zd-vmhost, root;
#   - the modules of this kernel: modprobe works, and so do the kernel's
#     own module requests (Debian's kernel has sch_plug, veth, nf_tables,
#     tun...);
#     anything else it writes outside ZD_TOP fails (read-only) or is lost;
#   - stdin is /dev/null; ZD_VMHOST_GUEST=1 is set.
#   copy mode (ZD_VMHOST_SHARE=copy, or automatically when 9p fails): the
#   initramfs carries busybox, bash, env, ZD_TOP's bin/, tests/ and
#   $BUILD/tests/ with every shared library their ELF files need (ldd, plus
#   ld-linux and libgcc_s); nothing comes back but stdout, stderr, status.
#
# In a TAP test that needs KVM, source this file after tap.sh and call
#   vmhost_reexec_test "$0" "$@"
# It returns where /dev/kvm works (here, or already in the guest); otherwise
# it runs the whole script in a guest and exits with its status, or prints a
# TAP skip with the reason where no KVM can be had.
#
# Exit status of "run": COMMAND's own; 77 no KVM possible (one line on
# stdout says why); 124 --timeout hit (only our own QEMU is killed, by PID);
# 125 the guest ended without a status (the console's tail goes to stderr);
# 2 usage.
#
# Plumbing (what it shares with xenhost.sh is in tests/lib/qemuhost.sh):
#   - QEMU boots the uncompressed vmlinux (extracted once from the bzImage
#     into $BUILD/vmhost/) through its PVH entry, ~5 s faster under TCG than
#     the bzImage; the bzImage is the fallback.
#   - The base initramfs (busybox-static, the kvm/virtio/9p modules, /init)
#     is cached in $BUILD/vmhost/ and rebuilt when its inputs change (this
#     script, qemuhost.sh, busybox, the kernel's modules). Each run appends
#     a small cpio with the command and its environment (and, in copy mode,
#     the files).
#   - stdout and stderr travel on two virtio-serial ports to files the host
#     streams to its own stdout and stderr while the guest runs. The status
#     comes back as a marker on the serial console ("ZD-VMHOST-STATUS n").
#
# Costs measured on a 2-core build machine (noisy: other QEMUs were running):
# boot to the command ~6-10 s; nested KVM under TCG runs a guest loop at
# ~3 ns per iteration at CPL0 and CPL3 alike; one MMIO exit round trip
# ~60-75 us. Timing inside TCG is emulated: tests run this way must assert
# on counts and equality, never on absolute times.
#
# Environment:
#   ZD_VMHOST=auto|vm|host  auto (default) as above; vm forces the QEMU path
#                           even where /dev/kvm works; host never boots QEMU.
#   ZD_VMHOST_SHARE=auto|9p|copy   see above (default auto: 9p, else copy).
#   ZD_VMHOST_TIMEOUT, ZD_VMHOST_MEM, ZD_VMHOST_CPUS
#                           defaults of --timeout (600), --mem (2048),
#                           --cpus (2).
#   ZD_VMHOST_KERNEL=VER    the kernel version to boot (default: newest one
#                           with kvm-amd.ko).
#   ZD_VMHOST_ENV="A B"     more variables to pass into the guest.
#   ZD_VMHOST_KEEP=1        keep the run directory ($BUILD/vmhost/run.*):
#                           console log, stdout, stderr, the run cpio.
#   ZD_VMHOST_VERBOSE=1     say on stderr which path was taken and the times.
set -u

VMHOST_SELF=$(readlink -f "${BASH_SOURCE[0]}")
# shellcheck source=qemuhost.sh
. "$(dirname "$VMHOST_SELF")/qemuhost.sh"
ZD_BIN=${ZD_BIN:-$ZD_TOP/bin}
VMHOST_DIR=$(qemuhost_dir vmhost)

vmhost_usage() {
	echo "usage: vmhost.sh run [--timeout SEC] [--mem MB] [--cpus N] -- COMMAND..."
}
vmhost_err() { echo "vmhost: $*" >&2; }
vmhost_say() { [ "${ZD_VMHOST_VERBOSE:-0}" = 1 ] && echo "vmhost: $*" >&2; return 0; }

# A /dev/kvm that opens read-write is taken as working; whatever it lacks
# is for the tests to find out and report.
vmhost_host_kvm_ok() {
	[ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null
}

# The newest kernel under KROOT that has kvm-amd.ko among its modules, or
# $ZD_VMHOST_KERNEL.
vmhost_find_kernel() {
	local v=${ZD_VMHOST_KERNEL:-}
	[ -n "$v" ] || v=$(qemuhost_find_kernel kvm-amd) || return 1
	[ -r "$QEMUHOST_KROOT/boot/vmlinuz-$v" ] && [ -d "$QEMUHOST_KROOT/lib/modules/$v" ] || return 1
	echo "$v"
}

# vmhost_kernel_image KVER: the image QEMU boots. Where it can, the
# uncompressed vmlinux inside the bzImage (cached in $VMHOST_DIR), booted
# through its PVH entry: that skips the real-mode setup and the in-guest xz
# decompression, which cost ~5 s under TCG. Else the bzImage itself.
vmhost_kernel_image() {
	local kver=$1 bz=$QEMUHOST_KROOT/boot/vmlinuz-$1 out off magic dec
	out=$VMHOST_DIR/vmlinux-$kver
	if [ -s "$out" ] && [ "$out" -nt "$bz" ]; then echo "$out"; return; fi
	for magic in xz zstd gzip; do
		case $magic in
		xz) off=$(LC_ALL=C grep -obUa $'\xfd7zXZ' "$bz" | head -1); dec="xz -dc --single-stream" ;;
		zstd) off=$(LC_ALL=C grep -obUa $'\x28\xb5\x2f\xfd' "$bz" | head -1); dec="zstd -qdc" ;;
		gzip) off=$(LC_ALL=C grep -obUa $'\x1f\x8b\x08' "$bz" | head -1); dec="gzip -dc" ;;
		esac
		off=${off%%:*}
		[ -n "$off" ] && command -v "${dec%% *}" >/dev/null || continue
		mkdir -p "$VMHOST_DIR"
		tail -c +$((off + 1)) "$bz" | $dec >"$out.tmp.$$" 2>/dev/null
		# A PVH entry point is Xen ELF note 18 (XEN_ELFNOTE_PHYS32_ENTRY).
		if [ "$(head -c 4 "$out.tmp.$$" | od -An -c | tr -d ' ')" = '177ELF' ] &&
			readelf -n "$out.tmp.$$" 2>/dev/null | grep -q 'Xen.*(0x00000012)'; then
			mv -f "$out.tmp.$$" "$out"
			echo "$out"
			return
		fi
		rm -f "$out.tmp.$$"
	done
	echo "$bz"
}

# Modules the guest loads, in this order. kvm_amd last: a failure there is
# the one that matters and the init script reports it.
VMHOST_MODULES="virtio virtio_ring virtio_pci virtio_console 9pnet_virtio 9p kvm_amd"

# The guest's /init (busybox sh). Runs as PID 1: never exits, always ends
# with a status marker on the serial console and a poweroff.
vmhost_init_script() {
	qemuhost_init_head /bin:/usr/bin:/usr/sbin:/sbin /dev/ttyS0 ZD-VMHOST-STATUS vmhost-guest
	cat <<'IEOF'
[ -c /dev/kvm ] || say "vmhost-guest: no /dev/kvm after loading kvm_amd"
ip link set lo up
hostname zd-vmhost
. /run/zd-vmhost/mode
# The command's stdout/stderr: the virtio-serial ports named zd.out/zd.err.
out=; err=
for i in 1 2 3 4 5 6 7 8 9 10; do
	for p in /sys/class/virtio-ports/*; do
		[ -e "$p/name" ] || continue
		case $(cat "$p/name") in
		zd.out) out=/dev/${p##*/} ;;
		zd.err) err=/dev/${p##*/} ;;
		esac
	done
	[ -n "$out" ] && [ -n "$err" ] && [ -c "$out" ] && [ -c "$err" ] && break
	sleep 0.1
done
[ -n "$out" ] && [ -n "$err" ] || { say "vmhost-guest: no virtio-serial ports zd.out/zd.err"; finish 125; }
root=/
if [ "$ZD_VMHOST_SHARE" = 9p ]; then
	root=/newroot
	mkdir -p $root
	o=trans=virtio,version=9p2000.L,msize=262144
	if ! mount -t 9p -o $o,ro,cache=loose hostroot $root; then
		say "ZD-VMHOST-NO9P"; finish 125
	fi
	mount -t proc proc $root/proc
	mount -t sysfs sys $root/sys
	mount -t devtmpfs dev $root/dev
	mount -t tmpfs -o mode=1777 tmp $root/tmp
	mount -t tmpfs run $root/run
	# The tree last, over the fresh /tmp and /run: a checkout under /tmp
	# (a CI's clone) would be hidden by them otherwise.
	mkdir -p "$root$ZD_VMHOST_TOP" 2>/dev/null
	mount -t 9p -o $o,cache=mmap,access=any zd "$root$ZD_VMHOST_TOP" || { say "ZD-VMHOST-NO9P"; finish 125; }
	mkdir -p $root/dev/pts $root/dev/shm
	mount -t devpts devpts $root/dev/pts
	mount -t tmpfs -o mode=1777 shm $root/dev/shm
	cp -a /run/zd-vmhost $root/run/
	# The kernel's own module requests (a qdisc, a netfilter match) run
	# modprobe in this initramfs; send them to the host's modprobe and
	# KROOT/lib/modules, which match this kernel. (The test is -L too: it
	# is a symlink to an absolute path that only resolves inside $root.)
	if [ -e $root/sbin/modprobe ] || [ -L $root/sbin/modprobe ]; then
		printf '#!/bin/sh\nexec chroot %s /sbin/modprobe %s "$@"\n' $root \
			"${ZD_VMHOST_KROOT:+-d $ZD_VMHOST_KROOT}" >/bin/modprobe-root
		chmod 755 /bin/modprobe-root
		echo /bin/modprobe-root >/proc/sys/kernel/modprobe
	fi
else
	mkdir -p /tmp /dev/pts /dev/shm
	chmod 1777 /tmp
	mount -t devpts devpts /dev/pts
	mount -t tmpfs -o mode=1777 shm /dev/shm
fi
say "ZD-VMHOST-READY uptime $(cut -d' ' -f1 /proc/uptime)"
env -i chroot $root "$ZD_VMHOST_BASH" /run/zd-vmhost/cmd.sh </dev/null >"$out" 2>"$err"
finish $?
IEOF
}

# The base initramfs: busybox, the modules, /init. Cached by a key over its
# inputs; built in a temporary directory and renamed, so concurrent runs
# never see half a file.
vmhost_base_cpio() {
	local kver=$1
	local mods m key out stage rc
	mods=$(qemuhost_mod_order "$kver" $VMHOST_MODULES) || return 1
	key=$({
		sha256sum "$VMHOST_SELF" "$QEMUHOST_SELF" /bin/busybox
		echo "$kver"
		for m in $mods; do stat -c '%n %s %Y' "$QEMUHOST_KROOT/lib/modules/$kver/$m" 2>/dev/null; done
	} | sha256sum | cut -c1-16)
	out=$VMHOST_DIR/base-$kver-$key.cpio
	if [ -s "$out" ]; then echo "$out"; return 0; fi
	vmhost_say "building $out"
	mkdir -p "$VMHOST_DIR"
	stage=$(mktemp -d "$VMHOST_DIR/stage.XXXXXX") || return 1
	qemuhost_stage_busybox "$stage" && mkdir "$stage/newroot" && : >"$stage/mod/order" &&
		qemuhost_copy_mods vmhost "$kver" "$stage/mod" "$stage/mod/order" $VMHOST_MODULES &&
		vmhost_init_script >"$stage/init" && chmod 755 "$stage/init" &&
		qemuhost_cpio "$stage" "$out.tmp.$$" && mv -f "$out.tmp.$$" "$out"
	rc=$?
	rm -rf "$stage"
	[ $rc -eq 0 ] || { rm -f "$out.tmp.$$"; return 1; }
	# Older images are stale; keep recent ones a while for runs still reading
	# them. Stage and run directories of killed harnesses go after a day.
	find "$VMHOST_DIR" -maxdepth 1 -name 'base-*.cpio' ! -newer "$out" -mmin +60 -delete 2>/dev/null
	find "$VMHOST_DIR" -maxdepth 1 \( -name 'stage.*' -o -name 'run.*' \) -mmin +1440 \
		-exec rm -rf {} + 2>/dev/null
	echo "$out"
}

# The per-run cpio: the command and its environment as a bash script, and in
# copy mode the files the command needs.
vmhost_run_cpio() {
	local run=$1 share=$2; shift 2
	local stage=$run/stage
	mkdir -p "$stage/run/zd-vmhost"
	{
		echo "ZD_VMHOST_SHARE=$share"
		printf 'ZD_VMHOST_TOP=%q\n' "$ZD_TOP"
		printf 'ZD_VMHOST_BASH=%q\n' "$(command -v bash)"
		printf 'ZD_VMHOST_KROOT=%q\n' "$QEMUHOST_KROOT"
	} >"$stage/run/zd-vmhost/mode"
	{
		echo "# written by vmhost.sh on the host"
		printf 'export HOME=/root TERM=dumb\n'
		# shellcheck disable=SC2086 # ZD_VMHOST_ENV is a list of names
		qemuhost_exports '^ZD_VMHOST' ZD_TOP ZD_BIN PATH BUILD LANG LC_ALL \
			CMOCKA_MESSAGE_OUTPUT CMOCKA_XML_FILE ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS \
			${ZD_VMHOST_ENV:-}
		printf 'export ZD_VMHOST_GUEST=1\n'
		printf 'cd %q 2>/dev/null || cd %q || exit 125\n' "$PWD" "$ZD_TOP"
		printf 'exec'
		printf ' %q' "$@"
		printf '\n'
	} >"$stage/run/zd-vmhost/cmd.sh"
	if [ "$share" = copy ]; then
		local files=() f d
		for d in bin tests "$BUILD/tests"; do
			case $d in /*) ;; *) d=$ZD_TOP/$d ;; esac
			[ -d "$d" ] || continue
			mkdir -p "$stage$d"
			cp -a "$d/." "$stage$d/"
			while IFS= read -r f; do files+=("$f"); done < <(find "$d" -type f -perm -u+x)
		done
		local shells=("$(command -v bash)" "$(command -v env)")
		qemuhost_stage_files "$stage" "${shells[@]}"
		files+=("${shells[@]}")
		qemuhost_copy_elf_deps "$stage" "${files[@]}"
	fi
	qemuhost_cpio "$stage" "$run/run.cpio" || return 1
	rm -rf "$stage"
}


# vmhost_ready: vmhost_boot's check while QEMU runs; notes in its t_ready
# when the guest's command started, for the verbose timings.
vmhost_ready() {
	[ -n "$t_ready" ] || ! grep -q '^ZD-VMHOST-READY' "$run/console.log" || t_ready=$(date +%s.%N)
	return 0
}

# vmhost_boot RUN SHARE KVER BASE TIMEOUT MEM CPUS -- COMMAND...
# Boots one guest. Returns the command's status, 124 on timeout, 125 when
# the guest gave no status, 126 when it could not mount 9p.
vmhost_boot() {
	local run=$1 share=$2 kver=$3 base=$4 timeout=$5 mem=$6 cpus=$7; shift 8
	local tout terr rc virtfs=() image t_ready='' timed_out=0
	vmhost_run_cpio "$run" "$share" "$@" || { vmhost_err "cannot build the run cpio"; return 125; }
	cat "$base" "$run/run.cpio" >"$run/initrd"
	: >"$run/stdout"; : >"$run/stderr"
	if [ "$share" = 9p ]; then
		virtfs=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot"
			-virtfs "local,path=$ZD_TOP,mount_tag=zd,security_model=none,multidevs=remap,id=zd")
	fi
	image=$(vmhost_kernel_image "$kver")
	qemuhost_start vmhost "$run" ZD_VMHOST_KEEP 0 "$cpus" "$mem" \
		-kernel "$image" -initrd "$run/initrd" \
		-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4 mitigations=off no_timer_check tsc=reliable cryptomgr.notests" \
		-device virtio-serial-pci,id=vser \
		-chardev "file,id=zdout,path=$run/stdout" -device virtserialport,chardev=zdout,name=zd.out \
		-chardev "file,id=zderr,path=$run/stderr" -device virtserialport,chardev=zderr,name=zd.err \
		"${virtfs[@]}"
	# Stream the command's output while it runs; tail ends with QEMU.
	qemuhost_follow "$run/stdout" &
	tout=$!
	qemuhost_follow "$run/stderr" >&2 &
	terr=$!
	qemuhost_watch vmhost "$timeout" 0.2 vmhost_ready || timed_out=1
	wait "$tout" "$terr" 2>/dev/null
	vmhost_say "$share guest: $(awk -v a="$QEMUHOST_T0" -v r="${t_ready:-0}" -v b="$(date +%s.%N)" \
		'BEGIN { if (r > 0) printf "booted in %.1f s, command ran %.1f s", r - a, b - r;
			 else printf "ran %.1f s", b - a }')$(sed -n 's/^ZD-VMHOST-READY uptime \([0-9.]*\).*/ (kernel uptime at start: \1 s)/p' "$run/console.log")"
	if [ $timed_out = 1 ]; then
		qemuhost_tail vmhost "guest console" "$run" 15
		return 124
	fi
	if grep -q '^ZD-VMHOST-NO9P' "$run/console.log"; then
		return 126
	fi
	rc=$(qemuhost_status "$run/console.log" ZD-VMHOST-STATUS)
	if [ -z "$rc" ]; then
		vmhost_err "the guest ended without a status (QEMU exit $(tail -1 "$run/qemu.log"))"
		qemuhost_tail vmhost "guest console" "$run" 15
		return 125
	fi
	grep '^vmhost-guest:' "$run/console.log" >&2
	return "$rc"
}

# vmhost_why_not: succeeds, printing the reason, when no guest can be booted.
vmhost_why_not() {
	if [ "${ZD_VMHOST:-auto}" = host ] || ! command -v qemu-system-x86_64 >/dev/null; then
		echo "no /dev/kvm and no qemu-system-x86_64: KVM tests skipped"
	elif ! vmhost_find_kernel >/dev/null; then
		echo "no /dev/kvm and no Debian kernel with kvm-amd.ko (make deps unpacks one into $BUILD/debroot): KVM tests skipped"
	else
		return 1
	fi
}

# vmhost_reexec_test SCRIPT [ARG...]: see the top of this file.
vmhost_reexec_test() {
	local why
	[ -n "${ZD_VMHOST_GUEST:-}" ] && return 0
	[ "${ZD_VMHOST:-auto}" != vm ] && vmhost_host_kvm_ok && return 0
	if why=$(vmhost_why_not); then
		echo "ok 1 - needs /dev/kvm # SKIP $why"
		echo "1..1"
		exit 0
	fi
	vmhost_run -- bash "$@"
	exit $?
}

vmhost_run() {
	local timeout=${ZD_VMHOST_TIMEOUT:-600} mem=${ZD_VMHOST_MEM:-2048} cpus=${ZD_VMHOST_CPUS:-2}
	qemuhost_parse_run vmhost "$(vmhost_usage)" command "timeout mem cpus" "$@" || return
	shift "$QEMUHOST_ARGS"

	local mode=${ZD_VMHOST:-auto}
	case $mode in auto | vm | host) ;; *) vmhost_err "ZD_VMHOST='$mode': want auto, vm or host"; return 2 ;; esac
	if [ "$mode" != vm ] && vmhost_host_kvm_ok; then
		vmhost_say "/dev/kvm works here: running directly"
		"$@"
		return
	fi
	local why kver
	if why=$(vmhost_why_not); then
		echo "$why"
		return 77
	fi
	kver=$(vmhost_find_kernel)
	local base
	base=$(vmhost_base_cpio "$kver") || { vmhost_err "cannot build the initramfs"; return 125; }

	local share=${ZD_VMHOST_SHARE:-auto} run rc
	case $share in auto | 9p | copy) ;; *) vmhost_err "ZD_VMHOST_SHARE='$share': want auto, 9p or copy"; return 2 ;; esac
	run=$(mktemp -d "$VMHOST_DIR/run.XXXXXX") || return 125
	if [ "$share" != copy ]; then
		vmhost_boot "$run" 9p "$kver" "$base" "$timeout" "$mem" "$cpus" -- "$@"
		rc=$?
		if [ $rc = 126 ]; then
			[ "$share" = 9p ] && { vmhost_err "the guest could not mount the 9p shares"; rc=125; }
			[ "$share" = auto ] && { vmhost_say "no 9p in the guest: copy mode"; share=copy; }
		fi
	fi
	if [ "$share" = copy ]; then
		vmhost_boot "$run" copy "$kver" "$base" "$timeout" "$mem" "$cpus" -- "$@"
		rc=$?
	fi
	[ "${ZD_VMHOST_KEEP:-0}" = 1 ] && vmhost_err "run directory kept: $run" || rm -rf "$run"
	return "$rc"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	qemuhost_main vmhost vmhost_run vmhost_usage "$@"
fi
