/* pmode: the switch to 32-bit protected mode. Prints "protected mode ok\n" from 32-bit code, exits 0. */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    jmp enter_pm32
#include "boot.inc"
.code32
pm32_main:
    /* Prove flat 32-bit addressing: store and reload through a linear address above 1 MiB. */
    movl $0x600dc0de, 0x200000
    cmpl $0x600dc0de, 0x200000
    jne 1f
    mov $msg, %esi
    call puts32
    EXIT(0)
1:  EXIT(2)
msg: .asciz "protected mode ok\n"
