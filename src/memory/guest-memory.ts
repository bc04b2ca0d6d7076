/**
 * Guest-physical memory as the VMM sees it: regions over the RAM mapping, with overflow-free bounds
 * checks on every access. Every address and length that comes from a guest or a file goes through
 * here; nothing is silently clamped.
 */
import { VmmError, hex } from '../errors.js';

export interface GuestRegion {
  readonly gpa: number;
  readonly size: number;
  readonly bytes: Uint8Array;
}

export class GuestMemoryError extends VmmError {
  constructor(readonly gpa: number, readonly len: number, what: string) {
    super('GUEST_MEMORY', `guest memory: ${what} [${hex(gpa)}, +${hex(len)}) is outside guest RAM`);
  }
}

export class GuestMemory {
  readonly #regions: readonly GuestRegion[];

  constructor(regions: readonly GuestRegion[]) {
    this.#regions = [...regions].sort((a, b) => a.gpa - b.gpa);
  }

  get regions(): readonly GuestRegion[] {
    return this.#regions;
  }

  /** Total RAM bytes. */
  get size(): number {
    return this.#regions.reduce((s, r) => s + r.size, 0);
  }

  #locate(gpa: number, len: number, what: string): { r: GuestRegion; off: number } {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) throw new GuestMemoryError(gpa, len, what);
    for (const r of this.#regions) {
      const off = gpa - r.gpa;
      if (off >= 0 && off < r.size) {
        if (len > r.size - off) break; // subtract, never add: no overflow
        return { r, off };
      }
    }
    throw new GuestMemoryError(gpa, len, what);
  }

  /** True when [gpa, gpa+len) lies inside one RAM region. */
  contains(gpa: number, len: number): boolean {
    try {
      this.#locate(gpa, len, 'range');
      return true;
    } catch {
      return false;
    }
  }

  /**
   * [gpa, gpa+len) cut at region boundaries into ranges that each lie inside one region, or undefined
   * when any byte of it is outside RAM (a range may run across regions only where they touch, as the
   * 1 GiB chunks of one RAM stretch do; never across the MMIO hole). For guest buffers (virtqueue
   * descriptors), which a driver may place anywhere in RAM; a chain is a list of such ranges anyway.
   */
  pieces(gpa: number, len: number): { addr: number; len: number }[] | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) return undefined;
    const out: { addr: number; len: number }[] = [];
    let at = gpa;
    let left = len;
    for (const r of this.#regions) {
      const off = at - r.gpa;
      if (off < 0) return undefined; // a gap between regions
      if (off >= r.size) continue;
      const take = Math.min(left, r.size - off);
      out.push({ addr: at, len: take });
      at += take;
      left -= take;
      if (left === 0) return out;
    }
    return undefined;
  }

  /** A zero-copy view of [gpa, gpa+len); throws if it is not entirely inside one region. */
  slice(gpa: number, len: number, what = 'access'): Uint8Array {
    const { r, off } = this.#locate(gpa, len, what);
    return r.bytes.subarray(off, off + len);
  }

  write(gpa: number, src: Uint8Array, what = 'write'): void {
    this.slice(gpa, src.byteLength, what).set(src);
  }

  read(gpa: number, len: number, what = 'read'): Uint8Array {
    return this.slice(gpa, len, what).slice();
  }

  view(gpa: number, len: number, what = 'access'): DataView {
    const s = this.slice(gpa, len, what);
    return new DataView(s.buffer, s.byteOffset, s.byteLength);
  }

  readU8(gpa: number): number { return this.slice(gpa, 1)[0]!; }
  readU16(gpa: number): number { return this.view(gpa, 2).getUint16(0, true); }
  readU32(gpa: number): number { return this.view(gpa, 4).getUint32(0, true); }
  readU64(gpa: number): bigint { return this.view(gpa, 8).getBigUint64(0, true); }
  writeU8(gpa: number, v: number): void { this.slice(gpa, 1)[0] = v; }
  writeU16(gpa: number, v: number): void { this.view(gpa, 2).setUint16(0, v, true); }
  writeU32(gpa: number, v: number): void { this.view(gpa, 4).setUint32(0, v, true); }
  writeU64(gpa: number, v: bigint): void { this.view(gpa, 8).setBigUint64(0, v, true); }
}
