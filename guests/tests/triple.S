/*
 * triple: a triple fault. In protected mode with an empty IDT (limit 0), ud2 raises #UD, whose
 * delivery faults (#GP), whose delivery faults (#DF), whose delivery shuts the CPU down.
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
    lidt empty_idt
    ud2
    EXIT(2) /* not reached */
empty_idt:
    .word 0
    .long 0
msg: .asciz "about to triple fault\n"
