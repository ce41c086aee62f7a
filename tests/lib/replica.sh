# Helpers for the replication tests (source after tap.sh).
#
#   start_recv NAME ARGS...   zd-recv --listen 127.0.0.1:0 ARGS in the
#                             background; sets RECV_PID, RECV_PORT and
#                             RECV_ERR (its stderr, $TMP/NAME.err)
#   wait_recv                 wait for it; its exit code in RECV_EXIT
#   synth_memsum SPEC EPOCHS EPOCH
#                             the primary's memory checksum at EPOCH, from an
#                             independent zd-track --verify run
#   replica_field DIR KEY     a line of zd-recv --status (epoch, memsum, …)

start_recv() {
	local name=$1; shift
	RECV_ERR=$TMP/$name.err
	zd-recv --listen 127.0.0.1:0 "$@" 2>"$RECV_ERR" &
	RECV_PID=$!
	at_exit "kill $RECV_PID"
	RECV_PORT=
	for _ in $(seq 100); do
		RECV_PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$RECV_ERR")
		[ -n "$RECV_PORT" ] && return 0
		sleep 0.05
	done
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
