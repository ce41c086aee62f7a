#!/usr/bin/env bash
# zd-vm on a real /dev/kvm: the built-in guest runs at CPL3 and dirties
# pages; DIRTY_GET sees them while it runs and nothing new while paused;
# MEMSUM and STATE work only while paused; the line service answers
# "seq N" at once with --no-output-commit and, with output commit, only
# after COMMIT reached the epoch that produced the answer.
#
# Flag and no-KVM errors are checked here; the rest runs where
# tests/lib/vmhost.sh finds a working /dev/kvm (here, or a QEMU TCG guest
# with nested SVM) and is skipped with its reason when it exits 77.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/kvmouter.sh"
. "$(dirname "$0")/../lib/wait.sh"
cd "$ZD_TOP" || exit 1

if [ -z "${ZD_KVM_INNER:-}" ]; then
	expect_fail "zd-vm: --control is required" 2 '^zd-vm: --control PATH is required \(try --help\)$' zd-vm
	expect_fail "zd-vm: --mem must be 2M-aligned" 2 '^zd-vm: --mem 7340032: want a multiple of 2M' \
		zd-vm --control "$TMP/s" --mem 7M
	expect_fail "zd-vm: --mem must be a size" 2 '^zd-vm: --mem lots: ' zd-vm --control "$TMP/s" --mem lots
	expect_fail "zd-vm: unknown workload key" 2 "^zd-vm: --workload 'speed': unknown key" \
		zd-vm --control "$TMP/s" --workload speed=3
	expect_fail "zd-vm: hot must be a fraction" 2 '^zd-vm: --workload hot=1.5: want a fraction' \
		zd-vm --control "$TMP/s" --workload dirty=10,hot=1.5
	expect_fail "zd-vm: span larger than RAM" 2 '^zd-vm: --workload span=.*larger than' \
		zd-vm --control "$TMP/s" --mem 16M --workload dirty=10,span=64M
	expect_fail "zd-vm: --output-log needs --serve" 2 '^zd-vm: --output-log needs --serve \(try --help\)$' \
		zd-vm --control "$TMP/s" --output-log "$TMP/log"
	expect_fail "zd-vm: unknown flag" 2 "^zd-vm: unknown option '--fast' \\(try --help\\)" zd-vm --fast
	expect_fail "zd-vm --ctl: missing socket" 4 "^zd-vm: $TMP/none: cannot connect: No such file or directory$" \
		zd-vm --ctl "$TMP/none" info
	if zd-vm --help | grep -q '^usage: zd-vm --control PATH'; then ok "zd-vm --help shows the usage line"
	else not_ok "zd-vm --help shows the usage line"; fi
	check "zd-vm --version" bash -c 'zd-vm --version | head -1 | grep -qx "zd-vm [0-9.]*"'
	expect_fail "zd-track kvm: a missing socket" 4 "kvm:$TMP/none: cannot connect: No such file or directory" \
		zd-track "kvm:$TMP/none" --epochs 1
	if [ ! -e /dev/kvm ]; then
		expect_fail "zd-vm: no /dev/kvm" 4 '^zd-vm: /dev/kvm: No such file or directory$' \
			zd-vm --control "$TMP/s"
	else
		skip "zd-vm: no /dev/kvm" "this host has /dev/kvm"
	fi

	kvm_outer "$0" --timeout 900
fi

# ---- inside: a working /dev/kvm ----
S=$TMP/vm.sock
ctl() { zd-vm --ctl "$S" "$@"; }
val() { ctl "$1" ${2:+"$2"} | sed -n "s/^$3=//p"; }
start_vm() {
	zd-vm -v --control "$S" "$@" 2>>"$TMP/vm.err" &
	VM=$!
	at_exit "kill $VM"
	wait_for 30 test -S "$S"
}

if start_vm --mem 64M --workload dirty=2000,hot=0.8,span=16M --serve 127.0.0.1:0 \
	--no-output-commit --output-log "$TMP/out1.log"; then
	ok "zd-vm starts and serves its control socket"
else
	not_ok "zd-vm starts and serves its control socket" "$(cat "$TMP/vm.err")"
	done_testing
fi
ctl info >"$TMP/info"
if grep -qx mem_bytes=67108864 "$TMP/info" && grep -qx page_size=4096 "$TMP/info" &&
	{ grep -qx fds=2 "$TMP/info" ||
	  # with the copy-on-write guard (flags bit 0x2) the uffd comes third
	  { grep -qx fds=3 "$TMP/info" && grep -qE '^flags=0x[0-9a-f]*[2367abef]$' "$TMP/info"; }; }; then
	ok "INFO: 64 MiB of 4 KiB pages, RAM and bitmap descriptors"
else
	not_ok "INFO: 64 MiB of 4 KiB pages, RAM and bitmap descriptors" "$(cat "$TMP/info")"
fi
echo "# $(grep -E 'KVM|guest TSC' "$TMP/vm.err" | sed 's/^zd-vm: \[[0-9.]*\] //' | tr '\n' ';')"
PORT=$(sed -n 's/^serve=.*://p' "$TMP/info")

