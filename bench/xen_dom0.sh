#!/usr/bin/env bash
# bench/xen_dom0.sh — runs in dom0 of the Xen that bench/xen.sh boots in
# QEMU (tests/lib/xenhost.sh). For each checkpoint interval (200, 100, 50
# ms) on a fresh PVH guest (tests/xen/guest_writer: writes an 8 MiB set,
# says ZD-PROGRESS once a second and ZD-GAP for every stop > 10 ms):
#   none      the guest unprotected, for its progress;
#   remus, buffered, zddspt
#             zd-track xen: --mode M | zd-swap | zd-send -> zd-recv (dom0);
#   xl-remus  Xen's own Remus: xl remus -i MS to the same host.
# Each run is measured over a window of ZD_XEN_BENCH_SECONDS (20) once it
# is past its initial full copy. Prints one "CSV ..." line a run:
#   method,interval_ms,window_s,checkpoints,pause_p50_ms,pause_p99_ms,
#   pages_per_ckpt,guest_pages_s,progress_rel,guest_gaps,guest_gap_p50_ms,
#   guest_state,triple_faults
# pause_*: zd-track's own pause (resume - T1) for zd's modes; for xl-remus,
# the guest's stops as it saw them (ZD-GAP: the suspension by Remus).
# pages_per_ckpt: zd's STAT dirty; for xl-remus, libxc's "Checkpointed save: N/N" (xl -vvv).
# progress_rel: guest pages/s over the window / the same guest's unprotected.
# triple_faults: "Triple fault" lines Xen logged (xl dmesg) during the run.
# Then the takeover a client sees (ZD_XEN_BENCH_TAKEOVER, default 1; the
# two methods in turn, ZD_XEN_BENCH_TAKEOVER_REPEAT (2) times each), at
# ZD_XEN_BENCH_TAKEOVER_INTERVAL (200) ms, on a fresh guest with a vif whose
# service (tests/xen/guest_writer) zd-client asks 4 times a second; the
# primary is lost by `xl destroy` (the loss both handle the same way on
# one host):
#   zd        zd-track xen: --mode buffered (output commit on) | zd-swap |
#             zd-send -> zd-recv --standby xen:CFG --fence (standby.c);
#   xl-remus  xl remus -F -n -d -e -i MS: its receiver unpauses the backup
#             domain. -n: without network buffering (libxl's needs its
#             remus netbuf hotplug set-up), so answers the backup never
#             saw can reach the client: a contradiction, not a wait.
# One "CSVT ..." line each:
#   method,interval_ms,wait_ms,answers_before,answers_after,errors,gaps,reconnects
# wait_ms: the client's longest time between two answers from its last
# answer before the loss on; errors: answers that contradicted the
# sequence (zd-client's count).
# Everything here is emulated (QEMU TCG): compare the methods, not to hardware.
set -u
export PATH="$ZD_BIN:$PATH"
. "$ZD_TOP/tests/xen/xenlib.sh" 2>/dev/null || { echo "no tests/xen/xenlib.sh" >&2; exit 1; }
. "$ZD_TOP/tests/lib/wait.sh" 2>/dev/null || { echo "no tests/lib/wait.sh" >&2; exit 1; }
TMP=$(mktemp -d)
W=${ZD_XEN_BENCH_SECONDS:-20}
INTERVALS=${ZD_XEN_BENCH_INTERVALS:-200 100 50}
METHODS=${ZD_XEN_BENCH_METHODS:-remus buffered zddspt xl-remus}
G=zdguest
export XEN_GUEST_EXTRA=ZD_PROGRESS=1
LOG=/var/log/xen/guest-$G.log

say() { echo "# $*"; }

# window_stats FROM_LINE TO_LINE: "pages_s gaps gap_p50_ms" of the guest's
# console lines between the two line numbers.
window_stats() {
	sed -n "$(($1 + 1)),$2p" "$LOG" | tr -d '\r' | awk '
		$1 == "ZD-PROGRESS" { if (!n++) { t0 = $2; p0 = $3 } t1 = $2; p1 = $3 }
		$1 == "ZD-GAP" { g[++ng] = $2 }
		END {
			rate = (t1 > t0) ? (p1 - p0) * 1000 / (t1 - t0) : 0
			# median of the gaps
			for (i = 1; i <= ng; i++) for (j = i + 1; j <= ng; j++) if (g[j] < g[i]) { x = g[i]; g[i] = g[j]; g[j] = x }
			printf "%.0f %d %s\n", rate, ng, ng ? g[int((ng + 1) / 2)] : ""
		}'
}
lines() { wc -l <"$LOG"; }
triples() { xl dmesg 2>/dev/null | grep -ci 'triple fault'; }
state() { xl list "$1" 2>/dev/null | awk 'NR == 2 {print $5}'; }

