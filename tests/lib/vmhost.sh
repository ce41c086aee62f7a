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
# Plumbing:
#   - QEMU boots the uncompressed vmlinux (extracted once from the bzImage
#     into $BUILD/vmhost/) through its PVH entry, ~5 s faster under TCG than
#     the bzImage; the bzImage is the fallback.
#   - The base initramfs (busybox-static, the kvm/virtio/9p modules, /init)
#     is cached in $BUILD/vmhost/ and rebuilt when its inputs change (this
#     script, busybox, the kernel's modules). Each run appends a small cpio
#     with the command and its environment (and, in copy mode, the files).
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
ZD_TOP=${ZD_TOP:-$(cd "$(dirname "$VMHOST_SELF")/../.." && pwd)}
ZD_BIN=${ZD_BIN:-$ZD_TOP/bin}
BUILD=${BUILD:-build}
case $BUILD in /*) VMHOST_DIR=$BUILD/vmhost ;; *) VMHOST_DIR=$ZD_TOP/$BUILD/vmhost ;; esac

vmhost_usage() {
	echo "usage: vmhost.sh run [--timeout SEC] [--mem MB] [--cpus N] -- COMMAND..."
}
vmhost_err() { echo "vmhost: $*" >&2; }
vmhost_say() { [ "${ZD_VMHOST_VERBOSE:-0}" = 1 ] && echo "vmhost: $*" >&2; return 0; }

# Where the kernel QEMU boots comes from: KROOT/boot/vmlinuz-VER and
# KROOT/lib/modules/VER. KROOT is debroot.sh's unpacked tree when it holds
# a kernel (make deps as root unpacks one: nothing is installed on this
# machine for it), else "" (a kernel installed here).
# shellcheck source=debroot.sh
. "$(dirname "$VMHOST_SELF")/debroot.sh"
VMHOST_KROOT=
compgen -G "$DEBROOT_ROOT/boot/vmlinuz-*" >/dev/null && VMHOST_KROOT=$DEBROOT_ROOT

# A /dev/kvm that opens read-write is taken as working; whatever it lacks
# is for the tests to find out and report.
vmhost_host_kvm_ok() {
	[ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null
}

# The newest kernel under KROOT that has kvm-amd.ko next to it, or $ZD_VMHOST_KERNEL.
vmhost_find_kernel() {
	local v
	if [ -n "${ZD_VMHOST_KERNEL:-}" ]; then
		v=$ZD_VMHOST_KERNEL
	else
		v=$(for k in "$VMHOST_KROOT"/boot/vmlinuz-*; do
			[ -e "$k" ] || continue
			k=${k#"$VMHOST_KROOT"/boot/vmlinuz-}
			[ -e "$VMHOST_KROOT/lib/modules/$k/kernel/arch/x86/kvm/kvm-amd.ko" ] ||
				[ -e "$VMHOST_KROOT/lib/modules/$k/kernel/arch/x86/kvm/kvm-amd.ko.xz" ] && echo "$k"
		done | sort -V | tail -1)
	fi
	[ -n "$v" ] && [ -r "$VMHOST_KROOT/boot/vmlinuz-$v" ] && [ -d "$VMHOST_KROOT/lib/modules/$v" ] || return 1
	echo "$v"
}

# vmhost_kernel_image KVER: the image QEMU boots. Where it can, the
# uncompressed vmlinux inside the bzImage (cached in $VMHOST_DIR), booted
# through its PVH entry: that skips the real-mode setup and the in-guest xz
# decompression, which cost ~5 s under TCG. Else the bzImage itself.
vmhost_kernel_image() {
	local kver=$1 bz=$VMHOST_KROOT/boot/vmlinuz-$1 out off magic dec
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

# vmhost_mod_path KVER NAME: the module file's path relative to KROOT/lib/modules/KVER.
vmhost_mod_path() {
	awk -F: -v n="$2" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", f);
		gsub(/-/, "_", f); m = n; gsub(/-/, "_", m); if (f == m) { print $1; exit } }' \
		"$VMHOST_KROOT/lib/modules/$1/modules.dep"
}

# vmhost_mod_order KVER NAME...: module paths in load order, dependencies first.
vmhost_mod_order() {
	local kver=$1; shift
	awk -v want="$*" '
		{ split($0, a, ":"); deps[a[1]] = a[2]; f = a[1]; sub(/.*\//, "", f);
		  sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", f); gsub(/-/, "_", f); path[f] = a[1] }
		function load(p,   d, n, i) {
			if (p in done) return
			done[p] = 1
			n = split(deps[p], d, " ")
			for (i = n; i >= 1; i--) load(d[i])
			print p
		}
		END { n = split(want, w, " ")
		      for (i = 1; i <= n; i++) { m = w[i]; gsub(/-/, "_", m)
			if (!(m in path)) { print "missing:" w[i]; continue }
			load(path[m]) } }' "$VMHOST_KROOT/lib/modules/$kver/modules.dep"
}

# Modules the guest loads, in this order. kvm_amd last: a failure there is
# the one that matters and the init script reports it.
VMHOST_MODULES="virtio virtio_ring virtio_pci virtio_console 9pnet_virtio 9p kvm_amd"

# The guest's /init (busybox sh). Runs as PID 1: never exits, always ends
# with a status marker on the serial console and a poweroff.
vmhost_init_script() {
	cat <<'EOF'
#!/bin/sh
export PATH=/bin:/usr/bin:/usr/sbin:/sbin
con=/dev/ttyS0
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "$*" >$con; }
finish() { say "ZD-VMHOST-STATUS $1"; sync; poweroff -f; sleep 60; }
for m in $(cat /mod/order); do
	insmod "/mod/$m" 2>>/dev/kmsg || say "vmhost-guest: insmod $m failed"
done
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
EOF
}

# vmhost_copy_elf_deps STAGE FILE...: copy the shared libraries these ELF
# files need into STAGE at their own paths, plus the dynamic loader and
# libgcc_s (glibc dlopens it for pthread_cancel).
vmhost_copy_elf_deps() {
	local stage=$1; shift
	local f lib
	{
		for f in "$@"; do
			head -c 4 "$f" 2>/dev/null | grep -q ELF || continue
			ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\// { print $1 }'
		done
		ls /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib64/ld-linux-x86-64.so.2 2>/dev/null
	} | sort -u | while read -r lib; do
		mkdir -p "$stage$(dirname "$lib")"
		cp -L "$lib" "$stage$lib"
	done
}

# The base initramfs: busybox, the modules, /init. Cached by a key over its
# inputs; built in a temporary directory and renamed, so concurrent runs
# never see half a file.
vmhost_base_cpio() {
	local kver=$1
	local mods m key out stage
	mods=$(vmhost_mod_order "$kver" $VMHOST_MODULES) || return 1
	if echo "$mods" | grep -q '^missing:'; then
		vmhost_err "kernel $kver lacks modules: $(echo "$mods" | sed -n 's/^missing://p' | tr '\n' ' ')"
		return 1
	fi
	key=$({
		sha256sum "$VMHOST_SELF" /bin/busybox
		echo "$kver"
		for m in $mods; do stat -c '%n %s %Y' "$VMHOST_KROOT/lib/modules/$kver/$m"; done
	} | sha256sum | cut -c1-16)
	out=$VMHOST_DIR/base-$kver-$key.cpio
	if [ -s "$out" ]; then echo "$out"; return 0; fi
	vmhost_say "building $out"
	mkdir -p "$VMHOST_DIR"
	stage=$(mktemp -d "$VMHOST_DIR/stage.XXXXXX") || return 1
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,mod,newroot}
	cp /bin/busybox "$stage/bin/busybox"
	for m in $(/bin/busybox --list); do
		[ "$m" = busybox ] || ln -s busybox "$stage/bin/$m"
	done
	: >"$stage/mod/order"
	for m in $mods; do
		local base=${m##*/}
		case $base in
		*.ko.xz) xz -dc "$VMHOST_KROOT/lib/modules/$kver/$m" >"$stage/mod/${base%.xz}"; base=${base%.xz} ;;
		*.ko.zst) zstd -qdc "$VMHOST_KROOT/lib/modules/$kver/$m" >"$stage/mod/${base%.zst}"; base=${base%.zst} ;;
		*.ko.gz) gzip -dc "$VMHOST_KROOT/lib/modules/$kver/$m" >"$stage/mod/${base%.gz}"; base=${base%.gz} ;;
		*) cp "$VMHOST_KROOT/lib/modules/$kver/$m" "$stage/mod/$base" ;;
		esac || { rm -rf "$stage"; return 1; }
		echo "$base" >>"$stage/mod/order"
	done
	vmhost_init_script >"$stage/init"
	chmod 755 "$stage/init"
	(cd "$stage" && find . | sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp.$$" &&
		mv -f "$out.tmp.$$" "$out"
	local rc=$?
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
	local stage=$run/stage v
	mkdir -p "$stage/run/zd-vmhost"
	{
		echo "ZD_VMHOST_SHARE=$share"
		printf 'ZD_VMHOST_TOP=%q\n' "$ZD_TOP"
		printf 'ZD_VMHOST_BASH=%q\n' "$(command -v bash)"
		printf 'ZD_VMHOST_KROOT=%q\n' "$VMHOST_KROOT"
	} >"$stage/run/zd-vmhost/mode"
	{
		echo "# written by vmhost.sh on the host"
		printf 'export HOME=/root TERM=dumb\n'
		for v in ZD_TOP ZD_BIN PATH BUILD LANG LC_ALL CMOCKA_MESSAGE_OUTPUT CMOCKA_XML_FILE \
			ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS ${ZD_VMHOST_ENV:-} \
			$(compgen -e | grep '^ZD_' | grep -v '^ZD_VMHOST'); do
			[ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
		done
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
		for f in "$(command -v bash)" "$(command -v env)"; do
			mkdir -p "$stage$(dirname "$f")"
			cp -L "$f" "$stage$f"
			files+=("$f")
		done
		vmhost_copy_elf_deps "$stage" "${files[@]}"
		mkdir -p "$stage/lib64"
		[ -e /lib64/ld-linux-x86-64.so.2 ] && cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"
	fi
	(cd "$stage" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) >"$run/run.cpio" || return 1
	rm -rf "$stage"
}

# Only one emulated machine at a time on this host: two TCG guests on two
# cores each run at half speed and trip each other's timeouts. QEMU
# inherits the descriptor, so the lock is held until our QEMU is gone.
# ZD_QEMU_LOCK=none turns it off. xenhost.sh takes the same lock.
# vmhost_lock [WHO]: WHO names the waiter in the message.
vmhost_lock() {
	local path=${ZD_QEMU_LOCK:-/tmp/zd-qemu.lock}
	[ "$path" = none ] && return 0
	command -v flock >/dev/null || return 0
	exec 8>>"$path" || return 0
	flock -n 8 && return 0
	echo "${1:-vmhost}: waiting for another test's QEMU to finish (lock $path)" >&2
	flock 8
}

# vmhost_boot RUN SHARE KVER BASE TIMEOUT MEM CPUS -- COMMAND...
# Boots one guest. Returns the command's status, 124 on timeout, 125 when
# the guest gave no status, 126 when it could not mount 9p.
vmhost_boot() {
	local run=$1 share=$2 kver=$3 base=$4 timeout=$5 mem=$6 cpus=$7; shift 8
	local qpid tout terr rc t0 virtfs=() image
	vmhost_run_cpio "$run" "$share" "$@" || { vmhost_err "cannot build the run cpio"; return 125; }
	cat "$base" "$run/run.cpio" >"$run/initrd"
	: >"$run/stdout"; : >"$run/stderr"; : >"$run/console.log"
	if [ "$share" = 9p ]; then
		virtfs=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap,id=hostroot"
			-virtfs "local,path=$ZD_TOP,mount_tag=zd,security_model=none,multidevs=remap,id=zd")
	fi
	image=$(vmhost_kernel_image "$kver")
	vmhost_lock
	t0=$(date +%s.%N)
	qemu-system-x86_64 \
		-name zd-vmhost -machine q35 -accel tcg,thread=multi \
		-cpu qemu64,+svm,+npt,+ssse3,+sse4.1,+sse4.2,+popcnt \
		-smp "$cpus" -m "$mem" -nodefaults -display none -monitor none -no-reboot \
		-kernel "$image" -initrd "$run/initrd" \
		-append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4 mitigations=off no_timer_check tsc=reliable cryptomgr.notests" \
		-serial "file:$run/console.log" \
		-device virtio-serial-pci,id=vser \
		-chardev "file,id=zdout,path=$run/stdout" -device virtserialport,chardev=zdout,name=zd.out \
		-chardev "file,id=zderr,path=$run/stderr" -device virtserialport,chardev=zderr,name=zd.err \
		"${virtfs[@]}" </dev/null >"$run/qemu.log" 2>&1 &
	qpid=$!
	echo "$qpid" >"$run/qemu.pid"
	# An interrupted harness takes its own QEMU (and no other) with it.
	local old_traps
	old_traps=$(trap -p INT TERM HUP)
	trap "vmhost_abort $qpid $(printf %q "$run") 130" INT
	trap "vmhost_abort $qpid $(printf %q "$run") 143" TERM
	trap "vmhost_abort $qpid $(printf %q "$run") 129" HUP
	# Stream the command's output while it runs; tail ends with QEMU.
	tail -c +1 -s 0.2 -f --pid="$qpid" "$run/stdout" &
	tout=$!
	tail -c +1 -s 0.2 -f --pid="$qpid" "$run/stderr" >&2 &
	terr=$!
	local deadline=$((SECONDS + timeout)) timed_out=0 t_ready=
	while kill -0 "$qpid" 2>/dev/null; do
		[ -z "$t_ready" ] && grep -q '^ZD-VMHOST-READY' "$run/console.log" && t_ready=$(date +%s.%N)
		if [ "$SECONDS" -ge "$deadline" ]; then
			timed_out=1
			kill -TERM "$qpid" 2>/dev/null
			sleep 2
			kill -KILL "$qpid" 2>/dev/null
			break
		fi
		sleep 0.2
	done
	wait "$qpid" 2>/dev/null
	wait "$tout" "$terr" 2>/dev/null
	trap - INT TERM HUP
	eval "$old_traps"
	vmhost_say "$share guest: $(awk -v a="$t0" -v r="${t_ready:-0}" -v b="$(date +%s.%N)" \
		'BEGIN { if (r > 0) printf "booted in %.1f s, command ran %.1f s", r - a, b - r;
			 else printf "ran %.1f s", b - a }')$(sed -n 's/^ZD-VMHOST-READY uptime \([0-9.]*\).*/ (kernel uptime at start: \1 s)/p' "$run/console.log")"
	if [ $timed_out = 1 ]; then
		vmhost_err "timed out after $timeout s; killed QEMU (pid $qpid)"
		vmhost_tail "$run"
		return 124
	fi
	if grep -q '^ZD-VMHOST-NO9P' "$run/console.log"; then
		return 126
	fi
	rc=$(sed -n 's/^ZD-VMHOST-STATUS \([0-9]*\).*/\1/p' "$run/console.log" | tail -1)
	if [ -z "$rc" ]; then
		vmhost_err "the guest ended without a status (QEMU exit $(cat "$run/qemu.log" | tail -1))"
		vmhost_tail "$run"
		return 125
	fi
	grep '^vmhost-guest:' "$run/console.log" >&2
	return "$rc"
}

