# make demo: build, install what is missing (as root; the demo's packages
# only, see deps-demo), then protect a VM in every mode with a client talking
# to it and show the figures (zd demo; inside QEMU with nested KVM where the
# host has no /dev/kvm).
demo: demo-deps all
	bin/zd demo

.PHONY: demo-deps
demo-deps:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory deps-demo; fi