# measure [SINCE]: the window; sets WS (window stats) and T (triple
# faults Xen logged since SINCE, a count of triples, default the window's
# start).
measure() {
	local l0 t0
	l0=$(lines); t0=${1:-$(triples)}
	sleep "$W"
	WS=$(window_stats "$l0" "$(lines)")
	T=$(($(triples) - t0))
}

fresh_guest() {
	xl destroy "$G" 2>/dev/null
	xl destroy "$G--incoming" 2>/dev/null
	rm -f "$LOG"
	xen_guest_up "$G" || { say "the guest did not come up: $(tail -3 "$LOG" 2>&1)"; exit 1; }
	sleep 3
}

run_zd() { # run_zd MODE INTERVAL
	local mode=$1 iv=$2 d=$TMP/$1.$2 P RECV TRACK e t0
	mkdir -p "$d"
	t0=$(triples)
	zd-recv --listen 127.0.0.1:0 --port-file "$d/recv.port" --replica "$d/replica" --once --timeout 0 --no-fsync \
		2>"$d/recv.err" &
	RECV=$!
	P=127.0.0.1:$(read_port "$d/recv.port" $RECV 10)
	local remus_opts=()
	[ "$mode" = remus ] && remus_opts=(--timeout 300000 --grace 5000)
	(zd-track -v xen:$G --mode "$mode" --interval "$iv" "${remus_opts[@]}" 2>"$d/track.err" |
		zd-swap 2>"$d/swap.err" |
		zd-send "$P" --timeout 0 --heartbeat 0 --delta-cache 32M --json-log >"$d/send.log" 2>"$d/send.err") &
	local PIPE=$!
	# Past the initial full copy: measure from checkpoint 5 on.
	for _ in $(seq 1200); do
		e=$(sed -n 's/.*\] epoch \([0-9]*\): .*/\1/p' "$d/track.err" 2>/dev/null | tail -1)
		[ -n "$e" ] && [ "$e" -ge 5 ] && break
		kill -0 "$PIPE" 2>/dev/null || break	# ended early (the guest stopped?)
		sleep 0.5
	done
	local c0 c1
	c0=${e:-0}
	measure "$t0"
	c1=$(sed -n 's/.*\] epoch \([0-9]*\): .*/\1/p' "$d/track.err" | tail -1)
	c1=${c1:-0}
	TRACK=$(pgrep -x zd-track | head -1)
	[ -n "$TRACK" ] && kill -INT "$TRACK"
	wait "$PIPE" 2>/dev/null
	kill "$RECV" 2>/dev/null
	wait "$RECV" 2>/dev/null
	local pause pages
	pause=$(grep '"source":"track"' "$d/send.log" |
		sed -n 's/.*"epoch":\([0-9]*\).*"pause_ns":\([0-9.]*\).*/\1 \2/p' |
		awk -v a="$c0" -v b="$c1" '$1 > a && $1 <= b {print $2}' | sort -n |
		awk '{v[NR] = $1} END {if (NR) printf "%.1f %.1f", v[int((NR + 1) / 2)] / 1e6, v[int(NR * 0.99) + (NR < 100)] / 1e6; else printf " "}')
	pages=$(grep '"type":"dirty"' "$d/send.log" |
		sed -n 's/.*"epoch":\([0-9]*\).*"pages":\([0-9]*\).*/\1 \2/p' |
		awk -v a="$c0" -v b="$c1" '$1 > a && $1 <= b {s += $2; n++} END {if (n) printf "%.0f", s / n}')
	set -- $WS
	local st
	st=$(state "$G")
	echo "CSV $mode,$iv,$W,$((c1 - c0)),${pause% *},${pause#* },$pages,$1,$(awk -v r="$1" -v b="$BASE" 'BEGIN {printf "%.3f", b ? r / b : 0}'),$2,${3:-},$st,$T"
	say "$mode $iv ms: $(tail -n 2 "$d/track.err" | tr '\n' '|')"
	rm -rf "$d"
}

