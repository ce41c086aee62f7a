#!/usr/bin/env bash
# Continuity on real KVM: the backup takes over.
#
# A zd-vm guest is protected (zd-track | zd-swap | zd-send -> zd-recv) while
# one zd-client --reconnect sends requests and records every answer
# ("seq N"). At a random moment the primary (zd-vm and its pipeline, as a
# crash of its host would) is killed with SIGKILL;
# zd-recv's default failover action (zd-vm --restore "$ZD_REPLICA") brings
# the VM back from the replica on the same service address and control
# socket. The restored VM is then protected again by a fresh pipeline and
# a fresh replica, and killed again: ZD_FAILOVER_KILLS kills in all
# (default 20), spread over remus, buffered and zddspt (7/7/6). Every
# third kill is aimed mid-transfer (zd-recv held with SIGSTOP until
# zd-send blocks inside an epoch), the rest land at random moments (in
# zddspt each drain is held back 15 ms, so many land mid-drain). Then
# ZD_FAILOVER_VM_KILLS (3) deaths of the VM alone (SIGKILL of zd-vm, its
# host and pipeline live on: zd-track ends the stream with END status 3
# and zd-recv takes over on that word), and one VM stopped on purpose
# (zd-vm --ctl stop: END status 2, no takeover). Then
# ZD_FAILOVER_SILENT_KILLS (3) losses by silence: the primary is stopped,
# not killed, zd-recv --timeout 100 declares it lost and its --fence
# (SIGKILL of the stopped processes) runs before the takeover.
# Asserted, per mode:
#   - every kill is followed by a takeover, and the restored VM answers on
#     the address the client used from the start;
#   - the client's answers form one unbroken sequence over every takeover:
#     no answer contradicted (zd-client errors 0), none skipped (gaps 0,
#     and the log's N are consecutive), nothing received lost: a fresh
#     request to the last restored VM gets exactly the next N;
#   - the restored VM can be protected again (the next cycle's epochs
#     commit on a new replica).
# Failover time (primary last heard by zd-recv -> restored VM's first
# answer to a client, as zd-vm --restore reports it) is printed as p50/max
# and written to $BUILD/kvm_failover.csv; under QEMU TCG it is emulated and
# not asserted against any bound.
# The client's failover time (its last answer before the
# loss -> its first answer after, zd-client reconnecting at once, as
# zd-client --log reports it) is written there too, per kill, and printed
# per mode; asserted: one client failover per kill, and no connection the
# peer accepted was dropped unanswered (zd-client's resets: the dying
# primary's listener, a restored VM). Its bounds (1 s with zd-recv's
# defaults, 300 ms with --timeout 100) are asserted by
# kvm_failover_client.sh on a workload the backup keeps up with: here the
# epochs are ~24 MB on purpose, and output commit alone holds an answer
# for one or two of those epochs' transfer, fsync and commit (p50 ~0.2-0.65
# s, max ~0.9 s in buffered here), which is the workload's, not the
# failover's.
# Outside the guest: --restore's refusals of missing, empty, half-written,
# foreign and malformed replicas (they need no KVM: the replica is checked
# before /dev/kvm is opened).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/kvmouter.sh"
# wait_for, read_port; gone, at_least, answered, client_back ...
. "$(dirname "$0")/../lib/takeover.sh"
cd "$ZD_TOP" || exit 1

# A replica made by zd-recv from a hand-edited stream (synth pages, the
# target and state kind of a zd-vm guest): $1 dir, $2 base64 state blob.
fake_kvm_replica() {
	zd-track synth:pages=64,dirty=4 --epochs 1 --json 2>/dev/null | zd-swap --json 2>/dev/null |
		sed -e 's|"target":"synth[^"]*"|"target":"kvm:/nonexistent.sock"|' \
		    -e "s|\"kind\":3,\"data\":\"[^\"]*\"|\"kind\":1,\"data\":\"$2\"|" |
		zd-recv --stdio --replica "$1" >/dev/null 2>"$TMP/fake.err"
}

