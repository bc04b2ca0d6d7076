/**
 * Flat images (kvmtool's convention, used by the test guests): the file is copied to 0x10000 and
 * entered in real mode at 1000:0000 with every data segment at 0x1000 and SP = 0x8000.
 */
import { VmmError, hex } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { FLAT_LOAD_ADDR, FLAT_SEGMENT, FLAT_SP } from '../arch/x86_64/layout.js';
import type { EntryState } from './entry.js';

export function loadFlat(mem: GuestMemory, image: Uint8Array, path: string): EntryState {
  if (!mem.contains(FLAT_LOAD_ADDR, image.length)) {
    throw new VmmError('BAD_KERNEL', `--kernel ${path}: flat image of ${image.length} bytes does not fit in guest RAM at ${hex(FLAT_LOAD_ADDR)} (raise --mem)`);
  }
  mem.write(FLAT_LOAD_ADDR, image);
  return { mode: 'real', segment: FLAT_SEGMENT, ip: 0, sp: FLAT_SP };
}
