/**
 * PCI configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): a 32-bit address register at
 * 0xcf8 (bit 31 enable, bus, device, function, register) and the data window at 0xcfc-0xcff,
 * accessible at any width at the byte offset the access names. Bus 0 only; functions that do not
 * exist read all ones. The address register is shared by every vCPU thread, as on real hardware
 * (guests serialise cf8/cfc pairs themselves).
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';
import { PCI_COMMAND, PCI_COMMAND_MEMORY, type PciConfigSpace } from './config-space.js';

export const PCI_CONFIG_PORT = 0xcf8;
export const PCI_CONFIG_LEN = 8;
const ENABLE = 0x8000_0000;

/** The handler of one memory BAR: the guest decides where it sits, the device what is behind it. */
export interface BarRegion {
  readonly bar: number;
  readonly size: number;
  readonly dev: BusDevice;
}

export class PciBus {
  /** Slot (device number) → function 0's config space. */
  readonly #slots: (PciConfigSpace | undefined)[] = new Array(32);
  readonly #bars: { space: PciConfigSpace; region: BarRegion }[] = [];

  add(slot: number, fn: PciConfigSpace, bars: readonly BarRegion[] = []): void {
    if (!Number.isInteger(slot) || slot < 0 || slot > 31) throw new Error(`PCI slot ${slot} out of range`);
    if (this.#slots[slot]) throw new Error(`PCI slot ${slot} already in use`);
    this.#slots[slot] = fn;
    for (const region of bars) this.#bars.push({ space: fn, region });
  }

  /** The memory BAR that decodes [addr, addr+size), if its function has memory decoding on. */
  resolveMmio(addr: number, size: number): { dev: BusDevice; offset: number } | undefined {
    for (const { space, region } of this.#bars) {
      if (!(space.read(PCI_COMMAND, 2) & PCI_COMMAND_MEMORY)) continue;
      const base = space.barAddress(region.bar);
      if (base !== 0 && addr >= base && addr + size <= base + region.size) return { dev: region.dev, offset: addr - base };
    }
    return undefined;
  }

  /** Config space of 00:slot.fn, or undefined. */
  function(bus: number, slot: number, fn: number): PciConfigSpace | undefined {
    return bus === 0 && fn === 0 ? this.#slots[slot] : undefined;
  }
}

export class PciConfigIo implements BusDevice {
  readonly debugLabel = 'pci-config';
  readonly #address: Int32Array;

  /** `address` is the shared 4-byte address register (every thread passes the same buffer). */
  constructor(private readonly bus: PciBus, address: SharedArrayBuffer) {
    this.#address = new Int32Array(address);
  }

  read(offset: number, size: AccessSize): number {
    if (offset < 4) {
      // Only the full dword is the address register; byte accesses at 0xcf8-0xcfb are other chipset
      // registers (e.g. 0xcf9 reset control), absent here.
      return offset === 0 && size === 4 ? Atomics.load(this.#address, 0) >>> 0 : allOnes(size);
    }
    const fn = this.#target(offset);
    if (!fn) return allOnes(size);
    return fn.space.read(fn.reg, size);
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (offset < 4) {
      if (offset === 0 && size === 4) Atomics.store(this.#address, 0, value | 0);
      return;
    }
    const fn = this.#target(offset);
    if (fn) fn.space.write(fn.reg, size, value);
  }

  #target(offset: number): { space: PciConfigSpace; reg: number } | undefined {
    const a = Atomics.load(this.#address, 0) >>> 0;
    if (!(a & ENABLE)) return undefined;
    const space = this.bus.function((a >>> 16) & 0xff, (a >>> 11) & 0x1f, (a >>> 8) & 0x7);
    return space ? { space, reg: (a & 0xfc) + (offset - 4) } : undefined;
  }
}
