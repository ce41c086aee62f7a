# The target registry lists kvm only once lib/target/kvm.c exists, so the
# build never breaks while it is being written; naming kvm.c as a
# prerequisite rebuilds the registry when it appears.
ZD_KVM_SRC := $(wildcard lib/target/kvm.c)
$(BUILD)/obj/lib/target/target.o $(BUILD)/asan/lib/target/target.o: $(ZD_KVM_SRC)
$(BUILD)/obj/lib/target/target.o $(BUILD)/asan/lib/target/target.o: ZD_CFLAGS += $(if $(ZD_KVM_SRC),-DZD_HAVE_KVM)
