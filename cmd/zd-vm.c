/* SPDX-License-Identifier: MIT */
/* zd-vm: a KVM VM monitor with a built-in guest, protected by zd-track. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zd/vm.h"
#include "zd/util.h"
#include "opt.h"

static void help(void)
{
	printf(
		"usage: zd-vm --control PATH [--mem SIZE] [--workload SPEC] [--serve ADDR:PORT]\n"
		"             [--disk FILE [--disk-log SIZE]] [--no-output-commit] [--output-log FILE] [-v]\n"
		"       zd-vm --restore DIR [--control PATH] [--serve ADDR:PORT]\n"
		"             [--no-output-commit] [--output-log FILE] [-v]\n"
		"       zd-vm --ctl PATH OP [EPOCH]\n"
		"\n"
		"Run a KVM virtual machine with zd-vm's built-in guest, controlled over a\n"
		"Unix socket by zd-track (target kvm:PATH).\n"
		"\n"
		"  --control PATH        control socket to serve (required, except with\n"
		"                        --restore: default the one the primary served)\n"
		"  --mem SIZE            guest RAM, a multiple of 2M from 8M to 32G (default 256M)\n"
		"  --workload SPEC       dirty=PAGES_PER_SECOND,hot=FRACTION,span=SIZE\n"
		"                        [,hotset=SIZE][,seed=N]: the guest writes pages at that\n"
		"                        rate, a fraction hot of them in a hot set of hotset bytes\n"
		"                        (default span/16, at most 4M), the rest across span\n"
		"                        (default: all RAM above 4M); default: no workload, hot=0.8;\n"
		"                        ,disk=WRITES_PER_SECOND: 4K block writes to --disk\n"
		"  --disk FILE           a block device backed by FILE (a multiple of 4K bytes),\n"
		"                        replicated with each checkpoint\n"
		"  --disk-log SIZE       the per-epoch disk write log (default 16M, 64K..256M)\n"
		"  --serve ADDR:PORT     TCP line service: each line gets the answer \"seq N\"\n"
		"  --no-output-commit    release answers at once instead of holding each until\n"
		"                        the checkpoint of its epoch is committed (default: hold)\n"
		"  --output-log FILE     one line per released answer: SEQ EPOCH PRODUCED_NS\n"
		"                        RELEASED_NS RELEASED_WALL_NS\n"
		"  --restore DIR         start from a zd-recv replica (failover): its memory,\n"
		"                        vCPU and device state of the last committed epoch,\n"
		"                        serving the primary's --serve address (default) and\n"
		"                        releasing answers at once until a tracker attaches\n"
		"  --ctl PATH OP [EPOCH] send one control request to a running zd-vm: info,\n"
		"                        pause EPOCH, resume, dirty-get, dirty-clear, state,\n"
		"                        memsum, commit EPOCH, stats, stop\n"
		"  -v, --verbose         log what happens on stderr\n"
		"  -h, --help            this text\n"
		"  -V, --version         print the version and the kind of KVM here\n"
		"\n"
		"Exit status: 0 stopped cleanly, 1 runtime failure, 2 bad usage,\n"
		"3 --restore: the replica's state is malformed, 4 no usable KVM, the guest\n"
		"died, or DIR is not a committed replica of a zd-vm guest (or is damaged).\n");
}

static void version_note(void)
{
	printf("kvm: %s\n", zd_vm_kvm_mode());
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "mem", required_argument, NULL, 'm' },
		{ "control", required_argument, NULL, 'c' },
		{ "workload", required_argument, NULL, 'w' },
		{ "serve", required_argument, NULL, 's' },
		{ "no-output-commit", no_argument, NULL, 'N' },
		{ "output-log", required_argument, NULL, 'o' },
		{ "ctl", required_argument, NULL, 'C' },
		{ "restore", required_argument, NULL, 'R' },
		{ "disk", required_argument, NULL, 'd' },
		{ "disk-log", required_argument, NULL, 'L' },
		ZD_CMD_COMMON_OPTS,
	};
	struct zd_vm_config cfg = {
		.mem_bytes = ZD_VM_DEFAULT_MEM,
		.output_commit = true,
	};
	const char *ctl = NULL;
	char msg[256];
	bool mem_set = false, wl_set = false;
	int c;

	zd_set_progname(argv[0]);
	cfg.wl.hot = 0.8;
	const struct zd_cmd cmd = { .shortopts = "+vhV", .longopts = lopts, .help = help,
				    .version_note = version_note };
	while ((c = zd_getopt(&cmd, argc, argv)) != -1) {
		switch (c) {
		case 'm':
			if (zd_parse_size(optarg, &cfg.mem_bytes) < 0)
				zd_usage("--mem %s: want a size like 256M", optarg);
			mem_set = true;
			break;
		case 'c':
			cfg.control_path = optarg;
			break;
		case 'w':
			if (zd_vm_parse_workload(optarg, &cfg.wl, msg, sizeof(msg)) < 0)
				zd_usage("--workload %s", msg);
			wl_set = true;
			break;
		case 's':
			cfg.serve = optarg;
			break;
		case 'N':
			cfg.output_commit = false;
			break;
		case 'o':
			cfg.output_log = optarg;
			break;
		case 'C':
			ctl = optarg;
			break;
		case 'R':
			cfg.restore_dir = zd_opt_name("--restore", optarg, "directory name");
			break;
		case 'd':
			cfg.disk_path = zd_opt_name("--disk", optarg, "file name");
			break;
		case 'L':
			if (zd_parse_size(optarg, &cfg.disk_log_bytes) < 0 || cfg.disk_log_bytes < (64u << 10) ||
			    cfg.disk_log_bytes > ZD_VM_DISK_LOG_MAX)
				zd_usage("--disk-log %s: want a size from 64K to 256M", optarg);
			break;
		case 'v':
			zd_verbose = 1;
			break;
		}
	}
	if (ctl) {
		if (cfg.control_path || mem_set || wl_set || cfg.serve || cfg.output_log ||
		    !cfg.output_commit || cfg.restore_dir || cfg.disk_path || cfg.disk_log_bytes)
			zd_usage("--ctl takes no VM flags");
		return zd_vm_ctl_main(ctl, argc - optind, argv + optind);
	}
	zd_cmd_no_operands(argc, argv);
	if (cfg.restore_dir && (mem_set || wl_set || cfg.disk_path))
		zd_usage("--restore takes the memory size and workload from the replica, and its disk: "
			"no --mem, --workload or --disk");
	if (cfg.disk_log_bytes && !cfg.disk_path && !cfg.restore_dir)
		zd_usage("--disk-log needs --disk");
	if (cfg.control_path && !*cfg.control_path)
		zd_usage("--control: empty path");
	if (!cfg.control_path && !cfg.restore_dir)
		zd_usage("--control PATH is required");
	/* A restored VM serves where the primary did: that is checked once
	 * the replica is read. */
	if (!cfg.serve && !cfg.restore_dir && (cfg.output_log || !cfg.output_commit))
		zd_usage("%s needs --serve",
			cfg.output_log ? "--output-log" : "--no-output-commit");
	if (!cfg.restore_dir && zd_vm_check_config(&cfg, msg, sizeof(msg)) < 0)
		zd_usage("%s", msg);
	return zd_vm_main(&cfg);
}
