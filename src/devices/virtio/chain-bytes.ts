/**
 * A descriptor chain's buffers as one byte stream, for the models that copy their requests and
 * replies (net, 9p, the console's control messages). Every address was checked against guest RAM
 * when the chain was popped; an empty buffer's address never is, so it is never touched.
 */
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { Buffer as VirtqBuffer } from './queue.js';

/** Total bytes of the buffers (at most 32768 × 4 GiB: exact in a double). */
export function chainLength(bufs: readonly VirtqBuffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.len;
  return n;
}

/** Copies the buffers, in order, into `into` until it is full; returns the part written. */
export function gatherBytes(mem: GuestMemory, bufs: readonly VirtqBuffer[], into: Uint8Array, what: string): Uint8Array {
  let at = 0;
  for (const b of bufs) {
    if (at === into.byteLength) break;
    const n = Math.min(b.len, into.byteLength - at);
    if (n === 0) continue;
    into.set(mem.slice(b.addr, n, what), at);
    at += n;
  }
  return into.subarray(0, at);
}

/** Copies `data` across the buffers in order, never past the end of any; returns the bytes copied. */
export function scatterBytes(mem: GuestMemory, bufs: readonly VirtqBuffer[], data: Uint8Array, what: string): number {
  let at = 0;
  for (const b of bufs) {
    if (at === data.byteLength) break;
    const n = Math.min(b.len, data.byteLength - at);
    if (n === 0) continue;
    mem.write(b.addr, data.subarray(at, at + n), what);
    at += n;
  }
  return at;
}
