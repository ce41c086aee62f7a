#!/usr/bin/env bash
# Runs in dom0 of a real Xen (tests/lib/xenhost.sh; tests/xen/all.sh). A
# Xen guest's disk replicated with its memory, and taken over with it:
#
#   zd-xen-disk create zdguest DISK      -> /dev/mapper/zdlw-zdguest
#   guest config: disk = [ '...,script=tests/xen/block-zd,target=/dev/mapper/zdlw-zdguest' ]
#   zd-recv --listen 127.0.0.1:P --replica DIR --once --standby xen:CFG \
#           --fence 'xl destroy zdguest; cp DIR/disk.img SNAP'
#   zd-track xen:zdguest,disk=/dev/mapper/zdlw-zdguest --mode M | zd-swap | zd-send 127.0.0.1:P
#
# The guest (guest_writer with ZD_DISK=1) writes a counter to its disk
# and to its memory in one step, over and over, and checks before each
# step that the two agree. After KILL_AT committed epochs the pipeline is
# killed (SIGKILL of zd-track) and zd-recv fences (the primary destroyed)
# and starts the standby, whose disk is the replica's disk.img. Then:
#   - the replica's disk at the takeover (SNAP, copied by the fence, before
#     the standby ran) equals the primary's disk at the committed epoch E
#     byte for byte: the primary's disk rebuilt from its log-writes log
#     up to the mark zd-RUN-E that zd-track put there (xen_lwreplay);
#   - in the modes of ZD_XEN_DISK_VERIFY_MODES (remus), with zd-track and
#     zd-recv --verify: every committed epoch's disk checksum, read in the
#     pause, equalled the replica's (or the epoch went without one because
#     a write completed during that read, said so);
#   - the standby runs on, its disk counter grows, and it never finds its
#     disk and its memory disagreeing (no ZD-DISK-BAD on its console);
# each mode of ZD_XEN_DISK_MODES (remus buffered zddspt) ZD_XEN_DISK_KILLS
# (1; tests/xen/all.sh keeps that) times, each on a new guest (of
# ZD_XEN_DISK_MEM MiB, 128) and a new disk. And the refusals: disk= a
# file, a block device that is not device-mapper, a device-mapper device
# that is not log-writes, a guest whose vbd uses persistent grants (then
# blkback's feature_persistent goes to 0 and the guest is made again);
# zd-xen-disk's usage errors.
# Under QEMU TCG the PVH guest now and then triple-faults by itself (see
# replicate.sh): such a run is done again on a new guest, up to
# ZD_XEN_TRIES (3) times, and skipped (saying why) after that; a guest
# that stopped after running out of memory (its console has the OOM
# killer's report) is a failure, not a skip.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/xenlib.sh"
. "$(dirname "$0")/../lib/wait.sh"
INTERVAL=${ZD_XEN_INTERVAL:-200}
KILL_AT=${ZD_XEN_KILL_AT:-8}
DISK_MB=16
# The guest's memory: 96 MiB (the other parts') left the PVH guest with
# a disk too little (seen: the OOM killer ended the disk writer some 20
# steps in, and with it everything the test wanted from the disk); 192
# ran dom0 (then 1280 MiB, its /tmp in RAM holding the replica and its
# journal) out of memory in buffered mode, which copies every page of
# epoch 1 in zd-track and kept it in zd-send's delta cache (32M here).
MEM_MB=${ZD_XEN_DISK_MEM:-128}
# loglevel=5: the guest kernel's warnings and errors (blkfront's) on its
# console, not the suspend's info lines at every checkpoint.
export XEN_GUEST_EXTRA="ZD_PROGRESS=1 ZD_DISK=1 loglevel=5"
REPLAY=$ZD_TOP/$BUILD/tests/xen_lwreplay
IMG=$TMP/zdguest.img
LOG=$IMG.zdlog

domid() { xl domid "$1" 2>/dev/null; }
glog() { echo "/var/log/xen/guest-$1.log"; }
# disk_count FILE...: the latest ZD-DISK count in the consoles FILE...
disk_count() {
	cat "$@" 2>/dev/null | tr -d '\r' | sed -n 's/^ZD-DISK \([0-9]*\) \([0-9]*\)$/\1 \2/p' |
		sort -n | tail -1 | cut -d' ' -f2
}

