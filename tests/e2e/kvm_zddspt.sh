#!/usr/bin/env bash
# The correctness test of zddspt on real KVM: zd-vm's uffd guard
# write-protects the frozen set at each checkpoint, zd-swap (drain_uffd)
# saves pre-images on the guest's write faults and drains the rest while
# the VM runs. With --verify, for $ZD_ZDDSPT_EPOCHS epochs (default 200):
#   - "hot": a workload whose hot set is written continuously, so faults
#     happen during every drain: the replica equals zd-vm's MEMSUM taken
#     while paused at the last checkpoint (zd-recv --verify checks every
#     epoch's COMMIT memsum too), the epochs were guarded (track STAT
#     guarded=1), and write faults were served (swap STAT cow_faults > 0);
#   - "storm": a 64-page span written as fast as the guest can, all hot:
#     right after each resume the guest rewrites every frozen page at once;
#     no deadlock (the run ends within its timeout), same checksums (no
#     pre-image lost), faults in most drains;
#   - "fallback": zd-vm without its uffd (ZD_VM_NO_UFFD=1): every epoch
#     copies the frozen set while paused, says so in STAT (guarded=0,
#     fallback=1) and the replica is still right;
#   - "mixed": the pause as one CHECKPOINT request with the default
#     policy but a small copy budget (ZD_ZDDSPT_COPY_MAX): in the same
#     epochs part of the frozen set is copied at the pause and the rest
#     write-protected (STAT copied_at_pause, protected), faults are
#     served on the protected part, and the replica is still right;
#   - "steps": the six-request pause (ZD_ZDDSPT_ONE_REQUEST=0, what a VM
#     with a disk takes) with zd-vm's coalesced PROTECT, still right;
#   - "chunked": the pre-copy re-armed and read by zd-track in chunks
#     (ZD_ZDDSPT_TARGET_PRECOPY=0) instead of zd-vm's PRECOPY, still right.
# "hot", "storm", "mixed" and "steps" run with ZD_ZDDSPT_PRECOPY_ALL=0 and
# --precopy 20 (the paper's pre-copy of the standby set, 5 ms before T1):
# a large frozen set, so the guard has work; "hot" and "storm" with
# ZD_ZDDSPT_COPY_MAX=0 too: nothing copied at the pause, so every page of
# the frozen set is guarded and faults are sure. The defaults (pre-copy of
# every dirty page 2 % before T1) run in the "cmp-zddspt" case.
# Per-epoch figures (pause, faults, fault cost, drain time) go out as TAP
# comments. Then remus, buffered and zddspt at one workload,
# $ZD_ZDDSPT_CMP_EPOCHS epochs each, to print the pause figures side by
# side (under QEMU TCG they are emulated; only equality is asserted).
# ZD_ZDDSPT_GUARD=0 leaves out the guarded cases.
# Runs in tests/lib/vmhost.sh's guest with --cpus 1 (under TCG, uffd
# faults cost 7.6 ms with 2 vCPUs and 0.43 ms with one).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/kvmouter.sh"
. "$(dirname "$0")/../lib/replica.sh"
cd "$ZD_TOP" || exit 1
EPOCHS=${ZD_ZDDSPT_EPOCHS:-200}
CMP_EPOCHS=${ZD_ZDDSPT_CMP_EPOCHS:-20}
# 8M of guest RAM (the least zd-vm takes; the workload writes 4M-8M):
# --verify hashes all of it while paused, every epoch, and under TCG that
# hash is most of an epoch's time.
MEM=${ZD_ZDDSPT_MEM:-8M}

if [ -z "${ZD_KVM_INNER:-}" ]; then
	kvm_outer "$0" --cpus 1 --timeout 1500
fi

# ---- inside: a working /dev/kvm ----
emulated=no
grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo && emulated=yes

# stat_sum FILE SOURCE KEY: sum of KEY over the STAT records of SOURCE.
stat_vals() {
	grep "\"source\":\"$2\"" "$1" | sed -n "s/.*\"$3\":\([0-9.e+]*\).*/\1/p"
}

