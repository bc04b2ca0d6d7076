/**
 * Virtio over PCI, modern only (virtio 1.2 §4.1): a PCI function whose 64-bit memory BAR 0 holds the
 * common configuration, the ISR status, the device configuration, the notification area and the
 * MSI-X table and PBA, each announced by a capability. The register side (VirtioPciBar) is built on
 * every vCPU thread over shared memory. Queue notifications are KVM ioeventfds on the notify area, so
 * they cost no userspace exit; the device model runs on the main thread (pci-device.ts).
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';
import { PciConfigSpace, PCI_CAP_ID_MSIX, PCI_CAP_ID_VNDR, PCI_COMMAND, PCI_COMMAND_MASTER } from '../pci/config-space.js';
import { CommonConfig } from './common-config.js';
import { SplitQueue } from './queue.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { native } from '../../native/binding.js';
import { COMMON_CFG, VIRTIO_F, VIRTIO_PCI_DEVICE_BASE, VIRTIO_PCI_VENDOR, bit } from './constants.js';

/** BAR 0 layout. */
export const BAR0 = {
  SIZE: 0x8000,
  COMMON: 0x0000,
  ISR: 0x1000,
  DEVICE: 0x2000,
  NOTIFY: 0x3000,
  MSIX_TABLE: 0x4000,
  MSIX_PBA: 0x5000,
} as const;
/** Each queue notifies at NOTIFY + index * NOTIFY_MULTIPLIER. */
export const NOTIFY_MULTIPLIER = 4;
const VIRTIO_PCI_CAP = { COMMON: 1, NOTIFY: 2, ISR: 3, DEVICE: 4 } as const;
const MSIX_ENTRY = 16;
const MSIX_CTRL_ENABLE = 0x8000;
const MSIX_CTRL_MASKALL = 0x4000;

/** Transport state shared by all threads: word 0 ISR; from byte 64 the MSI-X table, then the PBA. */
const ISR_WORD = 0;
const MSIX_TABLE_BYTE = 64;

export interface VirtioPciLayout {
  readonly deviceId: number; // virtio device id (VIRTIO_ID)
  readonly numQueues: number;
  readonly msixVectors: number;
  readonly deviceConfigSize: number;
  /** Guest-physical address the VMM assigns to BAR 0 (the guest may move it). */
  readonly bar0: number;
}

/** The PCI function: ids, BAR 0 and the virtio and MSI-X capabilities. */
export function virtioPciConfig(l: VirtioPciLayout): { config: PciConfigSpace; msixCap: number } {
  const c = PciConfigSpace.create({
    vendorId: VIRTIO_PCI_VENDOR,
    deviceId: VIRTIO_PCI_DEVICE_BASE + l.deviceId,
    revision: 1, // modern device (virtio 1.2 §4.1.2.1)
    classCode: 0xff_00_00,
    subsystemVendorId: VIRTIO_PCI_VENDOR,
    subsystemId: 0x40,
    interruptPin: 0,
    bars: [{ kind: 'mem64', size: BAR0.SIZE }],
  });
  const vcap = (type: number, offset: number, length: number, extra: number[] = []) => {
    const len = 16 + extra.length;
    const le32 = (x: number) => [x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, (x >>> 24) & 0xff];
    c.addCapability(PCI_CAP_ID_VNDR, [len, type, 0 /* bar */, 0, 0, 0, ...le32(offset), ...le32(length), ...extra]);
  };
  vcap(VIRTIO_PCI_CAP.COMMON, BAR0.COMMON, COMMON_CFG.SIZE);
  vcap(VIRTIO_PCI_CAP.ISR, BAR0.ISR, 1);
  if (l.deviceConfigSize > 0) vcap(VIRTIO_PCI_CAP.DEVICE, BAR0.DEVICE, l.deviceConfigSize);
  vcap(VIRTIO_PCI_CAP.NOTIFY, BAR0.NOTIFY, NOTIFY_MULTIPLIER * l.numQueues, [NOTIFY_MULTIPLIER, 0, 0, 0]);
  const msixCap = c.addCapability(PCI_CAP_ID_MSIX, [(l.msixVectors - 1) & 0xff, ((l.msixVectors - 1) >> 8) & 0x07, BAR0.MSIX_TABLE & 0xff, (BAR0.MSIX_TABLE >> 8) & 0xff, 0, 0, BAR0.MSIX_PBA & 0xff, (BAR0.MSIX_PBA >> 8) & 0xff, 0, 0]);
  c.setMask(msixCap + 2, 2, MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
  // The VMM places BAR 0, as firmware would; the guest may move it (the BAR stays writable).
  c.view.setUint32(0x10, (l.bar0 >>> 0) | 0x4, true);
  c.view.setUint32(0x14, Math.floor(l.bar0 / 0x1_0000_0000), true);
  return { config: c, msixCap };
}

/** Shared transport state: ISR and the MSI-X table and PBA. */
export function transportState(msixVectors: number): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(MSIX_TABLE_BYTE + MSIX_ENTRY * msixVectors + 8 * Math.ceil(msixVectors / 64));
  const v = new DataView(sab);
  for (let i = 0; i < msixVectors; i++) v.setUint32(MSIX_TABLE_BYTE + i * MSIX_ENTRY + 12, 1, true); // vectors start masked
  return sab;
}

