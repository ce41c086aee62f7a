# bench/wire: the wire (lib/wire) -> bench/results/wire.csv through the real
# tools on loopback (bench/wire.sh), and wire_lib.csv: the library alone on
# synth page contents (bench/wire.c)
.PHONY: bench-wire bench-wire-lib
bench: bench-wire

$(BUILD)/bench/wire: $(BUILD)/obj/bench/wire.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-wire-lib: $(BUILD)/bench/wire
	@mkdir -p bench/results
	$(BUILD)/bench/wire bench/results/wire_lib.csv

bench-wire: all bench-wire-lib
	bench/wire.sh bench/results/wire.csv