# pct LIST P: the P-th percentile of a list of numbers (one a line).
pct() { sort -n | awk -v p="$1" '{a[NR] = $1} END {if (!NR) {print "-"; exit}
	i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; if (i > NR) i = NR; print a[i]}'; }

# run_mode NAME MODE EPOCHS WORKLOAD [ENV=VALUE for zd-vm]
run_mode() {
	local name=$1 mode=$2 epochs=$3 wl=$4 vmenv=${5:-ZD_NOTHING=} d=$TMP/$1 S P VM RECV rc
	mkdir -p "$d"
	local started=$SECONDS
	S=$d/vm.sock
	rm -f "$d/recv.port"	# an earlier run in $d may have left one: not this zd-recv's port
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/replica" --once --verify --timeout 600000 \
		2>"$d/recv.err" &
	RECV=$!
	at_exit "kill $RECV"
	env "$vmenv" zd-vm --control "$S" --mem "$MEM" --workload "$wl" 2>"$d/vm.err" &
	VM=$!
	at_exit "kill $VM"
	if ! wait_for 60 test -S "$S" || ! P=127.0.0.1:$(read_port "$d/recv.port" "$RECV" 60); then
		not_ok "$name: zd-vm and zd-recv start" "$(tail -n 3 "$d/vm.err" "$d/recv.err")"
		return
	fi
	sleep 0.5
	timeout 1500 zd-track "kvm:$S" --mode "$mode" --verify --interval 25 --epochs "$epochs" --timeout 300000 ${TRACK_OPTS:-} ${ZD_ZDDSPT_TRACK_OPTS:-} 2>"$d/track.err" |
		timeout 1500 zd-swap ${SWAP_OPTS:-} 2>"$d/swap.err" |
		timeout 1500 zd-send "$P" --timeout 600000 --json-log >"$d/send.log" 2>"$d/send.err"
	rc="${PIPESTATUS[*]}"
	if [ "$rc" = "0 0 0" ]; then ok "$name: $mode ran $epochs epochs"
	else not_ok "$name: $mode ran $epochs epochs" "exits $rc: $(last_words "$d" recv send swap vm track)"; fi
	wait "$RECV"
	rc=$?
	if [ $rc -eq 0 ]; then ok "$name: zd-recv --verify ends cleanly (every epoch's memsum matched)"
	else not_ok "$name: zd-recv --verify ends cleanly" "exit $rc: $(tail -n 3 "$d/recv.err")"; fi
	replica_matches "$name" "$d/replica" "$d/send.log" "$epochs"
	echo "# $name ($mode): $(pause_summary "$d/send.log" us); run took $((SECONDS - started)) s$([ $emulated = yes ] && echo ' (emulated)')"
	zd-vm --ctl "$S" stop >/dev/null
	wait "$VM"
}

