/*
 * The AP start-up trampoline, copied by smp_start_aps() to 0x8000 and entered by each AP in real
 * mode at 0800:0000 after INIT-SIPI. It goes straight to long mode on the BSP's page tables, takes
 * a stack of its own (4 KiB slices handed out with lock xadd), and calls ap_main().
 */
#define TRAMPOLINE 0x8000
#define T(x) ((x) - ap_trampoline_start)
#define LIN(x) (TRAMPOLINE + T(x))

.section .rodata
.code16
.globl ap_trampoline_start, ap_trampoline_end, ap_trampoline_cr3, ap_trampoline_stack, ap_trampoline_entry
ap_trampoline_start:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl T(tgdt_desc)
    mov %cr4, %eax
    or $0x20, %eax               /* PAE */
    mov %eax, %cr4
    mov T(ap_trampoline_cr3), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx        /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax         /* PG | PE: straight to compatibility mode */
    mov %eax, %cr0
    ljmpl $0x08, $LIN(t64)
.code64
t64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $4096, %rax
    lock xadd %rax, LIN(ap_trampoline_stack)   /* this AP's stack: [old, old + 4 KiB) */
    lea 4096(%rax), %rsp
    mov LIN(ap_trampoline_entry), %rax
    call *%rax
1:  cli
    hlt
    jmp 1b
.balign 8
tgdt:
    .quad 0
    .quad 0x00af9b000000ffff     /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff     /* 0x10: data */
tgdt_end:
tgdt_desc:
    .word tgdt_end - tgdt - 1
    .long LIN(tgdt)
.balign 8
ap_trampoline_cr3: .quad 0
ap_trampoline_stack: .quad 0
ap_trampoline_entry: .quad 0
ap_trampoline_end:
