#!/usr/bin/env bash
# bench/failover: the failover time as a client of the protected VM sees
# it: zd-client's last answer before the primary is
# lost -> its first answer after (it reconnects at once), over many losses
# per mode, with zd-recv's default heartbeat/timeout (100/500 ms) and with
# --timeout 100 (--heartbeat 20 on both ends).
#
#   bench/failover.sh [--kills N] [--modes "remus buffered zddspt"]
#                     [--settings "default timeout100"] [--out DIR]
#
# One zd-vm (32M, --workload dirty=20000,hot=0.8,span=24M: ~4 MB epochs the
# backup commits within about an interval) serves one zd-client
# --reconnect (closed loop, 2 outstanding) for the whole run of a mode and
# setting. Each loss: a new zd-recv (fsync, defaults otherwise) and
# pipeline (zd-track --mode M at its default interval | zd-swap | zd-send),
# 1-3 commits, 0-999 ms more, then the primary is lost; odd losses are a
# crash of its host (pipeline stopped, zd-vm killed and reaped, pipeline
# killed: the connection ends at once), even ones a silent primary
# (SIGSTOP: zd-recv's --timeout decides, its --fence kills the stopped
# processes). zd-recv's default failover restores the VM, which the next
# loss's pipeline protects again.
#
# Writes $OUT/failover.csv (per setting and mode: kills, p50/max of the
# client's failover time, crashes and silent ones apart, zd-vm's own figure
# beside it, resets) and $OUT/failover_kills.csv (one row per loss), and
# $OUT/failover_clients/ (each run's zd-client summary). Exit 1 when a
# loss was not taken over or the client did not come back.
# BENCH_QUICK=1: 4 losses per mode and setting (default 20).
set -u
cd "$(dirname "$0")/.." || exit 2
TOP=$PWD
export PATH="$TOP/bin:$PATH"
KILLS=${BENCH_FAILOVER_KILLS:-20}
[ -n "${BENCH_QUICK:-}" ] && KILLS=4
MODES="remus buffered zddspt"
SETTINGS="default timeout100"
OUT=$TOP/bench/results
while [ $# -gt 0 ]; do
	case $1 in
	--kills) KILLS=$2; shift 2 ;;
	--modes) MODES=$2; shift 2 ;;
	--settings) SETTINGS=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "failover.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
	esac
done
[ -c /dev/kvm ] || { echo "failover.sh: /dev/kvm: not here" >&2; exit 77; }
MEM=${BENCH_FAILOVER_MEM:-32M}
WORKLOAD=${BENCH_FAILOVER_WORKLOAD:-dirty=20000,hot=0.8,span=24M}
emulated=no
grep -q 'QEMU Virtual CPU\|QEMU TCG' /proc/cpuinfo && emulated=yes
W=$(mktemp -d "${TMPDIR:-/tmp}/zd-bench-failover.XXXXXX")
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill -KILL -- "$p" 2>/dev/null; done
	[ -n "${BENCH_KEEP:-}" ] && echo "failover.sh: files kept in $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$OUT" "$OUT/failover_clients"
KCSV=$OUT/failover_kills.csv
echo "setting,mode,kill,loss,client_ms,backup_ms,epoch_taken_over,emulated" >"$KCSV"

# wait_for, read_port; gone, at_least, answered, client_back ...
# shellcheck source=../tests/lib/takeover.sh
. "$TOP/tests/lib/takeover.sh"
# Diagnostics on fd 3: each loss runs with stderr closed to the shell's
# notices of the jobs the fence and the crashes kill ("Killed ...").
exec 3>&2
fail() { echo "failover.sh: $*" >&3; exit 1; }

