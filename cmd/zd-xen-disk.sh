#!/usr/bin/env bash
# zd-xen-disk: put a Xen guest's disk on a device-mapper log-writes target,
# so that zd-track xen:NAME,disk=/dev/mapper/zdlw-NAME replicates it
# (zd-xen-disk(1); zd-track(1), XEN DISKS).
#
#   zd-xen-disk create [--log FILE|DEV] [--log-size SIZE] NAME DISK
#   zd-xen-disk remove NAME
#   zd-xen-disk status NAME
#
# create: DISK (the guest's image file, or a block device) gets a loop
# device if it is a file; the log is FILE (made new and empty, of
# --log-size bytes, sparse; default DISK.zdlog, 1G) on a loop device, or a
# block device DEV (its first sector is cleared); then
#   dmsetup create zdlw-NAME --table "0 SECTORS log-writes DATADEV LOGDEV"
# and prints /dev/mapper/zdlw-NAME: the guest's xl config names it as its
# disk (target=/dev/mapper/zdlw-NAME). remove: the device, and the loop
# devices create made. status: dmsetup's status line (logged entries,
# the log's last sector used) and the log's size.
set -u
# Self-contained (a dom0 may have the tools without zd's share/ files):
# the few helpers of cmd/zd-common.bash it needs.
prog=zd-xen-disk
ZD_VERSION=0.1.0
die() { echo "$prog: $2" >&2; exit "$1"; }
say() { echo "$prog: $*" >&2; }
usage_die() { die 2 "$1 (try 'zd-xen-disk --help')"; }
need_value() { [ $# -ge 2 ] || usage_die "option '$1' needs a value"; }
is_count() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ] 2>/dev/null; }
wait_until() {
	local end=$((SECONDS + $1))
	shift
	while [ $SECONDS -le $end ]; do "$@" && return 0; sleep 0.1; done
	return 1
}

usage() {
	cat <<EOF
usage: zd-xen-disk create [--log FILE|DEV] [--log-size SIZE] NAME DISK
       zd-xen-disk remove NAME
       zd-xen-disk status NAME

Puts a Xen guest's disk on a device-mapper log-writes target, for
zd-track xen:NAME,disk=/dev/mapper/zdlw-NAME (man zd-xen-disk).

  create       DISK (a file gets a loop device) under /dev/mapper/zdlw-NAME,
               its writes logged to the log; prints the device's path
    --log FILE|DEV   the log: a file (made new, sparse) or a block device
                     (default: DISK.zdlog)
    --log-size SIZE  a log file's size, K/M/G suffixes (default 1G); every
                     write the guest makes while the device exists takes
                     its size plus one sector of the log
  remove       the device, and the loop devices create made
  status       logged entries and the log's last sector used
  -h, --help, -V, --version
EOF
}

# Without udev (a minimal dom0) libdevmapper makes the /dev/mapper nodes.
[ -e /run/udev/control ] || export DM_DISABLE_UDEV=1
dms() { dmsetup --noudevsync "$@"; }

# bytes SIZE: SIZE with a K/M/G suffix in bytes.
bytes() {
	case $1 in
	*[kK]) is_count "${1%?}" && echo $((${1%?} << 10)) ;;
	*[mM]) is_count "${1%?}" && echo $((${1%?} << 20)) ;;
	*[gG]) is_count "${1%?}" && echo $((${1%?} << 30)) ;;
	*) is_count "$1" && echo "$1" ;;
	esac
}

# loop_for FILE: a new loop device over FILE, its path.
loop_for() {
	local dev
	dev=$(losetup -f) || return 1
	losetup "$dev" "$1" || return 1
	echo "$dev"
}

# size_of PATH: a file's or a block device's size in bytes.
size_of() {
	if [ -b "$1" ]; then blockdev --getsize64 "$1"; else stat -L -c %s "$1"; fi
}

check_name() {
	case $1 in '' | *[!A-Za-z0-9_.-]*) usage_die "NAME '$1': letters, digits, '_', '.' and '-' only" ;; esac
}

