// The coalesced I/O ring as KVM fills it (one page: first, last, then 24-byte entries), and COM1's
// use of it: THR writes queued instead of exiting, applied later as if each had exited.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { COALESCED_RING_ENTRIES } from '../../dist/kvm/coalesced-ring.js';
import { CONSOLE_BATCH, Serial8250 } from '../../dist/devices/legacy/serial-8250.js';
import { fakeKvmRing } from '../helpers/fake-kvm-ring.mjs';

const COM1 = 0x3f8;
const DATA = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5;

describe('CoalescedRing', () => {
  it('holds the kernel\'s 170 entries of 24 bytes in a 4 KiB page', () => {
    assert.equal(COALESCED_RING_ENTRIES, 170);
  });

  it('hands the queued writes over oldest first, with address, length and value, and frees their room', () => {
    const k = fakeKvmRing();
    assert.equal(k.ring.pending, false);
    k.push(COM1, 0x41);
    k.push(0x1_0000_1000, 0xbeef, { len: 2, pio: 0 });
    k.push(COM1 + 1, 0x12345678, { len: 4 });
    assert.equal(k.ring.pending, true);
    const seen = [];
    assert.equal(k.ring.take((addr, len, pio, value) => seen.push([addr, len, pio, value])), 3);
    assert.deepEqual(seen, [[COM1, 1, true, 0x41], [0x1_0000_1000, 2, false, 0xbeef], [COM1 + 1, 4, true, 0x12345678]]);
    assert.equal(k.ring.pending, false);
    assert.equal(k.dv.getUint32(0, true), 3, 'first moved up to last: KVM may reuse the entries');
    assert.equal(k.ring.take(() => assert.fail('nothing is queued')), 0);
  });

  it('wraps around the end of the page, and a full ring (169 queued) is taken whole', () => {
    const k = fakeKvmRing();
    let next = 0;
    const got = [];
    for (let round = 0; round < 5; round++) {
      let n = 0;
      while (k.push(COM1, next & 0xff)) next++, n++;
      assert.equal(n, COALESCED_RING_ENTRIES - 1, "KVM keeps one entry free");
      k.ring.take((_a, _l, _p, v) => got.push(v));
      k.push(COM1, next++ & 0xff); // leave the indices somewhere new for the next round
      k.ring.take((_a, _l, _p, v) => got.push(v));
    }
    assert.deepEqual(got, Array.from({ length: next }, (_, i) => i & 0xff));
  });

  it('a handler that throws does not get the same write again; indices out of range take nothing', () => {
    const k = fakeKvmRing();
    k.push(COM1, 1);
    k.push(COM1, 2);
    assert.throws(() => k.ring.take(() => { throw new Error('sink broke'); }), /sink broke/);
    const rest = [];
    k.ring.take((_a, _l, _p, v) => rest.push(v));
    assert.deepEqual(rest, [2]);
    k.dv.setUint32(4, COALESCED_RING_ENTRIES + 5, true);
    assert.equal(k.ring.take(() => assert.fail('never handed out')), 0);
  });
});

