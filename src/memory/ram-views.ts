/**
 * Guest memory over the RAM mapping: one GuestRegion per stretch of the memory map, cut into chunks
 * of at most RAM_VIEW_CHUNK bytes, since an ArrayBuffer cannot span many GiB. Guest data buffers that
 * cross a chunk boundary are split there (GuestMemory.pieces, used by the virtqueues); a single
 * access that crosses one is refused like one that crosses a region: guest structures the VMM reads
 * whole (rings, descriptors, boot structures) are small and aligned.
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
