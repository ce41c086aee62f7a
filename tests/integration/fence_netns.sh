#!/usr/bin/env bash
# Fencing with the network cut: primary (zd-track synth | zd-send)
# in one network namespace, zd-recv in another, joined by a veth pair with
# addresses that exist only inside the two namespaces. Taking the veth down
# leaves both sides alive but deaf: zd-recv's heartbeat timeout fires, the
# fence runs before any takeover, and a failing fence prevents it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/replica.sh"

if [ "$(id -u)" != 0 ] || ! ip netns add "zdt$$probe" 2>/dev/null; then
	skip "network cut fences before takeover" "needs root and ip netns"
	done_testing
	exit 0
fi
ip netns del "zdt$$probe"
A=zdtA$$ B=zdtB$$
at_exit "ip netns del $A; ip netns del $B"
ip netns add $A && ip netns add $B &&
	ip link add zdva$$ netns $A type veth peer name zdvb$$ netns $B &&
	ip -n $A addr add 10.213.77.1/30 dev zdva$$ && ip -n $B addr add 10.213.77.2/30 dev zdvb$$ &&
	ip -n $A link set zdva$$ up && ip -n $B link set zdvb$$ up &&
	ip -n $A link set lo up && ip -n $B link set lo up ||
	{ not_ok "namespace pair set up"; done_testing; exit 1; }

SPEC=synth:pages=16384,dirty=256,hot=0.8,seed=9
# listening PORT: something listens on PORT in B.
listening() { ip netns exec $B ss -ltn 2>/dev/null | grep -q ":$1 "; }
run_cut() {	# NAME FENCE-EXIT: replicate, cut the veth, wait for zd-recv
	local n=$1 fence_rc=$2 port=7071
	: >"$TMP/$n.order"
	ip netns exec $B zd-recv --listen 10.213.77.2:$port --insecure --replica "$TMP/$n" --once --no-fsync \
		--heartbeat 50 --timeout 300 \
		--fence "echo fence >>$TMP/$n.order; exit $fence_rc" \
		--on-failover "echo failover \$ZD_EPOCH >>$TMP/$n.order" 2>"$TMP/$n.recv.err" &
	RECV_PID=$!
	wait_for 5 listening "$port"
	ip netns exec $A bash -c "zd-track $SPEC --epochs 100000 --interval 20ms --mode buffered 2>/dev/null |
		exec zd-send --heartbeat 50 --timeout 3000 10.213.77.2:$port >/dev/null 2>$TMP/$n.send.err" &
	PRIM=$!
	at_exit "kill $RECV_PID $PRIM"
	wait_epoch "$TMP/$n" 5
	ip -n $A link set zdva$$ down
	RECV_EXIT=0
	wait "$RECV_PID" || RECV_EXIT=$?
	ip -n $A link set zdva$$ up
	pkill -9 -P "$PRIM" 2>/dev/null; kill -9 "$PRIM" 2>/dev/null; wait "$PRIM" 2>/dev/null
}

run_cut ok 0
ep=$(replica_field "$TMP/ok" epoch)
if [ "$RECV_EXIT" = 0 ] && [ "$(cat "$TMP/ok.order")" = "$(printf 'fence\nfailover %s' "$ep")" ]; then
	ok "veth down: the fence ran, then the takeover at epoch $ep"
else
	not_ok "veth down: the fence ran, then the takeover" "exit $RECV_EXIT order '$(cat "$TMP/ok.order")': $(cat "$TMP/ok.recv.err")"
fi
grep -q "no record or heartbeat" "$TMP/ok.recv.err" && ok "detected by the heartbeat timeout (the link is cut, not closed)" ||
	not_ok "detected by the heartbeat timeout" "$(cat "$TMP/ok.recv.err")"

run_cut bad 1
if [ "$RECV_EXIT" = 6 ] && [ "$(cat "$TMP/bad.order")" = fence ] && grep -q "no takeover" "$TMP/bad.recv.err"; then
	ok "veth down, fence fails: no takeover, zd-recv exits 6"
else
	not_ok "veth down, fence fails: no takeover" "exit $RECV_EXIT order '$(cat "$TMP/bad.order")': $(cat "$TMP/bad.recv.err")"
fi
done_testing
