/**
 * The virtio PCI common configuration structure (virtio 1.2 §4.1.4.3) as a state machine: feature
 * negotiation, device status and reset, and per-queue configuration. The driver may only configure
 * queues before DRIVER_OK; FEATURES_OK sticks only if the driver accepted a subset of what the device
 * offers, including VIRTIO_F_VERSION_1 (this is a modern-only device). A queue the driver enables is
 * checked at once (SplitQueue validates sizes, alignment and ranges); a bad one sets
 * DEVICE_NEEDS_RESET instead of being served. The registers live in shared memory (every vCPU
 * thread serves traps on them, and the main thread's engine reads the queue set-up).
 */
import type { AccessSize } from '../../bus/bus.js';
import { allOnes } from '../../bus/bus.js';
import { SharedState } from '../shared-state.js';
import { COMMON_CFG, VIRTIO_F, VIRTIO_MSI_NO_VECTOR, VIRTIO_STATUS, bit } from './constants.js';

export interface QueueState {
  size: number;
  maxSize: number;
  msixVector: number;
  enabled: boolean;
  desc: bigint;
  driver: bigint;
  device: bigint;
}

export interface CommonConfigDeps {
  /** Device features offered (VERSION_1 is added). */
  readonly features: bigint;
  /** Maximum size of each queue. */
  readonly queueMaxSizes: readonly number[];
  /** The driver enabled queue `index`: return an error message to refuse it (the device then needs a reset). */
  readonly onQueueEnable: (index: number, q: QueueState, negotiated: bigint) => string | undefined;
  /** The driver reset the device (status written 0). */
  readonly onReset: () => void;
  /** DRIVER_OK was set: the device may start using its queues. */
  readonly onDriverOk: (negotiated: bigint) => void;
  readonly log?: (msg: string) => void;
  /** Entries in the MSI-X table: a vector beyond it reads back as NO_VECTOR (§4.1.5.1.2). */
  readonly msixVectors?: number;
}

// Shared words: 0 lock; then the registers; then 8 words per queue.
// RESETTING: while a reset is finishing on the main thread, the status the driver reads back (the one
// before the reset; 0 once done). See #writeStatus.
const W = { DEV_SEL: 1, DRV_SEL: 2, DRV_LO: 3, DRV_HI: 4, STATUS: 5, GEN: 6, QSEL: 7, CFG_VEC: 8, EPOCH: 9, RESETTING: 10, QUEUES: 16 } as const;
const QW = { SIZE: 0, MAX: 1, VEC: 2, ENABLED: 3, DESC: 4, DRIVER: 6, DEVICE: 8, STRIDE: 10 } as const;

/** needsReset lines logged per device (per thread that serves its registers); later ones only set the bit. */
export const NEEDS_RESET_LOGGED = 8;

export class CommonConfig {
  readonly offered: bigint;
  readonly s: SharedState;
  readonly #w: Int32Array;
  #needsResetLogged = 0;
  readonly numQueues: number;

