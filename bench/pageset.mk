# bench/pageset: page-set operations at 1M pages -> bench/results/pageset.csv
.PHONY: bench-pageset
bench: bench-pageset

$(BUILD)/bench/pageset: $(BUILD)/obj/bench/pageset.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-pageset: $(BUILD)/bench/pageset
	@mkdir -p bench/results
	$(BUILD)/bench/pageset bench/results/pageset.csv
