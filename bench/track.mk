# bench/track: zd-track's pause per mode on synth -> bench/results/track.csv
.PHONY: bench-track
bench: bench-track

bench-track: all
	bench/track.sh bench/results/track.csv
