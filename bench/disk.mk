# bench/disk: what disk replication costs a zd-vm guest per epoch (pause,
# T1 -> ACK, wire bytes) by disk write rate and mode -> bench/results/disk.csv
# (needs /dev/kvm; BENCH_QUICK=1 for a short version).
.PHONY: bench-disk
bench: bench-disk

bench-disk: all
	bench/disk.sh bench/results/disk.csv
