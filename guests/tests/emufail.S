/*
 * emufail: executes INT3 in 64-bit mode, an instruction PVM's instruction emulator lacks there. On
 * a PVM host the VMM must stop with an emulation failure (status 8) naming RIP and the bytes (cc).
 * On VMX/SVM the CPU delivers the breakpoint through the IDT to a handler that exits with code 5.
 * (In real mode KVM's emulator does deliver INT3 through the IVT, so real mode would not show it.)
 */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    mov $R(msg), %si
    call puts16
    jmp enter_pm32
#include "boot.inc"
.code32
pm32_main:
    jmp enter_lm64
.code64
lm64_main:
    /* IDT entry 3: a 64-bit interrupt gate to bp_handler (selector SEL_CODE64, present, DPL 0). */
    mov $bp_handler, %rax
    mov $idt + 3 * 16, %rdi
    mov %ax, (%rdi)
    movw $SEL_CODE64, 2(%rdi)
    movw $0x8e00, 4(%rdi)
    shr $16, %rax
    mov %ax, 6(%rdi)
    shr $16, %rax
    mov %eax, 8(%rdi)
    lidt idt_desc
    int3
    EXIT(2)
bp_handler:
    EXIT(5)
.balign 16
idt: .skip 16 * 4
idt_desc:
    .word 16 * 4 - 1
    .quad idt
msg: .asciz "about to run int3 in long mode\n"