# The first harvest reports every page (nothing was ever re-armed).
d0=$(val dirty-get "" dirty)
if [ "$d0" = 16384 ]; then ok "first DIRTY_GET reports all 16384 pages"
else not_ok "first DIRTY_GET reports all 16384 pages" "got '$d0'"; fi
ctl dirty-clear >/dev/null
sleep 1
d1=$(val dirty-get "" dirty)
g1=$(val stats "" guest_pages)
if [ "${d1:-0}" -gt 0 ] && [ "${g1:-0}" -gt 0 ]; then
	ok "the running guest dirties pages ($d1 dirty, $g1 writes so far)"
else
	not_ok "the running guest dirties pages" "dirty '$d1', guest writes '$g1'; $(tail -5 "$TMP/vm.err")"
fi

pns=$(val pause 1 ns)
echo "# pause took ${pns} ns (TCG timings are not hardware timings)"
ctl dirty-get >/dev/null
ctl dirty-clear >/dev/null
g2=$(val stats "" guest_pages)
sleep 1
d2=$(val dirty-get "" dirty)
g3=$(val stats "" guest_pages)
if [ "$d2" = 0 ] && [ "$g2" = "$g3" ]; then ok "paused: no new dirty pages, no guest writes"
else not_ok "paused: no new dirty pages, no guest writes" "dirty '$d2', writes $g2 -> $g3"; fi
m1=$(val memsum "" memsum)
m2=$(val memsum "" memsum)
if [ -n "$m1" ] && [ "$m1" = "$m2" ]; then ok "MEMSUM is stable while paused ($m1)"
else not_ok "MEMSUM is stable while paused" "'$m1' vs '$m2'"; fi
sb=$(val state "" state_bytes)
if [ "${sb:-0}" -gt 1000 ]; then ok "STATE returns a vCPU blob ($sb bytes)"
else not_ok "STATE returns a vCPU blob" "got '$sb'"; fi
ctl resume >/dev/null
sleep 1
d3=$(val dirty-get "" dirty)
if [ "${d3:-0}" -gt 0 ]; then ok "resumed: the guest dirties pages again ($d3)"
else not_ok "resumed: the guest dirties pages again" "got '$d3'"; fi
expect_fail "MEMSUM refused while running" 4 'memsum: Device or resource busy' ctl memsum
m3=$(ctl pause 2 >/dev/null; val memsum "" memsum; ctl resume >/dev/null)
if [ -n "$m3" ] && [ "$m3" != "$m1" ]; then ok "memory changed between the two pauses"
else not_ok "memory changed between the two pauses" "'$m1' vs '$m3'"; fi

# Selective re-arm via zd-track's kvm: target happens in kvm_replicate.sh;
# here the tracker reads a few epochs straight from the VM.
if zd-track "kvm:$S" --epochs 5 --interval 50 --verify --json >"$TMP/track.json" 2>"$TMP/track.err" &&
	[ "$(grep -c "\"type\":\"commit\"" "$TMP/track.json")" = 5 ]; then
	ok "zd-track kvm: checkpoints 5 epochs"
else
	not_ok "zd-track kvm: checkpoints 5 epochs" "$(tail -3 "$TMP/track.err")"
fi

# The service without output commit: answers come at once.
if exec 3<>"/dev/tcp/127.0.0.1/$PORT"; then
	echo hello >&3
	read -r -t 30 a1 <&3
	echo world >&3
	read -r -t 30 a2 <&3
	exec 3<&-
	if [ "$a1" = "seq 1" ] && [ "$a2" = "seq 2" ]; then
		ok "--no-output-commit: the service answers seq 1, seq 2 at once"
	else
		not_ok "--no-output-commit: the service answers seq 1, seq 2 at once" "got '$a1', '$a2'"
	fi
else
	not_ok "connect to the service on port $PORT"
fi
expect_fail "a second zd-vm on the same socket is refused" 1 'another zd-vm is serving' \
	zd-vm --control "$S" --mem 16M
ctl stop >/dev/null
wait "$VM"
rc=$?
if [ $rc -eq 0 ] && [ ! -e "$S" ]; then ok "STOP: zd-vm exits 0 and removes its socket"
else not_ok "STOP: zd-vm exits 0 and removes its socket" "exit $rc; $(tail -3 "$TMP/vm.err")"; fi
if [ "$(wc -l <"$TMP/out1.log")" = 2 ]; then ok "--output-log has one line per answer"
else not_ok "--output-log has one line per answer" "$(cat "$TMP/out1.log")"; fi

# The VM dying under the tracker (killed: its socket is left behind): one
# clear line, exit 4 (target), and END status 3, the backup's cue to take
# over. A VM that stops (STOP above removed its socket first) is not that.
start_vm --mem 16M --workload dirty=1000,span=8M || not_ok "zd-vm for the kill test starts"
zd-track "kvm:$S" --interval 50 --epochs 100000 --json >"$TMP/dead.out" 2>"$TMP/dead.err" &
TR=$!
sleep 2
kill -9 "$VM"
wait "$VM" 2>/dev/null
wait "$TR"
rc=$?
if [ $rc -eq 4 ] && grep -q "kvm:$S: .*zd-vm died (its control socket .* is left behind)" "$TMP/dead.err" &&
	[ "$(tail -n 1 "$TMP/dead.out" | jq -r 'select(.type == "end") | .status')" = 3 ]; then
	ok "zd-track exits 4 when zd-vm dies, END status 3: $(grep 'zd-vm died' "$TMP/dead.err" | head -1)"
