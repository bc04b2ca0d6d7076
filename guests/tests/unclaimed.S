/*
 * unclaimed: reads of a port and an MMIO address no device claims return all ones of the access
 * width; writes there are ignored. The port is read three times (the VMM logs it once).
 */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    mov $UNCLAIMED_PORT, %dx
    in %dx, %al
    cmp $0xff, %al
    jne fail2
    in %dx, %ax
    cmp $0xffff, %ax
    jne fail3
    in %dx, %eax
    cmp $0xffffffff, %eax
    jne fail4
    mov $0x42, %al
    out %al, %dx
    jmp enter_pm32
fail2: EXIT(2)
fail3: EXIT(3)
fail4: EXIT(4)
#include "boot.inc"
.code32
pm32_main:
    movl $0x12345678, UNCLAIMED_MMIO
    mov UNCLAIMED_MMIO, %eax
    cmp $0xffffffff, %eax
    jne 1f
    movzbl UNCLAIMED_MMIO + 1, %eax
    cmp $0xff, %eax
    jne 2f
    mov $msg, %esi
    call puts32
    EXIT(0)
1:  EXIT(5)
2:  EXIT(6)
msg: .asciz "unclaimed ok\n"
