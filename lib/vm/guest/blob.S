/* SPDX-License-Identifier: MIT */
/* The guest image, embedded into zd-vm (a host object, built by vm.mk). */
	.section .rodata.zd_guest, "a"
	.balign 16
	.globl zd_guest_image
	.globl zd_guest_image_end
zd_guest_image:
	.incbin ZD_GUEST_BIN
zd_guest_image_end:
	.section .note.GNU-stack, "", @progbits