# vmhost_abort QEMU_PID RUN_DIR STATUS: on a signal, stop our QEMU and leave.
vmhost_abort() {
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	vmhost_err "interrupted; killed QEMU (pid $1)"
	[ "${ZD_VMHOST_KEEP:-0}" = 1 ] || rm -rf "$2"
	exit "$3"
}

vmhost_tail() {
	{
		echo "vmhost: last lines of the guest console ($1/console.log):"
		tr -d '\r' <"$1/console.log" | tail -15 | sed 's/^/  /'
		[ -s "$1/qemu.log" ] && sed 's/^/  qemu: /' "$1/qemu.log" | tail -5
	} >&2
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
	while [ $# -gt 0 ]; do
		case $1 in
		--timeout | --mem | --cpus)
			[ $# -ge 2 ] || { vmhost_err "$1 needs a value; $(vmhost_usage)"; return 2; }
			case $1 in --timeout) timeout=$2 ;; --mem) mem=$2 ;; --cpus) cpus=$2 ;; esac
			shift 2 ;;
		--) shift; break ;;
		*) vmhost_err "unknown option '$1'; $(vmhost_usage)"; return 2 ;;
		esac
	done
	local n
	for n in "$timeout" "$mem" "$cpus"; do
		case $n in '' | *[!0-9]* | 0*) vmhost_err "'$n' is not a positive whole number"; return 2 ;; esac
	done
	[ $# -gt 0 ] || { vmhost_err "no command given; $(vmhost_usage)"; return 2; }

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
	case ${1:-} in
	run) shift; vmhost_run "$@"; exit $? ;;
	-h | --help) vmhost_usage; exit 0 ;;
	*) vmhost_err "want the 'run' command; $(vmhost_usage)"; exit 2 ;;
	esac
fi
