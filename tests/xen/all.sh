#!/usr/bin/env bash
# Runs in dom0 (tests/lib/xenhost.sh): every check of the Xen suite, one
# after another in one boot of Xen (a boot costs minutes under QEMU TCG).
# tests/e2e/xen_replicate.sh starts it and reports the TAP of each part as
# its own (tap_relay adds up their plans). Exit 0 when every part did.
cd "$(dirname "$0")/../.." || exit 1
rc=0
# replicate.sh first: it is what the suite is for, and it ends by
# destroying its guest, so that unlogged.sh can create one of that name.
# service.sh and netbuf.sh: the guest with a vif (zdnet, zdnb), its
# service, and output commit; netbuf.sh wants sch_plug not yet loaded.
# standby.sh (its refusals, remus, and the standby made at takeover) and
# takeover.sh (every mode, three losses each, with a client) need room for
# two guests.
# disk.sh: a guest's disk on a log-writes device, replicated and taken
# over with its memory: one loss (SIGKILL) per mode (remus, buffered,
# zddspt) by default, ~10 min under TCG; ZD_XEN_DISK_KILLS=N for N each.
# takeover.sh: by default each mode once, each with another of the three
# losses (remus: the pipeline SIGKILLed, buffered: xl destroy of the
# primary, zddspt: a silent primary; ~5 min each under TCG, more when a
# retry is needed); ZD_XEN_TAKEOVER=1 runs every mode with every loss,
# one after another on the taken-over guest (~30 min), and demo.sh
# (zd demo --xen) too.
parts="tests/xen/replicate.sh tests/xen/unlogged.sh tests/xen/service.sh tests/xen/netbuf.sh tests/xen/standby.sh tests/xen/disk.sh tests/xen/takeover.sh"
[ "${ZD_XEN_TAKEOVER:-0}" = 1 ] && parts="$parts tests/xen/demo.sh"
for t in $parts; do
	case $t in */standby.sh) ZD_XEN_MODES=${ZD_XEN_STANDBY_MODES:-remus} bash "$t" || rc=1 ;;
	*/takeover.sh)
		if [ "${ZD_XEN_TAKEOVER:-0}" = 1 ]; then
			bash "$t" || rc=1
		else
			ZD_XEN_TRIES=${ZD_XEN_TRIES:-2} ZD_XEN_TAKEOVERS=${ZD_XEN_TAKEOVERS:-remus:kill buffered:destroy zddspt:silent} bash "$t" || rc=1
		fi ;;
	*) bash "$t" || rc=1 ;;
	esac
	# A part that stopped early may have left its guest (or standby) behind.
	for g in zdguest zdguest-standby zdnet zdnb zddemo zddemo-standby; do xl destroy "$g" >/dev/null 2>&1; done
done
exit $rc
