#!/usr/bin/env bash
# Runs in dom0 (tests/lib/xenhost.sh): does mem_access + vm_event trap the
# PVH test guest's writes on this Xen (tools/xen/xen_memaccess)? A
# feasibility check for zddspt's copy-on-write guard on Xen, not a test
# (tools/xen/README.md):
#   make xen-probes && tests/lib/xenhost.sh run -- tools/xen/memaccess.sh [MS]
# Result here (2026-12-06, Xen 4.17 on QEMU TCG's AMD SVM/NPT): the monitor
# ring comes up, xc_set_mem_access fails with EINVAL: Xen 4.17 allows
# mem_access on x86 only with VT-x/EPT (p2m_mem_access_sanity_check).
. "$(dirname "$0")/../../tests/lib/tap.sh"
. "$(dirname "$0")/../../tests/xen/xenlib.sh"
if ! xen_guest_up zdguest; then
	not_ok "a PVH guest boots and writes memory" "$(tail -5 /var/log/xen/guest-zdguest.log 2>&1)"
	done_testing
fi
out=$("$ZD_TOP/$BUILD/tests/xen_memaccess" "$(xl domid zdguest)" "${1:-500}" 2>&1)
rc=$?
echo "$out" | sed 's/^/# /'
if [ $rc -eq 0 ]; then ok "mem_access: the guest's writes to read-only pages arrive as vm_events and are answered"
else not_ok "mem_access: the guest's writes to read-only pages arrive as vm_events" "exit $rc"; fi
xl list zdguest | sed 's/^/# /'
done_testing
