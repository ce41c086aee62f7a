# zd — continuous-checkpoint hot standby for virtual machines.
#
#   make            build bin/zd-* and lib/libzd.a
#   make check      every test: unit (plain + ASan/UBSan), integration, e2e
#   make bench      benchmarks, results in bench/results/
#   make fuzz       run the fuzz harnesses for a bounded time
#   make demo       protect a KVM VM, replicate it, fail over, show numbers
#   make deps       install the Debian packages the build needs
#   make install PREFIX=/usr/local DESTDIR=

PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
BUILD ?= build

PKGS := jansson libzstd libxxhash libisal libsystemd libsodium
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow -Wstrict-prototypes
CFLAGS ?= -O2 -g
ZD_CFLAGS := -std=gnu11 $(WARN) -D_GNU_SOURCE -Ilib \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -ljansson -lzstd -lxxhash -lisal -lsystemd -lsodium) -lpthread -lm

# Hardened as Debian builds its packages; the user's CPPFLAGS and LDFLAGS
# come on top (make CPPFLAGS=... LDFLAGS=...). PIE is gcc's default here.
ZD_CPPFLAGS := -D_FORTIFY_SOURCE=2 $(CPPFLAGS)
ZD_CFLAGS += -fstack-protector-strong
ZD_LDFLAGS := -Wl,-z,relro,-z,now $(LDFLAGS)

SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# libzd: every lib/*/*.c. A subsystem needing special rules (the
# freestanding guest of zd-vm) keeps them in its own lib/*/*.mk.
LIB_SRC := $(sort $(wildcard lib/*/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB_ASAN_OBJ := $(LIB_SRC:%.c=$(BUILD)/asan/%.o)
EXTRA_OBJ :=

# Tools: cmd/zd-NAME.c (C) or cmd/zd-NAME.sh / cmd/zd (scripts). The
# scripts source lib/sh/zd-common.bash, installed in PREFIX/share/zd.
TOOLS_C := $(patsubst cmd/%.c,bin/%,$(wildcard cmd/zd-*.c))
TOOLS_SH := $(patsubst cmd/%.sh,bin/%,$(wildcard cmd/*.sh))
TOOLS := $(TOOLS_C) $(TOOLS_SH)

# Unit tests: tests/unit/test_*.c, each a cmocka program.
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
UNIT_ASAN_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests-asan/%)

# `make` alone builds everything, whatever rules the fragments below define.
.DEFAULT_GOAL := all
-include $(wildcard lib/*/*.mk cmd/*.mk tests/*/*.mk bench/*.mk)

.PHONY: all check check-unit check-asan check-integration check-e2e bench fuzz \
	demo deps install clean
all: lib/libzd.a $(TOOLS)

# Each object depends on the headers it includes (-MMD .d files, read at
# the end), not on every header.
$(BUILD)/obj/%.o: %.c | deps-ok
	@mkdir -p $(@D)
	$(CC) $(ZD_CPPFLAGS) $(ZD_CFLAGS) $(CFLAGS) -MMD -c -o $@ $<

$(BUILD)/asan/%.o: %.c | deps-ok
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ZD_CFLAGS) -O1 -g $(SAN) -MMD -c -o $@ $<

# The tools' and tests' objects are not intermediates: deleted, they would
# be rebuilt, and every tool relinked, by the next make.
.SECONDARY: $(TOOLS_C:bin/%=$(BUILD)/obj/cmd/%.o) $(BUILD)/obj/cmd/opt.o $(UNIT_SRC:%.c=$(BUILD)/obj/%.o) \
	$(UNIT_SRC:%.c=$(BUILD)/asan/%.o)

lib/libzd.a: $(LIB_OBJ) $(EXTRA_OBJ)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/libzd-asan.a: $(LIB_ASAN_OBJ) $(EXTRA_OBJ)
	rm -f $@
	ar rcs $@ $^

# Link beside, then rename: a tool that is running (a test's, or one a
# QEMU guest reads over 9p) keeps its old file instead of seeing it rewritten.
# cmd/opt.c: the command layer the tools share (flags, help, usage errors).
bin/%: $(BUILD)/obj/cmd/%.o $(BUILD)/obj/cmd/opt.o lib/libzd.a
	@mkdir -p bin
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@.tmp $(filter %.o,$^) lib/libzd.a $(LDLIBS) && mv -f $@.tmp $@

bin/%: cmd/%.sh
	@mkdir -p bin
	cp $< $@
	chmod +x $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS) -lcmocka

$(BUILD)/tests-asan/%: $(BUILD)/asan/tests/unit/%.o $(BUILD)/libzd-asan.a
	@mkdir -p $(@D)
	$(CC) -g $(SAN) $(LDFLAGS) -o $@ $< $(BUILD)/libzd-asan.a $(LDLIBS) -lcmocka

# On a fresh machine, as root, the build's packages are installed before
# anything is built: by remaking this included file, after which make
# starts again (GNU make re-reads its makefiles when one was remade), so
# what pkg-config says (the flags, whether the xen: target is built) is
# read after the install. Installing from deps-ok below instead left the
# first build without the xen: target, its answers read before.
ZD_DEPS_MK := $(BUILD)/deps-checked.mk
ifeq ($(filter clean deps deps-build deps-demo print-deps,$(MAKECMDGOALS)),)
-include $(ZD_DEPS_MK)
endif
$(ZD_DEPS_MK):
	@if [ "$$(id -u)" = 0 ] && ! { command -v pkg-config >/dev/null && pkg-config --exists $(PKGS) $(ZD_XEN_PKGS); }; then \
		$(MAKE) --no-print-directory deps-build; fi
	@mkdir -p $(@D) && echo '# the build packages were checked (Makefile: ZD_DEPS_MK)' >$@

# The build needs these headers; say which package is missing instead of
# failing deep inside a compile.
# On a fresh machine this installs them when run as root (make deps).
.PHONY: deps-ok
deps-ok:
	@if ! { command -v pkg-config >/dev/null && pkg-config --exists $(PKGS); }; then \
		if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory deps-build; \
		else echo "zd: missing build dependencies ($$(for p in $(PKGS); do pkg-config --exists $$p 2>/dev/null || printf '%s ' $$p; done)); run 'make deps' as root" >&2; exit 1; fi; \
	fi

# The one package list: `make deps` (which .ci/run and `make check` run)
# installs DEB_BUILD and DEB_TEST; plain `make` only DEB_BUILD, `make demo`
# DEB_BUILD and DEB_DEMO. None of them holds a kernel, a hypervisor or a
# server: the kernel, Xen and sshd that the tests' QEMU hosts boot and run
# are unpacked into $(BUILD)/debroot by tests/lib/debroot.sh (dpkg-deb -x,
# no maintainer scripts), never installed (tests/integration/deps.sh checks
# it). DEB_TEST's libyajl2, libncurses6 and libwrap0 are what the unpacked
# xl and sshd link against.
DEB_BUILD := build-essential pkg-config libjansson-dev libzstd-dev libxxhash-dev libisal-dev \
	libcmocka-dev libxen-dev libnl-route-3-dev libsodium-dev libsystemd-dev jq gnuplot-nox
DEB_TEST := iproute2 nftables openssh-client procps psmisc python3 clang libclang-rt-14-dev shellcheck bash-completion \
	qemu-system-x86 busybox-static cpio xz-utils zstd kmod libyajl2 libncurses6 libwrap0 \
	libxml2-utils bc gawk dmsetup
DEB_DEMO := procps psmisc
DEB_DEMO_NOKVM := qemu-system-x86 busybox-static cpio xz-utils zstd kmod
# $(call apt_install,PACKAGES): install those not installed yet.
define apt_install
	@missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "zd: installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "zd: build dependencies present"; fi
endef

.PHONY: deps deps-build deps-demo print-deps
deps:
	$(call apt_install,$(DEB_BUILD) $(DEB_TEST))
	@bash tests/lib/debroot.sh unpack

# What `make` alone installs: the build's packages, nothing else.
deps-build:
	$(call apt_install,$(DEB_BUILD))

# A host without /dev/kvm runs the demo in QEMU: QEMU and busybox, and
# Debian's kernel unpacked, not installed.
deps-demo:
	$(call apt_install,$(DEB_BUILD) $(DEB_DEMO) $(if $(wildcard /dev/kvm),,$(DEB_DEMO_NOKVM)))
	$(if $(wildcard /dev/kvm),,@bash tests/lib/debroot.sh unpack kernel)

# print-deps LIST=build|test|demo: the list, for tests/integration/deps.sh.
print-deps:
	@echo $(DEB_BUILD) $(if $(filter test,$(LIST)),$(DEB_TEST)) \
		$(if $(filter demo,$(LIST)),$(DEB_DEMO) $(DEB_DEMO_NOKVM))

# One summary line over all suites: tests/run collects TAP from each.
check: test-deps all $(UNIT_BIN) $(UNIT_ASAN_BIN)
	@tests/run

# The tests need more than the build (cmocka, jq, QEMU for KVM where the
# host has no /dev/kvm): install what is missing when root.
.PHONY: test-deps
test-deps:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory deps; fi

check-unit: $(UNIT_BIN)
	@tests/run unit
check-asan: $(UNIT_ASAN_BIN)
	@tests/run asan
check-integration: all
	@tests/run integration
check-e2e: all
	@tests/run e2e

# Installs the tools, man pages, completions and the systemd units (not
# enabled); uninstall removes exactly those.
UNITDIR ?= $(PREFIX)/lib/systemd/system
# Pacemaker reads agents from /usr/lib/ocf/resource.d only: OCFDIR= that
# (or a link to it) for a cluster.
OCFDIR ?= $(PREFIX)/lib/ocf/resource.d/zd
UNITS := $(wildcard systemd/*.service)
MANS := $(wildcard man/*.[1-9])
BASH_COMPL := $(wildcard completions/bash/*)
ZSH_COMPL := $(wildcard completions/zsh/_*)
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/doc/zd $(DESTDIR)$(OCFDIR) \
		$(DESTDIR)$(PREFIX)/share/zd
	install -m 755 $(TOOLS) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 lib/sh/zd-common.bash $(DESTDIR)$(PREFIX)/share/zd/
	for m in $(MANS); do install -D -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man$${m##*.}/$${m##*/}; done
	for c in $(BASH_COMPL); do install -m 644 $$c $(DESTDIR)$(PREFIX)/share/bash-completion/completions/; done
	for c in $(ZSH_COMPL); do install -m 644 $$c $(DESTDIR)$(PREFIX)/share/zsh/site-functions/; done
	for u in $(UNITS); do sed 's|@BINDIR@|$(PREFIX)/bin|g' $$u >$(DESTDIR)$(UNITDIR)/$${u##*/} && \
		chmod 644 $(DESTDIR)$(UNITDIR)/$${u##*/}; done
	install -m 644 systemd/zd.conf.example $(DESTDIR)$(PREFIX)/share/doc/zd/
	sed 's|^: "$${OCF_RESKEY_bindir:=/usr/local/bin}"|: "$${OCF_RESKEY_bindir:=$(PREFIX)/bin}"|' ocf/zd \
		>$(DESTDIR)$(OCFDIR)/zd && chmod 755 $(DESTDIR)$(OCFDIR)/zd

.PHONY: uninstall
uninstall:
	rm -f $(TOOLS:bin/%=$(DESTDIR)$(PREFIX)/bin/%)
	rm -f $(DESTDIR)$(PREFIX)/share/zd/zd-common.bash
	for m in $(MANS); do rm -f $(DESTDIR)$(PREFIX)/share/man/man$${m##*.}/$${m##*/}; done
	rm -f $(BASH_COMPL:completions/bash/%=$(DESTDIR)$(PREFIX)/share/bash-completion/completions/%)
	rm -f $(ZSH_COMPL:completions/zsh/%=$(DESTDIR)$(PREFIX)/share/zsh/site-functions/%)
	rm -f $(UNITS:systemd/%=$(DESTDIR)$(UNITDIR)/%)
	rm -f $(DESTDIR)$(PREFIX)/share/doc/zd/zd.conf.example
	rm -f $(DESTDIR)$(OCFDIR)/zd
	-rmdir $(DESTDIR)$(PREFIX)/share/doc/zd $(DESTDIR)$(PREFIX)/share/zd $(DESTDIR)$(OCFDIR) $(DESTDIR)$(PREFIX)/share/man/man7 2>/dev/null

clean:
	rm -rf $(BUILD) bin lib/libzd.a

# A header that moved or went: the .d files of an earlier build still name
# it. Nothing to make: the object is rebuilt and its new .d says what it
# includes now.
%.h: ;

-include $(shell find $(BUILD) -path $(BUILD)/debroot -prune -o -name '*.d' -type f -print 2>/dev/null)
