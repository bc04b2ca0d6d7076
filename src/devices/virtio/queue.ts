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
const DESC_SIZE = 16;

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

  /** Validates the driver's queue layout against guest RAM (virtio 1.x §2.7 alignment and sizes). */
  constructor(private readonly mem: GuestMemory, readonly cfg: QueueConfig, readonly features: { indirect: boolean; eventIdx: boolean }) {
    const { size, descAddr, availAddr, usedAddr } = cfg;
    if (!Number.isInteger(size) || size < 1 || size > VIRTQ_MAX_SIZE || (size & (size - 1)) !== 0) throw new VirtqError('QUEUE_SIZE', `size ${size} is not a power of two up to ${VIRTQ_MAX_SIZE}`);
    if (descAddr % 16 || availAddr % 2 || usedAddr % 4) throw new VirtqError('QUEUE_ALIGNMENT', `misaligned rings (desc ${hex(descAddr)}, avail ${hex(availAddr)}, used ${hex(usedAddr)})`);
    const ranges: [string, number, number][] = [
      ['descriptor table', descAddr, DESC_SIZE * size],
      ['available ring', availAddr, 6 + 2 * size],
      ['used ring', usedAddr, 6 + 8 * size],
    ];
    for (const [what, addr, len] of ranges) {
      if (!mem.contains(addr, len)) throw new VirtqError('QUEUE_RANGE', `${what} [${hex(addr)}, +${hex(len)}) is outside guest RAM`);
    }
  }

  get nextAvail(): number { return this.#nextAvail; }
  get nextUsed(): number { return this.#nextUsed; }

  /** The driver's avail.idx. */
  availIdx(): number {
    return this.mem.readU16(this.cfg.availAddr + 2);
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
    const head = this.mem.readU16(this.cfg.availAddr + 4 + 2 * (this.#nextAvail % this.cfg.size));
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
    if (this.features.eventIdx) this.mem.writeU16(this.cfg.usedAddr + 4 + 8 * this.cfg.size, this.#nextAvail); // avail_event
    return this.#walk(head);
  }

  #walk(head: number): DescriptorChain {
    const { size, descAddr } = this.cfg;
    if (head >= size) throw new VirtqError('DESC_INDEX', `head descriptor ${head} >= queue size ${size}`);
    const readable: Buffer[] = [];
    const writable: Buffer[] = [];
    let table = descAddr;
    let tableLen = size;
    let index = head;
    let indirect = false;
    // A chain visits each descriptor of its table at most once; more means a loop.
    for (let seen = 0; ; seen++) {
      if (seen >= tableLen) throw new VirtqError('CHAIN_TOO_LONG', `descriptor chain from ${head} is longer than its table (${tableLen}): a loop`);
      const v = this.mem.view(table + index * DESC_SIZE, DESC_SIZE, 'descriptor');
      const addr = Number(v.getBigUint64(0, true));
      const len = v.getUint32(8, true);
      const flags = v.getUint16(12, true);
      const next = v.getUint16(14, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.features.indirect) throw new VirtqError('INDIRECT_NOT_NEGOTIATED', `descriptor ${index} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`);
        if (indirect) throw new VirtqError('NESTED_INDIRECT', `indirect descriptor inside an indirect table`);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqError('INDIRECT_TABLE', `indirect descriptor ${index} also has NEXT set`);
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > VIRTQ_MAX_SIZE) throw new VirtqError('INDIRECT_TABLE', `indirect table length ${len} is not a positive multiple of 16 up to ${VIRTQ_MAX_SIZE} entries`);
        if (!this.mem.contains(addr, len)) throw new VirtqError('DESC_RANGE', `indirect table [${hex(addr)}, +${hex(len)}) is outside guest RAM`);
        indirect = true;
        table = addr;
        tableLen = len / DESC_SIZE;
        index = 0;
        seen = -1;
        continue;
      }
      // A buffer that runs from one RAM view chunk into the next becomes two buffers of the chain.
      const pieces = len === 0 ? [{ addr, len }] : this.mem.pieces(addr, len);
      if (!pieces) throw new VirtqError('DESC_RANGE', `descriptor ${index} buffer [${hex(addr)}, +${hex(len)}) is outside guest RAM`);
      if (flags & VIRTQ_DESC_F_WRITE) writable.push(...pieces);
      else if (writable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `descriptor ${index} is device-readable after a device-writable one`);
      else readable.push(...pieces);
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      if (next >= tableLen) throw new VirtqError('DESC_INDEX', `descriptor ${index} points to ${next}, outside its table of ${tableLen}`);
      index = next;
    }
    return { head, readable, writable };
  }

  /** Returns a chain to the driver with `written` bytes in its writable buffers. */
  pushUsed(head: number, written: number): void {
    const { usedAddr, size } = this.cfg;
    const slot = usedAddr + 4 + 8 * (this.#nextUsed % size);
    this.mem.writeU32(slot, head);
    this.mem.writeU32(slot + 4, written);
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    this.mem.writeU16(usedAddr + 2, this.#nextUsed); // published after the element (x86 stores are ordered)
  }

  /**
   * Whether the driver wants an interrupt for the used entries added since `oldUsed`
   * (VIRTIO_F_EVENT_IDX: used_event; otherwise the NO_INTERRUPT flag).
   */
  needsInterrupt(oldUsed: number): boolean {
    const { availAddr, size } = this.cfg;
    if (!this.features.eventIdx) return (this.mem.readU16(availAddr) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    const usedEvent = this.mem.readU16(availAddr + 4 + 2 * size);
    return ((this.#nextUsed - usedEvent - 1) & 0xffff) < ((this.#nextUsed - oldUsed) & 0xffff);
  }
}
