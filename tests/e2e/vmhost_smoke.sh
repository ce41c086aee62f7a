#!/usr/bin/env bash
# tests/lib/vmhost.sh gives the KVM tests a working /dev/kvm: here directly,
# or inside Debian's kernel booted in QEMU TCG with nested SVM. Checks that
# the command's status, stdout, stderr and environment come through, that
# kvm_probe's checks (run, MMIO exits, manual-protect dirty log, uffd-wp on a
# memfd) pass in that /dev/kvm, the copy-mode fallback, the timeout, and the
# harness's usage errors. Skips with the harness's reason where neither
# /dev/kvm nor QEMU exists.
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 1
VMHOST=$ZD_TOP/tests/lib/vmhost.sh
BUILD=${BUILD:-build}
PROBE=$BUILD/tests/kvm_probe

expect_fail "vmhost: no command is a usage error" 2 '^vmhost: no command given' "$VMHOST" run --
expect_fail "vmhost: --mem must be a number" 2 "^vmhost: 'lots' is not a positive whole number" \
	"$VMHOST" run --mem lots -- true
expect_fail "vmhost: unknown option" 2 "^vmhost: unknown option '--fast'" "$VMHOST" run --fast -- true
expect_fail "vmhost: unknown command" 2 "^vmhost: want the 'run' command" "$VMHOST" start

