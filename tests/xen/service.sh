#!/usr/bin/env bash
# Runs in dom0 of a real Xen (tests/lib/xenhost.sh; tests/xen/all.sh).
# The PVH test guest with a vif on dom0's bridge xenbr0 (tests/xen/vif-zd,
# run by libxl) serves zd-vm's line protocol (tests/xen/guest_writer.c):
# zd-client, unchanged, gets its answers "seq N" in order from the guest,
# across two connections, the counter going on from the guest's memory.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/xenlib.sh"
N=${ZD_XEN_REQUESTS:-20}

xen_serving_guest zdnet
tr -d '\r' </var/log/xen/guest-zdnet.log | grep '^ZD-GUEST-NET' | sed 's/^/# /'

if ip link show vif"$(xl domid zdnet)".0 2>/dev/null | grep -q 'master xenbr0'; then
	ok "the hotplug script put vif$(xl domid zdnet).0 on xenbr0"
else
	not_ok "the hotplug script put the guest's vif on xenbr0" "$(ip link 2>&1; cat /var/log/xen/vif-zd.log 2>&1)"
fi

# Under TCG the first packets can take seconds (ARP, netfront's first
# interrupts): a generous timeout, one try.
if zd-client --requests "$N" --timeout 60000 "$XEN_GUEST_ADDR" >"$TMP/c1.json" 2>"$TMP/c1.err"; then
	ok "zd-client gets $N answers from the guest at $XEN_GUEST_ADDR"
else
	not_ok "zd-client gets $N answers from the guest at $XEN_GUEST_ADDR" "$(cat "$TMP/c1.err" "$TMP/c1.json")"
fi
echo "# $(cat "$TMP/c1.json")"
first=$(jfield "$TMP/c1.json" first_seq)
last=$(jfield "$TMP/c1.json" last_seq)
errs=$(jfield "$TMP/c1.json" errors)
if [ "$first" = 1 ] && [ "$last" = "$N" ] && [ "$errs" = 0 ]; then
	ok "the answers are seq 1..$N, in order"
else
	not_ok "the answers are seq 1..$N, in order" "first '$first' last '$last' errors '$errs'"
fi
# A second connection: the guest's counter goes on.
zd-client --requests 5 --timeout 60000 "$XEN_GUEST_ADDR" >"$TMP/c2.json" 2>"$TMP/c2.err"
first=$(jfield "$TMP/c2.json" first_seq)
last=$(jfield "$TMP/c2.json" last_seq)
if [ "$first" = $((N + 1)) ] && [ "$last" = $((N + 5)) ]; then
	ok "a second client goes on from the guest's counter (seq $first..$last)"
else
	not_ok "a second client goes on from the guest's counter" "$(cat "$TMP/c2.err" "$TMP/c2.json")"
fi
done_testing