# The guard's figures of a zddspt run. MIN_SHARE: the percentage of
# drains that must have seen a fault.
check_guard() {
	local name=$1 min_share=$2 d=$TMP/$1 g n faults drains nd l
	g=$(stat_vals "$d/send.log" track guarded | awk '$1 == 1' | wc -l)
	n=$(stat_vals "$d/send.log" track guarded | wc -l)
	# Epoch 1 may come before zd-swap has joined the control socket.
	if [ "$n" -gt 0 ] && [ "$g" -ge $((n - 1)) ]; then ok "$name: $g of $n epochs write-protected (no copy while paused)"
	else not_ok "$name: epochs write-protected" "$g of $n guarded; fallback reasons: $(stat_vals "$d/send.log" track fallback | sort | uniq -c | tr '\n' ' '); $(grep -m2 -i 'userfault\|guard\|paused' "$d/vm.err" "$d/track.err")"; fi
	faults=$(stat_vals "$d/send.log" swap cow_faults | awk '{s += $1} END {print s + 0}')
	nd=$(stat_vals "$d/send.log" swap cow_faults | wc -l)
	drains=$(stat_vals "$d/send.log" swap cow_faults | awk '$1 > 0' | wc -l)
	# Per epoch: p50 / p99 / max.
	l() { printf '%s/%s/%s' "$(pct 50 <"$1")" "$(pct 99 <"$1")" "$(pct 100 <"$1")"; }
	stat_vals "$d/send.log" track pause_ns | awk '{printf "%.0f\n", $1 / 1000}' >"$d/e.pause"
	stat_vals "$d/send.log" track protect_ns | awk '{printf "%.0f\n", $1 / 1000}' >"$d/e.protect"
	stat_vals "$d/send.log" swap cow_faults >"$d/e.faults"
	# (no process substitution: the QEMU guest has no /dev/fd)
	stat_vals "$d/send.log" swap fault_ns >"$d/e.fns"
	paste "$d/e.faults" "$d/e.fns" | awk '$1 > 0 {printf "%.0f\n", $2 / $1 / 1000}' >"$d/e.fcost"
	stat_vals "$d/send.log" swap drain_ns | awk '{printf "%.1f\n", $1 / 1e6}' >"$d/e.drain"
	stat_vals "$d/send.log" track frozen >"$d/e.frozen"
	echo "# $name per epoch p50/p99/max: pause $(l "$d/e.pause") us (protect $(l "$d/e.protect") us), frozen $(l "$d/e.frozen") pages"
	echo "# $name per epoch p50/p99/max: cow faults $(l "$d/e.faults"), fault cost $(l "$d/e.fcost") us, drain $(l "$d/e.drain") ms"
	echo "# $name: $faults copy-on-write faults in $drains of $nd drains; pre-copied pages mean $(stat_vals "$d/send.log" track precopy | awk '{s+=$1} END {printf "%.0f", NR ? s/NR : 0}'), re-dirtied mean $(stat_vals "$d/send.log" track precopy_redirtied | awk '{s+=$1} END {printf "%.0f", NR ? s/NR : 0}')"
	if [ "$nd" -gt 0 ] && [ $((drains * 100)) -ge $((nd * min_share)) ]; then
		ok "$name: the guest's writes faulted during drains ($faults faults, in $drains of $nd drains)"
	else
		not_ok "$name: the guest's writes faulted during drains" "faults in $drains of $nd drains, want ${min_share}%"
	fi
}

# The pause was one CHECKPOINT request in every guarded epoch, and zd-vm
# says how long the vCPU stood still.
check_one_request() {
	local name=$1 d=$TMP/$1 g o
	g=$(stat_vals "$d/send.log" track guarded | awk '$1 == 1' | wc -l)
	o=$(stat_vals "$d/send.log" track one_request | awk '$1 == 1' | wc -l)
	if [ "$g" -gt 0 ] && [ "$o" -eq "$g" ]; then ok "$name: the pause of all $g guarded epochs was one CHECKPOINT request"
	else not_ok "$name: the pause of every guarded epoch was one CHECKPOINT request" "$o of $g"; fi
	stat_vals "$d/send.log" track vcpu_stopped_ns | awk '{printf "%.0f\n", $1 / 1000}' >"$d/e.stopped"
	echo "# $name: vCPU stopped p50/p99/max $(pct 50 <"$d/e.stopped")/$(pct 99 <"$d/e.stopped")/$(pct 100 <"$d/e.stopped") us (zd-vm's clock, park to resume); copied at the pause mean $(stat_vals "$d/send.log" track copied_at_pause | awk '{s+=$1} END {printf "%.0f", NR ? s/NR : 0}'), protected mean $(stat_vals "$d/send.log" track protected | awk '{s+=$1} END {printf "%.0f", NR ? s/NR : 0}')"
}