if [ -z "${ZD_KVM_INNER:-}" ]; then
	expect_fail "zd-vm --restore: a missing directory" 4 "^zd-vm: --restore $TMP/none: No such file or directory$" \
		zd-vm --restore "$TMP/none"
	mkdir "$TMP/empty"
	expect_fail "zd-vm --restore: an empty directory" 4 "^zd-vm: $TMP/empty: not a zd replica \(no meta.json\)$" \
		zd-vm --restore "$TMP/empty"
	printf 'hello\n' >"$TMP/empty/notes.txt"
	expect_fail "zd-vm --restore: a directory of something else" 4 "^zd-vm: $TMP/empty: not a zd replica \(no meta.json, holds 'notes.txt'\)$" \
		zd-vm --restore "$TMP/empty"
	# Half-written: a HEADER bound the replica, no epoch was ever committed.
	zd-track synth:pages=64,dirty=4 --epochs 1 --json 2>/dev/null | grep -v '"type":"\(checkpoint\|dirty\|state\|commit\|stat\)"' |
		zd-recv --stdio --replica "$TMP/half" >/dev/null 2>&1
	expect_fail "zd-vm --restore: a replica with no committed epoch" 4 "^zd-vm: $TMP/half: no epoch committed yet: nothing to restore$" \
		zd-vm --restore "$TMP/half"
	zd-track synth:pages=64,dirty=4 --epochs 2 2>/dev/null | zd-swap 2>/dev/null |
		zd-recv --stdio --replica "$TMP/synth" >/dev/null 2>&1
	expect_fail "zd-vm --restore: a replica of another target" 4 "^zd-vm: $TMP/synth: a replica of 'synth:pages=64,dirty=4', not of a zd-vm guest \(kvm:\)$" \
		zd-vm --restore "$TMP/synth"
	# "ZDVS" v1 whose header claims 100 bytes: a truncated blob.
	fake_kvm_replica "$TMP/trunc" "WkRWUwEAAABkAAAAAwAAAA=="
	expect_fail "zd-vm --restore: a truncated state blob (exit 3, byte offset)" 3 \
		"^zd-vm: $TMP/trunc/state.bin: byte 8: header says 100 bytes, the blob has 16 \(truncated\?\)$" \
		zd-vm --restore "$TMP/trunc"
	fake_kvm_replica "$TMP/junk" "AQAAAAAAAAABAAAAAAAAAA=="
	expect_fail "zd-vm --restore: a state blob that is not zd-vm's" 3 "^zd-vm: $TMP/junk/state.bin: byte 0: magic 0x1, not a zd-vm state blob" \
		zd-vm --restore "$TMP/junk"
	if [ -e /nonexistent.sock ]; then not_ok "a refused restore binds nothing" "/nonexistent.sock exists"
	else ok "a refused restore binds nothing"; fi
	expect_fail "zd-vm --restore takes no --mem" 2 '^zd-vm: --restore takes the memory size and workload from the replica' \
		zd-vm --restore "$TMP/junk" --mem 64M
	expect_fail "zd-vm --ctl takes no --restore" 2 '^zd-vm: --ctl takes no VM flags \(try --help\)$' \
		zd-vm --ctl "$TMP/s" --restore "$TMP/junk" info

	# The kill cycles passed 20/20 once, then in the last run before this
	# commit a takeover hung at the 4th remus kill (wait_for 300 s without
	# progress; not diagnosed yet). Until that is understood they run on
	# request only, like the Xen check; the refusals above always run.
	# The hang once seen at the 4th kill was a spinning restored guest
	# that got no request until a pause that never came (zd-vm now kicks
	# the vCPU for each request). ZD_FAILOVER_E2E=0 leaves the cycles out.
	# Without /dev/kvm here the cycles would run in QEMU TCG, where 23
	# takeovers take most of an hour: only on request (ZD_FAILOVER_E2E=1).
	if [ "${ZD_FAILOVER_E2E:-}" = 0 ] || { ! have_kvm && [ "${ZD_FAILOVER_E2E:-}" != 1 ]; }; then
		skip "failover of a KVM guest: 20 SIGKILLs" \
			"$(if [ "${ZD_FAILOVER_E2E:-}" = 0 ]; then echo ZD_FAILOVER_E2E=0; else echo "no /dev/kvm here (under QEMU TCG only with ZD_FAILOVER_E2E=1)"; fi)"
		done_testing
	fi
	kvm_outer "$0" --cpus 2 --timeout "${ZD_FAILOVER_QEMU_TIMEOUT:-1500}"
