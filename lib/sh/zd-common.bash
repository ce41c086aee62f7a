# shellcheck shell=bash
# What the zd driver and its script tools (zd, zd-measure, zd-demo) share:
# messages and exits, flag checks, --help and --version, the PATH that puts
# the tools beside the script first, and waiting. Sourced, never run; make
# install puts it in PREFIX/share/zd, and each script looks there
# (../share/zd beside its bin/) and then in the source tree (../lib/sh).
#
#   die CODE MESSAGE          "zd: MESSAGE" on stderr, exit CODE
#   usage_die MESSAGE         the same with exit 2 and where help is
#   say WORDS...              "zd: WORDS" on stderr
#   need_value OPTION "$@"    usage_die unless OPTION has a value after it
#   is_count S                S is a whole number above 0
#   check_mode M              usage_die unless M is remus, buffered or zddspt
#   man_see TOOL              TOOL's usage from the script's header, and
#                             where the rest is (--help of zd-measure, zd-demo)
#   wait_until SECONDS CMD... poll CMD every 0.1 s until it succeeds, or
#                             give up after SECONDS (1)
#   recv_port FILE PID        wait for the zd-recv PID started with
#                             --port-file FILE to listen; print its port,
#                             or nothing (1) if it ended first
# and sets self, here (the script and its directory), src_top (the source
# tree around bin/, if any) and ZD_VERSION.
prog=zd
ZD_VERSION=0.1.0

die() { # die CODE MESSAGE
	echo "$prog: $2" >&2
	exit "$1"
}
usage_die() { die 2 "$1 (try 'zd --help')"; }
say() { echo "$prog: $*" >&2; }
need_value() { [ $# -ge 2 ] || usage_die "option '$1' needs a value"; }
is_count() { case $1 in '' | *[!0-9]*) return 1 ;; esac; [ "$1" -gt 0 ] 2>/dev/null; }
check_mode() { case $1 in remus | buffered | zddspt) ;; *) usage_die "--mode '$1': want remus, buffered or zddspt" ;; esac; }
man_see() {
	sed -n 's/^#   \{0,1\}//p' "$self" | sed -n '/^'"$1"' \[/,/^$/p'
	echo "(man $1; the driver's own page: man zd)"
}

# A deadline, not a count of tries: under QEMU TCG starting sleep(1)
# alone takes a while.
wait_until() {
	local end=$((SECONDS + $1))
	shift
	while [ $SECONDS -le $end ]; do "$@" && return 0; sleep 0.1; done
	return 1
}

# zd-recv writes the port file with a rename once it listens: a line of
# digits there means it is ready.
_port_ready() { grep -qx '[0-9][0-9]*' "$1" 2>/dev/null || ! kill -0 "$2" 2>/dev/null; }
recv_port() {
	wait_until 30 _port_ready "$1" "$2" && grep -x '[0-9][0-9]*' "$1" 2>/dev/null
}

# The tools next to the script come first: bin/zd runs bin/zd-*.
self=$(readlink -f "$0")
here=$(dirname "$self")
case ":$PATH:" in *":$here:"*) ;; *) PATH="$here:$PATH" ;; esac
export PATH
# A source tree (bin/ inside it) has the QEMU harness and the bench.
src_top=
if [ -x "$here/../tests/lib/vmhost.sh" ] && [ -f "$here/../Makefile" ]; then
	src_top=$(cd "$here/.." && pwd)
fi
