/*
 * Shared definitions for the assembly test guests (preprocessed by cpp via gcc -E).
 *
 * Machine contract (README.md): flat images are loaded at 0x10000 and entered in real mode at
 * 1000:0000 with every segment = 0x1000 and SP = 0x8000. Guests are linked at 0x10000, so in real
 * mode a label's offset in the segment is R(label). COM1 is at 0x3f8, isa-debug-exit at 0xf4, the
 * test device at ports 0xe0-0xe7 and MMIO 0xd0000000.
 */
#ifndef LOAD_ADDR
#define LOAD_ADDR 0x10000
#endif
#define R(x) ((x) - LOAD_ADDR)

#define COM1 0x3f8
#define COM1_LSR 0x3fd
#define LSR_THRE 0x20
#define DEBUG_EXIT 0xf4
#define TESTDEV_PORT 0xe0
#define TESTDEV_MMIO 0xd0000000
#define UNCLAIMED_PORT 0x1234
#define UNCLAIMED_MMIO 0xd0100000

/* Selectors of the GDT in boot.inc. */
#define SEL_CODE32 0x08
#define SEL_DATA 0x10
#define SEL_CODE64 0x18

/* Page tables for long mode (identity map of 4 GiB with 2 MiB pages), clear of the boot data the VMM
 * writes below 0x10000 (hvm_start_info at 0x6000) and of the images (flat at 0x10000, PVH at 1 MiB). */
#define PT_PML4 0x80000
#define PT_PDPT 0x81000
#define PT_PD 0x82000 /* four pages: 0x82000-0x85fff */