# disk_up: a new disk (zeros) on a new log-writes device, and the guest on it.
disk_up() {
	local dev
	zd-xen-disk remove zdguest >/dev/null 2>&1
	rm -f "$IMG" "$LOG"
	truncate -s ${DISK_MB}M "$IMG"
	if ! dev=$(zd-xen-disk create --log-size 512M zdguest "$IMG" 2>"$TMP/xdisk.err"); then
		echo "# zd-xen-disk create: $(cat "$TMP/xdisk.err")"
		return 2
	fi
	DEV=$dev
	export XEN_GUEST_DISK="format=raw,vdev=xvda,access=rw,backendtype=phy,script=$ZD_TOP/tests/xen/block-zd,target=$DEV"
	xen_guest_up zdguest "$MEM_MB" || return 1
	if ! wait_line "$(glog zdguest)" '^ZD-DISK-READY' 60; then
		echo "# the guest has no disk writer: $(tr -d '\r' <"$(glog zdguest)" | grep 'ZD-DISK\|xvda\|blkfront' | tail -n 3 | tr '\n' '|')"
		return 1
	fi
}

# oom_why CONSOLE...: the guest kernel's OOM report, if it made one, as
# comment lines; false if none.
oom_why() {
	local f
	for f in "$@"; do
		[ -s "$f" ] || continue
		tr -d '\r' <"$f" | grep -q 'invoked oom-killer\|Out of memory' || continue
		tr -d '\r' <"$f" | grep -A 45 -m 1 'invoked oom-killer' | grep -v '^ZD-\(GAP\|PROGRESS\|MEM\)' |
			sed "s|^|#   oom (${f##*/}): |"
		tr -d '\r' <"$f" | grep 'Out of memory' | head -n 3 | sed "s|^|#   oom (${f##*/}): |"
		echo "#   ZD-MEM (MemAvailable kB) of ${f##*/}: $(tr -d '\r' <"$f" | sed -n 's/^ZD-MEM //p' | tr '\n' ' ' | cut -c1-300)"
		return 0
	done
	return 1
}

# vbd_why DOMID: the guest's disk as dom0 sees it (xenstore's frontend and
# backend, the hotplug script's log, the loop devices), as comment lines.
vbd_why() {
	local d=$1
	echo "#   xl list: $(xl list 2>&1 | tail -n +2 | tr -s ' ' | tr '\n' '|')"
	[ -n "$d" ] && xenstore-ls -f "/local/domain/$d/device/vbd" 2>&1 | grep -v 'ring-ref\|event-channel\|/protocol' |
		head -n 12 | sed 's/^/#   front: /'
	[ -n "$d" ] && xenstore-ls -f "/local/domain/0/backend/vbd/$d" 2>&1 | head -n 30 | sed 's/^/#   back: /'
	tail -n 4 /var/log/xen/block-zd.log 2>/dev/null | sed 's/^/#   block-zd: /'
	echo "#   loop: $(losetup -a 2>&1 | tr '\n' '|')"
	echo "#   inflight: $(for b in /sys/block/dm-* /sys/block/loop*; do [ -r "$b/inflight" ] && printf '%s %s; ' "${b##*/}" "$(tr -s ' ' <"$b/inflight")"; done)"
	dmesg 2>/dev/null | tail -n 6 | sed 's/^/#   dom0: /'
}

guest_fresh() {
	xl destroy zdguest 2>/dev/null
	xl destroy zdguest-standby 2>/dev/null
	rm -f "$(glog zdguest)" "$(glog zdguest-standby)"
	disk_up
}

at_exit "xl destroy zdguest; xl destroy zdguest-standby; zd-xen-disk remove zdguest"

# --- zd-xen-disk and the refusals (before any guest) ---
expect_fail "zd-xen-disk: a missing disk is refused" 1 'create: /nosuch.img: no such file or block device' \
	zd-xen-disk create zdx /nosuch.img
expect_fail "zd-xen-disk: a NAME with a slash is a usage error" 2 "NAME 'a/b': letters" \
	zd-xen-disk create a/b "$IMG"
guest_fresh
case $? in
0) ;;
2)	not_ok "zd-xen-disk creates the guest's log-writes device" "$(cat "$TMP/xdisk.err")"
	done_testing ;;
*)	skip "a PVH guest with a disk on a log-writes device boots and writes" "it did not come up (see the lines above)"
	done_testing ;;
