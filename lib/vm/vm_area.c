/* SPDX-License-Identifier: MIT */
/*
 * A shared area: a memfd zd-vm writes page copies into and the tracker
 * maps read-only (CHECKPOINT's copy area, PRECOPY's pre-copy area). The
 * memfd is sparse: only pages ever written take memory.
 */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vm/vm_impl.h"

int zd_vm_area_make(struct zd_vm_area *a, const char *name, uint64_t pages)
{
	void *m;

	if (a->fd >= 0)
		return 0;
	a->fd = memfd_create(name, MFD_CLOEXEC);
	if (a->fd < 0 || ftruncate(a->fd, (off_t)(pages * ZDG_PAGE)) < 0)
		goto fail;
	m = mmap(NULL, pages * ZDG_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (m == MAP_FAILED)
		goto fail;
	a->map = m;
	a->pages = pages;
	return 0;
fail:
	zd_vm_area_free(a);
	return -1;
}

void zd_vm_area_free(struct zd_vm_area *a)
{
	int e = errno;

	if (a->map)
		munmap(a->map, a->pages * ZDG_PAGE);
	if (a->fd >= 0)
		close(a->fd);
	a->map = NULL;
	a->pages = 0;
	a->fd = -1;
	errno = e;
}
