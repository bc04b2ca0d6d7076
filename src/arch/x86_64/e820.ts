/**
 * The guest's physical memory map (E820 types), as given to Linux in boot_params or hvm_start_info.
 * Low RAM stops at the EBDA; 0xE0000–0xFFFFF (the BIOS area, where the ACPI RSDP and MP table live)
 * is reserved; RAM resumes at 1 MiB up to the MMIO hole and continues above 4 GiB.
 */
import { MMIO_HOLE_END, MMIO_HOLE_START } from './layout.js';

export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;

export interface E820Entry {
  readonly addr: number;
  readonly size: number;
  readonly type: number;
}

/** End of conventional low memory: the last KiB below 640 KiB is the EBDA (reserved). */
export const EBDA_START = 0x9fc00;
export const BIOS_AREA_START = 0xe0000;
export const HIGH_MEMORY_START = 0x10_0000;

export function e820Map(memBytes: number): E820Entry[] {
  const map: E820Entry[] = [
    { addr: 0, size: Math.min(EBDA_START, memBytes), type: E820_RAM },
    { addr: EBDA_START, size: 0xa0000 - EBDA_START, type: E820_RESERVED },
    { addr: BIOS_AREA_START, size: HIGH_MEMORY_START - BIOS_AREA_START, type: E820_RESERVED },
  ];
  const lowTop = Math.min(memBytes, MMIO_HOLE_START);
  if (lowTop > HIGH_MEMORY_START) map.push({ addr: HIGH_MEMORY_START, size: lowTop - HIGH_MEMORY_START, type: E820_RAM });
  if (memBytes > MMIO_HOLE_START) map.push({ addr: MMIO_HOLE_END, size: memBytes - MMIO_HOLE_START, type: E820_RAM });
  return map;
}
