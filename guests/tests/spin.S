/* spin: prints "spinning\n" then loops forever (event-loop, pause, timeout and kill tests). */
#include "guest.h"
#include "exit.h"
.code16
.globl _start
_start:
    mov $R(msg), %si
    call puts16
.globl spin_loop /* where a timed-out run must say vcpu0 was */
spin_loop:
    jmp spin_loop
#include "boot.inc"
msg: .asciz "spinning\n"
