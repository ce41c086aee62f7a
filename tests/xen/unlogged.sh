#!/usr/bin/env bash
# Runs in dom0 (tests/lib/xenhost.sh): which frames of the PVH test guest
# change without a log-dirty bit (tests/xen/xen_unlogged). Diagnosis only:
#   tests/lib/xenhost.sh run -- tests/xen/unlogged.sh [ROUNDS [MS]]
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/xenlib.sh"
if ! xen_guest_up zdguest; then
	not_ok "a PVH guest boots and writes memory" "$(tail -5 /var/log/xen/guest-zdguest.log 2>&1)"
	done_testing
fi
"$ZD_TOP/$BUILD/tests/xen_unlogged" "$(xl domid zdguest)" "${1:-20}" "${2:-20}" | sed 's/^/# /'
ok "xen_unlogged ran"
done_testing
