#!/usr/bin/env bash
# bench/disk: the cost of disk replication on a zd-vm guest:
# per mode and disk write rate, the pause, T1 -> ACK, and the bytes on the
# wire per epoch, with the disk writes' share of them. The guest writes
# pages at a fixed rate and 4K disk blocks at RATE per second; the pipeline
# is the real one (zd-track | zd-mru | zd-swap | zd-send -> zd-recv on
# loopback, fsync on). The first epochs (the whole-memory and whole-disk
# copy) are left out. Writes bench/results/disk.csv.
#
#   bench/disk.sh [OUT.csv]   (env: EPOCHS=100 INTERVAL=50 RATES="0 100 1000 4000"
#                              MODES="remus buffered zddspt" DISK=16M; BENCH_QUICK=1)
set -eu
cd "$(dirname "$0")/.."
out=${1:-bench/results/disk.csv}
export PATH="$PWD/bin:$PATH"
if [ ! -c /dev/kvm ]; then
	echo "bench/disk: no /dev/kvm, skipped" >&2
	exit 0
fi
epochs=${EPOCHS:-100} interval=${INTERVAL:-50} rates=${RATES:-0 100 1000 4000}
modes=${MODES:-remus buffered zddspt} disk=${DISK:-16M}
if [ -n "${BENCH_QUICK:-}" ]; then epochs=30 rates="0 1000"; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$out")"
echo "mode,disk_writes_per_s,epochs,pause_p50_us,pause_p99_us,t1_ack_p50_us,t1_ack_p99_us,wire_bytes_per_epoch_p50,disk_writes_per_epoch,disk_bytes_per_epoch,disk_stream_bytes_per_epoch" >"$out"
for mode in $modes; do
	for rate in $rates; do
		d=$tmp/$mode-$rate
		mkdir -p "$d"
		truncate -s "$disk" "$d/disk.img"
		wl=dirty=1000,span=16M
		[ "$rate" -gt 0 ] && wl=$wl,disk=$rate
		zd-vm --control "$d/vm.sock" --mem 64M --workload "$wl" --disk "$d/disk.img" 2>"$d/vm.err" &
		vm=$!
		for _ in $(seq 100); do [ -S "$d/vm.sock" ] && break; sleep 0.05; done
		zd-recv --listen 127.0.0.1:0 --port-file "$d/port" --replica "$d/rep" --once --no-failover 2>"$d/recv.err" &
		recv=$!
		for _ in $(seq 100); do grep -qx '[0-9][0-9]*' "$d/port" 2>/dev/null && break; sleep 0.05; done
		zd-track "kvm:$d/vm.sock" --mode "$mode" --interval "$interval" --epochs "$epochs" 2>"$d/track.err" |
			zd-mru 2>/dev/null | zd-swap 2>/dev/null | zd-send "127.0.0.1:$(cat "$d/port")" >"$d/log" 2>"$d/send.err" || true
		wait "$recv" 2>/dev/null || true
		zd-vm --ctl "$d/vm.sock" stop >/dev/null 2>&1 || kill "$vm" 2>/dev/null
		wait "$vm" 2>/dev/null || true
		stat=$(zd-stat --json --from 3 <"$d/log")
		# STAT "disk" of each epoch from 3 on (zd-track's; zd-send's log keeps it)
		dsk=$(zd-mru --json <"$d/log" 2>/dev/null | jq -s -r '[.[] | select(.type == "stat" and .source == "disk" and .epoch >= 3)] |
			if length == 0 then "0,0,0" else
			"\(([.[].values.writes] | add) / length | floor),\(([.[].values.bytes] | add) / length | floor),\(([.[].values.wire_bytes] | add) / length | floor)" end')
		echo "$stat" | jq -r --arg m "$mode" --arg r "$rate" --arg dsk "$dsk" \
			'[$m, $r, .epochs, (.pause_ns.p50 / 1000 | floor), (.pause_ns.p99 / 1000 | floor),
			  ((.latency_ns.p50 // 0) / 1000 | floor), ((.latency_ns.p99 // 0) / 1000 | floor),
			  ((.wire_bytes_per_epoch // .bytes_per_epoch).p50), $dsk] | @csv' | tr -d '"' >>"$out"
	done
done
column -s, -t "$out" 2>/dev/null || cat "$out"
