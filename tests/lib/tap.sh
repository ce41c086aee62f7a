# Shell test helpers: source this from tests/*/NAME.sh.
#
#   ok "what"                 / not_ok "what" "why"
#   check "what" CMD...       run CMD, ok if it exits 0
#   expect_fail "what" CODE PATTERN CMD...
#                             CMD must exit CODE and print one stderr line
#                             matching PATTERN (grep -E)
#   skip "what" "why"
#   done_testing              print the plan, exit 1 if anything failed
set -u
ZD_TOP=${ZD_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
ZD_BIN=${ZD_BIN:-$ZD_TOP/bin}
export PATH="$ZD_BIN:$PATH"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/zd-test.XXXXXX")
_tap_n=0
_tap_failed=0
_tap_cleanup_cmds=()

at_exit() { _tap_cleanup_cmds+=("$*"); }
_tap_cleanup() {
	local c
	for c in "${_tap_cleanup_cmds[@]+"${_tap_cleanup_cmds[@]}"}"; do eval "$c" >/dev/null 2>&1; done
	# ZD_TEST_KEEP=1 keeps the run's files (logs, replicas) to look at.
	if [ -n "${ZD_TEST_KEEP:-}" ]; then echo "# files kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap _tap_cleanup EXIT

ok() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1"; }
not_ok() {
	_tap_n=$((_tap_n + 1)); _tap_failed=$((_tap_failed + 1))
	echo "not ok $_tap_n - $1"
	[ $# -gt 1 ] && printf '%s\n' "$2" | head -20 | sed 's/^/#   /'
	return 0
}
skip() { _tap_n=$((_tap_n + 1)); echo "ok $_tap_n - $1 # SKIP $2"; }

check() {
	local what=$1; shift
	local out
	if out=$("$@" 2>&1); then ok "$what"; else not_ok "$what" "$out"; fi
}

# expect_fail WHAT CODE PATTERN CMD...
expect_fail() {
	local what=$1 code=$2 pat=$3; shift 3
	local err rc lines
	"$@" >"$TMP/ef.out" 2>"$TMP/ef.err"
	rc=$?
	err=$(cat "$TMP/ef.err")
	lines=$(grep -c . "$TMP/ef.err")
	if [ "$rc" -ne "$code" ]; then
		not_ok "$what" "exit $rc, want $code; stderr: $err"
	elif [ "$lines" -ne 1 ]; then
		not_ok "$what" "want one stderr line, got $lines: $err"
	elif ! grep -qE -- "$pat" "$TMP/ef.err"; then
		not_ok "$what" "stderr '$err' does not match '$pat'"
	else
		ok "$what"
	fi
}

done_testing() {
	echo "1..$_tap_n"
	[ "$_tap_failed" -eq 0 ]
	exit $?
}

# last_words DIR NAME...: each DIR/NAME.err's last two lines, one line a
# stage, for a failed pipeline's diagnostics (a CI log shows the tail of a
# failure: name the first stage, whose reason counts, last).
last_words() {
	local d=$1 n; shift
	for n in "$@"; do
		[ -s "$d/$n.err" ] && echo "$n: $(tail -n 2 "$d/$n.err" | tr '\n' '|')"
	done
	return 0
}

have_kvm() { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }
