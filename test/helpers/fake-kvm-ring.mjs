// The VM's coalesced I/O ring page as KVM fills it (first, last, then 24-byte entries), for tests of
// what takes from it.
import { CoalescedRing, COALESCED_RING_BYTES, COALESCED_RING_ENTRIES } from '../../dist/kvm/coalesced-ring.js';

/** A ring page and what KVM does to it: append an entry at `last` (refused when full). */
export function fakeKvmRing() {
  const page = new ArrayBuffer(COALESCED_RING_BYTES);
  const dv = new DataView(page);
  const push = (addr, value, { len = 1, pio = 1 } = {}) => {
    const last = dv.getUint32(4, true);
    if ((last + 1) % COALESCED_RING_ENTRIES === dv.getUint32(0, true)) return false; // full: the write exits instead
    const o = 8 + last * 24;
    dv.setBigUint64(o, BigInt(addr), true);
    dv.setUint32(o + 8, len, true);
    dv.setUint32(o + 12, pio, true);
    dv.setUint32(o + 16, value, true);
    dv.setUint32(4, (last + 1) % COALESCED_RING_ENTRIES, true);
    return true;
  };
  return { page, dv, push, ring: new CoalescedRing(page) };
}
