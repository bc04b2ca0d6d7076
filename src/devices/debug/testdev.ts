/**
 * A scratch device for the project's test guests (enabled by --testdev, as QEMU's pc-testdev is by
 * -device): reads return what was last written at the same offset, little-endian, at any width, so
 * a guest can check every PIO and MMIO access width end to end. Ports 0xe0-0xe7 and 4 KiB of MMIO at
 * 0xd0000000. The bytes live in shared memory so that every vCPU thread sees the same scratch.
 */
import type { AccessSize, BusDevice } from '../../bus/bus.js';

export const TESTDEV_PIO_BASE = 0xe0;
export const TESTDEV_PIO_LEN = 8;
export const TESTDEV_MMIO_BASE = 0xd000_0000;
export const TESTDEV_MMIO_LEN = 0x1000;

export class ScratchDevice implements BusDevice {
  readonly view: DataView;
  readonly buffer: SharedArrayBuffer;

  constructor(readonly debugLabel: string, len: number, buffer?: SharedArrayBuffer) {
    this.buffer = buffer ?? new SharedArrayBuffer(len);
    this.view = new DataView(this.buffer);
  }

  read(offset: number, size: AccessSize): number {
    if (size === 1) return this.view.getUint8(offset);
    if (size === 2) return this.view.getUint16(offset, true);
    return this.view.getUint32(offset, true);
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size === 1) this.view.setUint8(offset, value);
    else if (size === 2) this.view.setUint16(offset, value, true);
    else this.view.setUint32(offset, value, true);
  }
}
