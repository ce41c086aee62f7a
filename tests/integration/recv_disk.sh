#!/usr/bin/env bash
# Disk replication without a KVM guest: DISK records (zd-stream(5)) added to a
# synth stream by tests/lib/diskstream.py, which also knows the disk they
# leave after each epoch.
#   - zd-recv applies them to DIR/disk.img with the epoch: the disk is the
#     expected one byte for byte, meta.json names its size;
#   - zd-mru and zd-swap pass them unchanged, zd-stat counts them;
#   - bad DISK records (a write past the disk, an offset + length past
#     2^64, another disk size, a zstd frame that is not one) end the
#     session like bad PAGES: exit 3, one line, the epoch discarded,
#     disk.img and memory.img still at the epoch before;
#   - zd-recv SIGKILLed inside an epoch, at random moments of a paced
#     stream over TCP, and between an epoch's commit point and the end of
#     its apply: reopened, disk.img and memory.img are at the same
#     committed epoch (disk byte for byte, memory by the primary's checksum).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"
DS="python3 $(dirname "$0")/../lib/diskstream.py"

SPEC=synth:pages=1024,dirty=64,hot=0.8,seed=7
gen() { # EPOCHS [diskstream add options]
	local n=$1; shift
	zd-track "$SPEC" --epochs "$n" --interval 0 --verify --json 2>/dev/null | zd-swap --json 2>/dev/null |
		$DS add "$@" 2>/dev/null
}
disk_is() { # DIR EPOCH [options]: DIR/disk.img is the disk after EPOCH
	local d=$1 e=$2; shift 2
	$DS expect "$e" "$TMP/want" "$@" && cmp -s "$TMP/want" "$d/disk.img"
}
mem_is() { # DIR EPOCH: memory.img is the primary's at EPOCH
	[ "$(replica_field "$1" memsum)" = "$(synth_memsum "$SPEC" 8 "$2")" ]
}

# 1. Applied with the epoch.
gen 6 >"$TMP/good.jsonl"
zd-recv --stdio --replica "$TMP/r1" --verify <"$TMP/good.jsonl" >/dev/null 2>"$TMP/r1.err"
rc=$?
if [ $rc = 0 ] && [ "$(replica_field "$TMP/r1" epoch)" = 6 ] && disk_is "$TMP/r1" 6 &&
	[ "$(jq .disk_size "$TMP/r1/meta.json")" = $((4 << 20)) ] && mem_is "$TMP/r1" 6; then
	ok "zd-recv: disk.img is the disk after epoch 6, byte for byte, memory the primary's at 6"
else
	not_ok "zd-recv applies DISK records with their epoch" "exit $rc: $(cat "$TMP/r1.err")"
fi

# 2. Through the stages, in binary: unchanged; counted.
grep '"type":"disk"' "$TMP/good.jsonl" >"$TMP/disk.in"
zd-mru <"$TMP/good.jsonl" 2>/dev/null | zd-swap 2>/dev/null | zd-mru --json 2>/dev/null |
	grep '"type":"disk"' >"$TMP/disk.out"
if [ -s "$TMP/disk.in" ] && cmp -s "$TMP/disk.in" "$TMP/disk.out"; then
	ok "zd-mru and zd-swap pass DISK records unchanged ($(wc -l <"$TMP/disk.in") of them, binary and back)"
else
	not_ok "zd-mru and zd-swap pass DISK records unchanged" "$(wc -l <"$TMP/disk.in") in, $(wc -l <"$TMP/disk.out") out"
fi
n=$(wc -l <"$TMP/disk.in")
if zd-stat --json <"$TMP/good.jsonl" 2>/dev/null | jq -e --argjson n "$n" '.disk.records == $n' >/dev/null; then
	ok "zd-stat counts the DISK records ($n)"
else
	not_ok "zd-stat counts the DISK records" "$(zd-stat --json <"$TMP/good.jsonl" 2>&1 | jq -c .disk 2>&1)"
fi

# 3. Bad records: the session ends like for bad PAGES, nothing half applied.
for bad in past overflow size frame; do
	d=$TMP/bad-$bad
	gen 6 --bad "4:$bad" | zd-recv --stdio --replica "$d" >/dev/null 2>"$d.err"
	rc=$?
	if [ $rc = 3 ] && [ "$(grep -c . "$d.err")" = 1 ] && grep -q 'epoch 4 discarded, replica stays at epoch 3' "$d.err" &&
		[ "$(replica_field "$d" epoch)" = 3 ] && disk_is "$d" 3 && mem_is "$d" 3; then
		ok "bad DISK ($bad): exit 3, one line, disk and memory at epoch 3: $(sed 's/.*(DISK): //; s/; epoch 4.*//' "$d.err")"
	else
		not_ok "bad DISK ($bad): exit 3, replica at epoch 3" "exit $rc: $(cat "$d.err")"
	fi
