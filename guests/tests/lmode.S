/* lmode: real -> protected -> 64-bit long mode. Prints "long mode ok\n" from 64-bit code, exits 0. */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    jmp enter_pm32
#include "boot.inc"
.code32
pm32_main:
    jmp enter_lm64
.code64
lm64_main:
    /* Prove 64-bit operation: a 64-bit immediate survives a round trip through a register. */
    mov $0x123456789abcdef0, %rax
    mov %rax, %rbx
    shr $32, %rbx
    cmp $0x12345678, %ebx
    jne 1f
    mov $msg, %rsi
    call puts64
    EXIT(0)
1:  EXIT(2)
msg: .asciz "long mode ok\n"
