#!/usr/bin/env bash
# The guest stall a checkpoint costs, on real KVM: zd-stat's
# per-epoch stall (pause + copy-on-write time + re-armed pages' faults,
# lib/zd/stat.h) and the guest's own clock (zd-track's STAT "guest").
#   - "faults": zddspt with each drain held back 5 ms (zd-swap
#     --drain-delay) and the whole frozen set protected, so the guest's
#     writes meet the guard: at least 5 epochs fault, and those report
#     blocked time > 0 and a stall above their pause; the guest's own clock saw at least half of the
#     pauses zd-track made (it cannot see less unless it is not counting);
#   - "noguard": zddspt with zd-vm's uffd off (every epoch copied while
#     paused): no fault and no blocked time in any epoch;
#   - "buffered": the stall is the pause, epoch by epoch.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/kvmouter.sh"
. "$(dirname "$0")/../lib/wait.sh"
cd "$ZD_TOP" || exit 1
EPOCHS=${ZD_STALL_EPOCHS:-40}

if [ -z "${ZD_KVM_INNER:-}" ]; then
	kvm_outer "$0" --cpus 1 --timeout 900
fi

# run NAME MODE [ENV=VALUE for zd-vm]: EPOCHS epochs into $TMP/NAME/send.log
run() {
	local name=$1 mode=$2 vmenv=${3:-ZD_NOTHING=} d=$TMP/$1 S P VM RECV rc
	mkdir -p "$d"
	S=$d/vm.sock
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/replica" --once \
		--no-fsync --timeout 600000 2>"$d/recv.err" &
	RECV=$!
	at_exit "kill $RECV"
	env "$vmenv" zd-vm --control "$S" --mem 8M --workload dirty=80000,hot=0.5,span=4M 2>"$d/vm.err" &
	VM=$!
	at_exit "kill $VM"
	if ! wait_for 60 test -S "$S" || ! P=127.0.0.1:$(read_port "$d/recv.port" "$RECV" 60); then
		not_ok "$name: zd-vm and zd-recv start" "$(tail -n 3 "$d/vm.err" "$d/recv.err")"
		return 1
	fi
	sleep 0.3
	# shellcheck disable=SC2086 # SWAP_OPTS: zero or more words
	timeout 600 zd-track "kvm:$S" --mode "$mode" --interval 25 --epochs "$EPOCHS" 2>"$d/track.err" |
		timeout 600 zd-mru 2>"$d/mru.err" |
		timeout 600 zd-swap ${SWAP_OPTS:-} 2>"$d/swap.err" |
		timeout 600 zd-send "$P" --timeout 600000 --json-log >"$d/send.log" 2>"$d/send.err"
	rc="${PIPESTATUS[*]}"
	wait "$RECV"
	zd-vm --ctl "$S" stop >/dev/null
	wait "$VM"
	if [ "$rc" != "0 0 0 0" ]; then
		not_ok "$name: $mode ran $EPOCHS epochs" "exits $rc: $(last_words "$d" recv send swap vm track)"
		return 1
	fi
	ok "$name: $mode ran $EPOCHS epochs"
	# epoch 1 copies the whole memory; epoch 2 is the first with a guard
	zd-stat --csv --from 3 "$d/send.log" >"$d/stat.csv" 2>"$d/stat.err"
}

# col FILE NAME: the column of the CSV header named NAME, 0 if none
col() { head -1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1 | grep . || echo 0; }

