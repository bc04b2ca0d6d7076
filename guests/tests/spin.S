/* spin: prints "spinning\n" then loops forever (event-loop, pause, timeout and kill tests). */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    mov $R(msg), %si
    call puts16
1:  jmp 1b
#include "boot.inc"
msg: .asciz "spinning\n"
