/*
 * pio: port I/O of each width through the test device's 8-byte scratch (ports 0xe0-0xe7), plus
 * string I/O (rep outsb / rep insb). Each failing check exits with its own code; success prints
 * "pio ok\n" and exits 0.
 */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    mov $0x5a, %al                  /* byte */
    out %al, $TESTDEV_PORT
    xor %al, %al
    in $TESTDEV_PORT, %al
    cmp $0x5a, %al
    jne fail2
    mov $0xbeef, %ax                /* word */
    out %ax, $TESTDEV_PORT
    xor %ax, %ax
    in $TESTDEV_PORT, %ax
    cmp $0xbeef, %ax
    jne fail3
    mov $0xdeadbeef, %eax           /* dword */
    mov $TESTDEV_PORT, %dx
    out %eax, %dx
    xor %eax, %eax
    in %dx, %eax
    cmp $0xdeadbeef, %eax
    jne fail4
    in $(TESTDEV_PORT + 2), %al     /* a byte from the middle of the dword: little-endian */
    cmp $0xad, %al
    jne fail5
    in $(TESTDEV_PORT + 1), %ax
    cmp $0xadbe, %ax
    jne fail6
    mov $R(src), %si                /* rep outsb: three bytes to one port; the last one stays */
    mov $3, %cx
    mov $TESTDEV_PORT, %dx
    cld
    rep outsb
    in $TESTDEV_PORT, %al
    cmp $'z', %al
    jne fail7
    push %ds                        /* rep insb: four reads of the same port into dst */
    pop %es
    mov $R(dst), %di
    mov $4, %cx
    rep insb
    cmpl $0x7a7a7a7a, R(dst)
    jne fail8
    mov $R(msg), %si
    call puts16
    EXIT(0)
fail2: EXIT(2)
fail3: EXIT(3)
fail4: EXIT(4)
fail5: EXIT(5)
fail6: EXIT(6)
fail7: EXIT(7)
fail8: EXIT(8)
#include "boot.inc"
src: .ascii "xyz"
dst: .long 0
msg: .asciz "pio ok\n"
