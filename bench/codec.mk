# bench/codec: zd-stream(5) encode/decode throughput -> bench/results/codec.csv
.PHONY: bench-codec
bench: bench-codec

$(BUILD)/bench/codec: $(BUILD)/obj/bench/codec.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-codec: $(BUILD)/bench/codec
	@mkdir -p bench/results
	$(BUILD)/bench/codec bench/results/codec.csv
