# libFuzzer harness of the zd-stream(5) decoder (clang + libclang-rt-dev).
#   make fuzz                 run every harness for FUZZ_TIME seconds each
#   make fuzz FUZZ_TIME=600   longer
# The corpus grows in $(BUILD)/fuzz/corpus-*; tests/fuzz/seeds-* start it.
FUZZ_CC ?= clang
FUZZ_TIME ?= 60
FUZZ_FLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -Ilib \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_DECODE_SRC := tests/fuzz/fuzz_decode.c $(sort $(wildcard lib/stream/*.c)) lib/util/util.c

$(BUILD)/fuzz/fuzz_decode: $(FUZZ_DECODE_SRC) $(wildcard lib/stream/*.h lib/zd/*.h) | deps-ok
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(FUZZ_DECODE_SRC) $(LDLIBS)

.PHONY: fuzz-decode
fuzz: fuzz-decode
fuzz-decode: $(BUILD)/fuzz/fuzz_decode
	@mkdir -p $(BUILD)/fuzz/corpus-decode
	$(BUILD)/fuzz/fuzz_decode -max_total_time=$(FUZZ_TIME) -max_len=65536 \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=$(BUILD)/fuzz/ -dict=tests/fuzz/stream.dict \
		$(BUILD)/fuzz/corpus-decode tests/fuzz/seeds-decode

# fuzz_wire: lib/wire's PAGES payload decoder and record MAC check.
FUZZ_WIRE_SRC := tests/fuzz/fuzz_wire.c $(sort $(wildcard lib/wire/*.c lib/stream/*.c)) lib/util/util.c

$(BUILD)/fuzz/fuzz_wire: $(FUZZ_WIRE_SRC) $(wildcard lib/wire/*.h lib/stream/*.h lib/zd/*.h) | deps-ok
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(FUZZ_WIRE_SRC) $(LDLIBS)

.PHONY: fuzz-wire
fuzz: fuzz-wire
fuzz-wire: $(BUILD)/fuzz/fuzz_wire
	@mkdir -p $(BUILD)/fuzz/corpus-wire
	$(BUILD)/fuzz/fuzz_wire -max_total_time=$(FUZZ_TIME) -max_len=70000 \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus-wire tests/fuzz/seeds-wire

# fuzz_recv: zd-recv's record handling (zd_recv_session into a replica),
# with the key handshake, MAC relays and compressed/delta PAGES.
FUZZ_RECV_SRC := tests/fuzz/fuzz_recv.c $(sort $(wildcard lib/wire/*.c lib/stream/*.c lib/replica/*.c \
	lib/net/*.c lib/status/*.c)) lib/util/util.c lib/util/notify.c

$(BUILD)/fuzz/fuzz_recv: $(FUZZ_RECV_SRC) $(wildcard lib/wire/*.h lib/stream/*.h lib/replica/*.h lib/net/*.h lib/zd/*.h) | deps-ok
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $(FUZZ_RECV_SRC) $(LDLIBS)

.PHONY: fuzz-recv
fuzz: fuzz-recv
fuzz-recv: $(BUILD)/fuzz/fuzz_recv
	@mkdir -p $(BUILD)/fuzz/corpus-recv
	$(BUILD)/fuzz/fuzz_recv -max_total_time=$(FUZZ_TIME) -max_len=70000 \
		-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=$(BUILD)/fuzz/ -dict=tests/fuzz/stream.dict \
		$(BUILD)/fuzz/corpus-recv tests/fuzz/seeds-recv
