/* SPDX-License-Identifier: MIT */
/*
 * xen_lwreplay LOG IMAGE MARK: apply the writes of the dm-log-writes log
 * LOG (a file or a block device) up to the mark MARK onto IMAGE, in place
 * (IMAGE: a copy of the disk as it was when the log-writes device was
 * made; its size is the device's). tests/xen/disk.sh rebuilds the
 * primary's disk at a committed epoch so (the mark zd-RUN-EPOCH that
 * zd-track put in the log) and compares it with the replica's, byte for
 * byte. Exit 0, 1 with a message (the mark is not in the log: 3).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "target/xen_disk.h"

static int put(void *arg, uint64_t off, const uint8_t *data, uint64_t len)
{
	static const uint8_t zero[65536];
	int fd = *(int *)arg;

	while (len) {
		size_t n = data ? (size_t)len : (size_t)(len < sizeof(zero) ? len : sizeof(zero));

		if (pwrite(fd, data ? data : zero, n, (off_t)off) != (ssize_t)n) {
			perror("xen_lwreplay: write");
			return -1;
		}
		off += n;
		len -= n;
		if (data)
			data += n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct zd_lwlog lw;
	struct stat st;
	char err[512];
	int fd, r;

	if (argc != 4) {
		fprintf(stderr, "usage: xen_lwreplay LOG IMAGE MARK\n");
		return 2;
	}
	fd = open(argv[2], O_RDWR);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[2]);
		return 1;
	}
	if (zd_lwlog_open(&lw, argv[1], (uint64_t)st.st_size, err, sizeof(err)) < 0) {
		fprintf(stderr, "xen_lwreplay: %s\n", err);
		return 1;
	}
	r = zd_lwlog_until(&lw, argv[3], 0, put, &fd, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "xen_lwreplay: %s\n", err);
		return 1;
	}
	if (r == 1) {
		fprintf(stderr, "xen_lwreplay: no mark %s in %s (%" PRIu64 " entries)\n", argv[3], argv[1], lw.consumed);
		return 3;
	}
	printf("%" PRIu64 " entries to the mark %s\n", lw.consumed, argv[3]);
	zd_lwlog_close(&lw);
	return close(fd) ? 1 : 0;
}
