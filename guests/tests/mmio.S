/*
 * mmio: MMIO reads and writes of widths 1, 2, 4 and 8 through the test device's scratch at
 * 0xd0000000, from long mode. Each failing check exits with its own code; success prints "mmio ok\n".
 */
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
    mov $TESTDEV_MMIO, %rdi
    movb $0x11, (%rdi)
    cmpb $0x11, (%rdi)
    jne fail2
    movw $0x2233, 0x10(%rdi)
    cmpw $0x2233, 0x10(%rdi)
    jne fail3
    movl $0x44556677, 0x20(%rdi)
    cmpl $0x44556677, 0x20(%rdi)
    jne fail4
    mov $0x8899aabbccddeeff, %rax
    mov %rax, 0x30(%rdi)
    mov 0x30(%rdi), %rbx
    cmp %rax, %rbx
    jne fail5
    mov 0x34(%rdi), %ecx            /* the high half of the 8-byte write */
    cmp $0x8899aabb, %ecx
    jne fail6
    movzbl 0x31(%rdi), %ecx         /* one byte of it */
    cmp $0xee, %ecx
    jne fail7
    movl $0xcafef00d, 0xffc(%rdi)   /* the last dword of the 4 KiB window */
    cmpl $0xcafef00d, 0xffc(%rdi)
    jne fail8
    mov $msg, %rsi
    call puts64
    EXIT(0)
fail2: EXIT(2)
fail3: EXIT(3)
fail4: EXIT(4)
fail5: EXIT(5)
fail6: EXIT(6)
fail7: EXIT(7)
fail8: EXIT(8)
msg: .asciz "mmio ok\n"
