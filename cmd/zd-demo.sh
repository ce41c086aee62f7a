#!/usr/bin/env bash
# zd demo: protect a VM in each mode while a client talks to it, show the
# figures side by side, then kill the primary and show the backup take over
# (zd(1)). Run by the driver (zd demo ...) and by make demo.
#
#   zd-demo [--seconds S] [--keep DIR] [--xen CFG]
set -u
# measure_one, the helpers, and the traps that stop every background job
# on exit or Ctrl-C.
# shellcheck source-path=SCRIPTDIR source=zd-measure.sh
. "$(dirname "$(readlink -f "$0")")/zd-measure" || exit 1

# The demo is a list of steps.
demo_steps=(demo_intro demo_protect demo_compare demo_failover demo_xen)

demo_intro() {
	local how="real KVM"
	emulated && how="KVM nested in QEMU TCG (emulated CPU: timings are slow; compare ratios)"
	echo "== zd demo: a VM under zd-vm ($how)"
	# measure_one's client asks at ZD_CLIENT_RATE (0: closed loop).
	local rate="${ZD_CLIENT_RATE:-100} requests/s"
	[ "${ZD_CLIENT_RATE:-100}" = 0 ] && rate="closed loop"
	echo "   workload: $DEMO_MEM RAM, guest writes $DEMO_DIRTY pages/s; a client asks its service"
	echo "   ($rate); replicated to a zd-recv on loopback for $DEMO_EPOCHS epochs of"
	echo "   ${DEMO_INTERVAL} ms in each mode: ${DEMO_MODES[*]}"
}

demo_protect() {
	local m
	for m in "${DEMO_MODES[@]}"; do
		echo "== protect in $m mode: zd-track kvm:vm.sock --mode $m | zd-mru | zd-swap | zd-send → zd-recv"
		mkdir -p "$DEMO_DIR/$m"
		measure_one "$m" "$DEMO_INTERVAL" "$DEMO_EPOCHS" "$DEMO_MEM" "$DEMO_DIRTY" 0.2 "" "$DEMO_DIR/$m" >"$DEMO_DIR/$m.json"
		if jq -e '.failed' "$DEMO_DIR/$m.json" >/dev/null; then
			echo "   $m: not measured: $(jq -r .reason "$DEMO_DIR/$m.json")"
		else
			jq -r '"   \(.epochs) epochs measured, \(.answers) answers to the client"' "$DEMO_DIR/$m.json"
			zd-recv --replica "$DEMO_DIR/$m/replica" --status | tr '\n' ' ' | sed 's/^/   the replica: /; s/ $/\n/'
		fi
	done
}

