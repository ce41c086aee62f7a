# shellcheck shell=bash
# qemuhost.sh — what the two QEMU test hosts share: tests/lib/vmhost.sh
# (a Debian kernel with nested KVM) and tests/lib/xenhost.sh (Xen with that
# kernel as dom0) source this file and keep only what is their own.
#
# Both boot Debian's kernel (the one tests/lib/debroot.sh unpacked into
# $BUILD/debroot, else one installed here) in QEMU TCG with an AMD CPU
# that offers SVM and nested paging, from an initramfs built here of
# busybox, the kernel's modules and a busybox /init that ends by writing
# "ZD-<NAME>-STATUS n" on the console and powering off. The host streams
# the command's output while QEMU runs, kills only its own QEMU (by PID)
# on a timeout or a signal, and reads the status back from the console.
#
#   where things come from and go
#     qemuhost_dir NAME          $BUILD/NAME, the harness's cache and runs
#     QEMUHOST_KROOT             the tree holding boot/vmlinuz-VER and
#                                lib/modules/VER: debroot.sh's, or "" (here)
#     qemuhost_find_kernel MOD   the newest kernel whose modules include MOD
#     qemuhost_mod_path KVER MOD, qemuhost_mod_order KVER MOD...
#   building an initramfs
#     qemuhost_stage_busybox STAGE        busybox and its applet links
#     qemuhost_copy_mods WHO KVER DIR ORDER MOD...
#                                         modules + dependencies, uncompressed
#     qemuhost_stage_files STAGE FILE...  files at their own paths
#     qemuhost_copy_elf_deps STAGE FILE...  the shared libraries they need
#     qemuhost_init_head PATH CONSOLE MARKER WHO   the head of a /init
#     qemuhost_exports EXCLUDE VAR...     the caller's environment as exports
#     qemuhost_cpio DIR OUT               DIR as a newc archive
#   running QEMU
#     qemuhost_parse_run WHO USAGE NOUN "OPTS" ARG...   run's options
#     qemuhost_lock WHO          one emulated machine at a time
#     qemuhost_start WHO RUN KEEPVAR NICE CPUS MEM QEMU_ARG...
#                                (takes the lock; sets QEMUHOST_PID)
#     qemuhost_follow FILE, qemuhost_watch WHO TIMEOUT INTERVAL [CHECK]
#     qemuhost_status FILE MARKER, qemuhost_tail WHO WHAT RUN LINES [DROP]
#     qemuhost_main WHO RUN_FN USAGE_FN ARG...   the command line
#
# Exit codes, as both harnesses document them: the command's own; 77 no
# host can be booted (one line on stdout says why); 124 --timeout hit; 125
# the guest ended without a status; 2 usage.

QEMUHOST_SELF=$(readlink -f "${BASH_SOURCE[0]}")
ZD_TOP=${ZD_TOP:-$(cd "$(dirname "$QEMUHOST_SELF")/../.." && pwd)}
BUILD=${BUILD:-build}