if [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; then
	skip "vmhost: ZD_VMHOST=host without /dev/kvm skips (77)" "/dev/kvm works here"
	skip "vmhost: no kernel to boot skips (77)" "/dev/kvm works here"
else
	ZD_VMHOST=host "$VMHOST" run -- true >"$TMP/77.out" 2>"$TMP/77.err"
	rc=$?
	if [ $rc -eq 77 ] && [ "$(cat "$TMP/77.out")" = "no /dev/kvm and no qemu-system-x86_64: KVM tests skipped" ] &&
		[ ! -s "$TMP/77.err" ]; then
		ok "vmhost: ZD_VMHOST=host without /dev/kvm skips (77)"
	else
		not_ok "vmhost: ZD_VMHOST=host without /dev/kvm skips (77)" "exit $rc: $(cat "$TMP/77.out" "$TMP/77.err")"
	fi
	ZD_VMHOST_KERNEL=0.0-none "$VMHOST" run -- true >"$TMP/77.out" 2>"$TMP/77.err"
	rc=$?
	if [ $rc -eq 77 ] && grep -qx "no /dev/kvm and no Debian kernel .*: KVM tests skipped" "$TMP/77.out"; then
		ok "vmhost: no kernel to boot skips (77)"
	else
		not_ok "vmhost: no kernel to boot skips (77)" "exit $rc: $(cat "$TMP/77.out" "$TMP/77.err")"
	fi
fi

if [ ! -x "$PROBE" ] && ! make -s "$PROBE" >"$TMP/make.log" 2>&1; then
	not_ok "build $PROBE" "$(cat "$TMP/make.log")"
	done_testing
fi

# One guest does most of the work: each boot costs seconds under TCG.
mark=$BUILD/vmhost-smoke.$$
at_exit rm -f "$ZD_TOP/$mark"
"$VMHOST" run --timeout 300 -- bash -c '
	echo "top=$ZD_TOP"
	echo "bin=$ZD_BIN"
	echo "path=$PATH"
	echo "cwd=$PWD"
	echo "to stderr" >&2
	[ -c /dev/kvm ] && echo "kvm=char-device"
	"$1"; echo "probe-status=$?"
	echo written >"$2"
	exit 7' _ "$PROBE" "$mark" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 77 ]; then
	why=$(head -1 "$TMP/out")
	skip "vmhost gives a working /dev/kvm" "${why:-vmhost exited 77}"
	done_testing
fi

if [ $rc -eq 7 ]; then ok "the command's exit status comes back (7)"
else not_ok "the command's exit status comes back (7)" "exit $rc; stderr: $(tail -20 "$TMP/err")"; fi
if grep -qx "top=$ZD_TOP" "$TMP/out" && grep -qx "bin=$ZD_BIN" "$TMP/out" &&
	grep -qx "path=$PATH" "$TMP/out" && grep -qx "cwd=$ZD_TOP" "$TMP/out"; then
	ok "ZD_TOP, ZD_BIN, PATH and the working directory are the caller's"
else
	not_ok "ZD_TOP, ZD_BIN, PATH and the working directory are the caller's" "$(grep -E '^(top|bin|path|cwd)=' "$TMP/out")"
fi
if grep -qx "to stderr" "$TMP/err" && ! grep -q "to stderr" "$TMP/out"; then
	ok "stdout and stderr stay apart"
else
	not_ok "stdout and stderr stay apart" "stderr: $(head -5 "$TMP/err")"
fi
check "/dev/kvm is a character device where the command runs" grep -qx "kvm=char-device" "$TMP/out"
for c in run mmio dirty-log uffd-wp; do
	if grep -q "^kvm_probe: ok $c" "$TMP/out"; then
		ok "kvm_probe $c: $(sed -n "s/^kvm_probe: ok $c: //p" "$TMP/out")"
	else
		not_ok "kvm_probe $c" "$(grep '^kvm_probe:' "$TMP/out" | grep -v ': ok ')"
	fi
done
check "kvm_probe exits 0" grep -qx "probe-status=0" "$TMP/out"

if [ "${ZD_VMHOST:-auto}" != vm ] && [ -c /dev/kvm ] && { : <>/dev/kvm; } 2>/dev/null; then
	ok "a file the command writes in ZD_TOP is there afterwards"
	skip "copy mode (no 9p) runs kvm_probe too" "/dev/kvm works here: no guest"
	skip "vmhost_reexec_test runs a TAP script in the guest" "/dev/kvm works here: no guest"
	skip "--timeout kills the guest" "/dev/kvm works here: no guest"
	done_testing
fi

if [ "$(cat "$mark" 2>/dev/null)" = written ]; then
	ok "a file the command writes in ZD_TOP is there afterwards (9p share)"
elif [ "${ZD_VMHOST_SHARE:-auto}" = copy ]; then
	skip "a file the command writes in ZD_TOP is there afterwards" "copy mode keeps files in the guest"
else
	not_ok "a file the command writes in ZD_TOP is there afterwards (9p share)" "no $mark"
fi

ZD_VMHOST_SHARE=copy "$VMHOST" run --timeout 300 -- "$PROBE" >"$TMP/copy.out" 2>"$TMP/copy.err"
rc=$?
if [ $rc -eq 0 ] && [ "$(grep -c '^kvm_probe: ok ' "$TMP/copy.out")" -eq 4 ]; then
	ok "copy mode (no 9p) runs kvm_probe too"
else
	not_ok "copy mode (no 9p) runs kvm_probe too" "exit $rc: $(cat "$TMP/copy.out") $(tail -5 "$TMP/copy.err")"
fi

# A TAP script that calls vmhost_reexec_test runs whole in the guest.
script=$BUILD/vmhost-smoke-reexec.$$.sh
at_exit rm -f "$ZD_TOP/$script"
cat >"$script" <<'EOS'
. "$ZD_TOP/tests/lib/tap.sh"
. "$ZD_TOP/tests/lib/vmhost.sh"
vmhost_reexec_test "$0" "$@"
check "in the guest with args '$*'" test "$(hostname):$*" = "zd-vmhost:a b"
done_testing
EOS
ZD_TOP=$ZD_TOP bash "$script" a b >"$TMP/re.out" 2>"$TMP/re.err"
rc=$?
if [ $rc -eq 0 ] && grep -qx "ok 1 - in the guest with args 'a b'" "$TMP/re.out" && grep -qx "1..1" "$TMP/re.out"; then
	ok "vmhost_reexec_test runs a TAP script in the guest"
else
	not_ok "vmhost_reexec_test runs a TAP script in the guest" "exit $rc: $(cat "$TMP/re.out") $(tail -5 "$TMP/re.err")"
fi

start=$SECONDS
"$VMHOST" run --timeout 3 -- sleep 120 >"$TMP/to.out" 2>"$TMP/to.err"
rc=$?
if [ $rc -eq 124 ] && grep -q '^vmhost: timed out after 3 s' "$TMP/to.err" && [ $((SECONDS - start)) -lt 60 ]; then
	ok "--timeout kills the guest and exits 124"
else
	not_ok "--timeout kills the guest and exits 124" "exit $rc after $((SECONDS - start)) s: $(head -3 "$TMP/to.err")"
fi

done_testing