# A CHECKPOINT whose write-protect fails midway (zd-vm's test hook
# ZD_VM_WP_FAIL=3: the third request's protect fails after one range) must
# fail the run (exit 4, END failed), never be taken for "cannot protect"
# and redone another way: part of F is protected and nothing
# would drain it. The VM goes on running.
protect_fails() {
	local d=$TMP/wpfail S rc n
	mkdir -p "$d"
	S=$d/vm.sock
	ZD_VM_WP_FAIL=3 zd-vm --control "$S" --mem "$MEM" --workload dirty=80000,hot=0.5,span=4M 2>"$d/vm.err" &
	local VM=$!
	at_exit "kill $VM"
	wait_for 60 test -S "$S" || { not_ok "wpfail: zd-vm starts" "$(tail -n 3 "$d/vm.err")"; return; }
	ZD_ZDDSPT_COPY_MAX=0 timeout 300 zd-track "kvm:$S" --mode zddspt --interval 25 --epochs 20 --json $TRACK_OPTS \
		2>"$d/track.err" | timeout 300 zd-swap --json >"$d/out.json" 2>"$d/swap.err"
	rc="${PIPESTATUS[0]}"
	if [ "$rc" = 4 ] && grep -q 'checkpoint (pause, write-protect, resume): zd-vm refused: Input/output error' "$d/track.err"; then
		ok "wpfail: a write-protect failing midway in CHECKPOINT fails the run (exit 4, says so)"
	else
		not_ok "wpfail: a failed write-protect fails the run" "exit $rc: $(tail -n 2 "$d/track.err")"
	fi
	n=$(jq -s '[.[] | select(.type=="stat" and .source=="track" and .values.guarded==1 and .values.one_request==1)] | length' "$d/out.json")
	# (epoch 1 may be copied while paused, before zd-swap joined)
	if [ "$n" = 2 ] && jq -s -e '([.[] | select(.type=="commit")] | length) == ([.[] | select(.type=="stat" and .source=="track")] | length)' "$d/out.json" >/dev/null &&
		jq -s -e '[.[] | select(.type=="end")][0].status == 2' "$d/out.json" >/dev/null; then
		ok "wpfail: the two CHECKPOINTs before the failure guarded and committed, none after; END says failed"
	else
		not_ok "wpfail: epochs before the failure guarded, none after" "$n guarded one-request epochs; $(jq -c 'select(.type=="end")' "$d/out.json")"
	fi
	if zd-vm --ctl "$S" stats 2>/dev/null | grep -qx 'paused=0'; then ok "wpfail: the VM runs on after the failed checkpoint"
	else not_ok "wpfail: the VM runs on after the failed checkpoint" "$(zd-vm --ctl "$S" stats 2>&1 | grep paused)"; fi
	zd-vm --ctl "$S" stop >/dev/null
	wait "$VM"
}

