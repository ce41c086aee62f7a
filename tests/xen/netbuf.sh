#!/usr/bin/env bash
# Runs in dom0 of a real Xen (tests/lib/xenhost.sh; tests/xen/all.sh).
# Output commit on Xen (lib/target/xen_netbuf.c): the guest's network
# output waits in dom0 until the backup acknowledged its epoch.
#
#   zd-recv --listen 127.0.0.1:P --replica DIR                (the backup)
#   zd-track xen:zdnb[,output-commit=off] --mode buffered | zd-swap | zd-send
#
# against the PVH guest with a vif on xenbr0 that serves "seq N"
# (tests/xen/guest_writer.c, tests/xen/vif-zd). Checks:
#   - without sch_plug (xenhost.sh copies it to /mod but does not load it)
#     zd-track refuses the protected run with one line naming sch_plug and
#     output-commit=off, exit 4, and leaves no IFB device behind;
#   - with it: zd-client gets answers; with zd-recv stopped (SIGSTOP: no
#     more ACKs) a client gets no answer, and gets it after SIGCONT;
#   - output-commit=off: answers come while zd-recv is stopped;
#   - zd-track removes its IFB device and the vif's ingress qdisc at exit.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/xenlib.sh"
. "$(dirname "$0")/../lib/wait.sh"
INTERVAL=${ZD_XEN_INTERVAL:-100}
# How long zd-recv stays stopped, and a client waits meanwhile. Under TCG
# one epoch can take a second or more: several epochs fit in it.
HOLD=${ZD_XEN_HOLD:-10}
# zd-track's suspend-timeout (ms): under the emulation a guest's first
# suspend can take more than the default 10 s.
SUSPEND_MS=30000

# guest_fresh: (re)create the guest; sets D and IFB.
guest_fresh() {
	xl destroy zdnb 2>/dev/null
	XEN_GUEST_NET=1 xen_guest_up zdnb || return 1
	D=$(xl domid zdnb)
	IFB=zdifb$D.0
}
xen_serving_guest zdnb guest_fresh

# failed NAME DIAG: a check failed. If the guest stopped by itself (the
# emulation's triple faults, see replicate.sh) that is no finding on
# output commit: say so and return 2, and the phase is run again on a new
# guest (phase); else not ok, return 1.
failed() {
	if xen_guest_stopped zdnb; then
		echo "# $1: the guest stopped by itself under QEMU TCG: $(xl list zdnb 2>&1 | tail -n 1)"
		return 2
	fi
	not_ok "$1" "$2"
	return 1
}

# --- without sch_plug ---
rmmod sch_plug 2>/dev/null
if [ -d /sys/module/sch_plug ]; then
	skip "without sch_plug a protected run is refused" "sch_plug is loaded and cannot be unloaded"
else
	expect_fail "without sch_plug a protected run is refused (one line naming sch_plug and output-commit=off)" 4 \
		"^zd-track: xen:zdnb: output commit: .*sch_plug.*xen:zdnb,output-commit=off" \
		zd-track xen:zdnb --mode buffered --epochs 1
	if ip link show "$IFB" >/dev/null 2>&1 || tc qdisc show dev "vif$D.0" 2>/dev/null | grep -q ingress; then
		not_ok "the refused run left nothing behind" "$(ip link show "$IFB" 2>&1; tc qdisc show dev "vif$D.0" 2>&1)"
	else
		ok "the refused run left nothing behind (no $IFB, no ingress qdisc on vif$D.0)"
	fi
fi
expect_fail "an unknown option of the xen target is a usage error" 2 \
	"^zd-track: xen:zdnb,output-commit=maybe: output-commit=maybe: want on or off" \
	zd-track xen:zdnb,output-commit=maybe --epochs 1
if ! insmod /mod/sch_plug.ko 2>"$TMP/insmod.err" && [ ! -d /sys/module/sch_plug ]; then
	not_ok "sch_plug loads" "$(cat "$TMP/insmod.err")"
	done_testing
