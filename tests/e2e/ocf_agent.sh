#!/usr/bin/env bash
# The Pacemaker resource agent (ocf/zd) on a real KVM VM, driven as
# Pacemaker drives a promotable clone, action by action:
#   - the backup (start: zd-recv, takeover off) keeps the replica of a VM
#     protected by zd-track | zd-swap | zd-send while zd-client talks to it;
#   - monitor: running, not promoted; fails once the stream stalls (the
#     primary's zd-track stopped: no commit for max_age), and is fine again
#     when it goes on;
#   - the primary is lost (SIGKILL of the VM and its pipeline): monitor
#     still running (the replica holds the last acknowledged state);
#     promote takes over (the VM restored from the replica), monitor says
#     promoted, and the client's sequence goes on: no answer lost or
#     contradicted across the takeover;
#   - demote and stop leave nothing running;
#   - Debian's ocf-tester (resource-agents, unpacked by make deps into
#     $BUILD/debroot) passes on the agent, with that replica.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/wait.sh"
. "$(dirname "$0")/../lib/debroot.sh"
cd "$ZD_TOP" || exit 1

R=$DEBROOT_ROOT
if ! have_kvm; then
	skip "the OCF agent on a KVM VM" "no /dev/kvm here"
	done_testing
fi
if [ ! -x "$R/usr/sbin/ocf-tester" ] || ! command -v xmllint >/dev/null; then
	skip "the OCF agent on a KVM VM" "no resource-agents in $R (make deps unpacks it) or no xmllint (libxml2-utils)"
	done_testing
fi
export OCF_ROOT=$R/usr/lib/ocf HA_RSCTMP=$TMP/rsc
mkdir -p "$HA_RSCTMP"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RP=$(free_port) SP=$(free_port)
AGENT=$ZD_TOP/ocf/zd
agent() {	# ACTION: the agent's exit code in AC, its output in $TMP/agent.out
	OCF_RESOURCE_INSTANCE=zdt OCF_RESKEY_replica=$TMP/rep OCF_RESKEY_listen=127.0.0.1:$RP \
		OCF_RESKEY_bindir=$ZD_BIN OCF_RESKEY_max_age=2 "$AGENT" "$1" >"$TMP/agent.out" 2>&1
	AC=$?
}
expect() {	# WHAT ACTION CODE
	agent "$2"
	[ "$AC" = "$3" ] && ok "$1 ($2: $AC)" || not_ok "$1" "$2 exits $AC, want $3: $(cat "$TMP/agent.out")"
}

expect "before start: not running" monitor 7
expect "validate-all with replica and listen set" validate-all 0
expect "start: zd-recv on this node" start 0
expect "started, no checkpoint yet: running, not promoted" monitor 0

zd-vm --control "$TMP/vm.sock" --mem 32M --workload dirty=2000,hot=0.2 --serve "127.0.0.1:$SP" 2>"$TMP/vm.err" &
VM=$!
at_exit "kill -9 $VM"
wait_for 10 test -S "$TMP/vm.sock"
zd-track "kvm:$TMP/vm.sock" --mode buffered --interval 25 2>"$TMP/track.err" | zd-swap 2>"$TMP/swap.err" |
	zd-send "127.0.0.1:$RP" >/dev/null 2>"$TMP/send.err" &
at_exit "pkill -9 -f 'zd-track kvm:$TMP/vm.sock'"
zd-client --reconnect --retry-for 30000 --duration 30000 --rate 50 "127.0.0.1:$SP" >"$TMP/client.json" 2>"$TMP/client.err" &
CLIENT=$!
at_exit "kill $CLIENT"
epoch() { sed -n 's/.*"epoch": *\([0-9]*\).*/\1/p' "$TMP/rep/meta.json" 2>/dev/null; }
epoch_ge() { [ "$(epoch)" -ge "$1" ] 2>/dev/null; }
wait_for 30 epoch_ge 20
expect "protected, replica at epoch $(epoch): running, not promoted" monitor 0

TRACK=$(pgrep -f "zd-track kvm:$TMP/vm.sock" | head -1)
kill -STOP "$TRACK"
sleep 3.5
agent monitor
[ "$AC" = 1 ] && grep -q 'stalled' "$TMP/agent.out" && ok "the stream stalls (zd-track stopped 3.5 s, max_age 2): monitor fails, saying why" ||
	not_ok "a stalled stream fails monitor" "monitor $AC: $(cat "$TMP/agent.out")"
kill -CONT "$TRACK"
sleep 1
expect "the stream goes on: monitor fine again" monitor 0

sleep 2
before=$(epoch)
kill -9 "$VM" "$TRACK"
pkill -9 -f "zd-send 127.0.0.1:$RP"
wait_for 10 test -s "$HA_RSCTMP/zd-zdt/recv.rc"
expect "the primary lost (zd-recv exit $(cat "$HA_RSCTMP/zd-zdt/recv.rc" 2>/dev/null)): still running, replica at epoch $before" monitor 0
expect "promote: the VM restored from the replica" promote 0
expect "promoted" monitor 8
wait "$CLIENT"
if jq -e '.errors == 0 and .gaps == 0 and .failovers >= 1 and .count > 0' "$TMP/client.json" >/dev/null; then
	ok "the client across the takeover: $(jq -r '"\(.count) answers, \(.failovers) failover(s) (\(.failover_ns.max / 1e6 | floor) ms), none lost or contradicted"' "$TMP/client.json")"
else
	not_ok "the client across the takeover: no answer lost or contradicted" "$(cat "$TMP/client.json"; tail -3 "$TMP/client.err")"
fi
expect "demote: the VM stops, zd-recv again" demote 0
expect "demoted: running, not promoted" monitor 0
expect "stop" stop 0
expect "stopped: not running" monitor 7
left=$(pgrep -f "zd-vm --restore $TMP/rep|zd-recv --listen 127.0.0.1:$RP" | tr '\n' ' ')
[ -z "$left" ] && ok "nothing left running" || not_ok "nothing left running" "pids $left"

# Debian's ocf-tester, its DTD read from the unpacked tree.
sed "s|^DATADIR=/usr/share|DATADIR=$R/usr/share|" "$R/usr/sbin/ocf-tester" >"$TMP/ocf-tester"
chmod 755 "$TMP/ocf-tester"
RP2=$(free_port)
if timeout 300 "$TMP/ocf-tester" -n zdt2 -o replica="$TMP/rep" -o listen="127.0.0.1:$RP2" -o bindir="$ZD_BIN" \
	"$AGENT" >"$TMP/tester.out" 2>&1 && grep -q 'passed all tests' "$TMP/tester.out"; then
	ok "ocf-tester: $(grep 'passed all tests' "$TMP/tester.out")"
else
	not_ok "ocf-tester passes" "$(tail -8 "$TMP/tester.out")"
fi
pkill -f "zd-vm --restore $TMP/rep" 2>/dev/null
done_testing