# qemuhost_dir NAME: the harness's own directory under $BUILD.
qemuhost_dir() {
	case $BUILD in /*) echo "$BUILD/$1" ;; *) echo "$ZD_TOP/$BUILD/$1" ;; esac
}

# Where the kernel QEMU boots comes from: KROOT/boot/vmlinuz-VER and
# KROOT/lib/modules/VER. KROOT is debroot.sh's unpacked tree when it holds
# a kernel (make deps as root unpacks one: nothing is installed on this
# machine for it), else "" (a kernel installed here).
# shellcheck source=debroot.sh
. "$(dirname "$QEMUHOST_SELF")/debroot.sh"
QEMUHOST_KROOT=
compgen -G "$DEBROOT_ROOT/boot/vmlinuz-*" >/dev/null && QEMUHOST_KROOT=$DEBROOT_ROOT

# qemuhost_mod_path KVER NAME: the module file's path relative to
# KROOT/lib/modules/KVER ("-" and "_" are the same in a name).
qemuhost_mod_path() {
	awk -F: -v n="$2" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", f);
		gsub(/-/, "_", f); m = n; gsub(/-/, "_", m); if (f == m) { print $1; exit } }' \
		"$QEMUHOST_KROOT/lib/modules/$1/modules.dep"
}

# qemuhost_mod_order KVER NAME...: module paths in load order, dependencies
# first; "missing:NAME" for a module the kernel does not have.
qemuhost_mod_order() {
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
			load(path[m]) } }' "$QEMUHOST_KROOT/lib/modules/$kver/modules.dep"
}

# qemuhost_find_kernel MODULE: the newest kernel under KROOT that has an
# image and MODULE among its modules; fails when there is none.
qemuhost_find_kernel() {
	local k v
	v=$(for k in "$QEMUHOST_KROOT"/boot/vmlinuz-*; do
		[ -r "$k" ] || continue
		k=${k#"$QEMUHOST_KROOT"/boot/vmlinuz-}
		[ -n "$(qemuhost_mod_path "$k" "$1" 2>/dev/null)" ] && echo "$k"
	done | sort -V | tail -1)
	[ -n "$v" ] && echo "$v"
}

# qemuhost_copy_mods WHO KVER DIR ORDER NAME...: the modules NAME and what
# they need, uncompressed, into DIR; their file names in load order
# appended to the file ORDER. A missing module fails, saying which.
qemuhost_copy_mods() {
	local who=$1 kver=$2 dir=$3 order=$4 mods m base src
	shift 4
	mods=$(qemuhost_mod_order "$kver" "$@") || return 1
	case $mods in *missing:*)
		echo "$who: kernel $kver lacks modules: $(echo "$mods" | sed -n 's/^missing://p' | tr '\n' ' ')" >&2
		return 1 ;;
	esac
	for m in $mods; do
		src=$QEMUHOST_KROOT/lib/modules/$kver/$m base=${m##*/}
		case $base in
		*.ko.xz) base=${base%.xz}; xz -dc "$src" ;;
		*.ko.zst) base=${base%.zst}; zstd -qdc "$src" ;;
		*.ko.gz) base=${base%.gz}; gzip -dc "$src" ;;
		*) cat "$src" ;;
		esac >"$dir/$base" || return 1
		echo "$base" >>"$order"
	done
}

# qemuhost_stage_busybox STAGE: the directories an /init needs, and
# /bin/busybox (busybox-static) with a link for each of its applets.
qemuhost_stage_busybox() {
	local m
	mkdir -p "$1"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,mod} || return 1
	cp /bin/busybox "$1/bin/busybox" || return 1
	for m in $(/bin/busybox --list); do
		[ "$m" = busybox ] || ln -s busybox "$1/bin/$m"
	done
}

# qemuhost_stage_files STAGE FILE...: each FILE (a link: what it points
# to) into STAGE at its own path.
qemuhost_stage_files() {
	local stage=$1 f
	shift
	for f in "$@"; do
		mkdir -p "$stage$(dirname "$f")" && cp -L "$f" "$stage$f" || return 1
	done
}

# qemuhost_copy_elf_deps STAGE FILE...: copy the shared libraries these ELF
# files need into STAGE at their own paths, plus the dynamic loader and
# libgcc_s (glibc dlopens it for pthread_cancel; xl aborts without it).
qemuhost_copy_elf_deps() {
	local stage=$1 f lib
	shift
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

# qemuhost_init_head PATH CONSOLE MARKER WHO: the start of a busybox /init
# running as PID 1. It mounts /proc, /sys and /dev, defines say (a line on
# CONSOLE) and finish (the status marker "MARKER n", then poweroff: an
# /init never exits), and loads /mod/order's modules, saying "WHO: insmod
# M failed" for one that does not load.
qemuhost_init_head() {
	printf '#!/bin/sh\nexport PATH=%s\ncon=%s\n' "$1" "$2"
	cat <<'EOF'
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "$*" >$con; }
EOF
	printf 'finish() { say "%s $1"; sync; poweroff -f; sleep 60; }\n' "$3"
	printf 'for m in $(cat /mod/order); do\n'
	printf '\tinsmod "/mod/$m" 2>>/dev/kmsg || say "%s: insmod $m failed"\n' "$4"
	printf 'done\n'
}