fi
if zd-client --requests 3 --timeout 60000 "$XEN_GUEST_ADDR" >"$TMP/c0.json" 2>"$TMP/c0.err"; then
	ok "the guest serves before it is protected"
elif ! xl list zdnb 2>/dev/null | awk 'NR == 2 && $5 ~ /[sc]/ {exit 1}'; then
	# The emulation's triple faults (see replicate.sh): nothing to test on.
	skip "output commit on the guest" "the PVH guest stopped by itself under QEMU TCG: $(xl list zdnb 2>&1 | tail -n 1)"
	done_testing
else
	not_ok "the guest serves before it is protected" "$(cat "$TMP/c0.err")"
fi

# start_protected NAME SPEC: the backup and the pipeline, in $TMP/NAME;
# sets RECV, TRACK, SEND (PIDs). Waits until zd-track passed checkpoint 3.
start_protected() {
	local d=$TMP/$1 spec=$2 P e t0=$SECONDS
	rm -rf "$d"
	mkdir -p "$d"
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/replica" --once --timeout 0 \
		--no-fsync -v 2>"$d/recv.err" &
	RECV=$!
	at_exit "kill -CONT $RECV; kill $RECV"
	if ! P=127.0.0.1:$(read_port "$d/recv.port" "$RECV" 60); then
		not_ok "$1: zd-recv listens" "$(tail -n 3 "$d/recv.err")"
		return 1
	fi
	mkfifo "$d/stream"
	zd-swap <"$d/stream" 2>"$d/swap.err" |
		zd-send "$P" --timeout 0 --heartbeat 0 >"$d/send.log" 2>"$d/send.err" &
	SEND=$!
	zd-track -v "$spec,suspend-timeout=$SUSPEND_MS" --mode buffered --interval "$INTERVAL" --epochs 1000000 \
		>"$d/stream" 2>"$d/track.err" &
	TRACK=$!
	at_exit "kill $TRACK"
	for _ in $(seq 1200); do
		e=$(sed -n 's/.*\] epoch \([0-9]*\): .*/\1/p' "$d/track.err" 2>/dev/null | tail -1)
		if [ -n "$e" ] && [ "$e" -ge 3 ]; then
			echo "# $1: zd-track at checkpoint $e after $((SECONDS - t0)) s"
			return 0
		fi
		alive "$TRACK" || break
		sleep 0.1
	done
	# A guest that answers no suspend request in SUSPEND_MS has stalled (the
	# emulation's soft lockups, as its triple faults): no finding on
	# output commit, so again on a new guest.
	if grep -q 'guest did not suspend within' "$d/track.err"; then
		echo "# $1: zd-track protects the guest: the guest did not suspend in $((SUSPEND_MS / 1000)) s under QEMU TCG: $(xl list zdnb 2>&1 | tail -n 1)"
		return 2
	fi
	failed "$1: zd-track protects the guest" "$(last_words "$d" recv send swap track)"
}

# stop_protected NAME: interrupt zd-track, let the pipeline end.
stop_protected() {
	local d=$TMP/$1
	kill -CONT "$RECV" 2>/dev/null
	kill -INT "$TRACK" 2>/dev/null
	wait_for 60 eval '! alive '"$TRACK"' && ! alive '"$SEND"
	kill "$TRACK" "$SEND" "$RECV" 2>/dev/null
	wait "$TRACK" "$SEND" "$RECV" 2>/dev/null
	if ip link show "$IFB" >/dev/null 2>&1 || tc qdisc show dev "vif$D.0" 2>/dev/null | grep -q ingress; then
		not_ok "$1: zd-track removed $IFB and the ingress qdisc of vif$D.0 at exit" \
			"$(ip link show "$IFB" 2>&1; tc qdisc show dev "vif$D.0" 2>&1)"
	else
		ok "$1: zd-track removed its IFB device and the ingress qdisc of vif$D.0 at exit"
	fi
}

