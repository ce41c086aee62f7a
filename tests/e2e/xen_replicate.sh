#!/usr/bin/env bash
# The xen: target against a real Xen: boots Xen 4.17 + dom0 in QEMU TCG
# (tests/lib/xenhost.sh) and runs tests/xen/all.sh in dom0: replicate.sh —
# remus, buffered and zddspt replicating a PVH guest through zd-track |
# zd-swap | zd-send to zd-recv, checksums and a byte-for-byte compare at the
# last checkpoint, no dirty pages while paused, PV guests refused — then
# unlogged.sh (the frames changed without a log-dirty bit are the few Xen
# writes itself), service.sh (a guest with a vif on dom0's bridge answers
# zd-client), netbuf.sh (output commit: the guest's answers wait for the
# backup's ACK; refused without sch_plug), standby.sh (zd-recv --standby:
# its refusals, and a standby domain started when zd-track is killed),
# takeover.sh (a client talking to the guest throughout a takeover by its
# standby: each mode once, remus with the pipeline SIGKILLed, buffered
# with the primary domain destroyed, zddspt with a silent primary; with
# ZD_XEN_TAKEOVER=1 each mode three ways, one after another) and, with
# ZD_XEN_TAKEOVER=1, demo.sh.
# Skipped, with
# the reason, where QEMU or the Xen packages are missing, or where this
# build has no xen: target (libxen-dev missing).
# ZD_XEN_EPOCHS (default 30), ZD_XEN_INTERVAL (ms, default 100) and
# ZD_XEN_MODES pass through to dom0. Part of the default `make check`:
# ~40 min on 2 cores (QEMU at nice 19), killed at XENHOST_TIMEOUT (default
# 4200 s) after the boot starts. ZD_XEN_E2E=0 skips it.
. "$(dirname "$0")/../lib/tap.sh"
cd "$ZD_TOP" || exit 1

if [ "${ZD_XEN_E2E:-1}" = 0 ]; then
	skip "replication of a Xen guest" "ZD_XEN_E2E=0"
	done_testing
fi
if ! "$ZD_BIN/zd-track" xen: --epochs 1 2>&1 | grep -q 'want xen:NAME'; then
	skip "replication of a Xen guest" "this build has no xen: target (install libxen-dev and rebuild)"
	done_testing
fi
"$ZD_TOP/tests/lib/xenhost.sh" run --timeout "${XENHOST_TIMEOUT:-4200}" -- tests/xen/all.sh \
	>"$TMP/inner" 2>"$TMP/inner.err"
rc=$?
if [ $rc -eq 77 ]; then
	skip "replication of a Xen guest" "$(head -1 "$TMP/inner")"
	done_testing
fi
tap_relay "the Xen part" $rc "$TMP/inner" "$TMP/inner.err"
done_testing
