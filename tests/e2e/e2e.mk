# End-to-end test helpers that are programs of their own.

# kvm_probe: checks a /dev/kvm does what zd needs (tests/e2e/vmhost_smoke.sh).
# Standalone on purpose: it must say what works even when libzd does not build.
$(BUILD)/tests/kvm_probe: tests/e2e/kvm_probe.c
	@mkdir -p $(@D)
	$(CC) $(ZD_CPPFLAGS) $(ZD_CFLAGS) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< -lpthread

check check-e2e: $(BUILD)/tests/kvm_probe
