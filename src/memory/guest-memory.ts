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

/** A region with the DataView the scalar accessors use (made once: they run on every virtqueue access). */
interface Region extends GuestRegion {
  readonly dv: DataView;
  /** Its place in `regions`. */
  readonly index: number;
}

export class GuestMemory {
  readonly #regions: readonly Region[];
  /** The region the last lookup found: accesses cluster (one ring, one buffer), so it usually hits. */
  #last: Region;

  constructor(regions: readonly GuestRegion[]) {
    this.#regions = [...regions]
      .sort((a, b) => a.gpa - b.gpa)
      .map((r, index) => ({ gpa: r.gpa, size: r.size, bytes: r.bytes, dv: new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength), index }));
    this.#last = this.#regions[0] ?? { gpa: 0, size: 0, bytes: new Uint8Array(0), dv: new DataView(new ArrayBuffer(0)), index: -1 };
  }

  get regions(): readonly GuestRegion[] {
    return this.#regions;
  }

  /** Total RAM bytes. */
  get size(): number {
    return this.#regions.reduce((s, r) => s + r.size, 0);
  }

  /**
   * The region holding all of [gpa, gpa+len), or undefined. Allocates nothing: this is the hot path
   * of every descriptor, ring index and buffer access.
   */
  #find(gpa: number, len: number): Region | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0) return undefined;
    let r = this.#last;
    let off = gpa - r.gpa;
    if (!(off >= 0 && off < r.size)) {
      const hit = this.#regions.find((x) => gpa - x.gpa >= 0 && gpa - x.gpa < x.size);
      if (!hit) return undefined;
      this.#last = r = hit;
      off = gpa - r.gpa;
    }
    return len <= r.size - off ? r : undefined; // subtract, never add: no overflow
  }

  #locate(gpa: number, len: number, what: string): Region {
    const r = this.#find(gpa, len);
    if (!r) throw new GuestMemoryError(gpa, len, what);
    return r;
  }

  /**
   * The index in `regions` of the region holding all of [gpa, gpa+len), or -1. For batching accesses
   * by region without making a view per access.
   */
  regionIndex(gpa: number, len: number): number {
    const r = this.#find(gpa, len);
    return r ? r.index : -1;
  }

  /** True when [gpa, gpa+len) lies inside one RAM region. */
  contains(gpa: number, len: number): boolean {
    return this.#find(gpa, len) !== undefined;
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
    const r = this.#locate(gpa, len, what);
    const off = gpa - r.gpa;
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

  readU8(gpa: number): number { const r = this.#locate(gpa, 1, 'access'); return r.bytes[gpa - r.gpa]!; }
  readU16(gpa: number): number { const r = this.#locate(gpa, 2, 'access'); return r.dv.getUint16(gpa - r.gpa, true); }
  readU32(gpa: number): number { const r = this.#locate(gpa, 4, 'access'); return r.dv.getUint32(gpa - r.gpa, true); }
  readU64(gpa: number): bigint { const r = this.#locate(gpa, 8, 'access'); return r.dv.getBigUint64(gpa - r.gpa, true); }
  writeU8(gpa: number, v: number): void { const r = this.#locate(gpa, 1, 'access'); r.bytes[gpa - r.gpa] = v; }
  writeU16(gpa: number, v: number): void { const r = this.#locate(gpa, 2, 'access'); r.dv.setUint16(gpa - r.gpa, v, true); }
  writeU32(gpa: number, v: number): void { const r = this.#locate(gpa, 4, 'access'); r.dv.setUint32(gpa - r.gpa, v, true); }
  writeU64(gpa: number, v: bigint): void { const r = this.#locate(gpa, 8, 'access'); r.dv.setBigUint64(gpa - r.gpa, v, true); }
}
