/*
 * exits-mmio (bench/exits): N four-byte stores to the test device's MMIO scratch from long mode,
 * then exit 0. N is the dword at image offset 8 (the benchmark patches it).
 */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    jmp 1f
    .org 8
count: .long 100000
1:  jmp enter_pm32
#include "boot.inc"
.code32
pm32_main:
    jmp enter_lm64
.code64
lm64_main:
    mov count, %ecx
    mov $TESTDEV_MMIO, %rdi
1:  movl %ecx, (%rdi)
    dec %ecx
    jnz 1b
    EXIT(0)
