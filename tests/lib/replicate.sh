# shellcheck shell=bash
# One replication run over loopback for the wire tests (source after
# tap.sh): the primary zd-track $SPEC for $N epochs, the backup a zd-recv
# --once, the replica checked against the primary's checksum $WANT.
#
#   replicate NAME "SEND ARGS" "RECV ARGS" [MODE]
#         zd-track $SPEC --verify --mode MODE (default remus) | zd-send
#         SEND ARGS → zd-recv --once RECV ARGS into $TMP/NAME. Sets
#         SEND_EXIT and RECV_EXIT ("running": zd-recv refused the sender at
#         its handshake and serves on); zd-send's JSON log in $TMP/NAME.log,
#         stderrs in $TMP/NAME.track.err, .swap.err, .send.err and $RECV_ERR.
#         SWAP=1: zd-swap between them. RELAY=FUNC: FUNC PORT NAME starts
#         a relay to zd-recv's PORT and sets RELAY_PORT (where zd-send
#         connects) and RELAY_PID (waited for after the run).
#   replica_ok WHAT DIR
#         ok if the run ended well and DIR is at epoch $N with checksum $WANT

# shellcheck source=replica.sh
. "$(dirname "${BASH_SOURCE[0]}")/replica.sh"

_replicate_swap() { if [ -n "${SWAP:-}" ]; then timeout 120 zd-swap; else cat; fi; }

replicate() {
	local name=$1 sargs=$2 rargs=$3 mode=${4:-remus} port
	# shellcheck disable=SC2086
	start_recv "$name.recv" --replica "$TMP/$name" --once --no-fsync $rargs || return 1
	port=$RECV_PORT RELAY_PID=
	if [ -n "${RELAY:-}" ]; then
		"$RELAY" "$RECV_PORT" "$name" || return 1
		port=$RELAY_PORT
	fi
	# shellcheck disable=SC2086
	timeout 120 zd-track "$SPEC" --epochs $N --interval 0 --verify --mode "$mode" --timeout 20000 \
		2>"$TMP/$name.track.err" |
		_replicate_swap 2>"$TMP/$name.swap.err" |
		timeout 120 zd-send $sargs --json-log 127.0.0.1:"$port" >"$TMP/$name.log" 2>"$TMP/$name.send.err"
	SEND_EXIT=${PIPESTATUS[2]}
	# A sender refused at the handshake never bound the replica: zd-recv,
	# even with --once, says so in a line and serves on ("running").
	if [ "$SEND_EXIT" != 0 ] && ! wait_for 3 gone "$RECV_PID"; then
		kill "$RECV_PID"
		wait "$RECV_PID" 2>/dev/null
		RECV_EXIT=running
	else
		wait_recv
	fi
	# The relay ends with both its connections.
	if [ -n "$RELAY_PID" ]; then
		wait_for 30 gone "$RELAY_PID" || kill "$RELAY_PID" 2>/dev/null
		wait "$RELAY_PID" 2>/dev/null
	fi
	return 0
}

replica_ok() {
	local ep sum
	ep=$(replica_field "$2" epoch)
	sum=$(replica_field "$2" memsum)
	if [ "$SEND_EXIT" = 0 ] && [ "$RECV_EXIT" = 0 ] && [ "$ep" = "$N" ] && [ "$sum" = "$WANT" ]; then
		ok "$1: replica at epoch $N, checksum = primary's ($WANT)"
	else
		not_ok "$1: replica equals the primary" "send exit $SEND_EXIT, recv exit $RECV_EXIT, epoch $ep, memsum $sum, want $WANT
$(tail -3 "$2".*.err "$RECV_ERR" 2>/dev/null)"
	fi
}