run_xl_remus() { # run_xl_remus INTERVAL
	local iv=$1 d=$TMP/xl.$1 XR t0
	mkdir -p "$d"
	t0=$(triples)
	printf '#!/bin/sh\nshift\nexec "$@"\n' >"$d/wrap"
	chmod +x "$d/wrap"
	xl -vvv remus -F -n -d -e -i "$iv" -s "$d/wrap" "$G" localhost >"$d/remus.log" 2>&1 &
	XR=$!
	# The initial copy (~200 MB: the p2m spans 4 GiB) before the window:
	# from the first checkpoint on (xl -vvv says "Checkpointed save").
	for _ in $(seq 600); do
		grep -q 'Checkpointed save' "$d/remus.log" && break
		kill -0 "$XR" 2>/dev/null || break
		sleep 0.2
	done
	local n0 n1 r0 r1 ckpt
	n0=$(grep -c 'ZD-GAP' "$LOG")
	r0=$(wc -l <"$d/remus.log")
	measure "$t0"
	n1=$(grep -c 'ZD-GAP' "$LOG")
	r1=$(wc -l <"$d/remus.log")
	# Pages per checkpoint: libxc's progress line of each checkpoint that
	# ended in the window ("Checkpointed save: N/N 100%").
	ckpt=$(sed -n "$((r0 + 1)),${r1}p" "$d/remus.log" | tr '\r' '\n' |
		sed -n 's/.*Checkpointed save: \([0-9]*\)\/\1 *100%.*/\1/p' |
		awk '{s += $1; n++} END {printf "%d %s", n, n ? sprintf("%.0f", s / n) : ""}')
	local st backup
	st=$(state "$G"); backup=$(state "$G--incoming")
	kill -INT "$XR" 2>/dev/null
	sleep 2
	kill -KILL "$XR" 2>/dev/null
	wait "$XR" 2>/dev/null
	set -- $WS
	# Checkpoints: xl remus does not count them for us; the guest's stops do.
	local gaps
	gaps=$(sed -n "1,\$p" "$LOG" | tr -d '\r' | awk '$1 == "ZD-GAP"' | tail -n "$((n1 - n0))" | awk '{print $2}' | sort -n |
		awk '{v[NR] = $1} END {if (NR) printf "%s %s", v[int((NR + 1) / 2)], v[int(NR * 0.99) + (NR < 100)]; else printf " "}')
	echo "CSV xl-remus,$iv,$W,${ckpt%% *},${gaps% *},${gaps#* },${ckpt#* },$1,$(awk -v r="$1" -v b="$BASE" 'BEGIN {printf "%.3f", b ? r / b : 0}'),$2,${3:-},$st/${backup:-none},$T"
	say "xl remus $iv ms: $(grep -v '^ *$' "$d/remus.log" | tail -n 3 | tr '\n' '|')"
	grep -i 'pages\|iteration\|checkpoint' "$d/remus.log" | tail -n 3 | sed 's/^/# xl: /'
}

# client_start DIR: zd-client against the guest's service; sets CL.
client_start() {
	zd-client --reconnect --retry-for 600000 --timeout 600000 --rate 4 --duration 3600000 \
		--log "$1/client.log" "$XEN_GUEST_ADDR" >"$1/client.json" 2>"$1/client.err" &
	CL=$!
}

