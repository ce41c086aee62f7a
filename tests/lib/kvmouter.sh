# The outer half of a real-KVM e2e test: source after tests/lib/tap.sh.
#
#   kvm_outer SCRIPT [vmhost.sh run options...]
#
# Runs SCRIPT again with ZD_KVM_INNER=1 where tests/lib/vmhost.sh finds a
# working /dev/kvm (this host, or a QEMU TCG guest with nested SVM), then
# renumbers the inner TAP lines into this test's plan and ends it. Exit 77
# from vmhost.sh (no KVM to be had) becomes one skip with the reason.
#
# A QEMU guest that dies without a status (125: its kernel stopped, QEMU
# crashed) before the inner test reported any failure is booted once more,
# and that is said in the output: nested virtualization under TCG is itself
# emulated, and one such death is the emulator's, not a result of the test.
# A second death is a failure, with the console's tail as its diagnostics.
# A timeout (124) is never retried: a hang may well be ours.
kvm_outer() {
	local script=$1 rc attempt
	shift
	for attempt in 1 2; do
		ZD_KVM_INNER=1 "$ZD_TOP/tests/lib/vmhost.sh" run "$@" -- bash "$script" \
			>"$TMP/inner" 2>"$TMP/inner.err"
		rc=$?
		if [ $attempt -eq 1 ] && [ $rc -eq 125 ] &&
			! grep -q '^not ok' "$TMP/inner"; then
			echo "# the QEMU guest ended without a status (exit $rc) after $(grep -c '^ok' "$TMP/inner") checks; booting it once more. Its last words:"
			tail -12 "$TMP/inner.err" | sed 's/^/#   /'
			continue
		fi
		break
	done
	if [ $rc -eq 77 ]; then
		skip "$(basename "$script" .sh): needs /dev/kvm" "$(head -1 "$TMP/inner")"
		done_testing
	fi
	tap_relay "the KVM part" $rc "$TMP/inner" "$TMP/inner.err"
	done_testing
}
