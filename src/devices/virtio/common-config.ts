/**
 * The virtio PCI common configuration structure (virtio 1.2 §4.1.4.3) as a state machine: feature
 * negotiation, device status and reset, and per-queue configuration. The driver may only configure
 * queues before DRIVER_OK; FEATURES_OK sticks only if the driver accepted a subset of what the device
 * offers, including VIRTIO_F_VERSION_1 (this is a modern-only device). A queue the driver enables is
 * checked at once (SplitQueue validates sizes, alignment and ranges); a bad one sets
 * DEVICE_NEEDS_RESET instead of being served.
 */
import type { AccessSize } from '../../bus/bus.js';
import { allOnes } from '../../bus/bus.js';
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
}

export class CommonConfig {
  readonly offered: bigint;
  #deviceFeatureSelect = 0;
  #driverFeatureSelect = 0;
  #driverFeatures = 0n;
  #status = 0;
  #generation = 0;
  #queueSelect = 0;
  configMsixVector = VIRTIO_MSI_NO_VECTOR;
  readonly queues: QueueState[];

  constructor(private readonly deps: CommonConfigDeps) {
    this.offered = deps.features | bit(VIRTIO_F.VERSION_1);
    this.queues = deps.queueMaxSizes.map((max) => ({ size: max, maxSize: max, msixVector: VIRTIO_MSI_NO_VECTOR, enabled: false, desc: 0n, driver: 0n, device: 0n }));
  }

  get status(): number {
    return this.#status;
  }

  /** Features both sides agreed on (valid once FEATURES_OK is set). */
  get negotiated(): bigint {
    return this.#driverFeatures & this.offered;
  }

  /** Marks the device broken (virtio §2.1.2): the driver must reset it. */
  needsReset(why: string): void {
    this.deps.log?.(`virtio: device needs reset: ${why}`);
    this.#status |= VIRTIO_STATUS.DEVICE_NEEDS_RESET;
  }

