#!/usr/bin/env bash
# Runs in dom0 of a real Xen (tests/lib/xenhost.sh; tests/xen/all.sh). A
# standby domain on the backup and the takeover of a Xen guest:
#
#   zd-recv --listen 127.0.0.1:P --replica DIR --verify --once \
#           --standby xen:CFG --fence 'xl destroy zdguest'
#   zd-track xen:zdguest --mode M | zd-swap | zd-send 127.0.0.1:P
#
# CFG is the guest's own xl config (xen_guest_up writes it). After some
# committed epochs zd-track is killed with SIGKILL (the primary's host
# dies, as far as the stream can tell), and:
#   - zd-recv fences (the primary is destroyed) and starts the standby
#     exactly once, at the last committed epoch, after --verify found its
#     memory equal to the replica's checksum of that epoch; exit 0;
#   - the standby runs on: its console shows guest_writer's progress
#     going on after the takeover, Xen shows it running (not crashed);
#   - the primary's domain is gone.
# Then the same once more in remus with --standby-at takeover (the standby
# made from the replica's files only at the takeover).
# And the refusals, each one line before any epoch: an unknown config
# path (exit 2), a config with another memory size and one for a PV guest
# (exit 4 at the stream's first STATE/HEADER; zd-track fails before epoch
# 1; no standby domain is left behind).
# Under QEMU TCG the PVH guest now and then triple-faults by itself (see
# replicate.sh): a mode whose guest stops by itself is run again on a new
# guest, up to ZD_XEN_TRIES (3) times, and skipped (saying why) after that.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/xenlib.sh"
. "$(dirname "$0")/../lib/wait.sh"
INTERVAL=${ZD_XEN_INTERVAL:-200}
KILL_AT=${ZD_XEN_KILL_AT:-8}
export XEN_GUEST_EXTRA="ZD_PROGRESS=1"

# cputime DOMID: the domain's CPU time so far (s), from xl list.
cputime() { xl list 2>/dev/null | awk -v id="$1" '$2 == id {print $6}'; }

# rate LOG SECONDS: "N pages, T s vCPU time in SECONDS s" of the guest
# writing to LOG.
rate() {
	local p1 p2 c1 c2 id
	id=$(domid zdguest)
	p1=$(progress "$1"); c1=$(cputime "$id")
	sleep "$2"
	p2=$(progress "$1"); c2=$(cputime "$id")
	echo "$((${p2:-0} - ${p1:-0})) pages, vCPU time ${c1:-?} -> ${c2:-?} s in $2 s"
}

# domid NAME: the domid of the domain NAME, or nothing.
domid() { xl domid "$1" 2>/dev/null; }

# progress FILE...: the pages count of guest_writer's latest ZD-PROGRESS
# line (by the guest's clock) in the FILEs.
progress() {
	cat "$@" 2>/dev/null | tr -d '\r' | sed -n 's/^ZD-PROGRESS \([0-9]*\) \([0-9]*\)$/\1 \2/p' |
		sort -n | tail -1 | cut -d' ' -f2
}

guest_fresh() {
	xl destroy zdguest 2>/dev/null
	xl destroy zdguest-standby 2>/dev/null
	rm -f /var/log/xen/guest-zdguest.log /var/log/xen/guest-zdguest-standby.log
	xen_guest_up zdguest
}

# A guest left running keeps xl's daemon, and with it dom0's console
# pipe, open: the harness would wait for it.
at_exit "xl destroy zdguest; xl destroy zdguest-standby"
if ! xen_guest_up zdguest; then
	skip "a PVH guest boots and writes memory" "it did not come up in 3 tries under QEMU TCG (see the lines above)"
	done_testing
fi
ok "a PVH guest boots and writes memory"
CFG=$TMP/zdguest.cfg
RATE0=$(rate /var/log/xen/guest-zdguest.log 10)
echo "# the unprotected guest: $RATE0 (emulated: QEMU TCG)"

# --- refusals ---
expect_fail "an unknown config path is a usage error" 2 \
	'^zd-recv: --standby xen:/nosuch.cfg: cannot read the xl config /nosuch.cfg' \
	zd-recv --listen 127.0.0.1:0 --replica "$TMP/r0" --standby xen:/nosuch.cfg