done

# 4. SIGKILL inside an epoch: the sender stalls half way through epoch k's
# DISK records (16 writes of up to 16K an epoch), zd-recv has staged part.
gen 8 --writes 16 >"$TMP/big.jsonl"
for k in 3 6; do
	d=$TMP/c$k
	line=$(grep -n "\"type\":\"disk\",\"epoch\":$k," "$TMP/big.jsonl" | sed -n 8p | cut -d: -f1)
	rm -f "$TMP/fifo"; mkfifo "$TMP/fifo"
	( head -n "$line" "$TMP/big.jsonl"; exec sleep 60 ) >"$TMP/fifo" &
	feeder=$!
	at_exit "kill $feeder"
	zd-recv --stdio --replica "$d" <"$TMP/fifo" >/dev/null 2>"$d.err" &
	pid=$!
	wait_epoch "$d" $((k - 1)) 20
	sleep 0.5
	kill -9 "$pid"; wait "$pid" 2>/dev/null
	kill "$feeder"; wait "$feeder" 2>/dev/null
	if [ "$(replica_field "$d" epoch)" = $((k - 1)) ] && disk_is "$d" $((k - 1)) --writes 16 && mem_is "$d" $((k - 1)); then
		ok "SIGKILL inside epoch $k (half its DISK records staged): disk and memory at epoch $((k - 1))"
	else
		not_ok "SIGKILL inside epoch $k: disk and memory at epoch $((k - 1))" "epoch $(replica_field "$d" epoch)"
	fi
done

# 5. Live over TCP, paced; zd-recv killed at random moments (some land in
# an apply: each epoch writes 16 records of up to 16K, fsynced).
for after in 2 4 7; do
	d=$TMP/t$after
	start_recv "t$after" --replica "$d" --once || exit 1
	zd-track "$SPEC" --epochs 10000 --interval 20 --mode buffered --json 2>/dev/null | zd-swap --json 2>/dev/null |
		$DS add --writes 16 2>/dev/null | zd-send 127.0.0.1:"$RECV_PORT" >/dev/null 2>"$TMP/send.err" &
	sendpid=$!
	wait_epoch "$d" $after 30
	sleep "0.0$((RANDOM % 10))"
	kill -9 "$RECV_PID"; wait_recv
	wait $sendpid 2>/dev/null
	e=$(replica_field "$d" epoch)
	if [ -n "$e" ] && [ "$e" -ge $after ] && disk_is "$d" "$e" --writes 16 &&
		[ "$(replica_field "$d" memsum)" = "$(synth_memsum "$SPEC" "$e" "$e")" ]; then
		ok "SIGKILL after epoch $after over TCP: disk and memory at epoch $e, both the primary's"
	else
		not_ok "SIGKILL after epoch $after over TCP: disk and memory at one epoch" "epoch $e"
	fi
done

# 6. SIGKILL mid-apply, aimed: epochs of ~16 MiB of disk writes (24
# records of up to 1 MiB); zd-recv is killed once epoch 3's journal has
# passed its commit point (DIR/journal exists, naming epoch 3) and before
# its apply ends (the journal is renamed back). Reopened, the replica is
# at epoch 3, disk and memory, the apply finished by recovery.
BIG=(--size $((64 << 20)) --writes 24 --block $((256 << 10)))
gen 4 "${BIG[@]}" >"$TMP/huge.jsonl"
d=$TMP/apply
zd-recv --stdio --replica "$d" <"$TMP/huge.jsonl" >/dev/null 2>"$d.err" &
pid=$!
killed=$(python3 - "$d" "$pid" <<'PY'
import os, signal, struct, sys, time
d, pid = sys.argv[1], int(sys.argv[2])
end = time.time() + 60
while time.time() < end:
    try:
        with open(d + '/journal', 'rb') as f:
            h = f.read(24)
        if len(h) == 24 and struct.unpack_from('<Q', h, 16)[0] == 3:
            os.kill(pid, signal.SIGKILL)
            print('yes')
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.0002)
print('no')
PY
)
wait "$pid" 2>/dev/null || true
if [ "$killed" = yes ]; then
	ok "zd-recv SIGKILLed between epoch 3's commit point and the end of its apply"
	if [ "$(replica_field "$d" epoch)" = 3 ] && disk_is "$d" 3 "${BIG[@]}" && mem_is "$d" 3; then
		ok "after SIGKILL mid-apply: recovery finishes epoch 3, disk byte for byte and memory the primary's"
	else
		not_ok "after SIGKILL mid-apply: disk and memory at epoch 3" "epoch $(replica_field "$d" epoch)"
	fi
else
	skip "SIGKILL mid-apply" "epoch 3's apply ended before the poller saw its journal"
	skip "after SIGKILL mid-apply: recovery" "not killed mid-apply"
fi
done_testing
