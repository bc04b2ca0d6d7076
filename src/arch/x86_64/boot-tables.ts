/**
 * The GDT and identity-mapped page tables a kernel is entered with. Selectors follow the Linux boot
 * protocol: __BOOT_CS = 0x10, __BOOT_DS = 0x18; a TSS descriptor at 0x20 because VMX requires a
 * usable TR.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import { BOOT_GDT_ADDR, BOOT_IDT_ADDR, PD_ADDR, PDPT_ADDR, PML4_ADDR } from './layout.js';

export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
export const BOOT_TSS = 0x20;

/** GDT descriptors: flat 4 GiB, present, DPL 0. */
export const GDT_CODE64 = 0x00af_9b00_0000_ffffn; // L=1, D=0, exec/read, accessed
export const GDT_CODE32 = 0x00cf_9b00_0000_ffffn; // D=1, G=1, exec/read, accessed
export const GDT_DATA = 0x00cf_9300_0000_ffffn; // D/B=1, G=1, read/write, accessed
export const GDT_TSS = 0x0000_8b00_0000_0067n; // 32-bit busy TSS, limit 0x67

export const GDT_LIMIT = 5 * 8 - 1;

export function writeBootGdt(mem: GuestMemory, code: bigint): void {
  const gdt = [0n, 0n, code, GDT_DATA, GDT_TSS];
  gdt.forEach((d, i) => mem.writeU64(BOOT_GDT_ADDR + i * 8, d));
  mem.writeU64(BOOT_IDT_ADDR, 0n); // empty IDT (limit 0): any exception before the kernel sets its own is a triple fault
}

const PRESENT_RW = 0x3n;
const PAGE_2M = 0x80n;

/** Identity-maps the first 4 GiB with 2 MiB pages: PML4[0] → PDPT, PDPT[0..3] → four PDs. */
export function writeIdentityPageTables(mem: GuestMemory): number {
  mem.slice(PML4_ADDR, 0x6000).fill(0);
  mem.writeU64(PML4_ADDR, BigInt(PDPT_ADDR) | PRESENT_RW);
  for (let g = 0; g < 4; g++) {
    const pd = PD_ADDR + g * 0x1000;
    mem.writeU64(PDPT_ADDR + g * 8, BigInt(pd) | PRESENT_RW);
    for (let i = 0; i < 512; i++) mem.writeU64(pd + i * 8, (BigInt(g * 512 + i) << 21n) | PRESENT_RW | PAGE_2M);
  }
  return PML4_ADDR;
}
