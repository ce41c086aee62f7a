# The xen: target needs libxen-dev (xenctrl.h, xenstore.h,
# xenforeignmemory.h). Where it is missing xen.c compiles to nothing and the
# registry does not list xen, so the build never breaks for want of it.
ZD_XEN_PKGS := xencontrol xenguest xenstore xenforeignmemory xentoollog
ZD_HAVE_XEN := $(shell pkg-config --exists $(ZD_XEN_PKGS) 2>/dev/null && \
	test -f "$$(pkg-config --variable=includedir xencontrol)/xenctrl.h" && echo yes)
ZD_XEN_OBJ := $(foreach b,$(BUILD)/obj $(BUILD)/asan,$(b)/lib/target/target.o $(b)/lib/target/xen.o \
	$(b)/lib/replica/standby.o $(b)/lib/replica/standby_xen.o)
# Objects built the other way (libxen-dev installed or removed since, or a
# make whose pkg-config did not find it) are built again: a stamp names
# the current answer.
ZD_XEN_STAMP := $(BUILD)/xen-have-$(if $(ZD_HAVE_XEN),yes,no).stamp
$(ZD_XEN_STAMP):
	@mkdir -p $(@D) && rm -f $(BUILD)/xen-have-*.stamp && touch $@
$(ZD_XEN_OBJ): $(ZD_XEN_STAMP)
ifeq ($(ZD_HAVE_XEN),yes)
$(ZD_XEN_OBJ): ZD_CFLAGS += -DZD_HAVE_XEN $(shell pkg-config --cflags $(ZD_XEN_PKGS))
$(ZD_XEN_OBJ): lib/target/xen.mk
LDLIBS += $(shell pkg-config --libs $(ZD_XEN_PKGS))
endif