  /** A new register file, or another thread's view of an existing one (same buffer). */
  constructor(private readonly deps: CommonConfigDeps, buffer?: SharedArrayBuffer) {
    this.offered = deps.features | bit(VIRTIO_F.VERSION_1);
    this.numQueues = deps.queueMaxSizes.length;
    this.s = buffer ? new SharedState(buffer) : SharedState.create(4 * (W.QUEUES + QW.STRIDE * this.numQueues));
    this.#w = this.s.words;
    if (!buffer) {
      deps.queueMaxSizes.forEach((max, i) => (this.#w[W.QUEUES + QW.STRIDE * i + QW.MAX] = max));
      this.#resetRegisters();
    }
  }

  get buffer(): SharedArrayBuffer {
    return this.s.buffer;
  }

  get status(): number {
    return Atomics.load(this.#w, W.STATUS);
  }

  /** Bumped at every device reset: a queue set up again at the same addresses is still a new queue. */
  get generation(): number {
    return Atomics.load(this.#w, W.GEN);
  }

  /** Counts device resets (32 bits, unlike the 8-bit generation): the engine compares it to notice one. */
  get epoch(): number {
    return Atomics.load(this.#w, W.EPOCH);
  }

  /** The device changed its configuration space: drivers re-read it when the generation moves (§4.1.4.3.1). */
  bumpConfigGeneration(): void {
    this.s.locked(() => (this.#w[W.GEN] = (this.#w[W.GEN]! + 1) & 0xff));
  }

  get configMsixVector(): number {
    return this.#w[W.CFG_VEC]!;
  }

  /** Features both sides agreed on (valid once FEATURES_OK is set). */
  get negotiated(): bigint {
    return this.#driverFeatures() & this.offered;
  }

  /** The set-up of queue `i` as the driver left it. */
  queue(i: number): QueueState {
    const b = W.QUEUES + QW.STRIDE * i;
    const w = this.#w;
    const u64 = (at: number) => (BigInt(w[at + 1]! >>> 0) << 32n) | BigInt(w[at]! >>> 0);
    return { size: w[b + QW.SIZE]!, maxSize: w[b + QW.MAX]!, msixVector: w[b + QW.VEC]!, enabled: w[b + QW.ENABLED] !== 0, desc: u64(b + QW.DESC), driver: u64(b + QW.DRIVER), device: u64(b + QW.DEVICE) };
  }

  /**
   * The model has stopped and no host I/O it started can touch guest memory any more: the reset with
   * this epoch is done, and the driver reads status 0. A later reset (newer epoch) is left pending.
   */
  completeReset(epoch: number): void {
    this.s.locked(() => {
      if (this.#w[W.EPOCH] === epoch) this.#w[W.RESETTING] = 0;
    });
  }

  /** Marks the device broken (virtio §2.1.2): the driver must reset it. */
  needsReset(why: string): void {
    // Logged once until the driver resets the device (a guest repeating the same mistake, a
    // queue_enable write per loop, must not write a log line each time), and NEEDS_RESET_LOGGED
    // times in all: nor may a guest that resets and breaks the device in a loop.
    const before = Atomics.or(this.#w, W.STATUS, VIRTIO_STATUS.DEVICE_NEEDS_RESET);
    if (before & VIRTIO_STATUS.DEVICE_NEEDS_RESET || this.#needsResetLogged >= NEEDS_RESET_LOGGED) return;
    const more = ++this.#needsResetLogged === NEEDS_RESET_LOGGED ? ' (further ones of this device are not logged)' : '';
    this.deps.log?.(`virtio: device needs reset: ${why}${more}`);
  }

  /** A vector the driver asks for, or NO_VECTOR if the table has no such entry (the driver reads it back). */
  #vector(value: number): number {
    const v = value & 0xffff;
    return this.deps.msixVectors === undefined || v < this.deps.msixVectors ? v : VIRTIO_MSI_NO_VECTOR;
  }

  #driverFeatures(): bigint {
    return (BigInt(this.#w[W.DRV_HI]! >>> 0) << 32n) | BigInt(this.#w[W.DRV_LO]! >>> 0);
  }

  #resetRegisters(): void {
    const w = this.#w;
    for (const k of [W.DEV_SEL, W.DRV_SEL, W.DRV_LO, W.DRV_HI, W.STATUS, W.QSEL]) w[k] = 0;
    w[W.CFG_VEC] = VIRTIO_MSI_NO_VECTOR;
    for (let i = 0; i < this.numQueues; i++) {
      const b = W.QUEUES + QW.STRIDE * i;
      w[b + QW.SIZE] = w[b + QW.MAX]!;
      w[b + QW.VEC] = VIRTIO_MSI_NO_VECTOR;
      for (let k = QW.ENABLED; k < QW.STRIDE; k++) w[b + k] = 0;
    }
  }

  /** Base word of the selected queue, or -1 when the driver selected a queue that does not exist. */
  #q(): number {
    const sel = this.#w[W.QSEL]!;
    return sel < this.numQueues ? W.QUEUES + QW.STRIDE * sel : -1;
  }

  read(offset: number, size: AccessSize): number {
    return this.s.locked(() => this.#read(offset, size));
  }

  write(offset: number, size: AccessSize, value: number): void {
    const after = this.s.locked(() => this.#write(offset, size, value));
    after?.();
  }

  #read(offset: number, size: AccessSize): number {
    const w = this.#w;
    const q = this.#q();
    const C = COMMON_CFG;
    const word = (v: number, bytes: number) => (size === bytes ? v >>> 0 : allOnes(size));
    const half64 = (at: number, off: number) => (q < 0 ? 0 : w[q + at + off / 4]!);
    switch (offset) {
      case C.device_feature_select: return word(w[W.DEV_SEL]!, 4);
      case C.device_feature: return word(w[W.DEV_SEL]! >>> 0 < 2 ? Number((this.offered >> BigInt(32 * w[W.DEV_SEL]!)) & 0xffff_ffffn) : 0, 4);
      case C.driver_feature_select: return word(w[W.DRV_SEL]!, 4);
      case C.driver_feature: return word(w[W.DRV_SEL] === 0 ? w[W.DRV_LO]! : w[W.DRV_SEL] === 1 ? w[W.DRV_HI]! : 0, 4);
      case C.config_msix_vector: return word(w[W.CFG_VEC]!, 2);
      case C.num_queues: return word(this.numQueues, 2);
      case C.device_status: return word(w[W.RESETTING]! || w[W.STATUS]!, 1);
      case C.config_generation: return word(w[W.GEN]!, 1);
      case C.queue_select: return word(w[W.QSEL]!, 2);
      case C.queue_size: return word(q < 0 ? 0 : w[q + QW.SIZE]!, 2); // 0: no such queue
      case C.queue_msix_vector: return word(q < 0 ? VIRTIO_MSI_NO_VECTOR : w[q + QW.VEC]!, 2);
      case C.queue_enable: return word(q < 0 ? 0 : w[q + QW.ENABLED]!, 2);
      case C.queue_notify_off: return word(q < 0 ? 0 : w[W.QSEL]!, 2);
      case C.queue_desc: case C.queue_desc + 4: return word(half64(QW.DESC, offset - C.queue_desc), 4);
      case C.queue_driver: case C.queue_driver + 4: return word(half64(QW.DRIVER, offset - C.queue_driver), 4);
      case C.queue_device: case C.queue_device + 4: return word(half64(QW.DEVICE, offset - C.queue_device), 4);
      default: return allOnes(size);
    }
  }

  /** Applies a register write under the lock; returns a callback to run once the lock is released. */
  #write(offset: number, size: AccessSize, value: number): (() => void) | undefined {
    const C = COMMON_CFG;
    const w = this.#w;
    const q = this.#q();
    const live = (w[W.STATUS]! & VIRTIO_STATUS.DRIVER_OK) !== 0;
    const is = (bytes: number) => size === bytes;
    const setHalf = (at: number, off: number) => {
      if (is(4) && q >= 0 && !w[q + QW.ENABLED]) w[q + at + off / 4] = value | 0;
    };
    switch (offset) {
      case C.device_feature_select: if (is(4)) w[W.DEV_SEL] = value | 0; return undefined;
      case C.driver_feature_select: if (is(4)) w[W.DRV_SEL] = value | 0; return undefined;
      case C.driver_feature:
        // Frozen once FEATURES_OK is set; only the two defined halves exist.
        if (is(4) && !(w[W.STATUS]! & VIRTIO_STATUS.FEATURES_OK) && (w[W.DRV_SEL] === 0 || w[W.DRV_SEL] === 1)) w[w[W.DRV_SEL] === 0 ? W.DRV_LO : W.DRV_HI] = value | 0;
        return undefined;
      case C.config_msix_vector: if (is(2)) w[W.CFG_VEC] = this.#vector(value); return undefined;
      case C.device_status: return is(1) ? this.#writeStatus(value & 0xff) : undefined;
      case C.queue_select: if (is(2)) w[W.QSEL] = value & 0xffff; return undefined;
      case C.queue_size:
        // A power of two up to the maximum; anything else is ignored (the queue keeps its size).
        if (is(2) && q >= 0 && !live && !w[q + QW.ENABLED] && value > 0 && value <= w[q + QW.MAX]! && (value & (value - 1)) === 0) w[q + QW.SIZE] = value;
        return undefined;
      case C.queue_msix_vector: if (is(2) && q >= 0) w[q + QW.VEC] = this.#vector(value); return undefined;
      case C.queue_enable: {
        if (!is(2) || q < 0 || w[q + QW.ENABLED] || value !== 1 || live) return undefined;
        const index = w[W.QSEL]!;
        const err = this.deps.onQueueEnable(index, this.queue(index), this.negotiated);
        if (err) this.needsReset(`queue ${index}: ${err}`);
        else w[q + QW.ENABLED] = 1;
        return undefined;
      }
      case C.queue_desc: case C.queue_desc + 4: setHalf(QW.DESC, offset - C.queue_desc); return undefined;
      case C.queue_driver: case C.queue_driver + 4: setHalf(QW.DRIVER, offset - C.queue_driver); return undefined;
      case C.queue_device: case C.queue_device + 4: setHalf(QW.DEVICE, offset - C.queue_device); return undefined;
      default: return undefined; // read-only or reserved
    }
  }

  #writeStatus(v: number): (() => void) | undefined {
    const w = this.#w;
    if (v === 0) {
      // A device that was live may still have host I/O in flight into guest buffers (a disk read):
      // the driver polls status until it reads 0 (§4.1.4.3.2), so it keeps reading the old status
      // until the main thread has stopped the model and seen it idle (completeReset).
      const old = w[W.STATUS]!;
      if (old & VIRTIO_STATUS.DRIVER_OK) w[W.RESETTING] = old;
      this.#resetRegisters();
      w[W.GEN] = (w[W.GEN]! + 1) & 0xff;
      w[W.EPOCH] = (w[W.EPOCH]! + 1) | 0;
      return () => this.deps.onReset();
    }
    const S = VIRTIO_STATUS;
    const old = w[W.STATUS]!;
    const added = v & ~old;
    if (added & S.FEATURES_OK) {
      const accepted = this.#driverFeatures();
      // FEATURES_OK sticks only for a subset of the offer that includes VERSION_1 (§3.1.1 step 6).
      if ((accepted & ~this.offered) !== 0n || (accepted & bit(VIRTIO_F.VERSION_1)) === 0n) v &= ~S.FEATURES_OK;
    }
    if (added & S.DRIVER_OK && !(v & S.FEATURES_OK)) v &= ~S.DRIVER_OK;
    w[W.STATUS] = (old & S.DEVICE_NEEDS_RESET) | v;
    if (added & S.DRIVER_OK && v & S.DRIVER_OK) {
      const negotiated = this.negotiated;
      return () => this.deps.onDriverOk(negotiated);
    }
    return undefined;
  }
}
