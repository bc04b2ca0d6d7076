/** Guest page-table walks, for diagnostics only (reading the instruction at RIP after a failure). */
import type { GuestMemory } from '../../memory/guest-memory.js';

const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LMA = 1n << 10n;
const PRESENT = 1n;
const PAGE_SIZE_BIT = 1n << 7n;
const ADDR_MASK = 0x000f_ffff_ffff_f000n;

/** Linear → guest-physical for 4-level long-mode, PAE and 32-bit paging; undefined if unmapped. */
export function translate(mem: GuestMemory, linear: bigint, cr0: bigint, cr3: bigint, cr4: bigint, efer: bigint): number | undefined {
  try {
    if ((cr0 & CR0_PG) === 0n) return Number(linear & 0xffff_ffffn);
    if ((efer & EFER_LMA) !== 0n) {
      let table = cr3 & ADDR_MASK;
      for (const [shift, last] of [[39n, false], [30n, true], [21n, true], [12n, true]] as const) {
        const e = mem.readU64(Number(table + ((linear >> shift) & 0x1ffn) * 8n));
        if ((e & PRESENT) === 0n) return undefined;
        if (shift === 12n || (last && (e & PAGE_SIZE_BIT) !== 0n)) {
          const mask = (1n << shift) - 1n;
          return Number((e & ADDR_MASK & ~mask) | (linear & mask));
        }
        table = e & ADDR_MASK;
      }
      return undefined;
    }
    if ((cr4 & CR4_PAE) !== 0n) {
      const pdpte = mem.readU64(Number((cr3 & 0xffff_ffe0n) + ((linear >> 30n) & 3n) * 8n));
      if ((pdpte & PRESENT) === 0n) return undefined;
      const pde = mem.readU64(Number((pdpte & ADDR_MASK) + ((linear >> 21n) & 0x1ffn) * 8n));
      if ((pde & PRESENT) === 0n) return undefined;
      if ((pde & PAGE_SIZE_BIT) !== 0n) return Number((pde & ADDR_MASK & ~0x1f_ffffn) | (linear & 0x1f_ffffn));
      const pte = mem.readU64(Number((pde & ADDR_MASK) + ((linear >> 12n) & 0x1ffn) * 8n));
      return (pte & PRESENT) === 0n ? undefined : Number((pte & ADDR_MASK) | (linear & 0xfffn));
    }
    const pde = BigInt(mem.readU32(Number((cr3 & 0xffff_f000n) + ((linear >> 22n) & 0x3ffn) * 4n)));
    if ((pde & PRESENT) === 0n) return undefined;
    if ((pde & PAGE_SIZE_BIT) !== 0n && (cr4 & 0x10n) !== 0n) return Number((pde & 0xffc0_0000n) | (linear & 0x3f_ffffn));
    const pte = BigInt(mem.readU32(Number((pde & 0xffff_f000n) + ((linear >> 12n) & 0x3ffn) * 4n)));
    return (pte & PRESENT) === 0n ? undefined : Number((pte & 0xffff_f000n) | (linear & 0xfffn));
  } catch {
    return undefined;
  }
}
