# shellcheck shell=bash
# Waiting and polling for the shell tests and benches. Source it from
# tests/*/NAME.sh (after tap.sh) or from bench/*.sh: it needs nothing else
# and sets no traps, so a bench can use it without tap.sh's TMP and exit.
#
#   wait_for SECONDS CMD...   run CMD every 0.05 s until it succeeds (0), or
#                             give up after SECONDS (1)
#   wait_line FILE PATTERN [SECONDS]
#                             FILE has a line matching PATTERN (grep -E);
#                             SECONDS defaults to 5
#   alive PID                 PID runs (and is not a zombie)
#   gone PID                  PID has ended (no process, or a zombie)
#   read_port FILE [PID [SECONDS]]
#                             print the port a server wrote to FILE once it
#                             listened (zd-recv --port-file FILE, the test
#                             servers in tests/integration/*.py); 1 (and
#                             nothing) if PID ended first or SECONDS
#                             (default 10) passed. Remove FILE before
#                             starting the server: a stale one is read at once.
#   json_num LOG TYPE FIELD   "epoch value" lines, one per record of TYPE in
#                             a zd-send --json-log LOG (FIELD a number or a
#                             quoted hex checksum)
#
# Why one copy: these loops were pasted into a dozen scripts, each with its
# own count of tries, sleep and way of reading zd-recv's port off stderr.

# Every condition here changes on another process's clock: polling is the
# simplest way to wait for it in bash, and 50 ms keeps the tests quick
# without spinning a core.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	# -le: a wait of N seconds gives CMD at least N whole seconds ($SECONDS
	# ticks once a second).
	while [ $SECONDS -le $end ]; do
		"$@" && return 0
		sleep 0.05
	done
	return 1
}

# alive PID: PID runs. Not kill -0, which a zombie passes: a child that
# died stays one until the script waits for it.
alive() {
	local s
	read -r s 2>/dev/null <"/proc/$1/stat" || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}
gone() { ! alive "$1"; }

# (A FILE not there yet is not an error: its writer may not have started.)
_wait_grep() { grep -qE -- "$2" "$1" 2>/dev/null; }
wait_line() { wait_for "${3:-5}" _wait_grep "$1" "$2"; }

# zd-recv writes the port with a rename (man zd-recv, --port-file), the test
# servers with one write: once the file holds a line of digits the server
# is listening. (Not merely "not empty": a file a shell redirection has
# just truncated, for a server not yet started, is not ready.)
_port_ready() { grep -qx '[0-9][0-9]*' "$1" 2>/dev/null || { [ -n "$2" ] && ! alive "$2"; }; }
read_port() {
	local file=$1 pid=${2:-} port
	wait_for "${3:-10}" _port_ready "$file" "$pid" || return 1
	port=$(cat "$file" 2>/dev/null) || return 1
	case $port in '' | *[!0-9]*) return 1 ;; esac
	echo "$port"
}

json_num() {
	grep "\"type\":\"$2\"" "$1" |
		sed -n "s/.*\"epoch\":\([0-9]*\).*\"$3\":\"\{0,1\}\([0-9a-fx.]*\).*/\1 \2/p"
}
