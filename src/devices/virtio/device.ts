/**
 * What a virtio device model (blk, net, console, 9p, rng) implements, independent of the transport.
 * The transport (pci-device.ts) owns feature negotiation, status, reset, the queues' set-up and the
 * interrupts; it calls the model on the main thread when the driver is ready (activate), when the
 * driver notifies a queue (notify) and when the device is reset (reset). A model never touches KVM.
 *
 * Errors: a model throws VirtqError (or a GUEST_MEMORY VmmError) from notify() for a request that
 * breaks the rules; the transport then marks the device DEVICE_NEEDS_RESET and stops serving it.
 * Work that completes later (asynchronous file I/O) or that the host starts (console input, a
 * continuation on a later event-loop turn) reports such errors through ctx.fail() (isGuestFault).
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import { VirtqError, type SplitQueue } from './queue.js';

/** Whether `e` is the guest's fault (a broken request), not ours: such errors fail the device. */
export function isGuestFault(e: unknown): boolean {
  return e instanceof VirtqError || (e as { code?: string } | null)?.code === 'GUEST_MEMORY';
}

/**
 * Runs `fn` on the next event-loop turn if the activation `ctx` is still live: how a model finishes
 * work a per-turn budget cut short. A guest fault `fn` meets fails the device, as it would have in
 * notify(); anything else is our bug and is thrown.
 */
export function onNextTurn(ctx: VirtioDeviceContext, fn: () => void): NodeJS.Immediate {
  return setImmediate(() => {
    if (!ctx.live) return;
    try {
      fn();
    } catch (e) {
      if (!isGuestFault(e)) throw e;
      ctx.fail(e as Error);
    }
  });
}

export interface VirtioDeviceContext {
  readonly mem: GuestMemory;
  /** Features both sides agreed on (VIRTIO_F_VERSION_1 included). */
  readonly negotiated: bigint;
  /** Queue `index` as the driver set it up, already validated; undefined if the driver left it disabled. */
  queue(index: number): SplitQueue | undefined;
  /**
   * Call after adding used entries to queue `index`: interrupts the driver if it asked to hear of the
   * entries added since `usedBefore` (the queue's nextUsed before this batch).
   */
  usedAdded(index: number, usedBefore: number): void;
  /** Call after changing the device configuration space: bumps config_generation, config interrupt. */
  configChanged(): void;
  /** A request broke the rules: DEVICE_NEEDS_RESET, and the device stops serving until reset. */
  fail(error: Error): void;
  /** Whether this activation is still current (false after a reset): late completions check it. */
  readonly live: boolean;
  readonly log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void; debug(obj: object, msg: string): void };
}

export interface VirtioDevice {
  /** Short name for logs and labels ("blk", "net", ...). */
  readonly kind: string;
  /** Virtio device id (VIRTIO_ID). */
  readonly deviceId: number;
  /** Device feature bits offered (the transport adds VERSION_1, and may add EVENT_IDX/INDIRECT_DESC). */
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
  /** Size of the device-specific configuration space in bytes (0 for none). */
  readonly configSize: number;
  /**
   * Gives the model its configuration space (shared with the vCPU threads, which serve the driver's
   * reads from it). Called once, before anything else; the model fills it and keeps it to update.
   */
  bindConfig?(config: DataView): void;
  /**
   * A driver write to the configuration space (most devices' configs are read-only: leave undefined
   * and writes are ignored). Runs on a vCPU thread with only `config` to work on, so it may only
   * store the value.
   */
  readonly configWritable?: boolean;
  /** DRIVER_OK: the driver has set up its queues. The context stays valid until reset(). */
  activate(ctx: VirtioDeviceContext): void;
  /** The driver notified queue `index` (or the transport polls after activation). */
  notify(index: number): void;
  /** The device was reset (by the driver, or after NEEDS_RESET): forget the queues, drop in-flight work. */
  reset(): void;
  /**
   * For models whose host I/O writes guest memory asynchronously (blk's reads): resolves once none
   * started before reset() is still running. The driver's reset completes (status reads 0) only then.
   */
  idle?(): Promise<void>;
  /**
   * The guest has stopped for good (its vCPUs are gone; RAM is still mapped): take what it queued
   * for the host and has not been taken yet, even where backpressure was holding it. A guest that
   * prints and powers off at once must not lose its last output. Called once, before close().
   */
  finish?(): void;
  /** The VM is going away: release host resources (files, taps, sockets). */
  close?(): void | Promise<void>;
}
