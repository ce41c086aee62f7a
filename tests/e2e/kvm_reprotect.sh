#!/usr/bin/env bash
# Re-protection after a takeover, on real KVM: a VM protected with
#   zd run --reprotect 127.0.0.1:PC A.sock local:B
# loses its primary (SIGKILL of zd-vm A). The backup B takes over (zd-recv
# execs zd failover --reprotect), and the restored VM is protected again,
# with no step by hand, to the zd-recv at PC (replica C). Then the restored
# VM is lost too (SIGKILL), and C takes over. zd-client talks to the
# service the whole time: two failovers, no answer lost or contradicted.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/wait.sh"
. "$(dirname "$0")/../lib/replica.sh"
cd "$ZD_TOP" || exit 1
if ! have_kvm; then
	skip "re-protection after a takeover" "no /dev/kvm here"
	done_testing
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SP=$(free_port)
epoch_of() { sed -n 's/.*"epoch": *\([0-9]*\).*/\1/p' "$1/meta.json" 2>/dev/null; }
epoch_ge() { [ "$(epoch_of "$1")" -ge "$2" ] 2>/dev/null; }
cleanup() {
	pkill -9 -f "zd-vm --restore $TMP/" 2>/dev/null
	pkill -9 -f "zd-vm --control $TMP/a.sock" 2>/dev/null
	pkill -f "zd failover $TMP/" 2>/dev/null
	pkill -f "zd-recv --listen 127.0.0.1:0 --port-file $TMP/" 2>/dev/null
}
at_exit cleanup

zd-vm --control "$TMP/a.sock" --mem 32M --workload dirty=2000,hot=0.2 --serve "127.0.0.1:$SP" 2>"$TMP/a.err" &
A=$!
wait_for 10 test -S "$TMP/a.sock"
start_recv c --replica "$TMP/C" --timeout 300
CP=$RECV_PORT CPID=$RECV_PID
zd run --mode buffered --interval 25 --peer-timeout 300 --reprotect "127.0.0.1:$CP" "$TMP/a.sock" "local:$TMP/B" \
	>/dev/null 2>"$TMP/run.err" &
RUN=$!
zd-client --reconnect --retry-for 20000 --duration 20000 --rate 50 "127.0.0.1:$SP" >"$TMP/client.json" 2>"$TMP/client.err" &
CLIENT=$!
if wait_for 30 epoch_ge "$TMP/B" 20; then
	ok "zd run: the VM protected to local:B (epoch $(epoch_of "$TMP/B"))"
else
	not_ok "zd run protects the VM" "$(tail -5 "$TMP/run.err")"
	done_testing
fi

kill -9 "$A"
if wait_for 30 epoch_ge "$TMP/C" 10; then
	ok "primary A lost: B took over and protects the restored VM to C by itself (C at epoch $(epoch_of "$TMP/C"))"
else
	not_ok "B takes over and protects the restored VM to C" "$(tail -8 "$TMP/run.err"; tail -3 "$RECV_ERR")"
	done_testing
fi
grep -q "protecting the restored VM again, to 127.0.0.1:$CP" "$TMP/run.err" &&
	ok "zd failover says it protects again, and to whom" || not_ok "zd failover says it protects again" "$(tail -5 "$TMP/run.err")"

sleep 2
RESTORED=$(pgrep -f "zd-vm --restore $TMP/B" | head -1)
[ -n "$RESTORED" ] && kill -9 "$RESTORED"
if wait_for 20 pgrep -f "zd-vm --restore $TMP/C" >/dev/null; then
	ok "the restored VM lost too: C took over"
else
	not_ok "C takes over from the restored VM" "$(tail -5 "$RECV_ERR")"
fi
wait "$CLIENT"
if jq -e '.errors == 0 and .gaps == 0 and .failovers >= 2 and .count > 100' "$TMP/client.json" >/dev/null; then
	ok "the client through both takeovers: $(jq -r '"\(.count) answers, \(.failovers) failovers (max \(.failover_ns.max / 1e6 | floor) ms), none lost or contradicted"' "$TMP/client.json")"
else
	not_ok "the client through both takeovers: no answer lost or contradicted" "$(cat "$TMP/client.json"; tail -3 "$TMP/client.err")"
fi
kill "$RUN" 2>/dev/null
done_testing
