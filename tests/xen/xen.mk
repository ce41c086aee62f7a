# make check-xen: the xen: target against a real Xen 4.17 booted in QEMU
# (tests/lib/xenhost.sh), every mode replicating a PVH guest
# (tests/xen/replicate.sh), and the frames Xen writes behind log-dirty
# (tests/xen/unlogged.sh), a guest's service over dom0's bridge
# (tests/xen/service.sh), output commit (tests/xen/netbuf.sh), a standby
# domain taking over (tests/xen/standby.sh), a guest's disk replicated and
# taken over (tests/xen/disk.sh; xen_lwreplay rebuilds the primary's disk
# at an epoch from its log) and the takeover of a guest with a client in
# every mode (tests/xen/takeover.sh):
# tests/xen/all.sh runs them in one dom0. Skipped, with the reason, where the Debian
# packages qemu-system-x86 xen-hypervisor-4.17-amd64 xen-utils-4.17 are
# missing. The e2e suite of `make check` runs it too
# (tests/e2e/xen_replicate.sh; ZD_XEN_E2E=0 skips it there).
.PHONY: check-xen
ifeq ($(ZD_HAVE_XEN),yes)
XEN_TEST_BIN := $(BUILD)/tests/xen_memcmp $(BUILD)/tests/xen_unlogged $(BUILD)/tests/xen_lwreplay
# tools/xen's probe (tools/xen/README.md): not a test, built on demand. Its
# binary sits with the tests' because xenhost.sh copies $(BUILD)/tests/xen_*
# into dom0.
XEN_PROBE_BIN := $(BUILD)/tests/xen_memaccess
$(BUILD)/tests/xen_%: $(BUILD)/obj/tests/xen/xen_%.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)
$(BUILD)/tests/xen_memaccess: $(BUILD)/obj/tools/xen/xen_memaccess.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)
$(BUILD)/obj/tests/xen/xen_unlogged.o $(BUILD)/obj/tools/xen/xen_memaccess.o: \
	ZD_CFLAGS += $(shell pkg-config --cflags $(ZD_XEN_PKGS) xenevtchn)
$(BUILD)/tests/xen_memaccess: LDLIBS += $(shell pkg-config --libs xenevtchn)
endif
.PHONY: xen-probes
xen-probes: all $(XEN_PROBE_BIN)
check check-e2e: $(XEN_TEST_BIN)
check-xen: all $(XEN_TEST_BIN)
	ZD_XEN_E2E=1 bash tests/e2e/xen_replicate.sh
