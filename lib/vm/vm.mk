# zd-vm's built-in guest: freestanding code linked at a fixed guest address,
# flattened to a binary and embedded into libzd as zd_guest_image[].
# Guest sources live in lib/vm/guest/, out of reach of the hosted
# lib/*/*.c rule.
GUEST_SRC_C := $(wildcard lib/vm/guest/*.c)
GUEST_SRC_S := lib/vm/guest/entry.S
GUEST_OBJ := $(GUEST_SRC_C:lib/vm/guest/%.c=$(BUILD)/vm/guest/%.o) \
	$(GUEST_SRC_S:lib/vm/guest/%.S=$(BUILD)/vm/guest/%.o)
GUEST_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -ffreestanding -nostdlib -fno-pic \
	-fno-pie -mno-red-zone -mgeneral-regs-only -O2 -fno-stack-protector \
	-fno-asynchronous-unwind-tables -fno-unwind-tables -fcf-protection=none \
	-fno-builtin -m64 -mcmodel=small
GUEST_LD := lib/vm/guest/guest.ld

$(BUILD)/vm/guest/%.o: lib/vm/guest/%.c lib/vm/guest/abi.h
	@mkdir -p $(@D)
	$(CC) $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/vm/guest/%.o: lib/vm/guest/%.S
	@mkdir -p $(@D)
	$(CC) $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/vm/guest.elf: $(GUEST_OBJ) $(GUEST_LD)
	$(CC) $(GUEST_CFLAGS) -static -no-pie -Wl,--build-id=none -Wl,--no-warn-rwx-segments -Wl,-T,$(GUEST_LD) \
		-o $@ $(GUEST_OBJ)

$(BUILD)/vm/guest.bin: $(BUILD)/vm/guest.elf
	objcopy -O binary $< $@

$(BUILD)/vm/guest-blob.o: lib/vm/guest/blob.S $(BUILD)/vm/guest.bin
	$(CC) -c -DZD_GUEST_BIN='"$(BUILD)/vm/guest.bin"' -o $@ $<

EXTRA_OBJ += $(BUILD)/vm/guest-blob.o