# one SETTING MODE K DIR: protect the VM (pid $VM), lose it, wait until the
# restored VM answers the client. Sets VM.
one() {
	local set=$1 mode=$2 k=$3 d=$4 r=$4/rep$3 recv_opts=() send_opts='' loss P RECV PIPE want nfo cms heard took
	[ "$set" = timeout100 ] && recv_opts=(--heartbeat 20 --timeout 100) send_opts="--heartbeat 20"
	loss=crash
	[ $((k % 2)) -eq 0 ] && loss=silent
	# The fence of a silent primary: power it off (SIGKILL), return once
	# zd-vm is gone (a zombie of this shell: its address is free).
	rm -f "$r.port"
	zd-recv --listen 127.0.0.1:0 --port-file "$r.port" --replica "$r" -v "${recv_opts[@]}" \
		--fence "kill -KILL \$(cat '$r.pids') 2>/dev/null; v=\$(cut -d' ' -f1 '$r.pids');
			while [ -e /proc/\$v ] && ! grep -q '^State:.*Z' /proc/\$v/status; do sleep 0.002; done" \
		2>"$r.err" &
	RECV=$!
	PIDS+=("$RECV")
	P=127.0.0.1:$(read_port "$r.port" "$RECV" 30) || fail "$set $mode $k: zd-recv does not listen: $(tail -2 "$r.err")"
	setsid bash -c 'zd-track "kvm:$1" --mode "$2" 2>"$3.track" | zd-swap 2>"$3.swap" |
		zd-send "$4" $5 >/dev/null 2>"$3.send"' _ "$S" "$mode" "$r" "$P" "$send_opts" &
	PIPE=$!
	PIDS+=("-$PIPE")
	echo "$VM -$PIPE" >"$r.pids"
	want=$((1 + RANDOM % 3))
	wait_for 120 at_least "$r.err" "$want" "$PIPE" && [ "$(commits "$r.err")" -ge "$want" ] ||
		fail "$set $mode $k: epochs do not commit: $(tail -n 2 "$r.err" "$r.track")"
	sleep "$(printf '0.%03d' $((RANDOM % 1000)))"
	nfo=$(failovers "$d/client.log")
	if [ $loss = silent ]; then
		kill -STOP -- "-$PIPE" "$VM"
	else
		kill -STOP -- "-$PIPE"
		kill -KILL "$VM"
		wait "$VM" 2>/dev/null
		kill -KILL -- "-$PIPE"
	fi
	wait "$PIPE" 2>/dev/null
	wait_for 120 answered "$r.err" "$RECV" && grep -q 'restored VM answered' "$r.err" ||
		fail "$set $mode $k: no takeover: $(grep -v committed "$r.err" | tail -n 4)"
	VM=$RECV
	wait_for 120 client_back "$d/client.log" $((nfo + 1)) "$VM" && [ "$(failovers "$d/client.log")" -gt "$nfo" ] ||
		fail "$set $mode $k: the client gets no answer again: $(tail -n 3 "$d/client.err")"
	cms=$(awk 'NF == 5 {v = $5} END {printf "%.1f", v / 1e6}' "$d/client.log")
	heard=$(sed -n 's/.*restored VM answered seq [0-9]*: \([0-9.-]*\) ms after the primary was last heard.*/\1/p' "$r.err" | head -1)
	took=$(sed -n 's/.*taking over at epoch \([0-9]*\).*/\1/p' "$r.err" | head -1)
	echo "$set,$mode,$k,$loss,$cms,$heard,$took,$emulated" >>"$KCSV"
	printf '  %-10s %-8s %2d %-6s client %7.1f ms   zd-vm %7s ms\n' "$set" "$mode" "$k" "$loss" "$cms" "$heard"
}

run() {
	local set=$1 mode=$2 d=$W/$1-$2 SP CL k
	mkdir -p "$d"
	S=$d/vm.sock
	zd-vm --control "$S" --mem "$MEM" --workload "$WORKLOAD" --serve 127.0.0.1:0 2>"$d/vm.err" &
	VM=$!
	PIDS+=("$VM")
	wait_for 60 test -S "$S" || fail "$set $mode: zd-vm does not start: $(tail -2 "$d/vm.err")"
	SP=$(zd-vm --ctl "$S" info | sed -n 's/^serve=//p')
	zd-client --reconnect --retry-for 60000 --timeout 60000 --concurrency 2 --duration 3600s \
		--log "$d/client.log" -v "$SP" >"$d/client.json" 2>"$d/client.err" &
	CL=$!
	PIDS+=("$CL")
	for k in $(seq "$KILLS"); do
		one "$set" "$mode" "$k" "$d" 2>/dev/null || exit 1
	done
	kill -TERM "$CL"
	wait "$CL"
	cp "$d/client.json" "$OUT/failover_clients/$set-$mode.json"
	zd-vm --ctl "$S" stop >/dev/null 2>&1
	wait "$VM" 2>/dev/null
}

echo "failover.sh: $KILLS losses per mode and setting, zd-vm --mem $MEM --workload $WORKLOAD$([ $emulated = yes ] && echo ' (QEMU TCG: emulated)')"
for set in $SETTINGS; do
	for mode in $MODES; do
		run "$set" "$mode"
	done
done

# Per setting and mode, nearest-rank p50 and max of the client's time.
CSV=$OUT/failover.csv
echo "setting,mode,kills,client_p50_ms,client_max_ms,crash_p50_ms,crash_max_ms,silent_p50_ms,silent_max_ms,zdvm_p50_ms,zdvm_max_ms,resets,errors,gaps,emulated" >"$CSV"
stats() { sort -n | awk '{a[NR] = $1} END {if (NR) printf "%.0f,%.0f", a[int((NR + 1) / 2)], a[NR]; else printf ","}'; }
for set in $SETTINGS; do
	for mode in $MODES; do
		rows() { awk -F, -v s="$set" -v m="$mode" -v l="$1" -v c="$2" 'NR > 1 && $1 == s && $2 == m && (l == "" || $4 == l) {print $c}' "$KCSV"; }
		j=$OUT/failover_clients/$set-$mode.json
		echo "$set,$mode,$(rows "" 5 | wc -l),$(rows "" 5 | stats),$(rows crash 5 | stats),$(rows silent 5 | stats),$(rows "" 6 | stats),$(jq -r '.resets' "$j"),$(jq -r '.errors' "$j"),$(jq -r '.gaps' "$j"),$emulated" >>"$CSV"
	done
done
echo
echo "client failover time (its last answer before the loss -> its first after), ms:"
column -t -s, "$CSV"
echo "per loss: $KCSV"
