# shellcheck shell=bash
# Shell test helpers: source this from tests/*/NAME.sh.
#
#   ok "what"                 / not_ok "what" "why"
#   check "what" CMD...       run CMD, ok if it exits 0
#   expect_fail "what" CODE PATTERN CMD...
#                             CMD must exit CODE and print one stderr line
#                             matching PATTERN (grep -E)
#   skip "what" "why"
#   done_testing              print the plan, exit 1 if anything failed
#   tap_relay WHAT RC TAP ERR report the TAP an inner run printed (in a QEMU
#                             guest: tests/lib/kvmouter.sh, xen_replicate.sh)
#                             as this test's own results
set -u
ZD_TOP=${ZD_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
ZD_BIN=${ZD_BIN:-$ZD_TOP/bin}
export PATH="$ZD_BIN:$PATH"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/zd-test.XXXXXX")
# Live status sockets (zd/status.h) of the tools a test runs: its own.
export ZD_RUN_DIR=${ZD_RUN_DIR:-$TMP/run}
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

# tap_relay WHAT RC TAP ERR: the results in file TAP, which an inner run
# (WHAT, e.g. "the Xen part") printed before it exited RC with stderr in
# file ERR, become this test's own, renumbered into its plan. The inner
# plan is checked here, as tests/run checks ours: an inner run that stopped
# half way with exit 0 must not look complete.
tap_relay() {
	local what=$1 rc=$2 tap=$3 err=$4 line w plan="" n=0
	while IFS= read -r line; do
		case $line in
		"ok "*"# SKIP"*) w=${line#ok * - }; skip "${w%% # SKIP*}" "${w#* # SKIP }"; n=$((n + 1)) ;;
		"ok "*) ok "${line#ok * - }"; n=$((n + 1)) ;;
		"not ok "*) not_ok "${line#not ok * - }"; n=$((n + 1)) ;;
		"1.."*) w=${line#1..}; plan=$((${plan:-0} + ${w%%[!0-9]*})) ;;
		"#"*) echo "$line" ;;
		*) echo "#   $line" ;;
		esac
	done <"$tap"
	if [ "$rc" -ne 0 ] && ! grep -q '^not ok' "$tap"; then
		not_ok "$what exits 0" "exit $rc; $(tail -15 "$err")"
	elif [ "$rc" -ne 0 ]; then
		echo "# stderr of $what:"; tail -30 "$err" | sed 's/^/#   /'
	elif [ -z "$plan" ]; then
		not_ok "$what prints its plan" "no 1..N line; $(tail -15 "$err")"
	elif [ "$plan" -ne "$n" ]; then
		not_ok "$what ran its plan" "planned $plan, ran $n; $(tail -15 "$err")"
	fi
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
