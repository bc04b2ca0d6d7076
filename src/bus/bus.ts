/**
 * An address space (port I/O or MMIO) mapping disjoint ranges to devices. Devices see offsets from
 * their own base and values of 1, 2 or 4 bytes (8-byte MMIO is split into two 4-byte halves, low
 * first). Ranges are checked at insertion, so the exit path can assume a clean map.
 */
import { VmmError, hex } from '../errors.js';

export type AccessSize = 1 | 2 | 4;

export interface BusDevice {
  /** Short name for logs and overlap errors ("com1", "isa-debug-exit"). */
  readonly debugLabel: string;
  /** The value of `size` bytes at `offset` from the device base (little-endian). */
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

interface Entry {
  readonly base: number;
  readonly end: number; // exclusive
  readonly dev: BusDevice;
}

/** Called for an access no device claims (reads get all ones). */
export type UnclaimedHandler = (addr: number, size: number, isWrite: boolean, value: number) => void;

/**
 * Second chance for an address no fixed range claims: ranges that move at run time, such as PCI
 * BARs the guest programs (their addresses live in shared config space, so every thread agrees).
 */
export type DynamicResolver = (addr: number, size: number) => { dev: BusDevice; offset: number } | undefined;

const ONES = [0, 0xff, 0xffff, 0, 0xffffffff];

const PORT_PAGE_SIZE = 0x100;
const PORT_PAGES = 0x10000 / PORT_PAGE_SIZE;

/** All ones of an access width: what reads of nothing return (open bus). */
export const allOnes = (size: AccessSize): number => ONES[size]!;

export class Bus {
  readonly #entries: Entry[] = []; // sorted by base, disjoint
  /**
   * Port space only: port → index+1 into #entries (0: none), so a PIO exit costs two array loads.
   * In pages of 256 ports, made for the pages devices use (a dozen): one table of all 64 Ki ports
   * was a fresh 128 KiB per bus (setting up a bus of 11 devices under nested emulation: 318-565 µs,
   * against 251-283 µs in pages).
   */
  readonly #portPages: (Uint16Array | undefined)[] | undefined;
  onUnclaimed: UnclaimedHandler = () => {};
  dynamic: DynamicResolver | undefined;

  constructor(readonly space: 'pio' | 'mmio') {
    this.#portPages = space === 'pio' ? new Array<Uint16Array | undefined>(PORT_PAGES).fill(undefined) : undefined;
  }

  /** Registers `dev` at [base, base+len); rejects empty, out-of-space and overlapping ranges. */
  insert(dev: BusDevice, base: number, len: number): void {
    const limit = this.space === 'pio' ? 0x10000 : 2 ** 52;
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(len) || len <= 0 || base < 0 || base + len > limit) {
      throw new VmmError('BUS', `${this.space} bus: invalid range ${hex(base)}+${hex(len)} for ${dev.debugLabel}`);
    }
    const end = base + len;
    const clash = this.#entries.find((e) => base < e.end && e.base < end);
    if (clash) {
      throw new VmmError('BUS', `${this.space} bus: ${dev.debugLabel} at ${hex(base)}+${hex(len)} overlaps ${clash.dev.debugLabel} at ${hex(clash.base)}+${hex(clash.end - clash.base)}`);
    }
    const found = this.#entries.findIndex((e) => e.base > base);
    const at = found < 0 ? this.#entries.length : found;
    this.#entries.splice(at, 0, { base, end, dev });
    // The new range and those after it moved one place up; the ports of those before keep their
    // index (rebuilding all 64 Ki entries per device was most of a machine's bus set-up).
    if (this.#portPages) for (let i = at; i < this.#entries.length; i++) this.#indexPorts(this.#portPages, i);
  }

  /** Points the ports of #entries[i] at it. */
  #indexPorts(pages: (Uint16Array | undefined)[], i: number): void {
    const { base, end } = this.#entries[i]!;
    for (let page = base >>> 8; page <= (end - 1) >>> 8; page++) {
      const ports = (pages[page] ??= new Uint16Array(PORT_PAGE_SIZE));
      const from = Math.max(base, page << 8) - (page << 8);
      const to = Math.min(end, (page + 1) << 8) - (page << 8);
      ports.fill(i + 1, from, to);
    }
  }

  /** The devices and their ranges, in address order. */
  list(): { base: number; len: number; label: string }[] {
    return this.#entries.map((e) => ({ base: e.base, len: e.end - e.base, label: e.dev.debugLabel }));
  }

  #resolve(addr: number, size: number): Entry | undefined {
    let e: Entry | undefined;
    if (this.#portPages) {
      const ports = this.#portPages[(addr >>> 8) & 0xff];
      const i = ports === undefined ? 0 : ports[addr & 0xff]!;
      e = i === 0 ? undefined : this.#entries[i - 1];
    } else {
      let lo = 0;
      let hi = this.#entries.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        const m = this.#entries[mid]!;
        if (m.base <= addr) {
          e = m;
          lo = mid + 1;
        } else hi = mid - 1;
      }
    }
    // An access that straddles the end of a device's range is nobody's.
    return e !== undefined && addr + size <= e.end ? e : undefined;
  }

  read(addr: number, size: AccessSize): number {
    const e = this.#resolve(addr, size);
    if (e === undefined) {
      const d = this.dynamic?.(addr, size);
      if (d) return d.dev.read(d.offset, size);
      this.onUnclaimed(addr, size, false, ONES[size]!);
      return ONES[size]!;
    }
    return e.dev.read(addr - e.base, size);
  }

  write(addr: number, size: AccessSize, value: number): void {
    const e = this.#resolve(addr, size);
    if (e !== undefined) {
      e.dev.write(addr - e.base, size, value);
      return;
    }
    const d = this.dynamic?.(addr, size);
    if (d) d.dev.write(d.offset, size, value);
    else this.onUnclaimed(addr, size, true, value);
  }
}
