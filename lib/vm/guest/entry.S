/* SPDX-License-Identifier: MIT */
/*
 * Guest entry. zd-vm enters here at CPL3 in 64-bit mode with RSP at
 * ZDG_STACK_TOP (set through KVM_SET_REGS): there is no CPL0 code at all,
 * because under kvm_pvm every CPL0 instruction is emulated.
 */
	.section .text.entry, "ax"
	.globl _start
_start:
	xorl %ebp, %ebp
	andq $-16, %rsp
	call guest_main
	/* guest_main never returns; if it does, spin (zd-vm sees EXIT first). */
1:	pause
	jmp 1b
	.section .note.GNU-stack, "", @progbits
