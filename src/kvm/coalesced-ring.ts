/**
 * The VM's coalesced I/O ring (KVM_REGISTER_COALESCED_MMIO): guest writes to a registered zone that
 * KVM queued instead of exiting to us. The ring is one page of every vCPU's kvm_run mapping, the same
 * page for all of a VM's vCPUs; KVM appends at `last`, the VMM takes from `first` and so frees room.
 * A write that finds the ring full exits as usual, so taking the ring before answering any exit keeps
 * every write in the order the guest made it.
 */
import { KVM_COALESCED_MMIO, KVM_COALESCED_MMIO_RING, SIZEOF } from './layout.js';

/** The ring's size in bytes: a page. */
export const COALESCED_RING_BYTES = 4096;
/** Entries the page holds (the kernel's KVM_COALESCED_MMIO_MAX): indices run modulo this. */
export const COALESCED_RING_ENTRIES = Math.floor((COALESCED_RING_BYTES - SIZEOF.kvm_coalesced_mmio_ring) / SIZEOF.kvm_coalesced_mmio);

const FIRST = KVM_COALESCED_MMIO_RING.first / 4;
const LAST = KVM_COALESCED_MMIO_RING.last / 4;

/** Called with each queued write, oldest first: its address (a port for port I/O), length and value (little-endian, up to 4 bytes). */
export type CoalescedWrite = (addr: number, len: number, pio: boolean, value: number) => void;

export class CoalescedRing {
  readonly #words: Int32Array;
  readonly #dv: DataView;

  /** `page`: this thread's view of the ring page (COALESCED_RING_BYTES). */
  constructor(page: ArrayBuffer) {
    if (page.byteLength < COALESCED_RING_BYTES) throw new RangeError(`coalesced ring: ${page.byteLength} bytes, a page needed`);
    this.#words = new Int32Array(page, 0, 2);
    this.#dv = new DataView(page, 0, COALESCED_RING_BYTES);
  }

  /** Whether KVM queued writes not yet taken. A cheap look (two loads): the exit path makes it at every exit. */
  get pending(): boolean {
    return Atomics.load(this.#words, FIRST) !== Atomics.load(this.#words, LAST);
  }

  /** The next entry to take: a watcher compares it over time to see whether anyone is taking. */
  get first(): number {
    return Atomics.load(this.#words, FIRST);
  }

  /** Writes queued and not yet taken. */
  get count(): number {
    const n = Atomics.load(this.#words, LAST) - Atomics.load(this.#words, FIRST);
    return n < 0 ? n + COALESCED_RING_ENTRIES : n;
  }

  /** Where KVM queues the next write: a watcher compares it over time to see whether the guest writes. */
  get last(): number {
    return Atomics.load(this.#words, LAST);
  }

  /**
   * Hands every queued write to `fn`, oldest first, then gives their room back to KVM; returns how
   * many. Writes of one zone must be taken by one thread at a time: the caller holds the lock of the
   * device the zone belongs to. Indices out of range (never written so by KVM) take nothing.
   */
  take(fn: CoalescedWrite): number {
    let first = Atomics.load(this.#words, FIRST) >>> 0;
    const last = Atomics.load(this.#words, LAST) >>> 0; // KVM fills an entry before it moves `last` past it
    if (first >= COALESCED_RING_ENTRIES || last >= COALESCED_RING_ENTRIES) return 0;
    const dv = this.#dv;
    let n = 0;
    try {
      while (first !== last) {
        const o = KVM_COALESCED_MMIO_RING.coalesced_mmio + first * SIZEOF.kvm_coalesced_mmio;
        const len = dv.getUint32(o + KVM_COALESCED_MMIO.len, true);
        const value = len >= 4 ? dv.getUint32(o + KVM_COALESCED_MMIO.data, true) : len === 2 ? dv.getUint16(o + KVM_COALESCED_MMIO.data, true) : dv.getUint8(o + KVM_COALESCED_MMIO.data);
        const addr = dv.getUint32(o + KVM_COALESCED_MMIO.phys_addr, true) + dv.getUint32(o + KVM_COALESCED_MMIO.phys_addr + 4, true) * 0x1_0000_0000;
        // Taken before it is handed on: a handler that throws does not get it again.
        first = (first + 1) % COALESCED_RING_ENTRIES;
        n++;
        fn(addr, len, dv.getUint32(o + KVM_COALESCED_MMIO.pio, true) === 1, value);
      }
    } finally {
      Atomics.store(this.#words, FIRST, first);
    }
    return n;
  }
}
