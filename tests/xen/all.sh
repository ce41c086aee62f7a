#!/usr/bin/env bash
# Runs in dom0 (tests/lib/xenhost.sh): every check of the Xen suite, one
# after another in one boot of Xen (a boot costs minutes under QEMU TCG).
# tests/e2e/xen_replicate.sh starts it and reports the TAP of each part as
# its own (tap_relay adds up their plans). Exit 0 when every part did.
cd "$(dirname "$0")/../.." || exit 1
rc=0
# replicate.sh first: it is what the suite is for, and it ends by
# destroying its guest, so that unlogged.sh can create one of that name.
# standby.sh last: it needs room for two guests.
for t in tests/xen/replicate.sh tests/xen/unlogged.sh tests/xen/standby.sh; do
	bash "$t" || rc=1
	# A part that stopped early may have left its guest (or standby) behind.
	xl destroy zdguest >/dev/null 2>&1
	xl destroy zdguest-standby >/dev/null 2>&1
done
exit $rc
