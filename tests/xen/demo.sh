#!/usr/bin/env bash
# Runs in dom0 of a real Xen (tests/lib/xenhost.sh; tests/xen/all.sh):
# zd demo --xen CFG, the demo's Xen part, with a client talking to the
# guest's service across the takeover (ZD_DEMO_XEN_SERVICE): it exits 0,
# shows the standby taking over, and the client's line has no gap and no
# contradiction.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/xenlib.sh"
[ -d /sys/module/sch_plug ] || insmod /mod/sch_plug.ko 2>/dev/null
at_exit "xl destroy zddemo; xl destroy zddemo-standby"
if ! XEN_GUEST_NET=1 xen_guest_up zddemo; then
	skip "zd demo --xen" "the guest did not come up in 3 tries under QEMU TCG"
	done_testing
fi
ZD_DEMO_XEN_SERVICE=$XEN_GUEST_ADDR timeout 1500 zd demo --xen "$TMP/zddemo.cfg" >"$TMP/demo.out" 2>"$TMP/demo.err"
rc=$?
sed 's/^/# /' "$TMP/demo.out"
if [ $rc = 0 ] && grep -q 'running at epoch' "$TMP/demo.out" &&
	grep -q 'the client carried on: [0-9]* answers ([1-9][0-9]* after the kill).* 0 gaps, 0 contradictions' "$TMP/demo.out"; then
	ok "zd demo --xen: the standby takes over, the client carries on"
else
	not_ok "zd demo --xen: the standby takes over, the client carries on" "exit $rc: $(tail -n 5 "$TMP/demo.err")"
fi
done_testing
