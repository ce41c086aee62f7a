# bench/wire: PAGES compression (lib/wire) on synth page contents -> bench/results/wire.csv
.PHONY: bench-wire
bench: bench-wire

$(BUILD)/bench/wire: $(BUILD)/obj/bench/wire.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-wire: $(BUILD)/bench/wire
	@mkdir -p bench/results
	$(BUILD)/bench/wire bench/results/wire.csv