else
	not_ok "zd-track exits 4 when zd-vm dies, END status 3" "exit $rc: $(cat "$TMP/dead.err"); last: $(tail -n 1 "$TMP/dead.out")"
fi
rm -f "$S"
start_vm --mem 16M --workload dirty=1000,span=8M || not_ok "zd-vm for the stop test starts"
zd-track "kvm:$S" --interval 50 --epochs 100000 --json >"$TMP/stop.out" 2>"$TMP/stop.err" &
TR=$!
sleep 1
zd-vm --ctl "$S" stop >/dev/null
wait "$VM" 2>/dev/null
wait "$TR"
rc=$?
if [ $rc -eq 4 ] && grep -q "kvm:$S: .*(the VM exited)" "$TMP/stop.err" &&
	[ "$(tail -n 1 "$TMP/stop.out" | jq -r 'select(.type == "end") | .status')" = 2 ]; then
	ok "zd-track exits 4 when zd-vm is stopped, END status 2 (not a loss)"
else
	not_ok "zd-track exits 4 when zd-vm is stopped, END status 2" "exit $rc: $(cat "$TMP/stop.err"); last: $(tail -n 1 "$TMP/stop.out")"
fi

# The classic dirty log (KVMs without manual protect) keeps the protocol's
# meaning: everything dirty at first, nothing new while paused.
ZD_VM_CLASSIC_DIRTY_LOG=1 start_vm --mem 16M --workload dirty=2000,span=8M ||
	not_ok "zd-vm with the classic dirty log starts"
c0=$(val dirty-get "" dirty)
ctl dirty-clear >/dev/null
sleep 1
c1=$(val dirty-get "" dirty)
c1b=$(val dirty-get "" dirty)
ctl pause 1 >/dev/null
ctl dirty-get >/dev/null
ctl dirty-clear >/dev/null
sleep 0.5
c2=$(val dirty-get "" dirty)
ctl stop >/dev/null
wait "$VM"
if [ "$c0" = 4096 ] && [ "${c1:-0}" -gt 0 ] && [ "${c1b:-0}" -ge "${c1:-0}" ] && [ "$c2" = 0 ] &&
	grep -q 'using classic KVM_GET_DIRTY_LOG' "$TMP/vm.err"; then
	ok "classic dirty log: all pages first, then $c1 while running, kept until cleared, 0 paused"
else
	not_ok "classic dirty log fallback" "first '$c0', running '$c1' then '$c1b', paused '$c2'"
fi

# Output commit: an answer of epoch E waits for COMMIT(E).
start_vm --mem 16M --serve 127.0.0.1:0 --output-log "$TMP/out2.log" ||
	not_ok "zd-vm with output commit starts"
PORT=$(val info "" serve | sed 's/.*://')
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
echo one >&3
if read -r -t 3 a <&3; then held=no; else held=yes; fi
h=$(val stats "" held)
ctl commit 0 >/dev/null
if read -r -t 2 a <&3; then held0=no; else held0=yes; fi
if [ "$held" = yes ] && [ "$h" = 1 ] && [ "$held0" = yes ]; then
	ok "output commit: the answer of epoch 1 is held (also after COMMIT 0)"
else
	not_ok "output commit: the answer of epoch 1 is held" "read before commit: held=$held, held0=$held0, stats held=$h"
fi
ctl pause 1 >/dev/null
ctl commit 1 >/dev/null
if read -r -t 30 a <&3 && [ "$a" = "seq 1" ]; then ok "COMMIT 1 releases seq 1"
else not_ok "COMMIT 1 releases seq 1" "got '${a:-nothing}'"; fi
ctl resume >/dev/null
echo two >&3
sleep 1
ctl commit 1 >/dev/null
if read -r -t 2 a <&3; then held=no; else held=yes; fi
ctl pause 2 >/dev/null
ctl commit 2 >/dev/null
if [ "$held" = yes ] && read -r -t 30 a <&3 && [ "$a" = "seq 2" ]; then
	ok "an answer of epoch 2 waits for COMMIT 2"
else
	not_ok "an answer of epoch 2 waits for COMMIT 2" "held=$held, got '${a:-nothing}'"
fi
exec 3<&-
ctl stop >/dev/null
wait "$VM"
if awk 'NR==1 && !($1==1 && $2==1) {exit 1} NR==2 && !($1==2 && $2==2) {exit 1}
	$4 < $3 {exit 1} END {exit NR!=2}' "$TMP/out2.log"; then
	ok "--output-log: seq 1 in epoch 1, seq 2 in epoch 2, released after produced"
else
	not_ok "--output-log: seq 1 in epoch 1, seq 2 in epoch 2" "$(cat "$TMP/out2.log")"
fi
done_testing
