/**
 * virtio-rng (virtio 1.2 §5.4): one request queue whose buffers the device fills from the host's
 * CSPRNG. This is the device's engine, independent of the transport: the transport hands it a
 * validated SplitQueue and calls process() when the driver notifies. A chain with a device-readable
 * buffer is a driver bug and is refused (VirtqError); the transport then sets DEVICE_NEEDS_RESET.
 */
import { randomFillSync } from 'node:crypto';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { SplitQueue, VirtqError } from './queue.js';
import { VIRTIO_F, VIRTIO_ID, bit } from './constants.js';

/** At most this many bytes per request, so one notification cannot keep the engine busy for long. */
export const RNG_MAX_REQUEST = 64 * 1024;

export class VirtioRng {
  static readonly deviceId = VIRTIO_ID.RNG;
  static readonly features = bit(VIRTIO_F.RING_EVENT_IDX) | bit(VIRTIO_F.RING_INDIRECT_DESC);
  static readonly queueMaxSizes = [256] as const;

  /** Bytes handed to the guest so far. */
  served = 0;

  constructor(
    private readonly mem: GuestMemory,
    private readonly interrupt: () => void,
    private readonly fill: (b: Uint8Array) => void = (b) => void randomFillSync(b),
  ) {}

  /** Serves every available request on `q`; interrupts the driver once if it asked to be told. */
  process(q: SplitQueue): number {
    const before = q.nextUsed;
    let chains = 0;
    for (let c = q.pop(); c; c = q.pop()) {
      if (c.readable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-rng request ${c.head} has a device-readable buffer`);
      let budget = RNG_MAX_REQUEST;
      let written = 0;
      for (const b of c.writable) {
        const n = Math.min(b.len, budget);
        if (n === 0) break;
        this.fill(this.mem.slice(b.addr, n, 'virtio-rng buffer'));
        written += n;
        budget -= n;
      }
      q.pushUsed(c.head, written);
      this.served += written;
      chains++;
    }
    if (chains > 0 && q.needsInterrupt(before)) this.interrupt();
    return chains;
  }
}