/** What a vCPU thread needs to serve a virtio PCI function's registers (plain data: crosses to workers). */
export interface VirtioPciFunctionSpec {
  readonly kind: string;
  readonly config: SharedArrayBuffer;
  readonly common: SharedArrayBuffer;
  readonly transport: SharedArrayBuffer;
  /** The device-specific configuration space, written by the model on the main thread. */
  readonly deviceConfig: SharedArrayBuffer;
  readonly deviceConfigSize: number;
  readonly deviceConfigWritable: boolean;
  /** One eventfd per queue: KVM signals it through an ioeventfd, or the vCPU thread on an MMIO exit. */
  readonly notifyFds: readonly number[];
  /** Signalled when the driver sets DRIVER_OK or resets the device, so the main thread reconciles. */
  readonly controlFd: number;
  readonly msixVectors: number;
  readonly barSize: number;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
}

/**
 * BAR 0 of a virtio PCI function as this vCPU thread serves it. Queues are validated as the driver
 * enables them (a bad ring sets NEEDS_RESET at once); DRIVER_OK and resets signal the main thread,
 * which runs the device model (pci-device.ts).
 */
export function virtioPciBar(spec: VirtioPciFunctionSpec, mem: GuestMemory, log: (msg: string) => void): VirtioPciBar {
  const n = native();
  const signal = (fd: number) => n.eventfdWrite(fd, 1);
  const common = new CommonConfig(
    {
      features: spec.features,
      queueMaxSizes: spec.queueMaxSizes,
      onQueueEnable: (_i, q, negotiated) => {
        try {
          new SplitQueue(mem, { size: q.size, descAddr: Number(q.desc), availAddr: Number(q.driver), usedAddr: Number(q.device) }, { indirect: false, eventIdx: (negotiated & bit(VIRTIO_F.RING_EVENT_IDX)) !== 0n });
          return undefined;
        } catch (e) {
          return (e as Error).message;
        }
      },
      onReset: () => signal(spec.controlFd),
      onDriverOk: () => signal(spec.controlFd),
      log,
      msixVectors: spec.msixVectors,
    },
    spec.common,
  );
  return new VirtioPciBar(`virtio-${spec.kind}`, common, spec, signal);
}

/** BAR 0 as a bus device, on one vCPU thread. */
export class VirtioPciBar implements BusDevice {
  readonly debugLabel: string;
  readonly #state: Int32Array;
  readonly #table: DataView;
  readonly #devcfg: DataView;

  constructor(
    label: string,
    private readonly common: CommonConfig,
    private readonly spec: VirtioPciFunctionSpec,
    private readonly signal: (fd: number) => void,
  ) {
    this.debugLabel = label;
    this.#state = new Int32Array(spec.transport);
    this.#table = new DataView(spec.transport, MSIX_TABLE_BYTE);
    this.#devcfg = new DataView(spec.deviceConfig);
  }