esac
ok "a PVH guest with a disk on a log-writes device boots and writes to it"
echo "# $(zd-xen-disk status zdguest)"
CFG=$TMP/zdguest.cfg
grep '^disk' "$CFG" | sed 's/^/# config: /'
: >"$TMP/notadev"
expect_fail "disk= a file is refused" 4 'disk=.*notadev: not a block device' \
	zd-track "xen:zdguest,disk=$TMP/notadev" --epochs 1
truncate -s 1M "$TMP/plain.img"
PLAIN=$(losetup -f) && losetup "$PLAIN" "$TMP/plain.img"
at_exit "losetup -d $PLAIN"
expect_fail "disk= a block device that is not device-mapper is refused" 4 'not a device-mapper device' \
	zd-track "xen:zdguest,disk=$PLAIN" --epochs 1
DM_DISABLE_UDEV=1 dmsetup --noudevsync create zdlinear --table "0 2048 linear $PLAIN 0" 2>/dev/null
at_exit "DM_DISABLE_UDEV=1 dmsetup --noudevsync remove zdlinear"
expect_fail "disk= a device-mapper device that is not log-writes is refused" 4 "the first 'linear': want one log-writes" \
	zd-track "xen:zdguest,disk=/dev/mapper/zdlinear" --epochs 1
expect_fail "disk= a relative path is a usage error" 2 'disk=dev/x: want the path' \
	zd-track "xen:zdguest,disk=dev/x" --epochs 1

# blkback's persistent grants (Linux's default): its writes of the guest's
# disk reads are behind log-dirty, and zd-track refuses such a guest. A
# new guest is made once they are off.
PERSIST=/sys/module/xen_blkback/parameters/feature_persistent
if [ "$(xenstore-read "/local/domain/$(domid zdguest)/device/vbd/51712/feature-persistent" 2>/dev/null)" = 1 ]; then
	expect_fail "a guest whose vbd uses persistent grants is refused" 4 \
		"vbd 51712 uses persistent grants: blkback writes its disk reads into guest memory behind log-dirty" \
		zd-track "xen:zdguest,disk=$DEV" --epochs 1
else
	not_ok "the guest's vbd uses persistent grants (Linux's default), for the refusal" "$(vbd_why "$(domid zdguest)")"
fi
echo 0 >"$PERSIST" && at_exit "echo 1 >$PERSIST"
if ! guest_fresh; then
	skip "the takeovers with the disk" "the guest without persistent grants did not come up (see the lines above)"
	done_testing
fi

