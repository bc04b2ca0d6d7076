/** Placing the initrd: page-aligned, as high as the kernel allows, below the MMIO hole. */
import { VmmError, hex } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { MMIO_HOLE_START } from '../arch/x86_64/layout.js';

export interface Placed {
  readonly addr: number;
  readonly size: number;
}

/** Writes `initrd` at the highest page-aligned address below `maxEnd` and above `minAddr`. */
export function placeInitrd(mem: GuestMemory, initrd: Uint8Array, memBytes: number, minAddr: number, maxAddr: number, path: string): Placed {
  const top = Math.min(memBytes, MMIO_HOLE_START, maxAddr + 1);
  const addr = Math.floor((top - initrd.length) / 4096) * 4096;
  if (addr < minAddr) {
    throw new VmmError('BAD_CONFIG', `--initrd ${path}: ${initrd.length} bytes do not fit in guest RAM between the kernel (ends at ${hex(minAddr)}) and ${hex(top)} (raise --mem)`);
  }
  mem.write(addr, initrd);
  return { addr, size: initrd.length };
}
