# bench/table1: the paper's Table 1 and Figure 4 on zd-vm (KVM, or KVM
# nested in QEMU TCG), every mode in one run -> bench/results/table1.csv,
# intervals.csv and PNGs. BENCH_QUICK=1 for a short version.
.PHONY: bench-table1
bench: bench-table1

bench-table1: all
	bench/table1.sh

# bench/failover: the client's failover time per mode, zd-recv's defaults
# and --timeout 100, 20 losses each -> bench/results/failover.csv (needs
# /dev/kvm; BENCH_QUICK=1: 4 losses each).
.PHONY: bench-failover
bench: bench-failover

bench-failover: all
	bench/failover.sh

# bench/xen: zd's modes beside xl remus on Xen 4.17 in QEMU TCG (emulated)
# -> bench/results/xen.csv. Not part of `make bench`: ~15 min.
.PHONY: bench-xen
bench-xen: all $(XEN_TEST_BIN)
	bench/xen.sh
