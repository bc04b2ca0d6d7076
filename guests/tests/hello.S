/* hello: real-mode serial output. Prints "Hello from real mode\n", exits 0. */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    mov $R(msg), %si
    call puts16
    EXIT(0)
#include "boot.inc"
msg: .asciz "Hello from real mode\n"