create() {
	local log='' logsize=1G name disk data logdev sz made=()
	while [ $# -gt 0 ]; do
		case $1 in
		--log) need_value "$@"; log=$2; shift 2 ;;
		--log-size) need_value "$@"; logsize=$2; shift 2 ;;
		-*) usage_die "create: unknown option '$1'" ;;
		*) break ;;
		esac
	done
	[ $# = 2 ] || usage_die "create: want NAME DISK"
	name=$1 disk=$2
	check_name "$name"
	[ -f "$disk" ] || [ -b "$disk" ] || die 1 "create: $disk: no such file or block device"
	logsize=$(bytes "$logsize") || usage_die "--log-size '$logsize': want a size like 512M or 1G"
	[ -n "$log" ] || log=$disk.zdlog
	dms info "zdlw-$name" >/dev/null 2>&1 && die 1 "create: /dev/mapper/zdlw-$name exists (zd-xen-disk remove $name)"
	sz=$(size_of "$disk") || die 1 "create: cannot read the size of $disk"
	{ [ $((sz % 4096)) = 0 ] && [ "$sz" -gt 0 ]; } || die 1 "create: $disk is $sz bytes, want a multiple of 4096"
	# Undo what was made when a step fails.
	undo() { local d; for d in "${made[@]+"${made[@]}"}"; do losetup -d "$d" 2>/dev/null; done; }
	if [ -f "$disk" ]; then
		data=$(loop_for "$disk") || die 1 "create: no loop device for $disk (is the loop module loaded?)"
		made+=("$data")
	else
		data=$disk
	fi
	if [ -b "$log" ]; then
		# A log from an earlier run would be read as this one's.
		dd if=/dev/zero of="$log" bs=4096 count=1 conv=notrunc 2>/dev/null || { undo; die 1 "create: cannot clear $log"; }
		logdev=$log
	else
		rm -f "$log"
		{ : >"$log" && truncate -s "$logsize" "$log"; } 2>/dev/null || { undo; die 1 "create: cannot make the log file $log"; }
		logdev=$(loop_for "$log") || { undo; die 1 "create: no loop device for $log"; }
		made+=("$logdev")
	fi
	if ! dms create "zdlw-$name" --table "0 $((sz / 512)) log-writes $data $logdev" 2>"/tmp/zd-xen-disk.$$"; then
		undo
		die 1 "create: dmsetup create zdlw-$name: $(tail -n 1 "/tmp/zd-xen-disk.$$"; rm -f "/tmp/zd-xen-disk.$$") (is dm-log-writes loaded?)"
	fi
	rm -f "/tmp/zd-xen-disk.$$"
	# libdevmapper makes the node without udev; wait for it with udev.
	wait_until 5 test -b "/dev/mapper/zdlw-$name" || die 1 "create: /dev/mapper/zdlw-$name did not appear"
	# dm-log-writes logs writes at flushes; a queue without a write cache
	# (the data device has none) drops empty flushes before the target.
	local wc
	wc=/sys/dev/block/$(dms info -c --noheadings -o major,minor "zdlw-$name" | tr -d ' ')/queue/write_cache
	[ "$(cat "$wc" 2>/dev/null)" = "write back" ] || echo "write back" >"$wc" 2>/dev/null ||
		say "create: cannot set $wc to write back: zd-track will refuse the device"
	# blkback's persistent grants hide the guest's disk reads from
	# log-dirty; the parameter is dom0's, for every guest: only said.
	case $(cat /sys/module/xen_blkback/parameters/feature_persistent 2>/dev/null) in
	Y | 1) say "create: blkback's persistent grants are on: zd-track refuses a guest started so" \
		"(echo 0 > /sys/module/xen_blkback/parameters/feature_persistent first; man zd-xen-disk)" ;;
	esac
	echo "/dev/mapper/zdlw-$name"
}

# The loop devices of zdlw-NAME's table (MAJ:MIN words) that are loops.
table_loops() {
	local w dev
	for w in $(dms table "zdlw-$1" 2>/dev/null | awk '{print $4, $5}'); do
		[ -e "/sys/dev/block/$w/loop/backing_file" ] || continue
		dev=$(sed -n 's/^DEVNAME=//p' "/sys/dev/block/$w/uevent")
		[ -n "$dev" ] && echo "/dev/$dev"
	done
}

remove() {
	local loops l
	[ $# = 1 ] || usage_die "remove: want NAME"
	check_name "$1"
	dms info "zdlw-$1" >/dev/null 2>&1 || die 1 "remove: no device zdlw-$1"
	loops=$(table_loops "$1")
	dms remove "zdlw-$1" || die 1 "remove: dmsetup remove zdlw-$1 failed (is the guest still using it?)"
	for l in $loops; do losetup -d "$l" 2>/dev/null || say "remove: cannot detach $l"; done
	return 0
}

status() {
	[ $# = 1 ] || usage_die "status: want NAME"
	check_name "$1"
	local st
	st=$(dms status "zdlw-$1" 2>/dev/null) || die 1 "status: no device zdlw-$1"
	# "0 SECTORS log-writes ENTRIES LAST_SECTOR [logging_disabled]"
	echo "$st" | awk '{printf "entries %s, log sectors used %s%s\n", $4, $5 + 1, $6 ? " (" $6 ": the log is full, zd-track fails)" : ""}'
}

case ${1:-} in
create) shift; create "$@" ;;
remove) shift; remove "$@" ;;
status) shift; status "$@" ;;
-h | --help) usage ;;
-V | --version) echo "zd-xen-disk $ZD_VERSION" ;;
'') usage_die "want create, remove or status" ;;
*) usage_die "unknown command '$1'" ;;
esac