SWAP_OPTS="--drain-delay ${ZD_STALL_DRAIN_DELAY:-5}"
# ZD_ZDDSPT_COPY_MAX=0 and ZD_ZDDSPT_PRECOPY_ALL=0 (as kvm_zddspt.sh's "hot"):
# nothing of the frozen set copied at the pause, all
# of it write-protected (zddspt copies short runs itself otherwise, and
# then few epochs fault).
if ZD_ZDDSPT_COPY_MAX=0 ZD_ZDDSPT_PRECOPY_ALL=0 run faults zddspt; then
	f=$TMP/faults/stat.csv
	# epochs with faults / of all; those with blocked time and stall > pause
	read -r n nf nb ns <<<"$(awk -F, -v p="$(col "$f" pause_ns)" -v s="$(col "$f" stall_ns)" \
		-v c="$(col "$f" cow_faults)" -v b="$(col "$f" cow_block_ns)" 'NR > 1 && $s != "" {
		n++; if ($c > 0) { nf++; if ($b > 0) nb++; if ($s > $p) ns++ } }
		END {print n + 0, nf + 0, nb + 0, ns + 0}' "$f")"
	# How many epochs fault depends on where the guest's writes fall (the
	# drain is quick, and F small): at least a few must, or nothing of
	# the guard's figures was tested.
	if [ "$n" -gt 0 ] && [ "$nf" -ge 5 ]; then ok "faults: $nf of $n epochs took copy-on-write faults"
	else not_ok "faults: epochs with copy-on-write faults" "$nf of $n, want at least 5"; fi
	if [ "$nf" -gt 0 ] && [ "$nb" = "$nf" ] && [ "$ns" = "$nf" ]; then
		ok "faults: every epoch with faults has blocked time and a stall above its pause"
	else not_ok "faults: blocked time and stall > pause where faults" "$nf with faults, $nb with blocked time, $ns with stall > pause"; fi
	# The guest's clock: its windows run pause to pause, so its stall of
	# epoch k holds the pause of k-1; over the run it must hold at least
	# half of what zd-track paused (a pause only hides from it when it
	# falls in an idle the guest asked for, and this guest never idles).
	read -r gs ps <<<"$(awk -F, -v p="$(col "$f" pause_ns)" -v g="$(col "$f" guest_stall_ns)" \
		'NR > 1 && $g != "" {gs += $g; ps += $p} END {printf "%.0f %.0f\n", gs, ps}' "$f")"
	if [ "${ps:-0}" -gt 0 ] && [ "${gs:-0}" -ge $((ps / 2)) ]; then
		ok "faults: the guest's own clock saw its pauses (stalled $((gs / 1000)) us, paused $((ps / 1000)) us in all)"
	else not_ok "faults: the guest's own clock saw its pauses" "guest stall '$gs' ns, pauses '$ps' ns"; fi
	j=$(zd-stat --json --from 3 "$TMP/faults/send.log")
	if echo "$j" | jq -e '.stall_ns.mean > .pause_ns.mean and .guest_stall_ns.p50 > 0 and .cow_faults_mean > 0' >/dev/null; then
		ok "faults: zd-stat --json has the mean stall above the mean pause, the guest's stall and the faults"
	else not_ok "faults: zd-stat --json stall figures" "$j"; fi
	echo "# faults: $(zd-stat --from 3 "$TMP/faults/send.log" | grep -E '^(pause|guest stall|copy-on-write|the guest)')" | tr '\n' ' '
	echo
fi

SWAP_OPTS=
if run noguard zddspt ZD_VM_NO_UFFD=1; then
	f=$TMP/noguard/stat.csv
	read -r n cf cb <<<"$(awk -F, -v c="$(col "$f" cow_faults)" -v b="$(col "$f" cow_block_ns)" \
		'NR > 1 {n++; cf += $c; cb += $b} END {print n + 0, cf + 0, cb + 0}' "$f")"
	if [ "$n" -gt 0 ] && [ "$cf" = 0 ] && [ "$cb" = 0 ]; then ok "noguard: $n epochs, no fault and no blocked time"
	else not_ok "noguard: no fault time without the guard" "$n epochs, $cf faults, $cb ns blocked"; fi
fi

if run buffered buffered; then
	f=$TMP/buffered/stat.csv
	read -r n eq <<<"$(awk -F, -v p="$(col "$f" pause_ns)" -v s="$(col "$f" stall_ns)" \
		'NR > 1 && $p != "" {n++; if ($s == $p) eq++} END {print n + 0, eq + 0}' "$f")"
	if [ "$n" -gt 0 ] && [ "$eq" = "$n" ]; then ok "buffered: the stall is the pause in all $n epochs"
	else not_ok "buffered: stall = pause" "$eq of $n epochs"; fi
fi
done_testing