# --- takeover with the disk ---
# run_mode MODE KILL [TRY]
run_mode() {
	local mode=$1 kill=$2 try=${3:-1} d=$TMP/$1.$2 P RECV rc e
	local what="$mode (loss $kill)" verify=()
	# --verify (memory and disk checksums in every pause) in the modes of
	# ZD_XEN_DISK_VERIFY_MODES (remus): the disk's checksum is taken the
	# same way in every mode. With --verify, zddspt passed in one run of
	# two (the disk's checksum equal at all 9 epochs); in the other its
	# zd-track ended at epoch 2 with no message (killed; not understood),
	# and buffered's primaries triple-faulted in 3 runs of 3, but so did
	# zddspt's without --verify in a later run: that part is the emulation.
	case " ${ZD_XEN_DISK_VERIFY_MODES-remus} " in *" $mode "*) verify=(--verify) ;; esac
	rm -rf "$d"
	mkdir -p "$d"
	zd-recv --listen 127.0.0.1:0 --port-file "$d/port" --replica "$d/replica" --once --timeout 0 \
		"${verify[@]}" --no-fsync --standby "xen:$CFG" --fence-timeout 120000 -v \
		--fence "xl destroy zdguest; cp $d/replica/disk.img $d/snap.img; mv $(glog zdguest) $d/primary.log" \
		2>"$d/recv.err" &
	RECV=$!
	at_exit "kill $RECV"
	if ! P=127.0.0.1:$(read_port "$d/port" "$RECV" 60); then
		not_ok "$what: zd-recv listens" "$(tail -n 3 "$d/recv.err")"
		return
	fi
	local remus_opts=()
	[ "$mode" = remus ] && remus_opts=(--timeout 300000 --grace 5000)
	{ (echo "$BASHPID" >"$d/track.pid"; exec zd-track -v "xen:zdguest,disk=$DEV" --mode "$mode" "${verify[@]}" \
		--interval "$INTERVAL" --epochs 100000 "${remus_opts[@]}" 2>"$d/track.err") |
		zd-swap 2>"$d/swap.err" |
		zd-send "$P" --timeout 0 --heartbeat 0 --delta-cache 32M >/dev/null 2>"$d/send.err"; } &
	local PIPE=$!
	at_exit "kill $PIPE"
	e=0
	for _ in $(seq 3000); do
		e=$(sed -n 's/.*epoch \([0-9]*\) committed.*/\1/p' "$d/recv.err" | tail -1)
		[ -n "$e" ] && [ "$e" -ge "$KILL_AT" ] && break
		track_saw_stop "$d/track.err" && break
		alive "$RECV" || break
		alive "$PIPE" || break
		sleep 0.2
	done
	if track_saw_stop "$d/track.err"; then
		echo "# $what: the guest stopped by itself before the kill (try $try): $(track_stop_reason "$d/track.err")"
		# Not the emulation's triple fault: memory ran out (ours to fix).
		if oom_why "$(glog zdguest)"; then
			kill "$PIPE" "$RECV" 2>/dev/null
			wait "$RECV" 2>/dev/null
			not_ok "$what: the guest runs out of memory" "see the OOM report above"
			return
		fi
		tr -d '\r' <"$(glog zdguest)" 2>/dev/null | grep -v '^ZD-\(GAP\|PROGRESS\|DISK\|MEM\)' | tail -n 6 |
			sed 's/^/#   guest: /'
		kill "$PIPE" "$RECV" 2>/dev/null
		wait "$RECV" 2>/dev/null
		if [ "$try" -lt "${ZD_XEN_TRIES:-3}" ] && guest_fresh; then
			run_mode "$mode" "$kill" $((try + 1))
			return
		fi
		skip "$what: takeover with the disk" "the PVH guest stopped by itself in $try run(s) (a triple fault under QEMU TCG)"
		return
	fi
	if grep -q 'watchdog cut the connection\|no HEADER within' "$d/recv.err" && [ "$try" -lt "${ZD_XEN_TRIES:-3}" ]; then
		echo "# $what: the HEADER came after zd-recv's 2 s watchdog (emulated dom0): again"
		kill "$PIPE" "$RECV" 2>/dev/null
		wait "$RECV" 2>/dev/null
		run_mode "$mode" "$kill" $((try + 1))
		return
	fi
	if [ "${e:-0}" -lt "$KILL_AT" ]; then
		not_ok "$what: the replica reaches epoch $KILL_AT" "at ${e:-0}: $(last_words "$d" recv send swap track)