  #reset(): void {
    this.#status = 0;
    this.#driverFeatures = 0n;
    this.#deviceFeatureSelect = this.#driverFeatureSelect = this.#queueSelect = 0;
    this.configMsixVector = VIRTIO_MSI_NO_VECTOR;
    for (const q of this.queues) Object.assign(q, { size: q.maxSize, msixVector: VIRTIO_MSI_NO_VECTOR, enabled: false, desc: 0n, driver: 0n, device: 0n });
    this.#generation = (this.#generation + 1) & 0xff;
    this.deps.onReset();
  }

  #queue(): QueueState | undefined {
    return this.queues[this.#queueSelect];
  }

  read(offset: number, size: AccessSize): number {
    const q = this.#queue();
    const C = COMMON_CFG;
    const word = (v: number, bytes: number) => (size === bytes ? v : allOnes(size));
    switch (offset) {
      case C.device_feature_select: return word(this.#deviceFeatureSelect, 4);
      case C.device_feature: return word(this.#deviceFeatureSelect < 2 ? Number((this.offered >> BigInt(32 * this.#deviceFeatureSelect)) & 0xffff_ffffn) : 0, 4);
      case C.driver_feature_select: return word(this.#driverFeatureSelect, 4);
      case C.driver_feature: return word(this.#driverFeatureSelect < 2 ? Number((this.#driverFeatures >> BigInt(32 * this.#driverFeatureSelect)) & 0xffff_ffffn) : 0, 4);
      case C.config_msix_vector: return word(this.configMsixVector, 2);
      case C.num_queues: return word(this.queues.length, 2);
      case C.device_status: return word(this.#status, 1);
      case C.config_generation: return word(this.#generation, 1);
      case C.queue_select: return word(this.#queueSelect, 2);
      case C.queue_size: return word(q ? q.size : 0, 2); // 0: no such queue
      case C.queue_msix_vector: return word(q ? q.msixVector : VIRTIO_MSI_NO_VECTOR, 2);
      case C.queue_enable: return word(q?.enabled ? 1 : 0, 2);
      case C.queue_notify_off: return word(q ? this.#queueSelect : 0, 2);
      case C.queue_desc: case C.queue_desc + 4: return word(q ? half(q.desc, offset - C.queue_desc) : 0, 4);
      case C.queue_driver: case C.queue_driver + 4: return word(q ? half(q.driver, offset - C.queue_driver) : 0, 4);
      case C.queue_device: case C.queue_device + 4: return word(q ? half(q.device, offset - C.queue_device) : 0, 4);
      default: return allOnes(size);
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    const C = COMMON_CFG;
    const q = this.#queue();
    const live = (this.#status & VIRTIO_STATUS.DRIVER_OK) !== 0;
    const is = (bytes: number) => size === bytes;
    switch (offset) {
      case C.device_feature_select: if (is(4)) this.#deviceFeatureSelect = value >>> 0; return;
      case C.driver_feature_select: if (is(4)) this.#driverFeatureSelect = value >>> 0; return;
      case C.driver_feature:
        if (!is(4) || this.#status & VIRTIO_STATUS.FEATURES_OK || this.#driverFeatureSelect > 1) return;
        {
          const shift = BigInt(32 * this.#driverFeatureSelect);
          this.#driverFeatures = (this.#driverFeatures & ~(0xffff_ffffn << shift)) | (BigInt(value >>> 0) << shift);
        }
        return;
      case C.config_msix_vector: if (is(2)) this.configMsixVector = value & 0xffff; return;
      case C.device_status: if (is(1)) this.#writeStatus(value & 0xff); return;
      case C.queue_select: if (is(2)) this.#queueSelect = value & 0xffff; return;
      case C.queue_size:
        // A power of two up to the maximum; anything else is ignored (the queue keeps its size).
        if (is(2) && q && !live && !q.enabled && value > 0 && value <= q.maxSize && (value & (value - 1)) === 0) q.size = value;
        return;
      case C.queue_msix_vector: if (is(2) && q) q.msixVector = value & 0xffff; return;
      case C.queue_enable:
        if (!is(2) || !q || q.enabled || value !== 1 || live) return;
        {
          const err = this.deps.onQueueEnable(this.#queueSelect, q, this.negotiated);
          if (err) this.needsReset(`queue ${this.#queueSelect}: ${err}`);
          else q.enabled = true;
        }
        return;
      case C.queue_desc: case C.queue_desc + 4: if (is(4) && q && !q.enabled) q.desc = setHalf(q.desc, offset - C.queue_desc, value); return;
      case C.queue_driver: case C.queue_driver + 4: if (is(4) && q && !q.enabled) q.driver = setHalf(q.driver, offset - C.queue_driver, value); return;
      case C.queue_device: case C.queue_device + 4: if (is(4) && q && !q.enabled) q.device = setHalf(q.device, offset - C.queue_device, value); return;
      default: return; // read-only or reserved
    }
  }

  #writeStatus(v: number): void {
    if (v === 0) {
      this.#reset();
      return;
    }
    const S = VIRTIO_STATUS;
    const added = v & ~this.#status;
    if (added & S.FEATURES_OK) {
      const accepted = this.#driverFeatures;
      // FEATURES_OK sticks only for a subset of the offer that includes VERSION_1 (§3.1.1 step 6).
      if ((accepted & ~this.offered) !== 0n || (accepted & bit(VIRTIO_F.VERSION_1)) === 0n) v &= ~S.FEATURES_OK;
    }
    if (added & S.DRIVER_OK && !(v & S.FEATURES_OK)) v &= ~S.DRIVER_OK;
    this.#status = (this.#status & S.DEVICE_NEEDS_RESET) | v;
    if (added & S.DRIVER_OK && v & S.DRIVER_OK) this.deps.onDriverOk(this.negotiated);
  }
}

const half = (v: bigint, off: number): number => Number((v >> BigInt(off * 8)) & 0xffff_ffffn);
const setHalf = (v: bigint, off: number, value: number): bigint => {
  const shift = BigInt(off * 8);
  return (v & ~(0xffff_ffffn << shift)) | (BigInt(value >>> 0) << shift);
};