demo_compare() {
	local m cols=() f
	for m in "${DEMO_MODES[@]}"; do jq -e '.failed | not' "$DEMO_DIR/$m.json" >/dev/null && cols+=("$m"); done
	echo "== zd-stat, side by side (the epochs while the client ran, after the first full copy)"
	[ ${#cols[@]} -gt 0 ] || { echo "   no mode could be measured"; return 1; }
	printf '   %-34s' "figure"; printf '%14s' "${cols[@]}"; echo
	for f in "epochs:.epochs:%d" "dirty pages/epoch (mean):.dirty_mean:%.0f" \
		"pause p50 (us):.pause_ns.p50/1e3:%.0f" "pause p99 (us):.pause_ns.p99/1e3:%.0f" \
		"guest stall p50 (us):.stall_ns.p50/1e3:%.0f" "guest stall p99 (us):.stall_ns.p99/1e3:%.0f" \
		"guest stall mean (us):.stall_ns.mean/1e3:%.0f" \
		"copy-on-write faults/epoch:.cow_faults_mean:%.1f" \
		"guest's own clock p50 (us):.guest_stall_ns.p50/1e3:%.0f" \
		"guest's own clock mean (us):.guest_stall_ns.mean/1e3:%.0f" \
		"latency T1->ACK p50 (ms):.latency_ns.p50/1e6:%.1f" "latency T1->ACK p99 (ms):.latency_ns.p99/1e6:%.1f" \
		"output delay p50 (ms):.output_delay_ns.p50/1e6:%.1f" \
		"response delay p50 (ms):.response_delay_ns.p50/1e6:%.1f" \
		"response delay p99 (ms):.response_delay_ns.p99/1e6:%.1f" \
		"response delay mean (ms):.response_delay_ns.mean/1e6:%.1f" \
		"answers:.answers:%d" "client errors:.client_errors:%d" \
		"wire bytes/epoch (mean):.wire_bytes_per_epoch.mean:%.0f"; do
		local label=${f%%:*} rest=${f#*:} expr fmt v
		expr=${rest%:*} fmt=${rest##*:%}
		printf '   %-34s' "$label"
		for m in "${cols[@]}"; do
			v=$(jq -r "($expr) // \"-\"" "$DEMO_DIR/$m.json" 2>/dev/null)
			if [ "$v" = - ] || [ -z "$v" ]; then printf '%14s' -; else printf "%14$fmt" "$v"; fi
		done
		echo
	done
	# The paper's claim is about what the guest loses, not the pause
	# alone: say it in one line where both modes ran.
	if [ -s "$DEMO_DIR/zddspt.json" ] && [ -s "$DEMO_DIR/buffered.json" ]; then
		jq -rn --slurpfile z "$DEMO_DIR/zddspt.json" --slurpfile b "$DEMO_DIR/buffered.json" '
			($z[0].stall_ns.p50 // null) as $zs | ($b[0].stall_ns.p50 // null) as $bs |
			if $zs and $bs and $bs > 0 then
			"   guest stall per epoch (pause + copy-on-write faults + re-armed pages'"'"' faults), p50: zddspt \($zs / 1e3 | floor) us, buffered \($bs / 1e3 | floor) us: zddspt/buffered \($zs / $bs * 100 | round / 100)"
			else empty end' 2>/dev/null
		echo "   (the guest's own clock: every stop of 40 us or more it saw in an epoch, whatever the cause, CPU contention included)"
	fi
}

# demo_failover: the takeover, end to end. A protected VM with a client talking to
# it; SIGKILL of the primary zd-vm; zd-recv takes over with its default
# action (zd-vm --restore) on the same address; the client carries on.
lines_at_least() { [ "$(wc -l <"$1")" -ge "$2" ]; }
commits_at_least() { [ "$(grep -c 'epoch [0-9]* committed' "$1")" -ge "$2" ] || ! kill -0 "$3" 2>/dev/null; }
demo_failover() {
	local d=$DEMO_DIR/failover mode=${ZD_DEMO_FAILOVER_MODE:-remus} sock vm recv run cl bp sp line
	local n=$((DEMO_EPOCHS / 2 + 2)) before hb=() send_hb=()
	mkdir -p "$d"
	echo "== failover: a $mode-protected VM, a client talking to it, SIGKILL of the primary"
	sock=$(mktemp -d "${TMPDIR:-/tmp}/zd-vm.XXXXXX")/vm.sock || die 1 "demo: mktemp failed"
	bg_tmp+=("$(dirname "$sock")")
	# The primary's socket, then the restored VM's (the same path).
	bg_vm_sock=$sock
	# Real KVM: zd-recv's defaults (heartbeat 100 ms, dead after 500 ms).
	# Under TCG a checkpoint stretches past them and a live primary would be
	# taken over; the kill closes the connection, which is seen at once.
	if emulated; then
		hb=(--heartbeat 1000 --timeout 30000)
		send_hb=(--heartbeat 1000 --peer-timeout 0)
	fi
	rm -f "$d/recv.port"
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/replica" --no-fsync -v \
		"${hb[@]+"${hb[@]}"}" 2>"$d/recv.err" &
	recv=$!
	started $recv
	zd-vm --control "$sock" --mem "$DEMO_MEM" --workload "dirty=$DEMO_DIRTY,hot=0.2" \
		--serve 127.0.0.1:0 2>"$d/vm.err" &
	vm=$!
	started $vm
	wait_until 60 sock_up "$sock" $vm
	if ! [ -S "$sock" ] || ! bp=127.0.0.1:$(recv_port "$d/recv.port" $recv); then
		kill $vm $recv 2>/dev/null
		echo "   zd-vm or zd-recv did not start: $(tail -n 2 "$d/vm.err" "$d/recv.err" | tr '\n' ' ')"
		return 1
	fi
	sp=$(zd-vm --ctl "$sock" info | sed -n 's/^serve=//p')
	zd-client --reconnect --retry-for 60000 --timeout 600s --duration 3600s --log "$d/client.log" \
		"$sp" >"$d/client.json" 2>"$d/client.err" &
	cl=$!
	started $cl
	# The primary's pipeline in a session of its own, so that the kill
	# takes the whole primary side at once, as a crash of its host would.
	setsid zd run --mode "$mode" --interval "$DEMO_INTERVAL" --timeout 600000 --json "${send_hb[@]+"${send_hb[@]}"}" \
		"$sock" "$bp" >"$d/send.log" 2>"$d/run.err" &
	run=$!
	started -$run
	echo "   primary: zd-vm on $sp, replicated to zd-recv on $bp (default failover: zd-vm --restore)"
	if ! wait_until 900 commits_at_least "$d/recv.err" "$n" $recv; then
		kill -KILL -- $vm -$run 2>/dev/null
		kill $cl $recv 2>/dev/null
		echo "   the backup did not commit $n epochs: $(tail -n 2 "$d/run.err" "$d/recv.err" | tr '\n' ' ')"
		return 1
	fi
	before=$(tail -n 1 "$d/client.log" | cut -d' ' -f1)
	kill -KILL -- $vm -$run
	wait $vm 2>/dev/null	# reaped here: bash would say "Killed" on the terminal
	echo "   SIGKILL to the primary (zd-vm and its pipeline) after $n committed epochs; the client had seq ${before:-none}"
	wait $run 2>/dev/null
	if ! wait_until 600 grep -q 'restored VM answered' "$d/recv.err"; then
		kill $cl $recv 2>/dev/null
		echo "   no takeover: $(grep -v committed "$d/recv.err" | tail -n 4 | tr '\n' ' ')"
		return 1
	fi
	grep -E 'primary lost|restored .* at epoch' "$d/recv.err" | sed 's/^[^:]*: /   /'
	line=$(grep 'restored VM answered' "$d/recv.err" | head -1)
	echo "   failover time: ${line#*: }"
	# The replication figures up to the kill (the stream stops mid-epoch:
	# zd-stat wants a whole stream, so the copy is closed with END).
	(grep -v '^[^{]' "$d/send.log" | sed '$d'; echo '{"type":"end","epochs":0,"status":1}') >"$d/send.closed"
	echo "   replication before the kill:"
	zd-stat "$d/send.closed" 2>&1 | sed -n '/^$/,$p' | sed '/^$/d; s/^/     /'
	# The client carries on with the restored VM for a few answers.
	local got
	got=$(wc -l <"$d/client.log")
	wait_until 120 lines_at_least "$d/client.log" $((got + 5))
	kill -TERM $cl
	wait $cl
	local crc=$?
	jq -r --argjson crc $crc '"   the client carried on: \(.count) answers, seq \(.first_seq)..\(.last_seq), " +
		"\(.reconnects) reconnect(s), \(.gaps) gaps, \(.errors) contradictions (exit \($crc))" +
		(if (.failovers // 0) > 0 then "\n   the client waited \(.failover_ns.max / 1e6 | floor) ms from its last answer before the kill to its first after (\(.resets) connection(s) reset)" else "" end)' "$d/client.json"
	zd-vm --ctl "$sock" stop >/dev/null 2>&1
	wait $recv 2>/dev/null
	settled
	[ $crc = 0 ]
}

# demo_xen: the takeover of a Xen guest, where this host is a Xen dom0 and
# --xen CFG names the xl config of a PVH guest with Xen PV suspend (the
# guest of that name is used if it runs, else created): a standby domain on
# a zd-recv on loopback, zd-track xen: in buffered mode with output commit,
# SIGKILL of the pipeline, the standby taking over. With
# ZD_DEMO_XEN_SERVICE=ADDR:PORT a client talks to the guest's line service
# across it. Elsewhere it says why it does not run.
demo_xen() {
	echo "== Xen: a standby domain takes over"
	if ! grep -qs control_d /proc/xen/capabilities; then
		echo "   not run: this host is not a Xen dom0 (no control_d in /proc/xen/capabilities); make check"
		echo "   runs the Xen takeover in a Xen booted in QEMU (tests/xen/takeover.sh)"
		return 0
	fi
	if [ -z "$DEMO_XEN_CFG" ]; then
		echo "   not run: give zd demo --xen CFG, the xl config of a PVH guest with Xen PV suspend"
		return 0
	fi
	local d=$DEMO_DIR/xen cfg=$DEMO_XEN_CFG name id recv pipe cl='' bp
	mkdir -p "$d"
	name=$(sed -n 's/^ *name *= *"\(.*\)".*/\1/p' "$cfg" | head -1)
	[ -n "$name" ] || { echo "   $cfg: no name = \"...\" line"; return 1; }
	xl list "$name" >/dev/null 2>&1 || xl create -q "$cfg" || { echo "   xl create $cfg failed"; return 1; }
	id=$(xl domid "$name")
	NOTIFY_SOCKET='' zd-recv --listen 127.0.0.1:0 --port-file "$d/port" --replica "$d/replica" --once \
		--standby "xen:$cfg" --fence "xl destroy $id; case \$(xl list $id 2>/dev/null | awk 'NR == 2 {print \$5}') in ''|*d) exit 0 ;; esac; exit 1" --fence-timeout 120000 -v 2>"$d/recv.err" &
	recv=$!
	started "$recv"
	bp=127.0.0.1:$(recv_port "$d/port" "$recv") || { cat "$d/recv.err"; return 1; }
	echo "   guest $name (domain $id), its standby made from $cfg on zd-recv $bp"
	(echo "$BASHPID" >"$d/track.pid"; exec zd-track "xen:$name" --mode buffered --interval 100 2>"$d/track.err") |
		zd-swap 2>"$d/swap.err" | zd-send "$bp" >/dev/null 2>"$d/send.err" &
	pipe=$!
	started "$pipe"
	if [ -n "${ZD_DEMO_XEN_SERVICE:-}" ]; then
		zd-client --reconnect --retry-for 600000 --timeout 600000 --rate 4 --duration 3600000 \
			--log "$d/client.log" "$ZD_DEMO_XEN_SERVICE" >"$d/client.json" 2>"$d/client.err" &
		cl=$!
		started "$cl"
	fi
	if ! wait_until 600 commits_at_least "$d/recv.err" 10 "$recv"; then
		echo "   the replica did not reach epoch 10:"; tail -n 3 "$d/recv.err" "$d/track.err" | sed 's/^/   /'
		return 1
	fi
	echo "   protected in buffered mode; SIGKILL to the pipeline after $(grep -c 'epoch [0-9]* committed' "$d/recv.err") committed epochs"
	local before=0
	[ -n "$cl" ] && before=$(wc -l <"$d/client.log")
	# The whole pipeline: zd-track (its PID from the subshell) and zd-send
	# ($!); zd-swap ends on its closed input.
	kill -KILL "$(cat "$d/track.pid")" "$pipe" 2>/dev/null
	wait "$recv"
	local rc=$?
	grep 'taking over\|running at epoch\|--verify' "$d/recv.err" | sed 's/^zd-recv: /   /'
	if [ -n "$cl" ]; then
		# Until the standby answered a few times (minutes under emulation).
		local _
		for _ in $(seq 600); do
			[ "$(wc -l <"$d/client.log")" -ge $((before + 3)) ] && break
			sleep 0.5
		done
		kill -INT "$cl"
		wait "$cl"
		# The guest's TCP connection is in its memory: the standby carries
		# it on, and the client's wait is its longest gap between answers.
		jq -r --arg wait "$(awk -v from="$before" 'NR >= from { if (prev) { g = $3 - prev; if (g > max) max = g } prev = $3 }
			END { printf "%d", max / 1e6 }' "$d/client.log")" --argjson before "$before" \
			'"   the client carried on: \(.count) answers (\(.count - $before) after the kill), seq \(.first_seq)..\(.last_seq), \(.gaps) gaps, \(.errors) contradictions, \(.failovers) reconnect(s); its longest wait across the takeover \($wait) ms"' "$d/client.json"
	fi
	settled
	[ $rc = 0 ]
}

cmd_demo() {
	local seconds=${ZD_DEMO_SECONDS:-5} keep=
	DEMO_XEN_CFG=
	while [ $# -gt 0 ]; do
		case $1 in
		--seconds) need_value "$@"; is_count "$2" || usage_die "--seconds '$2': want a whole number above 0"; seconds=$2; shift 2 ;;
		--keep) need_value "$@"; keep=$2; shift 2 ;;
		--xen) need_value "$@"; [ -r "$2" ] || usage_die "--xen '$2': no such xl config"; DEMO_XEN_CFG=$2; shift 2 ;;
		-h | --help) man_see zd-demo; exit 0 ;;
		-V | --version) echo "zd-demo $ZD_VERSION"; exit 0 ;;
		*) usage_die "demo: unknown argument '$1'" ;;
		esac
	done
	# --xen in dom0 (no /dev/kvm there): the Xen part alone.
	if [ -n "$DEMO_XEN_CFG" ] && [ ! -e /dev/kvm ]; then
		demo_steps=(demo_xen)
	else
		in_kvm demo --seconds "$seconds" ${keep:+--keep "$keep"}
	fi
	DEMO_INTERVAL=25 DEMO_MODES=(remus buffered zddspt)
	if emulated; then
		# TCG runs the guest and the pipeline ~20-50x slower: a smaller
		# VM and rate keep buffered mode's asynchronous send ahead of the
		# guest (else each epoch grows until it spans the whole memory).
		DEMO_MEM=${ZD_DEMO_MEM:-16M} DEMO_DIRTY=${ZD_DEMO_DIRTY:-500}
		DEMO_EPOCHS=$((seconds * 10))
	else
		DEMO_MEM=${ZD_DEMO_MEM:-128M} DEMO_DIRTY=${ZD_DEMO_DIRTY:-40000}
		DEMO_EPOCHS=$((seconds * 1000 / DEMO_INTERVAL))
	fi
	if [ -n "$keep" ]; then
		DEMO_DIR=$keep
		mkdir -p "$DEMO_DIR" || die 1 "demo: cannot create $keep"
	else
		DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/zd-demo.XXXXXX") || die 1 "demo: mktemp failed"
		bg_tmp+=("$DEMO_DIR")
	fi
	local s rc=0
	for s in "${demo_steps[@]}"; do "$s" || { rc=1; break; }; done
	[ -z "$keep" ] && rm -rf "$DEMO_DIR"
	return $rc
}

cmd_demo "$@"