fi

# ---- inside: a working /dev/kvm ----
emulated=no
grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo && emulated=yes
MODES=${ZD_FAILOVER_MODES:-remus buffered zddspt}
KILLS=${ZD_FAILOVER_KILLS:-20}
CSV=${BUILD:-$ZD_TOP/build}/kvm_failover.csv
[ "${CSV#/}" = "$CSV" ] && CSV=$ZD_TOP/$CSV
mkdir -p "$(dirname "$CSV")"
echo "mode,kill,epoch_taken_over,epoch_discarded,last_heard_ms,lost_ms,restore_ms,emulated,client_ms" >"$CSV"

# Heartbeats: zd-recv's defaults (100 ms / 500 ms) assume real time. Under
# TCG a checkpoint pause, a full first copy or a memory checksum stretch
# to seconds, and a timeout that fired then would take over from a live
# primary (two VMs on one address). The kills here close the connection,
# which zd-recv sees at once; the timeout only guards against a hang.
# zd-recv's defaults on real KVM (heartbeat 100 ms, dead after 500 ms);
# under QEMU TCG a pause alone can outlast them, so they are stretched.
if [ $emulated = yes ]; then HB_MS=1000 TO_MS=30000; else HB_MS=100 TO_MS=500; fi
HB_MS=${ZD_FAILOVER_HB:-$HB_MS} TO_MS=${ZD_FAILOVER_TO:-$TO_MS}
# Epochs big enough that a random kill often lands while one is on the
# wire or being drained (real KVM); under TCG a small guest.
if [ $emulated = yes ]; then VM_MEM=8M WORKLOAD=dirty=2000,hot=0.8,span=4M
else VM_MEM=32M WORKLOAD=dirty=200000,hot=0.2,span=24M; fi
VM_MEM=${ZD_FAILOVER_MEM:-$VM_MEM} WORKLOAD=${ZD_FAILOVER_WORKLOAD:-$WORKLOAD}

