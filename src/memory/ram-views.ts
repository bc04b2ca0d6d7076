/**
 * Guest memory over the RAM mapping: one GuestRegion per stretch of the memory map, cut into chunks
 * of at most RAM_VIEW_CHUNK bytes, since an ArrayBuffer cannot span many GiB. (An access that
 * crosses a chunk boundary is refused like one that crosses a region; guest structures the VMM reads
 * are far smaller than a chunk and aligned.)
 */
import { RAM_VIEW_CHUNK, type GuestRam } from '../kvm/kvm.js';
import { ramLayout } from '../arch/x86_64/layout.js';
import { GuestMemory, type GuestRegion } from './guest-memory.js';

export function guestMemoryOf(ram: GuestRam, memBytes: number): GuestMemory {
  const regions: GuestRegion[] = [];
  for (const r of ramLayout(memBytes)) {
    for (let at = 0; at < r.size; at += RAM_VIEW_CHUNK) {
      const size = Math.min(RAM_VIEW_CHUNK, r.size - at);
      regions.push({ gpa: r.gpa + at, size, bytes: ram.view(r.offset + at, size) });
    }
  }
  return new GuestMemory(regions);
}
