# bench/wire: the wire (lib/wire) -> bench/results/wire.csv through the real
# tools on loopback (bench/wire.sh), wire_lib.csv: the library alone on
# synth page contents (bench/wire.c), and wire_key.csv: the --key cipher
# alone (bench/wire_key.c)
.PHONY: bench-wire bench-wire-lib bench-wire-key
bench: bench-wire

$(BUILD)/bench/wire: $(BUILD)/obj/bench/wire.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-wire-lib: $(BUILD)/bench/wire
	@mkdir -p bench/results
	$(BUILD)/bench/wire bench/results/wire_lib.csv

$(BUILD)/bench/wire_key: $(BUILD)/obj/bench/wire_key.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-wire-key: $(BUILD)/bench/wire_key
	@mkdir -p bench/results
	$(BUILD)/bench/wire_key bench/results/wire_key.csv

bench-wire: all bench-wire-lib bench-wire-key
	bench/wire.sh bench/results/wire.csv