# qemuhost_exports EXCLUDE [VAR...]: "export V=value" lines, quoted for
# bash, for each VAR that is set and for every exported ZD_* variable whose
# name the extended regex EXCLUDE does not match.
qemuhost_exports() {
	local exclude=$1 v
	shift
	for v in "$@" $(compgen -e | grep '^ZD_' | grep -Ev "$exclude"); do
		[ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"
	done
	return 0
}

# qemuhost_cpio DIR OUT: DIR's contents as a newc archive owned by root.
qemuhost_cpio() {
	(cd "$1" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --quiet) >"$2"
}

# Only one emulated machine at a time on this host: two TCG guests on two
# cores each run at half speed and trip each other's timeouts. QEMU
# inherits the descriptor, so the lock is held until our QEMU is gone.
# ZD_QEMU_LOCK=none turns it off.
# qemuhost_lock WHO: WHO names the waiter in the message.
qemuhost_lock() {
	local path=${ZD_QEMU_LOCK:-/tmp/zd-qemu.lock}
	[ "$path" = none ] && return 0
	command -v flock >/dev/null || return 0
	exec 8>>"$path" || return 0
	flock -n 8 && return 0
	echo "$1: waiting for another test's QEMU to finish (lock $path)" >&2
	flock 8
}

# qemuhost_parse_run WHO USAGE NOUN "NAME..." ARG...: the options of
# "WHO.sh run", --NAME VALUE for each NAME, up to "--". Each VALUE must be
# a positive whole number and goes into the caller's variable NAME (which
# holds its default); QEMUHOST_ARGS is then the count of ARGs used, and at
# least one must follow (NOUN: what it is, for the message). Returns 2 with
# a message on a usage error.
qemuhost_parse_run() {
	local who=$1 usage=$2 noun=$3 names=" $4 " n
	shift 4
	QEMUHOST_ARGS=$#
	while [ $# -gt 0 ]; do
		case $1 in
		--) shift; break ;;
		--*)
			n=${1#--}
			case $names in *" $n "*) ;; *) echo "$who: unknown option '$1'; $usage" >&2; return 2 ;; esac
			[ $# -ge 2 ] || { echo "$who: $1 needs a value; $usage" >&2; return 2; }
			printf -v "$n" %s "$2"
			shift 2 ;;
		*) echo "$who: unknown option '$1'; $usage" >&2; return 2 ;;
		esac
	done
	QEMUHOST_ARGS=$((QEMUHOST_ARGS - $#))
	for n in $names; do
		case ${!n} in
		'' | *[!0-9]* | 0*) echo "$who: '${!n}' is not a positive whole number" >&2; return 2 ;;
		esac
	done
	[ $# -gt 0 ] || { echo "$who: no $noun given; $usage" >&2; return 2; }
}

# qemuhost_start WHO RUN KEEPVAR NICE CPUS MEM QEMU_ARG...: takes the lock
# and starts QEMU (named zd-WHO, at niceness NICE) in the background with
# the emulated AMD CPU, the serial console in RUN/console.log and QEMU's
# own messages in RUN/qemu.log. Sets QEMUHOST_PID (also in RUN/qemu.pid)
# and QEMUHOST_T0 (when it started, in seconds with fractions). Until
# qemuhost_watch returns, INT, TERM and HUP kill that QEMU (and no other),
# remove RUN unless the variable KEEPVAR is 1, and exit 130, 143 or 129.
qemuhost_start() {
	local who=$1 run=$2 keepvar=$3 nice=$4 cpus=$5 mem=$6 pre=() qrun
	shift 6
	[ "$nice" = 0 ] || pre=(nice -n "$nice")
	: >"$run/console.log"
	qemuhost_lock "$who"
	# shellcheck disable=SC2034 # read by the harness
	QEMUHOST_T0=$(date +%s.%N)
	# nice execs QEMU, so $! is QEMU's own PID either way.
	"${pre[@]}" qemu-system-x86_64 \
		-name "zd-$who" -machine q35 -accel tcg,thread=multi \
		-cpu qemu64,+svm,+npt,+ssse3,+sse4.1,+sse4.2,+popcnt \
		-smp "$cpus" -m "$mem" -nodefaults -display none -monitor none -no-reboot \
		-serial "file:$run/console.log" \
		"$@" </dev/null >"$run/qemu.log" 2>&1 &
	QEMUHOST_PID=$!
	echo "$QEMUHOST_PID" >"$run/qemu.pid"
	QEMUHOST_OLD_TRAPS=$(trap -p INT TERM HUP)
	qrun=$(printf %q "$run")
	# shellcheck disable=SC2064 # the values are meant to be fixed now
	trap "qemuhost_abort $who $keepvar $QEMUHOST_PID $qrun 130" INT
	# shellcheck disable=SC2064
	trap "qemuhost_abort $who $keepvar $QEMUHOST_PID $qrun 143" TERM
	# shellcheck disable=SC2064
	trap "qemuhost_abort $who $keepvar $QEMUHOST_PID $qrun 129" HUP
}

# qemuhost_abort WHO KEEPVAR QEMU_PID RUN STATUS: on a signal, stop our
# QEMU and leave.
qemuhost_abort() {
	kill -KILL "$3" 2>/dev/null
	wait "$3" 2>/dev/null
	echo "$1: interrupted; killed QEMU (pid $3)" >&2
	[ "${!2:-0}" = 1 ] || rm -rf "$4"
	exit "$5"
}

# qemuhost_follow FILE: FILE from its start, as it grows, until our QEMU
# has exited.
qemuhost_follow() {
	tail -c +1 -s 0.2 -f --pid="$QEMUHOST_PID" "$1"
}

# qemuhost_watch WHO TIMEOUT INTERVAL [CHECK]: wait for our QEMU to exit,
# looking every INTERVAL seconds. CHECK, a function, runs at each look; when
# it fails, QEMU is killed at once (a guest that can only hang). At TIMEOUT
# seconds QEMU gets TERM, then KILL, and this says so and returns 124.
# Puts back the signal traps qemuhost_start replaced.
qemuhost_watch() {
	local who=$1 timeout=$2 interval=$3 check=${4:-} rc=0 deadline
	deadline=$((SECONDS + timeout))
	while kill -0 "$QEMUHOST_PID" 2>/dev/null; do
		if [ -n "$check" ] && ! "$check"; then
			kill -KILL "$QEMUHOST_PID" 2>/dev/null
			break
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			rc=124
			kill -TERM "$QEMUHOST_PID" 2>/dev/null
			sleep 2
			kill -KILL "$QEMUHOST_PID" 2>/dev/null
			break
		fi
		sleep "$interval"
	done
	wait "$QEMUHOST_PID" 2>/dev/null
	trap - INT TERM HUP
	eval "$QEMUHOST_OLD_TRAPS"
	[ $rc = 124 ] && echo "$who: timed out after $timeout s; killed QEMU (pid $QEMUHOST_PID)" >&2
	return $rc
}

# qemuhost_status FILE MARKER: the status number after the last "MARKER "
# on the console log FILE; nothing when there is none.
qemuhost_status() {
	tr -d '\r' <"$1" | sed -n "s/^$2 \([0-9]*\).*/\1/p" | tail -1
}

# qemuhost_tail WHO WHAT RUN LINES [DROP]: the last LINES lines of RUN's
# console (WHAT names it), without those matching the basic regex DROP,
# and QEMU's last messages, on stderr.
qemuhost_tail() {
	{
		echo "$1: last lines of the $2 ($3/console.log):"
		tr -d '\r' <"$3/console.log" | { if [ -n "${5:-}" ]; then grep -v "$5"; else cat; fi; } |
			tail -"$4" | sed 's/^/  /'
		[ -s "$3/qemu.log" ] && sed 's/^/  qemu: /' "$3/qemu.log" | tail -5
	} >&2
}

# qemuhost_main WHO RUN_FN USAGE_FN ARG...: WHO.sh's command line.
qemuhost_main() {
	local who=$1 run=$2 usage=$3
	shift 3
	case ${1:-} in
	run) shift; "$run" "$@"; exit $? ;;
	-h | --help) "$usage"; exit 0 ;;
	*) echo "$who: want the 'run' command; $("$usage")" >&2; exit 2 ;;
	esac
}