# The zddspt guard is the default on kvm: (ZD_ZDDSPT_GUARD=0 skips these).
if [ "${ZD_ZDDSPT_GUARD:-1}" = 1 ]; then
	TRACK_OPTS="--precopy 20"
	export ZD_ZDDSPT_PRECOPY_ALL=0
	if [ -z "${ZD_ZDDSPT_NO_HOT:-}" ]; then
		# On real KVM the drain (about a millisecond) is over before the
		# resumed guest's first write, mostly: hold each drain back 5 ms
		# (zd-swap --drain-delay), so the guest's writes meet the guard
		# in nearly every epoch, as behind a slow link (90 %: on a host
		# loaded by other work the guest gets less CPU in the 5 ms; 185
		# of 198 drains faulted at load 7).
		SWAP_OPTS="--drain-delay ${ZD_ZDDSPT_DRAIN_DELAY:-5}"
		ZD_ZDDSPT_COPY_MAX=0 run_mode hot zddspt "$EPOCHS" dirty=80000,hot=0.5,span=4M
		check_guard hot 90
		check_one_request hot
	fi
	ZD_ZDDSPT_COPY_MAX=0 run_mode storm zddspt "${ZD_ZDDSPT_STORM_EPOCHS:-40}" dirty=1000000,hot=1,span=256K,hotset=256K
	check_guard storm 50
	SWAP_OPTS="--drain-delay ${ZD_ZDDSPT_DRAIN_DELAY:-5}"
	ZD_ZDDSPT_COPY_MAX=${ZD_ZDDSPT_MIXED_COPY:-16} run_mode mixed zddspt "${ZD_ZDDSPT_MIXED_EPOCHS:-100}" dirty=80000,hot=0.5,span=4M
	check_guard mixed 50
	check_one_request mixed
	# Both halves of the guard in one epoch, in most epochs.
	both=$(grep '"source":"track"' "$TMP/mixed/send.log" | jq -s '[.[] | select(.values.copied_at_pause > 0 and .values.protected > 0)] | length')
	n=$(grep -c '"source":"track"' "$TMP/mixed/send.log")
	if [ "$both" -ge $((n * 8 / 10)) ]; then ok "mixed: $both of $n epochs copied part of the frozen set at the pause and protected the rest"
	else not_ok "mixed: epochs with pages both copied at the pause and protected" "$both of $n"; fi
	protect_fails
	ZD_ZDDSPT_ONE_REQUEST=0 run_mode steps zddspt "${ZD_ZDDSPT_STEPS_EPOCHS:-60}" dirty=80000,hot=0.5,span=4M
	check_guard steps 50
	SWAP_OPTS=
	TRACK_OPTS=
	unset ZD_ZDDSPT_PRECOPY_ALL
	run_mode fallback zddspt "${ZD_ZDDSPT_FALLBACK_EPOCHS:-6}" dirty=80000,hot=0.5,span=4M ZD_VM_NO_UFFD=1
	# Epoch 1 may say 2 (zd-swap not joined yet); every later one 1.
	fb=$(stat_vals "$TMP/fallback/send.log" track fallback | awk 'NR > 1 {print $1 + 0}' | sort -u | tr '\n' ' ')
	gd=$(stat_vals "$TMP/fallback/send.log" track guarded | awk '{print $1 + 0}' | sort -u | tr '\n' ' ')
	if [ "$fb" = "1 " ] && [ "$gd" = "0 " ]; then ok "fallback: zd-vm without uffd: every epoch copied while paused, STAT fallback=1"
	else not_ok "fallback: every epoch copied while paused, STAT fallback=1" "fallback values (epochs >= 2) '$fb', guarded '$gd'; $(grep -m2 'paused' "$TMP/fallback/track.err")"; fi
else
	skip "zddspt with the uffd guard: hot pages, $EPOCHS epochs" "ZD_ZDDSPT_GUARD=0"
	skip "zddspt with the uffd guard: fault storm" "ZD_ZDDSPT_GUARD=0"
fi
for m in ${ZD_ZDDSPT_CMP_MODES-remus buffered zddspt}; do run_mode "cmp-$m" "$m" "$CMP_EPOCHS" dirty=80000,hot=0.2,span=4M; done
# The defaults: every guarded epoch's pause one CHECKPOINT request, and
# every pre-copy one PRECOPY request (zd-vm re-arms and copies); then the
# same with zd-track re-arming and reading in chunks: right either way.
case " ${ZD_ZDDSPT_CMP_MODES-zddspt} " in *" zddspt "*)
	[ "${ZD_ZDDSPT_GUARD:-1}" = 1 ] && check_one_request cmp-zddspt
	check_precopy_by() { # CASE WANT
		local by
		by=$(grep '"source":"track"' "$TMP/$1/send.log" | jq -r 'select(.values.precopy > 0) | .values.precopy_in_target' | sort -u | tr '\n' ' ')
		if [ "$by" = "$2 " ]; then ok "$1: every pre-copy's precopy_in_target=$2"
		else not_ok "$1: every pre-copy's precopy_in_target=$2" "values '$by'"; fi
	}
	check_precopy_by cmp-zddspt 1
	ZD_ZDDSPT_TARGET_PRECOPY=0 run_mode chunked zddspt "$CMP_EPOCHS" dirty=80000,hot=0.2,span=4M
	check_precopy_by chunked 0
	;;
esac
done_testing
