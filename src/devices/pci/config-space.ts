/**
 * A PCI function's 256-byte configuration space (PCI Local Bus 3.0, type 0 header) with a
 * per-byte writable mask, so a guest can change only what the hardware lets it (command bits, BAR
 * addresses, interrupt line). BAR sizing follows the spec: a BAR's low address bits are read-only
 * zeros, so writing all ones reads back the size mask. The bytes live in shared memory, so every
 * vCPU thread sees the same configuration.
 */
import { allOnes, type AccessSize } from '../../bus/bus.js';

export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;

export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
export const PCI_STATUS_CAP_LIST = 0x10;

export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8;

export const CONFIG_SPACE_SIZE = 256;

export const PCI_CAP_ID_MSIX = 0x11;
export const PCI_CAP_ID_VNDR = 0x09;
/** Lengths of the capabilities this file lays out (vendor capabilities carry their own length). */
const CAP_SIZES: Record<number, number> = { [PCI_CAP_ID_MSIX]: 12 };

export interface BarSpec {
  readonly kind: 'mem32' | 'mem64' | 'io';
  /** Power of two: at least 16 for memory, 4 for I/O. */
  readonly size: number;
  readonly prefetchable?: boolean;
}

export interface PciFunctionSpec {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly classCode: number; // base class << 16 | subclass << 8 | prog-if
  readonly revision?: number;
  readonly subsystemVendorId?: number;
  readonly subsystemId?: number;
  readonly interruptPin?: number; // 0 none, 1 INTA#...
  readonly bars?: readonly (BarSpec | undefined)[];
}

export class PciConfigSpace {
  /** [0, 256): configuration bytes; [256, 512): writable mask. */
  readonly bytes: Uint8Array;
  readonly view: DataView;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.bytes = new Uint8Array(buffer);
    this.view = new DataView(buffer);
  }

  static create(spec: PciFunctionSpec): PciConfigSpace {
    const c = new PciConfigSpace(new SharedArrayBuffer(2 * CONFIG_SPACE_SIZE));
    const v = c.view;
    v.setUint16(PCI_VENDOR_ID, spec.vendorId, true);
    v.setUint16(PCI_DEVICE_ID, spec.deviceId, true);
    v.setUint8(PCI_REVISION_ID, spec.revision ?? 0);
    v.setUint8(PCI_CLASS_PROG, spec.classCode & 0xff);
    v.setUint16(PCI_CLASS_DEVICE, (spec.classCode >> 8) & 0xffff, true);
    v.setUint16(PCI_SUBSYSTEM_VENDOR_ID, spec.subsystemVendorId ?? 0, true);
    v.setUint16(PCI_SUBSYSTEM_ID, spec.subsystemId ?? 0, true);
    v.setUint8(PCI_INTERRUPT_PIN, spec.interruptPin ?? 0);
    c.setMask(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
    c.setMask(PCI_INTERRUPT_LINE, 1, 0xff);
    (spec.bars ?? []).forEach((bar, i) => {
      if (!bar) return;
      const off = PCI_BASE_ADDRESS_0 + 4 * i;
      if (bar.size < (bar.kind === 'io' ? 4 : 16) || (bar.size & (bar.size - 1)) !== 0) throw new Error(`BAR ${i}: size ${bar.size} is not a power of two`);
      if (bar.kind === 'io') {
        v.setUint32(off, PCI_BASE_ADDRESS_SPACE_IO, true);
        c.setMask(off, 4, ~(bar.size - 1) & 0xffff_fffc);
      } else {
        v.setUint32(off, (bar.kind === 'mem64' ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | (bar.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0), true);
        c.setMask(off, 4, Number(BigInt.asUintN(32, ~BigInt(bar.size - 1))) & 0xffff_fff0);
        if (bar.kind === 'mem64') c.setMask(off + 4, 4, 0xffff_ffff);
      }
    });
    return c;
  }

  /**
   * Appends a capability (id, then `body` after the two header bytes) to the capability list and
   * returns its offset. Capabilities are laid out from 0x40 upwards, in the order added.
   */
  addCapability(id: number, body: readonly number[]): number {
    const v = this.view;
    let at = 0x40;
    let last = 0;
    for (let p = v.getUint8(PCI_CAPABILITY_LIST); p !== 0; p = v.getUint8(p + 1)) {
      last = p;
      at = p + (v.getUint8(p) === 0x09 ? v.getUint8(p + 2) : CAP_SIZES[v.getUint8(p)] ?? 16);
    }
    at = (at + 3) & ~3;
    if (at + 2 + body.length > CONFIG_SPACE_SIZE) throw new Error('PCI capability list is full');
    v.setUint8(at, id);
    v.setUint8(at + 1, 0);
    body.forEach((b, i) => v.setUint8(at + 2 + i, b & 0xff));
    if (last === 0) v.setUint8(PCI_CAPABILITY_LIST, at);
    else v.setUint8(last + 1, at);
    v.setUint16(PCI_STATUS, v.getUint16(PCI_STATUS, true) | PCI_STATUS_CAP_LIST, true);
    return at;
  }

  /** Makes `size` bytes at `offset` writable by the guest where `mask` has ones. */
  setMask(offset: number, size: number, mask: number): void {
    for (let i = 0; i < size; i++) this.bytes[CONFIG_SPACE_SIZE + offset + i] = (mask >>> (8 * i)) & 0xff;
  }

  read(offset: number, size: AccessSize): number {
    if (offset < 0 || offset + size > CONFIG_SPACE_SIZE) return allOnes(size);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = (v << 8) | this.bytes[offset + i]!;
    return v >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset < 0 || offset + size > CONFIG_SPACE_SIZE) return;
    for (let i = 0; i < size; i++) {
      const mask = this.bytes[CONFIG_SPACE_SIZE + offset + i]!;
      const b = (value >>> (8 * i)) & 0xff;
      this.bytes[offset + i] = (this.bytes[offset + i]! & ~mask) | (b & mask);
    }
  }

  /** The guest-programmed address of BAR `i` (both halves for a 64-bit BAR), flags cleared. */
  barAddress(i: number): number {
    const off = PCI_BASE_ADDRESS_0 + 4 * i;
    const lo = this.view.getUint32(off, true);
    if (lo & PCI_BASE_ADDRESS_SPACE_IO) return lo & 0xffff_fffc;
    const hi = lo & PCI_BASE_ADDRESS_MEM_TYPE_64 ? this.view.getUint32(off + 4, true) : 0;
    return hi * 0x1_0000_0000 + ((lo & 0xffff_fff0) >>> 0);
  }
}