# client_result DIR METHOD INTERVAL BEFORE: stop the client, print CSVT.
client_result() {
	local d=$1
	for _ in $(seq 600); do
		[ "$(wc -l <"$d/client.log")" -ge $(($4 + 5)) ] && break
		sleep 0.5
	done
	kill -INT "$CL" 2>/dev/null
	wait "$CL" 2>/dev/null
	local wait_ms n
	n=$(wc -l <"$d/client.log")
	wait_ms=$(awk -v from="$4" 'NR >= from { if (prev) { g = $3 - prev; if (g > max) max = g } prev = $3 }
		END { printf "%d", max / 1e6 }' "$d/client.log")
	# The client's response delay over the whole run: with zd, each
	# answer waits for its epoch's ACK (output commit); xl remus -n holds
	# nothing.
	echo "CSVT $2,$3,$wait_ms,$4,$((n - $4)),$(jq -r '"\(.errors),\(.gaps),\(.failovers),\(.delay_ns.p50 / 1e6 | floor),\(.delay_ns.p99 / 1e6 | floor)"' "$d/client.json" 2>/dev/null || echo ",,,,")"
	say "takeover, $2: $(cat "$d/client.json" 2>/dev/null | head -c 300)"
}

# until_answers FILE N SECONDS: wait until FILE has N lines.
until_answers() {
	for _ in $(seq $(($3 * 5))); do
		[ "$(wc -l <"$1" 2>/dev/null || echo 0)" -ge "$2" ] && return 0
		sleep 0.2
	done
	return 1
}

takeover_zd() { # takeover_zd INTERVAL
	local iv=$1 d=$TMP/tk-zd P RECV PIPE id before
	mkdir -p "$d"
	id=$(xl domid "$G")
	zd-recv --listen 127.0.0.1:0 --port-file "$d/port" --replica "$d/replica" --once --no-fsync --timeout 0 \
		--standby "xen:$TMP/$G.cfg" --fence "xl destroy $id 2>/dev/null; ! xl list $id >/dev/null 2>&1" \
		--fence-timeout 120000 --no-verify -v 2>"$d/recv.err" &
	RECV=$!
	P=127.0.0.1:$(read_port "$d/port" $RECV 60)
	(zd-track xen:$G --mode buffered --interval "$iv" 2>"$d/track.err" | zd-swap 2>"$d/swap.err" |
		zd-send "$P" --timeout 0 --heartbeat 1000 >/dev/null 2>"$d/send.err") &
	PIPE=$!
	client_start "$d"
	if ! until_answers "$d/client.log" 10 600; then
		say "takeover, zd: no answers before the loss: $(tail -n 2 "$d/track.err" "$d/client.err" | tr '\n' '|')"
		kill "$CL" "$RECV" 2>/dev/null
		return 1
	fi
	before=$(wc -l <"$d/client.log")
	xl destroy "$id"
	wait "$RECV"
	wait "$PIPE" 2>/dev/null
	say "takeover, zd: $(grep 'running at epoch' "$d/recv.err" | tail -n 1)"
	[ -n "$(xl domid "$G-standby" 2>/dev/null)" ] && [ -z "$(xl domid "$G" 2>/dev/null)" ] && xl rename "$G-standby" "$G"
	client_result "$d" zd "$iv" "$before"
}

takeover_xl_remus() { # takeover_xl_remus INTERVAL
	local iv=$1 d=$TMP/tk-xl XR id before
	mkdir -p "$d"
	id=$(xl domid "$G")
	printf '#!/bin/sh\nshift\nexec "$@"\n' >"$d/wrap"
	chmod +x "$d/wrap"
	xl -vvv remus -F -n -d -e -i "$iv" -s "$d/wrap" "$G" localhost >"$d/remus.log" 2>&1 &
	XR=$!
	client_start "$d"
	for _ in $(seq 1200); do
		grep -q 'Checkpointed save' "$d/remus.log" && break
		kill -0 "$XR" 2>/dev/null || break
		sleep 0.5
	done
	if ! grep -q 'Checkpointed save' "$d/remus.log" || ! until_answers "$d/client.log" 10 600; then
		say "takeover, xl remus: not checkpointing, or no answers: $(tail -n 2 "$d/remus.log" | tr '\n' '|')"
		kill "$CL" "$XR" 2>/dev/null
		return 1
	fi
	before=$(wc -l <"$d/client.log")
	xl destroy "$id"
	wait "$XR" 2>/dev/null
	say "takeover, xl remus: $(grep -i 'failover' "$d/remus.log" | tail -n 1)"
	client_result "$d" xl-remus "$iv" "$before"
}

xl dmesg -c >/dev/null 2>&1
if [ "${ZD_XEN_BENCH_TAKEOVER:-1}" = 1 ]; then
	[ -d /sys/module/sch_plug ] || insmod /mod/sch_plug.ko 2>/dev/null
	tiv=${ZD_XEN_BENCH_TAKEOVER_INTERVAL:-200}
	# The methods interleaved, ZD_XEN_BENCH_TAKEOVER_REPEAT (2) rounds.
	for _ in $(seq "${ZD_XEN_BENCH_TAKEOVER_REPEAT:-2}"); do
		for m in zd xl-remus; do
			xl destroy "$G" 2>/dev/null; xl destroy "$G--incoming" 2>/dev/null; xl destroy "$G-standby" 2>/dev/null
			rm -f "$LOG"
			XEN_GUEST_NET=1 xen_guest_up "$G" || { say "takeover, $m: the guest did not come up"; continue; }
			case $m in
			zd) takeover_zd "$tiv" ;;
			xl-remus) takeover_xl_remus "$tiv" ;;
			esac
		done
	done
	for g in "$G" "$G--incoming" "$G-standby"; do xl destroy "$g" 2>/dev/null; done
fi
for iv in $INTERVALS; do
	fresh_guest
	measure
	set -- $WS
	BASE=$1
	echo "CSV none,$iv,$W,0,,,,$1,1.000,$2,${3:-},$(state "$G"),$T"
	for m in $METHODS; do
		case $m in
		xl-remus) run_xl_remus "$iv" ;;
		*) run_zd "$m" "$iv" ;;
		esac
		[ "$m" = xl-remus ] && continue	# a fresh guest for the next interval anyway
		if [ "$(state "$G")" != "-b----" ] && [ "$(state "$G")" != "r-----" ]; then
			say "the guest is '$(state "$G")' after $m at $iv ms: a fresh one"
			fresh_guest
		fi
	done
done
xl dmesg | grep -i 'triple\|crash' | tail -n 5 | sed 's/^/# xen: /'
exit 0
