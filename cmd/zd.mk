# make demo: build, install what is missing (as root), then protect a VM in
# every mode with a client talking to it and show the figures (zd demo; inside
# QEMU with nested KVM where the host has no /dev/kvm).
demo: test-deps all
	bin/zd demo
