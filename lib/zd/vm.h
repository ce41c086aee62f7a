/* SPDX-License-Identifier: MIT */
/*
 * zd-vm, the KVM VM monitor: what cmd/zd-vm.c hands to the library.
 * The monitor's pieces (lib/vm/vm_*.c) share lib/vm/vm_impl.h.
 */
#ifndef ZD_VM_VM_H
#define ZD_VM_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZD_VM_DEFAULT_MEM (256ull << 20)
#define ZD_VM_MAX_MEM (32ull << 30)

struct zd_vm_workload {
	uint64_t dirty_rate;		/* pages per second, 0 = none */
	double hot;			/* fraction of writes to the hot set */
	uint64_t span_bytes;		/* 0 = all of RAM above the fixed area */
	uint64_t hotset_bytes;		/* 0 = default (span / 16, ≤ 4 MiB) */
	uint64_t seed;
	uint64_t disk_rate;		/* block writes per second (needs --disk), 0 = none */
};

#define ZD_VM_DISK_LOG_DEFAULT (16ull << 20)
#define ZD_VM_DISK_LOG_MAX (256ull << 20)

struct zd_vm_config {
	uint64_t mem_bytes;
	const char *control_path;
	const char *serve;		/* "ADDR:PORT" or NULL */
	bool output_commit;
	const char *output_log;		/* NULL: none */
	struct zd_vm_workload wl;
	const char *restore_dir;	/* --restore DIR: start from a replica */
	const char *disk_path;		/* --disk FILE: the block device, NULL = none */
	uint64_t disk_log_bytes;	/* --disk-log SIZE: the per-epoch write log */
};

/* Parse "dirty=N,hot=F,span=SIZE[,hotset=SIZE][,seed=N]". Returns 0, or -1
 * with msg saying which key is wrong. */
int zd_vm_parse_workload(const char *s, struct zd_vm_workload *wl, char *msg, size_t msglen);

/* Check the whole configuration against the RAM size; -1 with msg. */
int zd_vm_check_config(const struct zd_vm_config *cfg, char *msg, size_t msglen);

/* Run the VM until STOP, SIGINT or SIGTERM, or the guest dies. Returns the
 * exit status for main() (diagnostics already printed). */
int zd_vm_main(const struct zd_vm_config *cfg);

/* "kvm_pvm", "kvm" or "none": which KVM this host has. */
const char *zd_vm_kvm_mode(void);

/* The debugging client (zd-vm --ctl PATH OP [ARG]): one request, the reply
 * printed as key=value lines. Returns the exit status. */
int zd_vm_ctl_main(const char *path, int argc, char **argv);

#endif