  read(offset: number, size: AccessSize): number {
    if (offset < BAR0.ISR) return this.common.read(offset - BAR0.COMMON, size);
    if (offset === BAR0.ISR) return size === 1 ? Atomics.exchange(this.#state, ISR_WORD, 0) & 0xff : allOnes(size); // reading acknowledges
    if (offset >= BAR0.DEVICE && offset < BAR0.NOTIFY) return this.#readDeviceConfig(offset - BAR0.DEVICE, size);
    if (offset >= BAR0.MSIX_TABLE && offset < BAR0.MSIX_TABLE + MSIX_ENTRY * this.spec.msixVectors) {
      return size === 4 && offset % 4 === 0 ? this.#table.getUint32(offset - BAR0.MSIX_TABLE, true) : allOnes(size);
    }
    if (offset >= BAR0.MSIX_PBA && offset < BAR0.MSIX_PBA + 8) return 0; // nothing pending: masked vectors drop, not latch
    return allOnes(size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset < BAR0.ISR) {
      this.common.write(offset - BAR0.COMMON, size, value);
      return;
    }
    if (offset >= BAR0.NOTIFY && offset < BAR0.NOTIFY + NOTIFY_MULTIPLIER * this.common.numQueues) {
      // Reaches here only when KVM's ioeventfd did not take the write (none registered, or the BAR moved).
      this.signal(this.spec.notifyFds[Math.floor((offset - BAR0.NOTIFY) / NOTIFY_MULTIPLIER)]!);
      return;
    }
    if (offset >= BAR0.DEVICE && offset < BAR0.NOTIFY) {
      const at = offset - BAR0.DEVICE;
      if (this.spec.deviceConfigWritable && at + size <= this.spec.deviceConfigSize) writeLe(this.#devcfg, at, size, value);
      return;
    }
    if (offset >= BAR0.MSIX_TABLE && offset < BAR0.MSIX_TABLE + MSIX_ENTRY * this.spec.msixVectors && size === 4 && offset % 4 === 0) {
      this.#table.setUint32(offset - BAR0.MSIX_TABLE, value >>> 0, true);
    }
  }

  #readDeviceConfig(at: number, size: AccessSize): number {
    if (at + size > this.spec.deviceConfigSize) return allOnes(size);
    return readLe(this.#devcfg, at, size);
  }
}

function readLe(v: DataView, at: number, size: AccessSize): number {
  switch (size) {
    case 1: return v.getUint8(at);
    case 2: return v.getUint16(at, true);
    default: return v.getUint32(at, true);
  }
}

function writeLe(v: DataView, at: number, size: AccessSize, value: number): void {
  switch (size) {
    case 1: v.setUint8(at, value & 0xff); break;
    case 2: v.setUint16(at, value & 0xffff, true); break;
    default: v.setUint32(at, value >>> 0, true);
  }
}

/** The interrupt side of the transport, for the engine: MSI-X messages through KVM. */
export class VirtioPciInterrupts {
  readonly #state: Int32Array;
  readonly #table: DataView;

  constructor(
    private readonly config: PciConfigSpace,
    private readonly msixCap: number,
    state: SharedArrayBuffer,
    private readonly msixVectors: number,
    private readonly deliver: (vector: number, addrLo: number, addrHi: number, data: number) => void,
  ) {
    this.#state = new Int32Array(state);
    this.#table = new DataView(state, MSIX_TABLE_BYTE);
  }

  /** Raises `vector` (ISR bit `isrBit` is set too, for drivers that read it). */
  raise(vector: number, isrBit: 1 | 2): boolean {
    Atomics.or(this.#state, ISR_WORD, isrBit);
    const ctrl = this.config.read(this.msixCap + 2, 2);
    if (!(ctrl & MSIX_CTRL_ENABLE) || ctrl & MSIX_CTRL_MASKALL || vector >= this.msixVectors) return false;
    if (!(this.config.read(PCI_COMMAND, 2) & PCI_COMMAND_MASTER)) return false; // MSI is a DMA write
    const e = vector * MSIX_ENTRY;
    if (this.#table.getUint32(e + 12, true) & 1) return false; // masked
    this.deliver(vector, this.#table.getUint32(e, true), this.#table.getUint32(e + 4, true), this.#table.getUint32(e + 8, true));
    return true;
  }
}