dom0: $(dmesg 2>/dev/null | grep -i 'killed process\|segfault\|out of memory\|general protection' | tail -n 3 | tr '\n' '|')"
		kill "$PIPE" "$RECV" 2>/dev/null
		return
	fi
	vbd_why "$(domid zdguest)" >"$d/vbd.primary" 2>&1
	kill -KILL "$(cat "$d/track.pid")"
	echo "# $what: zd-track killed after the replica committed epoch $e"
	if ! wait_for 300 eval '! alive '"$RECV"; then
		not_ok "$what: zd-recv takes over within 300 s" "$(tail -n 5 "$d/recv.err")"
		kill "$PIPE" "$RECV" 2>/dev/null
		return
	fi
	wait "$RECV"
	rc=$?
	wait "$PIPE" 2>/dev/null
	local E run
	E=$(sed -n 's/.*taking over at epoch \([0-9]*\).*/\1/p' "$d/recv.err" | tail -1)
	if [ "$rc" = 0 ] && grep -q 'standby xen:.* running at epoch' "$d/recv.err"; then
		ok "$what: zd-recv fenced and started the standby on the replica's disk (exit 0)"
	else
		not_ok "$what: zd-recv fenced and started the standby" "exit $rc: $(tail -n 6 "$d/recv.err")"
		return
	fi
	grep 'taking over\|running at epoch\|xl create -p' "$d/recv.err" | sed "s/^/# $what: /"
	# --verify: each COMMIT carries the disk's checksum read in the pause,
	# unless a write still in flight at the pause completed while it was
	# read (zd-track then leaves it out, and says so).
	local nsum nvoid
	if [ ${#verify[@]} -gt 0 ]; then
		nsum=$(grep -c 'committed (.*; disk checksum equal' "$d/recv.err")
		nvoid=$(grep -c 'no disk checksum in its COMMIT' "$d/track.err")
		if [ "$nsum" -ge 1 ] && [ $((nsum + nvoid)) -ge "${E:-1}" ]; then
			ok "$what: --verify: the replica's disk = the primary's at $nsum committed epoch(s) by checksum ($nvoid left without one)"
		else
			not_ok "$what: --verify checks the disk at every epoch" "$nsum epoch(s) checked, $nvoid without a checksum, taken over at ${E:-?}"
		fi
	fi
	# The epochs' disk writes and what they cost in the pause.
	sed -n 's/.*disk: epoch \([0-9]*\): \([0-9]*\) write(s), \([0-9]*\) bytes logged\([^;]*\); in the pause flush \([0-9.]*\) ms, mark \([0-9.]*\) ms, whole disk [0-9.]* ms; after it log read \([0-9.]*\) ms (\([0-9]*\) super block read(s), \([0-9]*\) pread(s)).*/\1 \2 \3 \5 \6 \7 \8 \9\4/p' \
		"$d/track.err" >"$d/disk.stats"
	# (remus sends the epoch before it resumes the guest: its log read is
	# in the pause too.)
	awk -v w="$what" -v m="$mode" '$1 > 1 {n++; wr += $2; by += $3; fl += $4; mk += $5; p = $4 + $5; if (p > mp) mp = p
			rd += $6; if ($6 > mr) mr = $6; pr += $8}
		END {if (n) printf "# %s: %d epochs after the first: %.1f disk writes, %.0f bytes per epoch; in the pause: flush %.2f ms + mark %.2f ms on average (max %.2f); %s: log read %.2f ms on average (max %.2f), %.1f pread(s) (emulated: QEMU TCG)\n", w, n, wr / n, by / n, fl / n, mk / n, mp, m == "remus" ? "then, still paused" : "after it", rd / n, mr, pr / n}' \
		"$d/disk.stats"
	if ! awk '$1 > 1 && $2 > 0 {w = 1} END {exit !w}' "$d/disk.stats"; then
		echo "# $what: the guest's disk writer wrote nothing while protected: its console and its disk in dom0"
		oom_why "$d/primary.log"
		tr -d '\r' <"$d/primary.log" 2>/dev/null | grep -v '^ZD-\(GAP\|PROGRESS\|MEM\)' | tail -n 12 | sed 's/^/#   primary: /'
		cat "$d/vbd.primary" 2>/dev/null
	fi
	run=$(sed -n 's/.*marks zd-\([0-9a-f]*\)-EPOCH.*/\1/p' "$d/track.err" | head -1)
	truncate -s ${DISK_MB}M "$d/primary.img"
	if [ -z "$E" ] || [ -z "$run" ]; then
		not_ok "$what: the replica's disk = the primary's at the committed epoch" "epoch '$E', run '$run'"
	elif ! "$REPLAY" "$LOG" "$d/primary.img" "zd-$run-$E" >"$d/replay.out" 2>&1; then
		not_ok "$what: the replica's disk = the primary's at the committed epoch" "$(cat "$d/replay.out")"
	elif [ ! -s "$d/snap.img" ]; then
		not_ok "$what: the replica's disk = the primary's at the committed epoch" "the fence copied no disk.img"
	elif cmp "$d/primary.img" "$d/snap.img" >"$d/cmp.out" 2>&1; then
		ok "$what: the replica's disk = the primary's at epoch $E byte for byte ($(cat "$d/replay.out"))"
	else
		not_ok "$what: the replica's disk = the primary's at epoch $E byte for byte" "$(cat "$d/cmp.out"); $(cat "$d/replay.out")"
	fi
	# The checkpoints' stops as the guest saw them (ZD-GAP: stretches of
	# more than 10 ms between two of its memory writes).
	tr -d '\r' <"$d/primary.log" 2>/dev/null | sed -n 's/^ZD-GAP \([0-9]*\)$/\1/p' | sort -n |
		awk -v w="$what" '{v[NR] = $1} END {if (NR) printf "# %s: the guest stopped %d times while protected, median %d ms, p90 %d ms (ZD-GAP, emulated)\n", w, NR, v[int((NR + 1) / 2)], v[int(NR * 0.9) > 0 ? int(NR * 0.9) : 1]}'
	echo "# $what: the guest's MemAvailable (ZD-MEM, kB): primary $(tr -d '\r' <"$d/primary.log" 2>/dev/null |
		sed -n 's/^ZD-MEM //p' | awk 'NR == 1 {f = $1} {l = $1; if (m == "" || $1 < m) m = $1} END {printf "first %s, last %s, least %s", f, l, m}')"
	# The primary's counter where the guest stood at epoch E: in its disk.
	echo "# $what: the disk counter at epoch $E: $(od -An -t u8 -j 8 -N 8 "$d/primary.img" | tr -d ' ')," \
		"the primary's last said $(disk_count "$d/primary.log")"
	local slog c1 c2 bad state sid
	slog="$(glog zdguest-standby) $(glog zdguest)"
	sid=$(domid zdguest)
	[ -z "$sid" ] && sid=$(domid zdguest-standby)
	sleep 5
	# shellcheck disable=SC2086
	c1=$(disk_count $slog)
	sleep 10
	# shellcheck disable=SC2086
	c2=$(disk_count $slog)
	state=$(xl list 2>/dev/null | awk -v id="$sid" '$2 == id {print $5}')
	# shellcheck disable=SC2086
	bad=$(cat $slog 2>/dev/null | tr -d '\r' | grep '^ZD-DISK-BAD' | head -n 3)
	# shellcheck disable=SC2086
	echo "# $what: standby domain ${sid:-?} state '$state', its disk counter ${c1:-none} -> ${c2:-none} in 10 s," \
		"MemAvailable $(cat $slog 2>/dev/null | tr -d '\r' | sed -n 's/^ZD-MEM //p' | tail -n 1) kB"
	if [ -n "$bad" ]; then
		not_ok "$what: the taken-over guest's disk and memory agree" "$bad"
	elif [ -n "$c1" ] && [ -n "$c2" ] && [ "$c2" -gt "$c1" ] && [[ $state != *c* ]] && [[ $state != *s* ]]; then
		ok "$what: the taken-over guest runs on its disk, disk and memory agree (its counter grows, no ZD-DISK-BAD)"
	elif [[ $state == *s* ]] && xl dmesg | grep -q "d${sid}v[0-9]* Triple fault"; then
		# Xen says the standby triple-faulted: the emulation's (man
		# zd-track), as its primaries now and then do; what it ran
		# before is checked above (no ZD-DISK-BAD).
		skip "$what: the taken-over guest runs on its disk" \
			"Xen: d${sid}v0 triple-faulted after the takeover, counter '$c1' -> '$c2' (QEMU TCG)"
	else
		not_ok "$what: the taken-over guest runs on its disk" "state '$state', counter '$c1' -> '$c2'"
		tr -d '\r' <"$d/primary.log" 2>/dev/null | grep -v '^ZD-\(GAP\|PROGRESS\|MEM\)' | tail -n 10 | sed 's/^/#   primary: /'
		echo "#   log: $(zd-xen-disk status zdguest 2>&1)"
		# shellcheck disable=SC2086
		# shellcheck disable=SC2086
		oom_why $slog "$d/primary.log"
		echo "#   the standby's console: $(cat $slog 2>/dev/null | grep -c '^ZD-PROGRESS') ZD-PROGRESS lines"
		vbd_why "$sid"
		# shellcheck disable=SC2086
		cat $slog 2>/dev/null | tr -d '\r' | grep -v '^ZD-\(GAP\|PROGRESS\|MEM\)' | tail -n 15 | sed 's/^/#   guest: /'
	fi
	if grep -q '^ZD-DISK-BAD' "$d/primary.log" 2>/dev/null; then
		not_ok "$what: the primary's disk and memory agreed while protected" "$(grep '^ZD-DISK-BAD' "$d/primary.log" | head -n 3)"
	fi
	rm -rf "$d/replica" "$d/snap.img" "$d/primary.img"
}

first=1
for mode in ${ZD_XEN_DISK_MODES:-remus buffered zddspt}; do
	for kill in $(seq "${ZD_XEN_DISK_KILLS:-1}"); do
		if [ "$first" = 0 ] && ! guest_fresh; then
			skip "$mode (loss $kill): takeover with the disk" "a new guest did not come up"
			continue
		fi
		first=0
		run_mode "$mode" "$kill"
	done
done
done_testing
