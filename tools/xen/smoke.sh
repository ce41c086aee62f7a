#!/usr/bin/env bash
# Runs in dom0 (tests/lib/xenhost.sh): the Xen toolstack works and a PVH
# guest boots and writes memory. Quick check of the harness itself, by
# hand (tools/xen/README.md); the Xen suite checks the same first thing:
#   tests/lib/xenhost.sh run -- tools/xen/smoke.sh
. "$(dirname "$0")/../../tests/lib/tap.sh"
. "$(dirname "$0")/../../tests/xen/xenlib.sh"
check "xl lists dom0" xl list 0
if xen_guest_up zdguest; then ok "PVH guest boots and writes memory"
else not_ok "PVH guest boots and writes memory" "$(tail -5 /var/log/xen/guest-zdguest.log 2>&1)"; fi
xl list
done_testing
