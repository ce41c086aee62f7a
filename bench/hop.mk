# bench/hop: what moving one epoch's 4 MiB costs here (copy, crc, wake-up,
# pipe, spliced chain, loopback TCP; both cores free and one taken) ->
# bench/results/hop.csv
.PHONY: bench-hop
bench: bench-hop

$(BUILD)/bench/hop: $(BUILD)/obj/bench/hop.o lib/libzd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(ZD_LDFLAGS) -o $@ $< lib/libzd.a $(LDLIBS)

bench-hop: $(BUILD)/bench/hop
	@mkdir -p bench/results
	$(BUILD)/bench/hop 200 bench/results/hop.csv
