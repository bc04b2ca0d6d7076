import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SplitQueue, VirtqError, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../dist/devices/virtio/queue.js';
import { GuestMemory, GuestMemoryError } from '../../dist/memory/guest-memory.js';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { DriverQueue } from '../helpers/driver-queue.mjs';

const MEM = 1 << 20;
const setup = (size = 8, features = { indirect: true, eventIdx: false }) => {
  const mem = fakeMemory(MEM);
  const d = new DriverQueue(mem, 0x1000, size);
  return { mem, d, q: new SplitQueue(mem, d.config, features) };
};
const code = (c) => (e) => e instanceof VirtqError && e.virtqCode === c;

describe('SplitQueue', () => {
  it('pops chains in order, splitting readable and writable buffers, and returns them used', () => {
    const { d, q } = setup();
    const h1 = d.addChain([{ addr: 0x10000, len: 16 }, { addr: 0x11000, len: 512, write: true }, { addr: 0x12000, len: 1, write: true }]);
    const h2 = d.addChain([{ addr: 0x20000, len: 4 }]);
    assert.equal(q.pending(), 2);
    const c1 = q.pop();
    assert.deepEqual(c1, { head: h1, readable: [{ addr: 0x10000, len: 16 }], writable: [{ addr: 0x11000, len: 512 }, { addr: 0x12000, len: 1 }] });
    q.pushUsed(c1.head, 513);
    assert.deepEqual(d.usedElem(0), { id: h1, len: 513 });
    assert.equal(d.usedIdx(), 1);
    assert.equal(q.pop().head, h2);
    assert.equal(q.pop(), undefined);
  });

  it('rejects bad queue layouts: size, alignment, rings outside RAM', () => {
    const mem = fakeMemory(MEM);
    const ok = { size: 8, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 };
    const f = { indirect: false, eventIdx: false };
    assert.throws(() => new SplitQueue(mem, { ...ok, size: 6 }), code('QUEUE_SIZE'));
    assert.throws(() => new SplitQueue(mem, { ...ok, size: 65536 }, f), code('QUEUE_SIZE'));
    assert.throws(() => new SplitQueue(mem, { ...ok, descAddr: 0x1008 }, f), code('QUEUE_ALIGNMENT'));
    assert.throws(() => new SplitQueue(mem, { ...ok, usedAddr: 0x3002 }, f), code('QUEUE_ALIGNMENT'));
    assert.throws(() => new SplitQueue(mem, { ...ok, usedAddr: MEM - 16 }, f), code('QUEUE_RANGE'));
    assert.throws(() => new SplitQueue(mem, { ...ok, descAddr: 2 ** 60 }, f), code('QUEUE_RANGE'));
  });

  it('rejects an avail index that runs ahead by more than the queue size', () => {
    const { mem, d, q } = setup();
    mem.writeU16(d.avail + 2, 9);
    assert.throws(() => q.pop(), code('AVAIL_INDEX'));
  });

  it('rejects heads and next pointers outside the table', () => {
    const { d, q } = setup();
    d.publish(8);
    assert.throws(() => q.pop(), code('DESC_INDEX'));
    const s = setup();
    s.d.writeDesc(0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 200);
    s.d.publish(0);
    assert.throws(() => s.q.pop(), code('DESC_INDEX'));
  });

  it('detects descriptor loops instead of spinning', () => {
    const { d, q } = setup();
    d.writeDesc(0, 0x10000, 4, VIRTQ_DESC_F_NEXT, 1);
    d.writeDesc(1, 0x10000, 4, VIRTQ_DESC_F_NEXT, 0);
    d.publish(0);
    assert.throws(() => q.pop(), code('CHAIN_TOO_LONG'));
    const s = setup();
    s.d.writeDesc(3, 0x10000, 4, VIRTQ_DESC_F_NEXT, 3); // self loop
    s.d.publish(3);
    assert.throws(() => s.q.pop(), code('CHAIN_TOO_LONG'));
  });

  it('rejects buffers outside RAM, including ones that wrap around 2^64', () => {
    const { d, q } = setup();
    d.addChain([{ addr: MEM - 8, len: 16 }]);
    assert.throws(() => q.pop(), code('DESC_RANGE'));
    const s = setup();
    s.d.writeDesc(0, 0, 0, 0, 0);
    s.mem.view(0x1000, 16).setBigUint64(0, 0xffff_ffff_ffff_fff0n, true);
    s.mem.view(0x1000, 16).setUint32(8, 0x20, true);
    s.d.publish(0);
    assert.throws(() => s.q.pop(), code('DESC_RANGE'));
  });

  it('a buffer running from one RAM view chunk into the next is split there; one across a gap in RAM is refused', () => {
    // Two separately backed regions that touch, as the 1 GiB views of one RAM stretch do, then a gap.
    const half = MEM / 2;
    const mem = new GuestMemory([
      { gpa: 0, size: half, bytes: new Uint8Array(half) },
      { gpa: half, size: half, bytes: new Uint8Array(half) },
      { gpa: 4 * MEM, size: half, bytes: new Uint8Array(half) },
    ]);
    const d = new DriverQueue(mem, 0x1000, 8);
    const q = new SplitQueue(mem, d.config, { indirect: false, eventIdx: false });
    d.addChain([{ addr: half - 0x10, len: 0x20 }, { addr: half - 0x1000, len: 0x3000, write: true }]);
    assert.deepEqual(q.pop().readable, [{ addr: half - 0x10, len: 0x10 }, { addr: half, len: 0x10 }]);
    d.addChain([{ addr: half - 0x1000, len: 0x3000, write: true }]);
    assert.deepEqual(q.pop().writable, [{ addr: half - 0x1000, len: 0x1000 }, { addr: half, len: 0x2000 }]);
    d.addChain([{ addr: 2 * half - 0x10, len: 0x20, write: true }]);
    assert.throws(() => q.pop(), code('DESC_RANGE'), 'runs into the gap after the second region');
    assert.equal(mem.pieces(MEM - 8, 16), undefined);
    assert.deepEqual(mem.pieces(4 * MEM, half), [{ addr: 4 * MEM, len: half }]);
    assert.equal(mem.pieces(4 * MEM, half + 1), undefined);
    assert.equal(mem.pieces(-1, 2), undefined);
  });

  it('rejects a readable buffer after a writable one', () => {
    const { d, q } = setup();
    d.addChain([{ addr: 0x10000, len: 4, write: true }, { addr: 0x11000, len: 4 }]);
    assert.throws(() => q.pop(), code('WRITE_BEFORE_READ'));
  });

  it('follows indirect tables, and refuses them when not negotiated, nested, or malformed', () => {
    const { mem, d, q } = setup();
    const table = 0x30000;
    d.writeDesc(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1, table);
    d.writeDesc(1, 0x11000, 64, VIRTQ_DESC_F_WRITE, 0, table);
    d.writeDesc(0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
    d.publish(0);
    assert.deepEqual(q.pop(), { head: 0, readable: [{ addr: 0x10000, len: 8 }], writable: [{ addr: 0x11000, len: 64 }] });

    const noInd = setup(8, { indirect: false, eventIdx: false });
    noInd.d.writeDesc(0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
    noInd.d.publish(0);
    assert.throws(() => noInd.q.pop(), code('INDIRECT_NOT_NEGOTIATED'));

    const nested = setup();
    nested.d.writeDesc(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0, table);
    nested.d.writeDesc(0, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
    nested.d.publish(0);
    assert.throws(() => nested.q.pop(), code('NESTED_INDIRECT'));

    for (const len of [0, 20]) {
      const s = setup();
      s.d.writeDesc(0, table, len, VIRTQ_DESC_F_INDIRECT, 0);
      s.d.publish(0);
      assert.throws(() => s.q.pop(), code('INDIRECT_TABLE'), `len ${len}`);
    }
    // A table longer than the queue (§2.7.5.3.1): one notification could otherwise walk 256 x 32768 descriptors.
    const long = setup();
    long.d.writeDesc(0, table, 16 * (long.q.cfg.size + 1), VIRTQ_DESC_F_INDIRECT, 0);
    long.d.publish(0);
    assert.throws(() => long.q.pop(), code('INDIRECT_TABLE'));
    const full = setup();
    for (let i = 0; i < full.q.cfg.size; i++) full.d.writeDesc(i, 0x10000 + 64 * i, 8, i + 1 < full.q.cfg.size ? VIRTQ_DESC_F_NEXT : 0, i + 1, table);
    full.d.writeDesc(0, table, 16 * full.q.cfg.size, VIRTQ_DESC_F_INDIRECT, 0);
    full.d.publish(0);
    assert.equal(full.q.pop().readable.length, full.q.cfg.size, 'a table of exactly the queue size is fine');
    const loop = setup();
    loop.d.writeDesc(0, 0x10000, 8, VIRTQ_DESC_F_NEXT, 1, table);
    loop.d.writeDesc(1, 0x10000, 8, VIRTQ_DESC_F_NEXT, 0, table);
    loop.d.writeDesc(0, table, 32, VIRTQ_DESC_F_INDIRECT, 0);
    loop.d.publish(0);
    assert.throws(() => loop.q.pop(), code('CHAIN_TOO_LONG'));
    void mem;
  });

  it('EVENT_IDX: interrupts only when used passes used_event; publishes avail_event', () => {
    const { mem, d, q } = setup(8, { indirect: false, eventIdx: true });
    for (let i = 0; i < 3; i++) d.addChain([{ addr: 0x10000, len: 4 }]);
    mem.writeU16(d.avail + 4 + 2 * 8, 1); // used_event: interrupt once used passes 1
    let old = q.nextUsed;
    q.pushUsed(q.pop().head, 0);
    assert.equal(q.needsInterrupt(old), false);
    assert.equal(mem.readU16(d.used + 4 + 8 * 8), 1); // avail_event
    old = q.nextUsed;
    q.pushUsed(q.pop().head, 0);
    assert.equal(q.needsInterrupt(old), true);
  });

  it('without EVENT_IDX, honours VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
    const { mem, d, q } = setup();
    assert.equal(q.needsInterrupt(0), true);
    mem.writeU16(d.avail, 1);
    assert.equal(q.needsInterrupt(0), false);
  });

  it('without EVENT_IDX, notifications are turned off with used.flags NO_NOTIFY and back on with a look for late chains', () => {
    const { mem, d, q } = setup();
    mem.writeU16(d.used, 1); // stale from an earlier activation
    assert.equal(q.enableNotifications(), false);
    assert.equal(mem.readU16(d.used), 0);
    q.disableNotifications();
    assert.equal(mem.readU16(d.used), 1);
    d.addChain([{ addr: 0x10000, len: 4 }]); // the driver saw NO_NOTIFY: no kick for this one
    assert.equal(q.enableNotifications(), true, 'a chain added while they were off is reported');
    assert.equal(mem.readU16(d.used), 0);
    q.pop();
    assert.equal(q.enableNotifications(), false);
    // armNotifications: on and true when nothing came in; off again and false when something did.
    q.disableNotifications();
    assert.equal(q.armNotifications(), true);
    assert.equal(mem.readU16(d.used), 0);
    q.disableNotifications();
    d.addChain([{ addr: 0x10000, len: 4 }]);
    assert.equal(q.armNotifications(), false);
    assert.equal(mem.readU16(d.used), 1, 'still off: the device goes on');
  });

  it('EVENT_IDX: while notifications are off avail_event stays behind; turning them on publishes it', () => {
    const { mem, d, q } = setup(8, { indirect: false, eventIdx: true });
    const availEvent = () => mem.readU16(d.used + 4 + 8 * 8);
    for (let i = 0; i < 3; i++) d.addChain([{ addr: 0x10000, len: 4 }]);
    q.pop();
    assert.equal(availEvent(), 1);
    q.disableNotifications();
    assert.equal(mem.readU16(d.used), 0, 'used.flags is not used with EVENT_IDX');
    q.pop();
    q.pop();
    assert.equal(availEvent(), 1, 'the driver, past avail_event, does not kick');
    assert.equal(q.enableNotifications(), false);
    assert.equal(availEvent(), 3);
    q.disableNotifications();
    d.addChain([{ addr: 0x10000, len: 4 }]);
    assert.equal(q.enableNotifications(), true);
  });

  it('property: any garbage in the rings yields chains inside RAM or a typed error, never a hang or RangeError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16 * 16 + 6 + 32, maxLength: 16 * 16 + 6 + 32 }), fc.boolean(), (junk, indirect) => {
        const mem = fakeMemory(0x10000);
        mem.write(0x1000, junk); // descriptor table and avail ring of a 16-entry queue
        const q = new SplitQueue(mem, { size: 16, descAddr: 0x1000, availAddr: 0x1100, usedAddr: 0x1200 }, { indirect, eventIdx: false });
        try {
          for (let i = 0; i < 20; i++) {
            const c = q.pop();
            if (!c) break;
            for (const b of [...c.readable, ...c.writable]) assert.ok(b.len === 0 || mem.contains(b.addr, b.len));
            assert.ok(c.readable.length + c.writable.length <= 16 * 2);
            q.pushUsed(c.head, 0);
          }
        } catch (e) {
          assert.ok(e instanceof VirtqError || e instanceof GuestMemoryError, `unexpected ${e}`);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