describe('Serial8250: THR writes queued in the coalesced ring', () => {
  function queuedUart() {
    const out = [];
    const batches = [];
    const levels = [];
    const s = new Serial8250('com1', { irq: { setLevel: (h) => levels.push(h) }, output: (b) => (batches.push(b.length), out.push(...b)) });
    const k = fakeKvmRing();
    return { s, k, out, batches, levels, queue: (text) => { for (const c of Buffer.from(text)) assert.ok(k.push(COM1, c)); }, take: () => s.transmitQueued(k.ring, COM1) };
  }

  it('sends them in order, a ring at a time, interleaved rightly with writes that exited', () => {
    const u = queuedUart();
    u.queue('hello, ');
    u.take();
    u.s.write(DATA, 1, 'w'.charCodeAt(0)); // a write that found the ring full, after the queued ones were taken
    u.queue('orld\n');
    u.take();
    assert.equal(Buffer.from(u.out).toString(), 'hello, world\n');
    assert.deepEqual(u.batches, [7, 1, 5], 'one output call per take, not per byte');
  });

  it('applies each as a THR write would have been: divisor latch under DLAB, loopback into the receiver', () => {
    const u = queuedUart();
    u.s.write(LCR, 1, 0x83); // DLAB on (an exit: the ring is taken first, and is empty)
    u.queue('\x01'); // divisor low byte = 1 (115200 baud)
    u.take(); // the next exit (the LCR write that ends DLAB) takes it first, while DLAB is still on
    u.s.write(LCR, 1, 0x03);
    u.s.write(LCR, 1, 0x83);
    assert.equal(u.s.read(DATA, 1), 1, 'DLL');
    u.s.write(LCR, 1, 0x03);
    u.s.write(MCR, 1, 0x10); // loopback
    u.queue('L');
    u.take();
    assert.equal(u.s.read(LSR, 1) & 0x01, 1, 'data ready');
    assert.equal(u.s.read(DATA, 1), 'L'.charCodeAt(0));
    assert.deepEqual(u.out, [], 'nothing reached the output');
  });

  it('raises the THR-empty interrupt when taken, as the writes would have', () => {
    const u = queuedUart();
    u.s.write(IER, 1, 0x02); // THRI: raised at once (THR is empty)
    assert.equal(u.s.read(IIR, 1) & 0x0f, 0x02);
    assert.deepEqual(u.levels, [true, false]);
    u.queue('abc');
    u.take();
    assert.deepEqual(u.levels, [true, false, true], 'raised again once the queued bytes went out');
    assert.equal(Buffer.from(u.out).toString(), 'abc');
  });

  it('lets only an LSR read leave them queued, while they cannot change its answer or raise an interrupt, up to a batch', () => {
    const u = queuedUart();
    assert.equal(CONSOLE_BATCH, 64);
    u.queue('console line');
    assert.equal(u.k.ring.count, 12);
    assert.equal(u.s.mayLeaveQueued(LSR, u.k.ring.count), true, 'Linux\'s wait before each console byte');
    for (const reg of [DATA, IER, IIR, LCR, MCR, 6, 7]) assert.equal(u.s.mayLeaveQueued(reg, 1), false, `register ${reg}`);
    assert.equal(u.s.mayLeaveQueued(LSR, CONSOLE_BATCH - 1), true);
    assert.equal(u.s.mayLeaveQueued(LSR, CONSOLE_BATCH), false, 'a full batch goes out');
    u.s.write(LCR, 1, 0x83); // DLAB does not change what LSR says
    assert.equal(u.s.mayLeaveQueued(LSR, 1), true);
    u.s.write(LCR, 1, 0x03);
    u.s.write(IER, 1, 0x02); // THR-empty interrupts on: each write would raise one
    assert.equal(u.s.mayLeaveQueued(LSR, 1), false);
    u.s.write(IER, 1, 0x00);
    u.s.write(MCR, 1, 0x10); // loopback: each write would set LSR's data-ready bit
    assert.equal(u.s.mayLeaveQueued(LSR, 1), false);
    u.s.write(MCR, 1, 0x08);
    assert.equal(u.s.mayLeaveQueued(LSR, 1), true);
    // However long they waited, they go out in order, in one output call.
    u.take();
    assert.equal(Buffer.from(u.out).toString(), 'console line');
    assert.deepEqual(u.batches, [12]);
  });

  it('ignores queued writes to anything but its THR port', () => {
    const u = queuedUart();
    u.k.push(COM1 + 7, 0x55); // scratch register: never registered, so never queued by KVM
    u.k.push(COM1, 0x42, { len: 2 });
    u.k.push(COM1, 0x43, { pio: 0 });
    u.take();
    assert.deepEqual(u.out, []);
    assert.equal(u.s.read(7, 1), 0);
    assert.equal(u.k.ring.pending, false);
  });
});
