/**
 * Split virtqueues (virtio 1.x §2.7), device side. Every value the driver controls (ring addresses,
 * indices, descriptor addresses, lengths, flags, next pointers) is checked before use: a queue that
 * breaks a rule throws VirtqError, and the transport then marks the device NEEDS_RESET and stops
 * serving it, rather than looping, crashing or touching memory outside guest RAM.
 */
import { VmmError, hex } from '../../errors.js';
import type { GuestMemory } from '../../memory/guest-memory.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const VIRTQ_MAX_SIZE = 32768;

/** struct virtq_desc (§2.7.5). */
const DESC = { addr: 0, len: 8, flags: 12, next: 14, SIZE: 16 } as const;
/** struct virtq_avail (§2.7.6): flags, idx, ring[size], then used_event (EVENT_IDX). */
const AVAIL = { flags: 0, idx: 2, ring: 4, ENTRY: 2 } as const;
/** struct virtq_used (§2.7.8): flags, idx, ring[size] of { id, len }, then avail_event (EVENT_IDX). */
const USED = { flags: 0, idx: 2, ring: 4, ENTRY: 8, id: 0, len: 4 } as const;
const availBytes = (size: number): number => AVAIL.ring + AVAIL.ENTRY * size + 2;
const usedBytes = (size: number): number => USED.ring + USED.ENTRY * size + 2;
const DESC_SIZE = DESC.SIZE;

export type VirtqErrorCode =
  | 'QUEUE_SIZE' | 'QUEUE_ALIGNMENT' | 'QUEUE_RANGE' | 'AVAIL_INDEX' | 'DESC_INDEX' | 'DESC_RANGE'
  | 'CHAIN_TOO_LONG' | 'INDIRECT_NOT_NEGOTIATED' | 'INDIRECT_TABLE' | 'NESTED_INDIRECT' | 'WRITE_BEFORE_READ'
  /** The chain is well formed but is not a request of this device type (e.g. a short header). */
  | 'BAD_REQUEST';

export class VirtqError extends VmmError {
  constructor(readonly virtqCode: VirtqErrorCode, message: string) {
    super('GUEST_MEMORY', `virtqueue: ${message}`);
  }
}

export interface Buffer {
  readonly addr: number;
  readonly len: number;
}

export interface DescriptorChain {
  readonly head: number;
  /** Device-readable buffers, in order (the request). */
  readonly readable: Buffer[];
  /** Device-writable buffers, in order (the response). */
  readonly writable: Buffer[];
}

export interface QueueConfig {
  size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
}

export class SplitQueue {
  #nextAvail = 0;
  #nextUsed = 0;
  /** The three rings, as views made once: every pop and push reads them, and allocates nothing. */
  readonly #desc: DataView;
  readonly #avail: DataView;
  readonly #used: DataView;
  /** Offsets of used_event in the available ring and avail_event in the used ring (EVENT_IDX). */
  readonly #usedEvent: number;
  readonly #availEvent: number;
  /** The used ring as 16-bit words, for the seq-cst stores that re-enable notifications. */
  readonly #usedWords: Uint16Array;
  /** Whether the device currently asks the driver to notify it (see disableNotifications). */
  #notifying = true;