# cycle MODE K DIR: protect the running VM (pid $VM) with a new pipeline
# and replica, kill it, wait for the takeover. Sets VM to the restored one.
cycle() {
	local mode=$1 k=$2 d=$3 r=$3/rep$2 P want delay line heard lost rest took disc
	# A silent primary (SIGSTOP: a hung host, a cut cable) is declared
	# lost by the heartbeat timeout alone, and fenced (here: SIGKILL of
	# its processes, as a power-off would) before the takeover: the
	# stopped zd-vm still holds the service address.
	local hb=$HB_MS to=$TO_MS fence=() send_hb='' nfo cms
	if [ -n "${SILENT:-}" ]; then
		hb=20 to=100 send_hb="--heartbeat 20"
		# Like a power switch, the fence returns once the node is off:
		# zd-vm has exited (a zombie of this shell, its address free).
		fence=(--fence "kill -KILL \$(cat '$r.pids'); v=\$(cut -d' ' -f1 '$r.pids');
			while [ -e /proc/\$v ] && ! grep -q '^State:.*Z' /proc/\$v/status; do sleep 0.01; done")
	fi
	rm -f "$r.port"
	zd-recv --listen 127.0.0.1:0 --port-file "$r.port" --replica "$r" --verify --heartbeat $hb --timeout $to \
		"${fence[@]}" -v 2>"$r.err" &
	local RECV=$!
	at_exit "kill $RECV"
	if ! P=127.0.0.1:$(read_port "$r.port" $RECV 60); then
		not_ok "$label kill $k: zd-recv listens" "$(tail -3 "$r.err")"
		return 1
	fi
	# zddspt runs with its copy-on-write guard (the default): zd-swap
	# drains the frozen set while the VM runs, so a kill can land mid-drain.
	# The primary side in a session of its own: a host crash takes zd-vm
	# and its pipeline at once, and so does the kill below.
	# Every third kill is aimed mid-transfer: zd-recv is stopped
	# (SIGSTOP) until the primary's raw pages fill the socket buffers and
	# zd-send blocks inside an epoch, then the primary dies, then zd-recv
	# goes on and finds the epoch cut. The others land at random moments.
	# zddspt: each drain held back 15 ms of the 50 ms cycle (zd-swap
	# --drain-delay), the guest writing into its guarded pages meanwhile,
	# so a random kill often lands mid-drain.
	local swap_opts=
	[ "$mode" = zddspt ] && swap_opts="--drain-delay 15"
	local aimed=no wire=
	[ $((k % 3)) -eq 0 ] && [ -z "${SILENT:-}${VMONLY:-}" ] && aimed=yes wire="--compress none"
	setsid bash -c 'zd-track "kvm:$1" --mode "$2" --verify --interval 50 --timeout 300000 2>"$3.track" |
		zd-swap $6 2>"$3.swap" | zd-send "$4" --timeout 60000 $5 >"$3.log" 2>"$3.send"' \
		_ "$S" "$mode" "$r" "$P" "$wire $send_hb" "$swap_opts" &
	local PIPE=$!
	echo "$VM -$PIPE" >"$r.pids"
	at_exit "kill -KILL -- -$PIPE"
	# The kill moment: after 1-3 commits, then 0-999 ms into the epochs
	# that follow (most land mid-transfer: under TCG an epoch's pages take
	# most of its time to go through).
	want=$((1 + RANDOM % 3))
	delay=$(printf '0.%03d' $((RANDOM % 1000)))
	if ! wait_for 300 at_least "$r.err" "$want" "$PIPE" || [ "$(commits "$r.err")" -lt "$want" ]; then
		not_ok "$label kill $k: epochs commit on the new replica" \
			"$(tail -n 3 "$r.err" "$r.track" "$r.swap" "$r.send")"
		kill "$RECV" 2>/dev/null
		kill -KILL -- "-$PIPE" 2>/dev/null
		return 1
	fi
	# A crashed host stops zd-vm and its pipeline at once. Here: the
	# pipeline's group is stopped first (one kill(2): it can no longer
	# react), then zd-vm is killed and reaped (its service address is
	# free for the restored VM: both run on this one host), then the
	# pipeline dies. Killing zd-vm first let zd-track see the VM die and
	# end the stream itself; killing the pipeline first let the restored
	# VM find the old one still bound to the address ("Address already
	# in use"). VMONLY kills zd-vm alone: the host and pipeline live on.
	nfo=$(failovers "$d/client.log")
	crash() {
		kill -STOP -- "-$PIPE"
		kill -KILL "$VM"
		wait "$VM" 2>/dev/null
		kill -KILL -- "-$PIPE"
	}
	if [ -n "${VMONLY:-}" ]; then
		sleep "$delay"
		kill -KILL "$VM"
	elif [ -n "${SILENT:-}" ]; then
		sleep "$delay"
		kill -STOP -- "-$PIPE" "$VM"
	elif [ $aimed = yes ]; then
		delay=aimed
		kill -STOP "$RECV"
		sleep 0.3
		crash
		kill -CONT "$RECV"
	else
		sleep "$delay"
		crash
	fi
	wait "$PIPE" 2>/dev/null
	# zd-recv execs zd-vm --restore: the restored VM keeps zd-recv's pid.
	if ! wait_for 300 answered "$r.err" "$RECV" || ! grep -q 'restored VM answered' "$r.err"; then
		not_ok "$label kill $k: the backup takes over and answers the client" \
			"$(grep -v 'committed' "$r.err" | tail -n 6; tail -n 2 "$r.track" "$r.swap" "$r.send" "$d/client.err")"
		kill "$RECV" 2>/dev/null
		return 1
	fi
	VM=$RECV
	# The client's side of it: its first answer from the restored VM.
	if ! wait_for 120 client_back "$d/client.log" $((nfo + 1)) "$VM" ||
		[ "$(failovers "$d/client.log")" -le "$nfo" ]; then
		not_ok "$label kill $k: the client gets an answer again" "$(tail -n 3 "$d/client.err")"
		return 1
	fi
	cms=$(awk 'NF == 5 {v = $5} END {printf "%.1f", v / 1e6}' "$d/client.log")
	# The VM alone died: the pipeline said so (END status 3) and ended by
	# itself; zd-recv took over on that word, not on a broken connection.
	if [ -n "${VMONLY:-}" ]; then
		if ! grep -q "the primary's VM died (END status 3" "$r.err" || ! grep -q 'zd-vm died' "$r.track"; then
			not_ok "$label kill $k: zd-track says the VM died, zd-recv takes over on it" \
				"$(grep -v committed "$r.err" | tail -n 3; tail -n 2 "$r.track")"
			return 1
		fi
	fi
	# One decision per loss: the fence and the takeover run once, after
	# every whole epoch the dead primary sent was read.
	if [ "$(grep -c 'taking over at epoch' "$r.err")" -ne 1 ]; then
		not_ok "$label kill $k: zd-recv decides the takeover once" "$(grep 'primary lost' "$r.err")"
		return 1
	fi
	took=$(sed -n 's/.*taking over at epoch \([0-9]*\).*/\1/p' "$r.err" | head -1)
	disc=$(sed -n 's/.*; epoch \([0-9]*\) discarded.*/\1/p' "$r.err" | head -1)
	line=$(grep 'restored VM answered' "$r.err" | head -1)
	heard=$(echo "$line" | sed -n 's/.*: \([0-9.-]*\) ms after the primary was last heard.*/\1/p')
	lost=$(echo "$line" | sed -n 's/.* \([0-9.-]*\) ms after it was declared lost.*/\1/p')
	rest=$(echo "$line" | sed -n 's/.* \([0-9.-]*\) ms after zd-vm --restore began.*/\1/p')
	echo "$mode${SILENT:+-silent}${VMONLY:+-vmonly},$k,$took,${disc:-},$heard,$lost,$rest,$emulated,$cms" >>"$CSV"
	echo "# $label kill $k: $how after $want commit(s) + ${delay}$([ $aimed = no ] && echo ' s'); taken over at epoch $took${disc:+ (epoch $disc in flight discarded)}; first answer ${heard} ms after the primary was last heard; the client answered again $cms ms after its last answer"
	TAKEN=$((TAKEN + 1))
	[ -n "$disc" ] && INFLIGHT=$((INFLIGHT + 1))
	return 0
}

run_mode() {
	local mode=$1 n=$2 d=$TMP/$1${SILENT:+-silent}${VMONLY:+-vmonly} CL SP k i last probe sum
	local label=$mode${SILENT:+, silent primary}${VMONLY:+, VM killed alone} how=SIGKILL
	[ -n "${SILENT:-}" ] && how="SIGSTOP (fenced)"
	[ -n "${VMONLY:-}" ] && how="SIGKILL of zd-vm alone"
	mkdir -p "$d"
	S=$d/vm.sock
	TAKEN=0 INFLIGHT=0
	zd-vm --control "$S" --mem "$VM_MEM" --workload "$WORKLOAD" \
		--serve 127.0.0.1:0 2>"$d/vm.err" &
	VM=$!
	at_exit "kill $VM"
	if ! wait_for 120 test -S "$S"; then
		not_ok "$label: zd-vm starts" "$(tail -n 3 "$d/vm.err")"
		return
	fi
	SP=$(zd-vm --ctl "$S" info | sed -n 's/^serve=//p')
	# One client for the whole run: closed loop, two requests outstanding
	# (so a takeover can owe it more than one answer), answers can wait
	# for emulated epochs, reconnects for as long as a takeover may take.
	zd-client --reconnect --retry-for 120000 --timeout 120000 --concurrency 2 --duration 3600s \
		--log "$d/client.log" -v "$SP" >"$d/client.json" 2>"$d/client.err" &
	CL=$!
	at_exit "kill $CL"
	for k in $(seq "$n"); do
		cycle "$mode" "$k" "$d" || break
	done
	if [ "$TAKEN" -eq "$n" ]; then
		ok "$label: $n kills ($how) of the primary, each followed by a takeover ($INFLIGHT with an epoch in flight discarded)"
	else
		not_ok "$label: $n kills ($how) of the primary, each followed by a takeover" "$TAKEN takeovers"
	fi
	if [ "$(zd-vm --ctl "$S" info | sed -n 's/^serve=//p')" = "$SP" ]; then
		ok "$label: the restored VM serves the primary's address $SP and control socket"
	else
		not_ok "$label: the restored VM serves the primary's address $SP" "$(zd-vm --ctl "$S" info 2>&1 | grep serve)"
	fi
	# Let the client get a few answers from the last VM, then stop it.
	last=$(wc -l <"$d/client.log")
	wait_for 120 more_answers "$d/client.log" $((last + 3))
	kill -TERM "$CL"
	wait "$CL"
	local crc=$?
	sum=$(cat "$d/client.json")
	echo "# $label client: $sum"
	local errors gaps reconnects count first lastseq resets nfail
	errors=$(echo "$sum" | jq -r '.errors // "x"')
	gaps=$(echo "$sum" | jq -r '.gaps // "x"')
	reconnects=$(echo "$sum" | jq -r '.reconnects // "x"')
	count=$(echo "$sum" | jq -r '.count // 0')
	first=$(echo "$sum" | jq -r '.first_seq // 0')
	lastseq=$(echo "$sum" | jq -r '.last_seq // 0')
	resets=$(echo "$sum" | jq -r '.resets // "x"')
	nfail=$(echo "$sum" | jq -r '.failovers // "x"')
	if [ "$crc" -eq 0 ] && [ "$errors" = 0 ] && [ "$gaps" = 0 ]; then
		ok "$label: the client's $count answers over $reconnects reconnects: none contradicted, none skipped"
	else
		not_ok "$label: the client's answers: none contradicted, none skipped" \
			"exit $crc, errors $errors, gaps $gaps; $(tail -n 5 "$d/client.err")"
	fi
	if awk -v f="$first" '$1 != f + NR - 1 {print "answer " NR ": seq " $1 ", want " f + NR - 1; exit 1}' "$d/client.log" >"$d/seqcheck" &&
		[ "$count" -gt 0 ] && [ "$lastseq" = $((first + count - 1)) ]; then
		ok "$label: the answers received are seq $first..$lastseq, one each, in order"
	else
		not_ok "$label: the answers received are consecutive" "$(cat "$d/seqcheck") (count $count, first $first, last $lastseq)"
	fi
	# Each kill is one outage for the client, and no server (the dying
	# primary, the restored VM) accepted its reconnection only to drop it.
	if [ "$resets" = 0 ] && [ "$nfail" = "$TAKEN" ]; then
		ok "$label: the client saw $nfail failovers for $TAKEN takeovers, no connection reset unanswered"
	else
		not_ok "$label: one client failover per takeover, no connection reset unanswered" \
			"failovers $nfail for $TAKEN takeovers, resets $resets; $(grep -i 'dropped' "$d/client.err" | head -3)"
	fi
	echo "# $label: the client's failover time $(awk -F, -v m="$mode${SILENT:+-silent}${VMONLY:+-vmonly}" 'NR > 1 && $1 == m && $9 != "" {print $9}' "$CSV" | sort -n |
		awk '{a[NR] = $1} END {if (NR) printf "p50 %.0f ms, max %.0f ms over %d", a[int((NR + 1) / 2)], a[NR], NR}')"
	# Nothing the client received is lost: the VM now running continues
	# after the last answer. The requests the client had outstanding when
	# it was stopped may have been executed (their answers went to a closed
	# connection), so the next N lies in [last + 1, last + 1 + outstanding].
	local sent resent outst lo hi pn
	sent=$(echo "$sum" | jq -r '.sent // 0')
	resent=$(echo "$sum" | jq -r '.resent // 0')
	outst=$((sent - resent - count))
	lo=$((lastseq + 1)) hi=$((lastseq + 1 + outst))
	probe=$(exec 3<>"/dev/tcp/127.0.0.1/${SP##*:}" && echo "probe" >&3 && read -r -t 120 a <&3 && echo "$a")
	pn=${probe#seq }
	if [ "$outst" -ge 0 ] && [ "$probe" = "seq $pn" ] && [ "$pn" -ge "$lo" ] 2>/dev/null && [ "$pn" -le "$hi" ]; then
		ok "$label: the last restored VM continues the sequence: a new request gets $probe (last answer seq $lastseq, $outst request(s) left outstanding)"
	else
		not_ok "$label: the last restored VM continues the sequence" \
			"got '$probe', want seq $lo..$hi (last answer seq $lastseq, $outst request(s) left outstanding)"
	fi
	zd-vm --ctl "$S" stop >/dev/null 2>&1
	wait "$VM" 2>/dev/null
}

# ZD_FAILOVER_KILLS spread over the modes, the first ones taking the rest.
set -- $MODES
nm=$#
i=0
for m in $MODES; do
	n=$((KILLS / nm + (i < KILLS % nm ? 1 : 0)))
	i=$((i + 1))
	[ "$n" -gt 0 ] && run_mode "$m" "$n"
done
# Loss by silence: zd-recv --timeout 100 --heartbeat 20 and a fence.
# The VM dies, the host lives: END status 3 is the loss.
# buffered: zd-track finds out first; zddspt: zd-swap's guard does.
VM_KILLS=${ZD_FAILOVER_VM_KILLS:-3}
[ "$VM_KILLS" -gt 0 ] && VMONLY=yes run_mode buffered 1
[ "$VM_KILLS" -gt 1 ] && VMONLY=yes run_mode zddspt $((VM_KILLS - 1))

# A VM stopped on purpose is not a loss: zd-track ends with END status 2,
# zd-recv says so and keeps listening; nothing is restored.
stopped_on_purpose() {
	local d=$TMP/stop S=$TMP/stop/vm.sock P RECV PIPE
	mkdir -p "$d"
	zd-vm --control "$S" --mem "$VM_MEM" --workload "$WORKLOAD" --serve 127.0.0.1:0 2>"$d/vm.err" &
	VM=$!
	at_exit "kill $VM"
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/rep" --heartbeat "$HB_MS" \
		--timeout "$TO_MS" -v 2>"$d/recv.err" &
	RECV=$!
	at_exit "kill $RECV"
	if ! wait_for 120 test -S "$S" || ! P=127.0.0.1:$(read_port "$d/recv.port" $RECV 60); then
		not_ok "a VM stopped on purpose: zd-vm and zd-recv start" "$(tail -n 2 "$d/vm.err" "$d/recv.err")"
		return
	fi
	zd-track "kvm:$S" --mode buffered --interval 50 2>"$d/track" | zd-swap 2>"$d/swap" | zd-send "$P" >/dev/null 2>"$d/send" &
	PIPE=$!
	if ! wait_for 120 at_least "$d/recv.err" 3 "$PIPE"; then
		not_ok "a VM stopped on purpose: epochs commit" "$(tail -n 2 "$d/recv.err" "$d/track")"
		return
	fi
	zd-vm --ctl "$S" stop >/dev/null
	wait "$VM" 2>/dev/null
	wait "$PIPE" 2>/dev/null
	# What a takeover would have done by now (it follows the END at once).
	sleep 1
	if grep -q 'END from the primary (status 2' "$d/recv.err" && ! grep -q 'taking over\|restored VM' "$d/recv.err" &&
		kill -0 "$RECV" 2>/dev/null && [ ! -e "$S" ]; then
		ok "a VM stopped on purpose (zd-vm --ctl stop) is not taken over: END status 2, zd-recv listens on"
	else
		not_ok "a VM stopped on purpose is not taken over" "$(grep -v committed "$d/recv.err" | tail -n 4; tail -n 1 "$d/track")"
	fi
	kill "$RECV" 2>/dev/null
}
stopped_on_purpose

SILENT_KILLS=${ZD_FAILOVER_SILENT_KILLS:-3}
[ "$SILENT_KILLS" -gt 0 ] && SILENT=yes run_mode buffered "$SILENT_KILLS"

# A damaged replica is refused with nothing started: the last takeover's
# replica, its memory changed behind zd-recv's back, and its state cut.
last=$(find "$TMP" -mindepth 2 -maxdepth 2 -type d -name 'rep*' | sort | tail -1)
if [ -n "$last" ]; then
	cp -r --sparse=always "$last" "$TMP/bad"
	printf 'X' | dd of="$TMP/bad/memory.img" bs=1 seek=$((5 << 20)) conv=notrunc 2>/dev/null
	expect_fail "zd-vm --restore: a replica whose memory fails its checksum" 4 \
		"^zd-vm: $TMP/bad/memory.img: checksum .*: the replica is damaged$" \
		zd-vm --restore "$TMP/bad" --control "$TMP/bad.sock" --serve 127.0.0.1:0
	cp "$last/memory.img" "$TMP/bad/memory.img"
	head -c 1000 "$last/state.bin" >"$TMP/bad/state.bin"
	expect_fail "zd-vm --restore: a cut state.bin" 3 "^zd-vm: $TMP/bad/state.bin: byte 8: header says" \
		zd-vm --restore "$TMP/bad" --control "$TMP/bad.sock" --serve 127.0.0.1:0
	if [ -e "$TMP/bad.sock" ]; then not_ok "a refused restore creates no control socket"
	else ok "a refused restore creates no control socket"; fi
fi

# p50 and max of CSV column $1 (nearest rank)
# col_stats COLUMN [silent]: over the SIGKILL rows, or the silent ones.
col_stats() {
	awk -F, -v c="$1" -v s="${2:-}" 'NR > 1 && $c != "" && (s != "") == ($1 ~ /-silent$/) {print $c}' "$CSV" | sort -n |
		awk '{a[NR] = $1} END {if (NR) printf "p50 %.0f ms, max %.0f ms over %d takeovers", a[int((NR + 1) / 2)], a[NR], NR; else printf "none measured"}'
}
echo "# failover time, primary last heard -> restored VM answers: $(col_stats 5)$([ $emulated = yes ] && echo ' (QEMU TCG: emulated)')"
echo "# failover time, loss declared by zd-recv -> restored VM answers: $(col_stats 6)"
echo "# restore alone (zd-vm --restore start -> first answer): $(col_stats 7)"
echo "# silent primary (--timeout 100), last heard -> restored VM answers: $(col_stats 5 silent)"
for m in $MODES; do
	echo "# client failover time, $m (last answer before the loss -> first after): $(awk -F, -v m="$m" 'NR > 1 && $1 == m && $9 != "" {print $9}' "$CSV" | sort -n |
		awk '{a[NR] = $1} END {if (NR) printf "p50 %.0f ms, max %.0f ms over %d kills", a[int((NR + 1) / 2)], a[NR], NR; else printf "none measured"}')"
done
echo "# client failover time, silent primary (--timeout 100): $(col_stats 9 silent)"
echo "# per takeover: $CSV"
done_testing
