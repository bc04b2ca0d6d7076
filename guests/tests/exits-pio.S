/*
 * exits-pio (bench/exits): N one-byte OUTs to the test device port, then exit 0. N is the dword at
 * image offset 8 (the benchmark patches it).
 */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    jmp 1f
    .org 8
count: .long 100000
1:  mov %cs:R(count), %ecx
    mov $TESTDEV_PORT, %dx
2:  out %al, %dx
    dec %ecx
    jnz 2b
    EXIT(0)
#include "boot.inc"
