# The xen: target needs libxen-dev (xenctrl.h, xenstore.h,
# xenforeignmemory.h). Where it is missing xen.c compiles to nothing and the
# registry does not list xen, so the build never breaks for want of it.
ZD_XEN_PKGS := xencontrol xenguest xenstore xenforeignmemory xentoollog
ZD_HAVE_XEN := $(shell pkg-config --exists $(ZD_XEN_PKGS) 2>/dev/null && \
	test -f "$$(pkg-config --variable=includedir xencontrol)/xenctrl.h" && echo yes)
ZD_XEN_OBJ := $(foreach b,$(BUILD)/obj $(BUILD)/asan,$(b)/lib/target/target.o $(b)/lib/target/xen.o \
	$(b)/lib/target/xen_netbuf.o $(b)/lib/replica/standby.o $(b)/lib/replica/standby_xen.o)
# Its output commit drives sch_plug through libnl-route-3
# (libnl-route-3-dev); without it xen_netbuf.c refuses output-commit=on.
ZD_HAVE_NL := $(if $(ZD_HAVE_XEN),$(shell pkg-config --exists libnl-route-3.0 2>/dev/null && echo yes))
# Objects built the other way (libxen-dev installed or removed since, or a
# make whose pkg-config did not find it) are built again: a stamp names
# the current answer.
ZD_XEN_STAMP := $(BUILD)/xen-have-$(if $(ZD_HAVE_XEN),yes,no)-nl-$(if $(ZD_HAVE_NL),yes,no).stamp
$(ZD_XEN_STAMP):
	@mkdir -p $(@D) && rm -f $(BUILD)/xen-have-*.stamp && touch $@
$(ZD_XEN_OBJ): $(ZD_XEN_STAMP)
ifeq ($(ZD_HAVE_XEN),yes)
$(ZD_XEN_OBJ): ZD_CFLAGS += -DZD_HAVE_XEN $(shell pkg-config --cflags $(ZD_XEN_PKGS))
$(ZD_XEN_OBJ): lib/target/xen.mk
LDLIBS += $(shell pkg-config --libs $(ZD_XEN_PKGS))
ifeq ($(ZD_HAVE_NL),yes)
$(ZD_XEN_OBJ): ZD_CFLAGS += -DZD_HAVE_NL $(shell pkg-config --cflags libnl-route-3.0)
LDLIBS += $(shell pkg-config --libs libnl-route-3.0)
endif
endif
