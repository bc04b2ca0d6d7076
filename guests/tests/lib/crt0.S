/*
 * Start-up code of the freestanding C runtime, built twice:
 *   -DFLAT: a flat image at 0x10000, entered in real mode (kvmtool convention);
 *   -DPVH:  an ELF at 1 MiB with a XEN_ELFNOTE_PHYS32_ENTRY note, entered in 32-bit protected
 *           mode without paging, EBX = hvm_start_info.
 * Both go to long mode (identity map of 4 GiB, boot.inc, on page tables assembled into the image),
 * switch to the C stack, zero .bss (the flat image only: see lm64_main), call main() and hand its
 * return value to isa-debug-exit.
 */
#include "guest.h"
#include "exit.h"

.section .text.start, "ax"
.code16
.globl _start
_start:
#ifdef FLAT
    /* The image, its page tables included, may cover 0x18000, where the machine contract's SP and
     * boot.inc's mode switches point the stack: nothing is pushed before lm64_main moves it. */
    jmp enter_pm32
#else
    EXIT(99) /* a PVH image entered flat: refuse */
#endif

#ifdef PVH
.code32
.globl pvh_start
pvh_start:
    cli
    mov %ebx, nv_start_info_addr
    lgdt gdt_desc
    ljmp $SEL_CODE32, $pm32_entry

.pushsection .note.Xen, "a", @note
    .balign 4
    .long 4          /* namesz */
    .long 4          /* descsz */
    .long 18         /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start  /* 32-bit physical entry */
.popsection
#endif

#define PREBUILT_PAGE_TABLES
#include "boot.inc"

.code32
pm32_main:
    jmp enter_lm64

.code64
lm64_main:
    mov $nv_stack_top, %rsp
#ifdef FLAT
    /* Zero .bss 8 bytes at a time (both ends are 8-aligned by the linker scripts): on a PVM host
     * every iteration of a string instruction is emulated, so the width matters. A PVH ELF skips
     * this: its .bss is the p_memsz past p_filesz of a PT_LOAD segment, which ELF loaders zero (ours,
     * src/loader/pvh.ts, and QEMU's), and zeroing it again would cost 17,000 emulated stores for
     * c-exit's 135 KiB and 770,000 for c-virtio's 6 MiB. */
    mov $__bss_start, %rdi
    mov $__bss_end, %rcx
    sub %rdi, %rcx
    shr $3, %rcx
    xor %eax, %eax
    rep stosq
#endif
    call main
    mov %eax, %edi
    call exit
1:  hlt
    jmp 1b

.section .data
.balign 8
.globl nv_start_info_addr
nv_start_info_addr: .quad 0

.section .bss
.balign 16
nv_stack: .skip 65536
nv_stack_top:
