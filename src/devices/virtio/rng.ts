/**
 * virtio-rng (virtio 1.2 §5.4): one request queue whose buffers the device fills from the host's
 * CSPRNG. A chain with a device-readable buffer is a driver bug and is refused (VirtqError); the
 * transport then sets DEVICE_NEEDS_RESET.
 */
import { lazyCrypto } from '../../lazy-builtins.js';
import { VirtqError } from './queue.js';
import { VIRTIO_ID } from './constants.js';
import { onNextTurn, type VirtioDevice, type VirtioDeviceContext } from './device.js';

/** At most this many bytes per request, so one notification cannot keep the engine busy for long. */
export const RNG_MAX_REQUEST = 64 * 1024;
/** Requests served per event-loop turn. */
export const RNG_TURN_BUDGET = 64;

export class VirtioRng implements VirtioDevice {
  readonly kind = 'rng';
  readonly deviceId = VIRTIO_ID.RNG;
  readonly features = 0n;
  readonly queueMaxSizes = [256] as const;
  readonly configSize = 0;
  /** Bytes handed to the guest so far. */
  served = 0;
  #ctx: VirtioDeviceContext | undefined;
  #continuation: NodeJS.Immediate | undefined;

  constructor(private readonly fill: (b: Uint8Array) => void = (b) => void lazyCrypto().randomFillSync(b)) {}

  activate(ctx: VirtioDeviceContext): void {
    this.#ctx = ctx;
  }

  reset(): void {
    this.#ctx = undefined;
    if (this.#continuation) clearImmediate(this.#continuation);
    this.#continuation = undefined;
  }

  /**
   * Serves up to RNG_TURN_BUDGET available requests (the rest on the next event-loop turn: a guest
   * refilling the ring as fast as we empty it must not hold the main thread); interrupts the driver
   * once if it asked to be told. Returns the chain count.
   */
  notify(_index: number): number {
    const ctx = this.#ctx;
    const q = ctx?.queue(0);
    if (!ctx || !q) return 0;
    const before = q.nextUsed;
    let chains = 0;
    for (let c = q.pop(); c; c = chains < RNG_TURN_BUDGET ? q.pop() : undefined) {
      if (c.readable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-rng request ${c.head} has a device-readable buffer`);
      let budget = RNG_MAX_REQUEST;
      let written = 0;
      for (const b of c.writable) {
        const n = Math.min(b.len, budget);
        if (n === 0) break;
        this.fill(ctx.mem.slice(b.addr, n, 'virtio-rng buffer'));
        written += n;
        budget -= n;
      }
      q.pushUsed(c.head, written);
      this.served += written;
      chains++;
    }
    if (chains > 0) ctx.usedAdded(0, before);
    if (chains === RNG_TURN_BUDGET) {
      this.#continuation ??= onNextTurn(ctx, () => {
        this.#continuation = undefined;
        this.notify(0);
      });
    }
    return chains;
  }
}
