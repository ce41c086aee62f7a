# shellcheck shell=bash disable=SC2034 # RECV_PORT, RECV_EXIT, REPLICA_SUM...: set for the caller
# Helpers for the replication tests (source after tap.sh).
#
#   start_recv NAME ARGS...   zd-recv --listen 127.0.0.1:0 ARGS in the
#                             background; sets RECV_PID, RECV_PORT (read
#                             from --port-file $TMP/NAME.port) and RECV_ERR
#                             (its stderr, $TMP/NAME.err)
#   wait_recv                 wait for it; its exit code in RECV_EXIT
#   synth_memsum SPEC EPOCHS EPOCH
#                             the primary's memory checksum at EPOCH, from an
#                             independent zd-track --verify run
#   replica_field DIR KEY     a line of zd-recv --status (epoch, memsum, …)
#   replica_epoch DIR         the epoch DIR/meta.json says is committed
#                             (nothing before the first commit)
#   replica_vs_vm DIR LOG EPOCH
#                             the replica in DIR is at EPOCH with the memory
#                             checksum the VM had at that checkpoint (the
#                             COMMIT in zd-send --json-log LOG of a zd-track
#                             --verify run); sets REPLICA_EPOCH, REPLICA_SUM
#                             and VM_SUM for the messages
#   replica_matches WHAT DIR LOG EPOCH
#                             the TAP check of replica_vs_vm, named WHAT
#   pause_summary LOG us|ms   "pause p50 X, p99 Y over N epochs" of the
#                             tracker's pauses in a zd-send --json-log LOG
#                             (nothing when it has none)
#   wait_epoch DIR N [SECONDS [PID]]
#                             the replica has committed epoch N or later (0);
#                             1 after SECONDS (default 20), or once PID (the
#                             zd-recv) has ended

# start_recv waits with read_port.
# shellcheck source=wait.sh
. "$(dirname "${BASH_SOURCE[0]}")/wait.sh"

start_recv() {
	local name=$1; shift
	RECV_ERR=$TMP/$name.err
	rm -f "$TMP/$name.port"
	zd-recv --listen 127.0.0.1:0 --port-file "$TMP/$name.port" "$@" 2>"$RECV_ERR" &
	RECV_PID=$!
	at_exit "kill $RECV_PID"
	RECV_PORT=$(read_port "$TMP/$name.port" "$RECV_PID" 5) && return 0
	echo "# zd-recv did not start: $(cat "$RECV_ERR")"
	return 1
}

wait_recv() {
	RECV_EXIT=0
	wait "$RECV_PID" 2>/dev/null || RECV_EXIT=$?
}

synth_memsum() {
	zd-track "$1" --epochs "$2" --interval 0 --verify --json 2>/dev/null |
		jq -r --argjson e "$3" 'select(.type == "commit" and .epoch == $e) | .memsum'
}

replica_field() {
	zd-recv --replica "$1" --status | awk -v k="$2" '$1 == k { print $2 }'
}

replica_vs_vm() {
	local st
	st=$(zd-recv --replica "$1" --status 2>&1)
	REPLICA_EPOCH=$(sed -n 's/^epoch //p' <<<"$st")
	REPLICA_SUM=$(sed -n 's/^memsum //p' <<<"$st")
	VM_SUM=$(json_num "$2" commit memsum | awk -v e="$3" '$1 == e {print $2}')
	[ "$REPLICA_EPOCH" = "$3" ] && [ -n "$VM_SUM" ] && [ "$REPLICA_SUM" = "$VM_SUM" ]
}

replica_matches() {
	if replica_vs_vm "$2" "$3" "$4"; then
		ok "$1: replica = the VM's memory at checkpoint $4 ($REPLICA_SUM)"
	else
		not_ok "$1: replica = the VM's memory at checkpoint $4" \
			"replica at epoch '$REPLICA_EPOCH' sum '$REPLICA_SUM', VM '$VM_SUM'"
	fi
}

# (p99 of fewer than 100 pauses: the largest but one is not the 99th.)
pause_summary() {
	grep '"source":"track"' "$1" | sed -n 's/.*"pause_ns":\([0-9.]*\).*/\1/p' | sort -n |
		awk -v u="$2" '{a[NR] = $1} END {if (!NR) exit
			d = u == "ms" ? 1e6 : 1e3; f = u == "ms" ? "%.1f" : "%.0f"
			printf "pause p50 " f " %s, p99 " f " %s over %d epochs\n",
				a[int(NR * 0.5) + 1] / d, u, a[int(NR * 0.99) + (NR < 100)] / d, u, NR}'
}

# meta.json, not zd-recv --status: it is read while zd-recv holds the
# replica, and polled (no checksum of the memory each time).
replica_epoch() { jq -r '.epoch // empty' "$1/meta.json" 2>/dev/null; }
_epoch_reached() {
	local e
	e=$(replica_epoch "$1")
	[ -n "$e" ] && [ "$e" -ge "$2" ] && return 0
	[ -n "$3" ] && ! alive "$3"
}
wait_epoch() {
	wait_for "${3:-20}" _epoch_reached "$1" "$2" "${4:-}" || return 1
	# It stopped waiting: for the epoch, or because PID ended.
	_epoch_reached "$1" "$2" ""
}
