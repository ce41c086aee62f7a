#!/usr/bin/env bash
# Disk replication on real KVM: a guest with a disk taken over from the
# replica.
#
# zd-vm runs its disk workload (--disk FILE, --workload disk=RATE): each
# step writes a counter to a disk block and, in the same MMIO exit, to
# guest memory. The VM is protected (zd-track | zd-mru | zd-swap | zd-send
# -> zd-recv --verify, which also checks each epoch's disk checksum) and
# killed with SIGKILL at a random moment, pipeline and all; zd-recv takes
# over with zd-vm --restore on its replica, which reopens DIR/disk.img.
# Just before the restore (zd-recv --on-failover) the replica's disk.img
# and the counter in its memory.img are kept aside, and checked:
#   - disk and memory agree: the newest block on the disk is the write the
#     memory counts;
#   - the disk is, byte for byte, the primary's disk at that write (the
#     workload's disk after write N is a function of N: tests/lib/zddisk.py);
#   - the restored zd-vm says the same of the disk it reopened.
# The restored VM is then protected again by a fresh pipeline and replica
# and killed again: ZD_DISK_KILLS kills (default 21) over remus, buffered
# and zddspt. The disk is small (32 blocks), so blocks are rewritten within
# an epoch; buffered runs with a 64K write log, which overflows every
# epoch (its writes go as NODATA, read at the pause).
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 1

if ! have_kvm; then
	skip "disk failover of a KVM guest" "no /dev/kvm here"
	done_testing
fi
KILLS=${ZD_DISK_KILLS:-21}
MODES=${ZD_DISK_MODES:-remus buffered zddspt}
nmodes=$(echo "$MODES" | wc -w)

wait_for() {
	local end=$((SECONDS + $1))
	shift
	while [ $SECONDS -le $end ]; do "$@" && return 0; sleep 0.05; done
	return 1
}
gone() { ! kill -0 "$1" 2>/dev/null; }
commits() { grep -c 'epoch [0-9]* committed' "$1" 2>/dev/null || true; }
at_least() { [ "$(commits "$1")" -ge "$2" ] || gone "$3"; }
restored() { grep -qs 'restore: disk:' "$1" || gone "$2"; }

# cycle MODE K DIR: protect VM (pid $VM, socket $S) on a new replica, kill
# it, check the takeover. Sets VM to the restored one.
cycle() {
	local mode=$1 k=$2 d=$3 r=$3/rep$2 P want delay took line
	# The snapshot before the restored VM writes the disk in place.
	zd-recv --listen 127.0.0.1:0 --replica "$r" --verify -v \
		--on-failover "cp \"\$ZD_REPLICA/disk.img\" '$r.disk' &&
			dd if=\"\$ZD_REPLICA/memory.img\" of='$r.ctr' bs=8 skip=$((0xb020 / 8)) count=1 2>/dev/null &&
			exec zd-vm --restore \"\$ZD_REPLICA\" -v" 2>"$r.err" &
	local RECV=$!
	at_exit "kill $RECV"
	if ! wait_for 60 grep -qs 'listening on' "$r.err"; then
		not_ok "$mode kill $k: zd-recv listens" "$(tail -3 "$r.err")"
		return 1
	fi
	P=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$r.err" | head -1)
	setsid bash -c 'zd-track "kvm:$1" --mode "$2" --verify --interval 50 2>"$3.track" | zd-mru 2>"$3.mru" |
		zd-swap 2>"$3.swap" | zd-send "$4" >/dev/null 2>"$3.send"' _ "$S" "$mode" "$r" "$P" &
	local PIPE=$!
	at_exit "kill -KILL -- -$PIPE"
	want=$((1 + RANDOM % 4))
	delay=$(printf '0.%03d' $((RANDOM % 400)))
	if ! wait_for 120 at_least "$r.err" "$want" "$PIPE" || [ "$(commits "$r.err")" -lt "$want" ]; then
		not_ok "$mode kill $k: epochs commit" "$(tail -n 3 "$r.err" "$r.track" "$r.mru" "$r.swap" "$r.send")"
		kill "$RECV" 2>/dev/null
		kill -KILL -- "-$PIPE" 2>/dev/null
		return 1
	fi
	sleep "$delay"
	kill -STOP -- "-$PIPE"
	kill -KILL "$VM"
	wait "$VM" 2>/dev/null
	kill -KILL -- "-$PIPE"
	wait "$PIPE" 2>/dev/null
	if ! wait_for 120 restored "$r.err" "$RECV" || ! grep -q 'restore: disk:' "$r.err"; then
		not_ok "$mode kill $k: the backup takes over with the disk" "$(grep -v committed "$r.err" | tail -n 5)"
		kill "$RECV" 2>/dev/null
		return 1
	fi
	VM=$RECV
	took=$(sed -n 's/.*taking over at epoch \([0-9]*\).*/\1/p' "$r.err" | head -1)
	line=$(python3 tests/lib/zddisk.py check "$r.disk" "$r.ctr") || {
		not_ok "$mode kill $k: the replica's disk at epoch $took is the primary's, byte for byte, and agrees with memory" "$line"
		return 1
	}
	if ! grep -q 'restore: disk: .*: consistent' "$r.err"; then
		not_ok "$mode kill $k: the restored VM finds disk and memory agree" "$(grep 'restore: disk' "$r.err")"
		return 1
	fi
	echo "# $mode kill $k: after $want commit(s) + $delay s; taken over at epoch $took; $line"
	if ! wait_for 60 test -S "$S"; then
		not_ok "$mode kill $k: the restored VM serves its control socket" "$(tail -n 3 "$r.err")"
		return 1
	fi
	TAKEN=$((TAKEN + 1))
	return 0
}

i=0
for mode in $MODES; do
	i=$((i + 1))
	n=$((KILLS / nmodes + (i <= KILLS % nmodes ? 1 : 0)))
	d=$TMP/$mode
	mkdir -p "$d"
	S=$d/vm.sock
	truncate -s 128K "$d/disk.img"
	dlog=()
	[ "$mode" = buffered ] && dlog=(--disk-log 64K)
	zd-vm --control "$S" --mem 16M --workload dirty=2000,span=4M,disk=400 --disk "$d/disk.img" \
		"${dlog[@]}" 2>"$d/vm.err" &
	VM=$!
	at_exit "kill $VM"
	if ! wait_for 60 test -S "$S"; then
		not_ok "$mode: zd-vm starts with a disk" "$(tail -n 3 "$d/vm.err")"
		continue
	fi
	TAKEN=0
	for k in $(seq "$n"); do
		cycle "$mode" "$k" "$d" || break
	done
	if [ "$TAKEN" -eq "$n" ]; then
		ok "$mode: $n kills, each taken over with disk and memory at the same epoch, the disk the primary's byte for byte"
	else
		not_ok "$mode: $n kills, each taken over with disk and memory at the same epoch" "$TAKEN takeovers"
	fi
	# The last restored VM still writes its (the replica's) disk.
	a=$(zd-vm --ctl "$S" stats | sed -n 's/^disk_done=//p')
	sleep 0.3
	b=$(zd-vm --ctl "$S" stats | sed -n 's/^disk_done=//p')
	if [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ]; then
		ok "$mode: the restored VM goes on writing its disk ($a -> $b)"
	else
		not_ok "$mode: the restored VM goes on writing its disk" "disk_done $a -> $b"
	fi
	zd-vm --ctl "$S" stop >/dev/null 2>&1
	wait "$VM" 2>/dev/null
done
done_testing