# refused WHAT CFG PATTERN: a stream into a standby of CFG is refused at
# its start, with one line matching PATTERN.
refused() {
	local what=$1 cfg=$2 pat=$3 d=$TMP/refuse.$RANDOM P RECV rc st
	mkdir -p "$d"
	zd-recv --listen 127.0.0.1:0 --port-file "$d/port" --replica "$d/replica" --once --timeout 0 \
		--standby "xen:$cfg" --fence true 2>"$d/recv.err" &
	RECV=$!
	if ! P=127.0.0.1:$(read_port "$d/port" "$RECV" 60); then
		not_ok "$what" "zd-recv does not listen: $(tail -n 3 "$d/recv.err")"
		return
	fi
	zd-track xen:zdguest --mode remus --interval "$INTERVAL" --epochs 5 2>"$d/track.err" |
		zd-swap 2>"$d/swap.err" | zd-send "$P" --timeout 0 --heartbeat 0 >/dev/null 2>"$d/send.err"
	st="${PIPESTATUS[*]}"
	# The guest stopped by itself (the emulation's triple fault): zd-track
	# ends before its HEADER, zd-send never connects, and zd-recv --once
	# --timeout 0 would wait for good. Again on a new guest.
	if track_saw_stop "$d/track.err"; then
		echo "# $what: the guest stopped by itself (try ${4:-1}): $(track_stop_reason "$d/track.err")"
		kill "$RECV" 2>/dev/null
		wait "$RECV" 2>/dev/null
		rm -rf "$d"
		if [ "${4:-1}" -lt "${ZD_XEN_TRIES:-3}" ] && guest_fresh; then
			refused "$what" "$cfg" "$pat" $((${4:-1} + 1))
		else
			skip "$what" "the PVH guest stopped by itself in ${4:-1} run(s) (a triple fault under QEMU TCG)"
		fi
		return
	fi
	# Bounded: a pipeline that ended without ever connecting must be a
	# failure here, not a wait until the part's budget.
	recv_wait "$RECV" 120
	rc=$?
	# Under the emulation zd-send's own attach to the guest can hold the
	# HEADER past zd-recv's 2 s watchdog: that is no answer, try again.
	if grep -q 'watchdog cut the connection\|no HEADER within' "$d/recv.err" && [ "${4:-1}" -lt 3 ]; then
		echo "# $what: the HEADER came after zd-recv's 2 s watchdog (emulated dom0): again"
		rm -rf "$d"
		refused "$what" "$cfg" "$pat" $((${4:-1} + 1))
		return
	fi
	local lines
	# (The port line: zd-recv says where it listens when given port 0.)
	lines=$(grep -vc 'listening on' "$d/recv.err")
	if [ "$rc" != 4 ] || [ "$lines" != 1 ] || ! grep -qE -- "$pat" "$d/recv.err"; then
		not_ok "$what" "zd-recv exit $rc (want 4), $lines line(s): $(cat "$d/recv.err")"
	elif [ "$st" = "0 0 0" ]; then
		not_ok "$what" "the pipeline exited 0 0 0: $(last_words "$d" send swap track)"
	elif grep -q '^epoch 1 ' <(zd-recv --replica "$d/replica" --status 2>/dev/null); then
		not_ok "$what" "the replica took epoch 1"
	elif [ -n "$(domid zdguest-standby)" ]; then
		not_ok "$what" "a domain zdguest-standby was left behind"
	else
		ok "$what"
		grep -v 'listening on' "$d/recv.err" | sed 's/^/#   /' 
	fi
	echo "# pipeline exits: $st"
	xl destroy zdguest-standby 2>/dev/null
	rm -rf "$d"
}

# (ZD_XEN_REFUSALS=0 leaves these two out: each creates a domain, ~40 s
# under a loaded emulation.)
if [ "${ZD_XEN_REFUSALS:-1}" = 1 ]; then
	sed 's/^memory = .*/memory = 128/' "$CFG" >"$TMP/mem128.cfg"
	refused "a config with another memory size is refused before epoch 1" "$TMP/mem128.cfg" \
		'zdguest-standby has [0-9]+ frames populated, the primary [0-9]+ .*the config must give the primary'
	sed 's/^type = .*/type = "pv"/' "$CFG" >"$TMP/pv.cfg"
	refused "a config for a PV guest is refused before epoch 1" "$TMP/pv.cfg" 'makes a PV guest: a standby must be PVH or HVM'
fi