# held NAME WANT: zd-recv stopped, a client sends one request; WANT=held:
# no answer for HOLD s, then the answer after SIGCONT; WANT=free: the
# answer while zd-recv is still stopped.
held() {
	local name=$1 want=$2 d=$TMP/$1 CL rc res=0
	kill -STOP "$RECV"
	# ACKs already on their way are let through first.
	sleep 2
	zd-client --requests 1 --timeout 120000 --log "$d/held.log" "$XEN_GUEST_ADDR" \
		>"$d/held.json" 2>"$d/held.err" &
	CL=$!
	if [ "$want" = held ]; then
		sleep "$HOLD"
		if alive "$CL" && [ ! -s "$d/held.log" ]; then
			ok "$name: no answer in $HOLD s while zd-recv is stopped (no ACK)"
		else
			failed "$name: no answer while zd-recv is stopped" "client: $(cat "$d/held.json" "$d/held.err" "$d/held.log" 2>&1)"
			res=$?
		fi
		kill -CONT "$RECV"
		wait "$CL"
		rc=$?
		if [ $rc -eq 0 ] && [ -s "$d/held.log" ]; then
			[ $res = 0 ] && ok "$name: the answer comes after SIGCONT ($(cut -d' ' -f1 "$d/held.log" | sed 's/^/seq /'))"
		elif [ $res = 0 ]; then
			failed "$name: the answer comes after SIGCONT" "exit $rc: $(cat "$d/held.json" "$d/held.err" 2>&1)"
			res=$?
		fi
	else
		if wait_for 60 eval '! alive '"$CL" && wait "$CL" && [ -s "$d/held.log" ]; then
			ok "$name: an answer comes while zd-recv is stopped ($(cut -d' ' -f1 "$d/held.log" | sed 's/^/seq /'))"
		else
			kill "$CL" 2>/dev/null
			failed "$name: an answer comes while zd-recv is stopped" "$(cat "$d/held.json" "$d/held.err" 2>&1)"
			res=$?
		fi
		kill -CONT "$RECV"
	fi
	wait "$CL" 2>/dev/null
	return $res
}

# phase WHAT FUNC: a phase returns 2 when the guest stopped by itself (or
# stalled); it is then run again on a new guest, up to 3 times, and else
# skipped saying why.
phase() {
	local what=$1 try rc
	shift
	for try in 1 2 3; do
		"$@"
		rc=$?
		[ $rc != 2 ] && return $rc
		guest_fresh || break
	done
	skip "$what" "the PVH guest stopped by itself or stalled in each of $try tries under QEMU TCG"
}

# --- output commit on (the default) ---
phase_on() {
	local rc=0
	start_protected on xen:zdnb || return
	ok "on: zd-track xen:zdnb protects the guest (output held on $IFB)"
	tc qdisc show dev "$IFB" | sed 's/^/# /'
	if zd-client --requests 3 --timeout 120000 "$XEN_GUEST_ADDR" >"$TMP/on/c1.json" 2>"$TMP/on/c1.err" &&
		[ "$(jfield "$TMP/on/c1.json" count)" = 3 ]; then
		ok "on: zd-client gets 3 answers from the protected guest, in order"
		echo "# on: $(cat "$TMP/on/c1.json") (emulated: QEMU TCG)"
		held on held
		rc=$?
	else
		failed "on: zd-client gets 3 answers from the protected guest" "$(cat "$TMP/on/c1.json" "$TMP/on/c1.err")"
		rc=$?
	fi
	stop_protected on
	echo "# on: $(grep -c '\] epoch [0-9]*: ' "$TMP/on/track.err") checkpoints, $SECONDS s into the test"
	return $rc
}

# --- output commit off ---
phase_off() {
	local rc
	start_protected off xen:zdnb,output-commit=off || return
	ok "off: zd-track xen:zdnb,output-commit=off protects the guest"
	if ip link show "$IFB" >/dev/null 2>&1; then
		not_ok "off: no IFB device" "$(ip link show "$IFB")"
	else
		ok "off: no IFB device"
	fi
	held off free
	rc=$?
	stop_protected off
	return $rc
}

phase "output commit on" phase_on
phase "output commit off" phase_off
done_testing