  /** Validates the driver's queue layout against guest RAM (virtio 1.x §2.7 alignment and sizes). */
  constructor(private readonly mem: GuestMemory, readonly cfg: QueueConfig, readonly features: { indirect: boolean; eventIdx: boolean }) {
    const { size, descAddr, availAddr, usedAddr } = cfg;
    if (!Number.isInteger(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) throw new VirtqError('QUEUE_SIZE', `size ${size} is not a power of two up to ${VIRTQ_MAX_SIZE}`);
    if (descAddr % 16 || availAddr % 2 || usedAddr % 4) throw new VirtqError('QUEUE_ALIGNMENT', `misaligned rings (desc ${hex(descAddr)}, avail ${hex(availAddr)}, used ${hex(usedAddr)})`);
    const ranges: [string, number, number][] = [
      ['descriptor table', descAddr, DESC_SIZE * size],
      ['available ring', availAddr, availBytes(size)],
      ['used ring', usedAddr, usedBytes(size)],
    ];
    for (const [what, addr, len] of ranges) {
      if (!mem.contains(addr, len)) throw new VirtqError('QUEUE_RANGE', `${what} [${hex(addr)}, +${hex(len)}) is outside guest RAM`);
    }
    [this.#desc, this.#avail, this.#used] = ranges.map(([what, addr, len]) => mem.view(addr, len, what)) as [DataView, DataView, DataView];
    this.#usedEvent = AVAIL.ring + AVAIL.ENTRY * size;
    this.#availEvent = USED.ring + USED.ENTRY * size;
    this.#usedWords = new Uint16Array(this.#used.buffer, this.#used.byteOffset, this.#used.byteLength >>> 1);
  }

  get nextAvail(): number { return this.#nextAvail; }
  get nextUsed(): number { return this.#nextUsed; }

  /** The driver's avail.idx. */
  availIdx(): number {
    return this.#avail.getUint16(AVAIL.idx, true);
  }

  /** Chains the driver has made available and the device has not yet taken. */
  pending(): number {
    const n = (this.availIdx() - this.#nextAvail) & 0xffff;
    if (n > this.cfg.size) throw new VirtqError('AVAIL_INDEX', `avail.idx ${this.availIdx()} is ${n} ahead of the device's ${this.#nextAvail}, more than the queue size ${this.cfg.size}`);
    return n;
  }

  /** Takes the next available chain, or undefined when there is none. */
  pop(): DescriptorChain | undefined {
    if (this.pending() === 0) return undefined;
    const head = this.#avail.getUint16(AVAIL.ring + AVAIL.ENTRY * (this.#nextAvail % this.cfg.size), true);
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
    if (this.features.eventIdx && this.#notifying) this.#used.setUint16(this.#availEvent, this.#nextAvail, true);
    return this.#walk(head);
  }

  /**
   * Tells the driver it need not notify: the device is taking chains anyway (used.flags
   * NO_NOTIFY; with EVENT_IDX, avail_event stops following pop() and so falls behind). A
   * notification is a VM exit, and a driver adding chains as fast as the device takes them would
   * otherwise make one per chain. Only a hint (§2.7.7): the driver may still notify.
   */
  disableNotifications(): void {
    if (!this.#notifying) return;
    this.#notifying = false;
    if (!this.features.eventIdx) this.#used.setUint16(USED.flags, VIRTQ_USED_F_NO_NOTIFY, true);
  }

  /**
   * Asks for notifications again, and says whether chains are pending: the driver may have added
   * some after the device's last look but before it saw this request, and it will not notify for
   * those. A device that gets true must take them (and may disable notifications again first).
   */
  enableNotifications(): boolean {
    this.#notifying = true;
    // The store must reach memory before avail.idx is read below (store-load order, which x86
    // only keeps with a locked instruction or a fence): Atomics.store is sequentially consistent,
    // an XCHG on x86-64; the driver's side of the handshake is its own fence before it reads them.
    if (this.features.eventIdx) Atomics.store(this.#usedWords, this.#availEvent >>> 1, this.#nextAvail);
    else Atomics.store(this.#usedWords, USED.flags >>> 1, 0);
    return this.pending() > 0;
  }

  /**
   * For a device that found the queue empty and would stop: asks for notifications again
   * (enableNotifications). True: it may stop, the driver's next chain notifies. False: chains came
   * in meanwhile, notifications are off again, and the device must take them.
   */
  armNotifications(): boolean {
    if (!this.enableNotifications()) return true;
    this.disableNotifications();
    return false;
  }

  #walk(head: number): DescriptorChain {
    const { size } = this.cfg;
    if (head >= size) throw new VirtqError('DESC_INDEX', `head descriptor ${head} >= queue size ${size}`);
    const readable: Buffer[] = [];
    const writable: Buffer[] = [];
    let table = this.#desc;
    let tableLen = size;
    let index = head;
    let indirect = false;
    // A chain visits each descriptor of its table at most once; more means a loop.
    for (let seen = 0; ; seen++) {
      if (seen >= tableLen) throw new VirtqError('CHAIN_TOO_LONG', `descriptor chain from ${head} is longer than its table (${tableLen}): a loop`);
      const at = index * DESC_SIZE;
      // addr as two halves: a BigInt per descriptor would be the loop's only allocation.
      const addr = table.getUint32(at + DESC.addr, true) + table.getUint32(at + DESC.addr + 4, true) * 0x1_0000_0000;
      const len = table.getUint32(at + DESC.len, true);
      const flags = table.getUint16(at + DESC.flags, true);
      const next = table.getUint16(at + DESC.next, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.features.indirect) throw new VirtqError('INDIRECT_NOT_NEGOTIATED', `descriptor ${index} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`);
        if (indirect) throw new VirtqError('NESTED_INDIRECT', `indirect descriptor inside an indirect table`);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqError('INDIRECT_TABLE', `indirect descriptor ${index} also has NEXT set`);
        // At most the queue's size (§2.7.5.3.1: no chain longer than the queue): a guest pointing
        // every head at one table of 32768 entries would make each notification cost seconds.
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > size) throw new VirtqError('INDIRECT_TABLE', `indirect table length ${len} is not a positive multiple of 16 up to the queue size (${size} entries)`);
        if (!this.mem.contains(addr, len)) throw new VirtqError('DESC_RANGE', `indirect table [${hex(addr)}, +${hex(len)}) is outside guest RAM`);
        indirect = true;
        table = this.mem.view(addr, len, 'indirect descriptor table');
        tableLen = len / DESC_SIZE;
        index = 0;
        seen = -1;
        continue;
      }
      const into = flags & VIRTQ_DESC_F_WRITE ? writable : readable;
      if (into === readable && writable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `descriptor ${index} is device-readable after a device-writable one`);
      if (len === 0 || this.mem.contains(addr, len)) into.push({ addr, len });
      else {
        // A buffer that runs from one RAM view chunk into the next becomes two buffers of the chain.
        const pieces = this.mem.pieces(addr, len);
        if (!pieces) throw new VirtqError('DESC_RANGE', `descriptor ${index} buffer [${hex(addr)}, +${hex(len)}) is outside guest RAM`);
        into.push(...pieces);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableLen) throw new VirtqError('DESC_INDEX', `descriptor ${index} points to ${next}, outside its table of ${tableLen}`);
      index = next;
    }
    return { head, readable, writable };
  }

  /** Returns a chain to the driver with `written` bytes in its writable buffers. */
  pushUsed(head: number, written: number): void {
    const slot = USED.ring + USED.ENTRY * (this.#nextUsed % this.cfg.size);
    this.#used.setUint32(slot + USED.id, head, true);
    this.#used.setUint32(slot + USED.len, written, true);
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    this.#used.setUint16(USED.idx, this.#nextUsed, true); // published after the element (x86 stores are ordered)
  }

  /**
   * Whether the driver wants an interrupt for the used entries added since `oldUsed`
   * (VIRTIO_F_EVENT_IDX: used_event; otherwise the NO_INTERRUPT flag).
   */
  needsInterrupt(oldUsed: number): boolean {
    if (!this.features.eventIdx) return (this.#avail.getUint16(AVAIL.flags, true) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    const usedEvent = this.#avail.getUint16(this.#usedEvent, true);
    return ((this.#nextUsed - usedEvent - 1) & 0xffff) < ((this.#nextUsed - oldUsed) & 0xffff);
  }
}