# --- takeover ---
# run_mode MODE [TRY]; with LAZY=1 the standby is made only at the
# takeover (--standby-at takeover), from the replica's files.
LAZY=0
run_mode() {
	local mode=$1 try=${2:-1} d=$TMP/$1 P RECV rc e pid0 at=()
	[ "$LAZY" = 1 ] && at=(--standby-at takeover) && mode="$mode --standby-at takeover" && d=$TMP/lazy
	rm -rf "$d"
	mkdir -p "$d"
	pid0=$(domid zdguest)
	zd-recv --listen 127.0.0.1:0 --port-file "$d/port" --replica "$d/replica" --once --verify --timeout 0 \
		--no-fsync --standby "xen:$CFG" "${at[@]}" --fence 'xl destroy zdguest' --fence-timeout 120000 -v 2>"$d/recv.err" &
	RECV=$!
	at_exit "kill $RECV"
	if ! P=127.0.0.1:$(read_port "$d/port" "$RECV" 60); then
		not_ok "$mode: zd-recv listens" "$(tail -n 3 "$d/recv.err")"
		return
	fi
	local remus_opts=()
	[ "$1" = remus ] && remus_opts=(--timeout 300000 --grace 5000)
	{ (echo "$BASHPID" >"$d/track.pid"; exec zd-track -v xen:zdguest --mode "$1" --verify \
		--interval "$INTERVAL" --epochs 100000 "${remus_opts[@]}" 2>"$d/track.err") |
		zd-swap 2>"$d/swap.err" |
		zd-send "$P" --timeout 0 --heartbeat 0 >/dev/null 2>"$d/send.err"; } &
	local PIPE=$!
	at_exit "kill $PIPE"
	# Until the replica has committed KILL_AT epochs (zd-recv -v says so).
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
		echo "# $mode: the guest stopped by itself before the kill (try $try): $(track_stop_reason "$d/track.err")"
		xl dmesg | grep -v '^(XEN) \*\*\*' | tail -n 5 | sed 's/^/#   xen: /'
		kill "$PIPE" "$RECV" 2>/dev/null
		wait "$RECV" 2>/dev/null
		if [ "$try" -lt "${ZD_XEN_TRIES:-3}" ] && guest_fresh; then
			run_mode "$1" $((try + 1))
			return
		fi
		skip "$mode: takeover by the standby" "the PVH guest stopped by itself in $try run(s) (a triple fault under QEMU TCG)"
		return
	fi
	# Under a loaded emulation zd-send's own attach to the guest can
	# hold the HEADER past zd-recv's 2 s watchdog: no answer; again.
	if grep -q 'watchdog cut the connection\|no HEADER within' "$d/recv.err" && [ "$try" -lt "${ZD_XEN_TRIES:-3}" ]; then
		echo "# $mode: the HEADER came after zd-recv's 2 s watchdog (emulated dom0): again"
		kill "$PIPE" "$RECV" 2>/dev/null
		wait "$RECV" 2>/dev/null
		run_mode "$1" $((try + 1))
		return
	fi
	if [ "${e:-0}" -lt "$KILL_AT" ]; then
		not_ok "$mode: the replica reaches epoch $KILL_AT" "at ${e:-0}: $(last_words "$d" recv send swap track)"
		kill "$PIPE" "$RECV" 2>/dev/null
		return
	fi
	local tpid killed_us
	tpid=$(cat "$d/track.pid")
	killed_us=${EPOCHREALTIME/./}
	kill -KILL "$tpid"
	echo "# $mode: zd-track killed after the replica committed epoch $e"
	# zd-swap and zd-send see their input end without END; the
	# connection closes; zd-recv takes over.
	if ! wait_for 300 eval '! alive '"$RECV"; then
		not_ok "$mode: zd-recv takes over within 300 s" "$(tail -n 5 "$d/recv.err")"
		kill "$PIPE" "$RECV" 2>/dev/null
		return
	fi
	wait "$RECV"
	rc=$?
	wait "$PIPE" 2>/dev/null
	local done_us
	done_us=${EPOCHREALTIME/./}
	xen_took_over "$mode" "$rc" "$d/recv.err"
	grep 'taking over\|running at epoch\|--verify' "$d/recv.err" | sed "s/^/# $mode: /"
	echo "# $mode: SIGKILL of zd-track to zd-recv's exit: $(((done_us - killed_us) / 1000)) ms (emulated: QEMU TCG)"
	local sid
	sid=$(domid zdguest)
	if [ -n "$pid0" ] && [ "$sid" != "$pid0" ] && ! xl list 2>/dev/null | awk -v id="$pid0" '$2 == id {f = 1} END {exit !f}'; then
		ok "$mode: the primary (domain $pid0) is destroyed"
	else
		not_ok "$mode: the primary (domain $pid0) is destroyed" "$(xl list 2>&1 | tr '\n' '|')"
	fi
	[ -z "$sid" ] && sid=$(domid zdguest-standby)
	# The standby runs on: its console (xenconsoled names the log after
	# the name at creation) shows guest_writer's pages growing.
	# (xenconsoled names the log when the guest first writes: before or
	# after the rename.)
	local log="/var/log/xen/guest-zdguest-standby.log /var/log/xen/guest-zdguest.log" p1 p2 state
	local c1 c2
	sleep 5
	# shellcheck disable=SC2086
	p1=$(progress $log)
	c1=$(cputime "$sid")
	sleep 10
	# shellcheck disable=SC2086
	p2=$(progress $log)
	c2=$(cputime "$sid")
	state=$(xl list 2>/dev/null | awk -v id="$sid" '$2 == id {print $5}')
	echo "# $mode: standby domain ${sid:-?} state '$state', progress ${p1:-none} -> ${p2:-none} pages in 10 s," \
		"its vCPU time ${c1:-?} -> ${c2:-?} s (before protection: $RATE0) (emulated: QEMU TCG)"
	# shellcheck disable=SC2086
	cat $log 2>/dev/null | tr -d '\r' | grep '^ZD-GAP' | tail -n 5 | tr '\n' ' ' | sed "s/^/# $mode: last gaps in the standby: /;s/$/\n/"
	if [ -n "$sid" ] && [ -n "$p2" ] && [ -n "$p1" ] && [ "$p2" -gt "$p1" ] && [[ $state != *c* ]] && [[ $state != *s* ]]; then
		ok "$mode: the taken-over guest runs on (guest_writer's progress grows on its console)"
	elif [ -n "$sid" ] && [[ $state == *s* || $state == *c* ]]; then
		# It ran from the replica (or not) and then stopped by itself: the
		# emulation's triple faults hit a standby as they hit a guest that
		# boots (replicate.sh). Whether it ran is said, not counted.
		skip "$mode: the taken-over guest runs on" \
			"the standby stopped by itself under QEMU TCG (state '$state'; progress '$p1' -> '$p2' before)"
		# shellcheck disable=SC2086
		cat $log 2>/dev/null | tr -d '\r' | grep -v '^ZD-\(GAP\|PROGRESS\)' | tail -n 5 | sed 's/^/#   guest: /'
	else
		not_ok "$mode: the taken-over guest runs on" "state '$state', progress '$p1' -> '$p2'"
		# shellcheck disable=SC2086
		cat $log 2>/dev/null | tr -d '\r' | grep -v '^ZD-\(GAP\|PROGRESS\)' | tail -n 15 | sed 's/^/#   guest: /'
		xl dmesg | grep -v '^(XEN) \*\*\*' | tail -n 8 | sed 's/^/#   xen: /'
	fi
	if xl list zdguest >/dev/null 2>&1 && [ "$(domid zdguest)" = "$sid" ]; then
		echo "# $mode: the standby took the name zdguest (xl rename)"
	fi
	if [ -n "${ZD_XEN_DEBUG:-}" ]; then
		tail -n 20 "$d/recv.err" | sed 's/^/# recv: /'
		# Xen's view of the standby's event channels.
		xl debug-keys e 2>/dev/null
		xl dmesg | sed -n "/Event channel information for domain $sid/,/Event channel information for domain/p" |
			head -n 30 | sed 's/^/# evtchn: /'
	fi
	rm -rf "$d/replica"
}

first=1
for mode in ${ZD_XEN_MODES:-remus buffered zddspt}; do
	if [ "$first" = 0 ] && ! guest_fresh; then
		skip "$mode: takeover by the standby" "a new guest did not come up"
		continue
	fi
	first=0
	run_mode "$mode"
done
# The same takeover with the standby made only then (ZD_XEN_LAZY=0: not).
if [ "${ZD_XEN_LAZY:-1}" = 1 ]; then
	LAZY=1
	if [ "$first" = 0 ] && ! guest_fresh; then
		skip "remus --standby-at takeover: takeover" "a new guest did not come up"
	else
		run_mode remus
	fi
fi
xl destroy zdguest 2>/dev/null
xl destroy zdguest-standby 2>/dev/null
done_testing
