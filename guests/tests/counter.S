/*
 * counter: prints "counting\n", then increments the dword at image offset 8 (guest-physical
 * 0x10008) forever. Pause tests read it from guest memory: it must not move while paused.
 */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    jmp 1f
    .org 8
count: .long 0
1:  mov $R(msg), %si
    call puts16
2:  incl %cs:R(count)
    jmp 2b
#include "boot.inc"
msg: .asciz "counting\n"
