import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Bus } from '../../dist/bus/bus.js';

const recorder = (label) => {
  const log = [];
  return {
    log,
    dev: {
      debugLabel: label,
      read: (offset, size) => (log.push(['r', offset, size]), 0x100 + offset),
      write: (offset, size, value) => void log.push(['w', offset, size, value]),
    },
  };
};

describe('Bus', () => {
  for (const space of ['pio', 'mmio']) {
    it(`${space}: routes accesses to the device with offsets from its base`, () => {
      const bus = new Bus(space);
      const a = recorder('a');
      const base = space === 'pio' ? 0x3f8 : 0xd000_0000;
      bus.insert(a.dev, base, 8);
      assert.equal(bus.read(base + 5, 1), 0x105);
      bus.write(base + 2, 2, 0xbeef);
      assert.deepEqual(a.log, [['r', 5, 1], ['w', 2, 2, 0xbeef]]);
    });

    it(`${space}: unclaimed reads return all ones of the width and are reported`, () => {
      const bus = new Bus(space);
      const seen = [];
      bus.onUnclaimed = (addr, size, isWrite, value) => seen.push([addr, size, isWrite, value]);
      assert.equal(bus.read(0x80, 1), 0xff);
      assert.equal(bus.read(0x80, 2), 0xffff);
      assert.equal(bus.read(0x80, 4), 0xffffffff);
      bus.write(0x81, 1, 7);
      assert.deepEqual(seen, [[0x80, 1, false, 0xff], [0x80, 2, false, 0xffff], [0x80, 4, false, 0xffffffff], [0x81, 1, true, 7]]);
    });

    it(`${space}: an access straddling the end of a range is unclaimed`, () => {
      const bus = new Bus(space);
      const a = recorder('a');
      bus.insert(a.dev, 0x100, 4);
      assert.equal(bus.read(0x102, 4), 0xffffffff);
      assert.equal(bus.read(0x103, 1), 0x103);
      assert.equal(bus.read(0xff, 2), 0xffff);
      assert.deepEqual(a.log, [['r', 3, 1]]);
    });

    it(`${space}: rejects overlapping, empty and out-of-space ranges`, () => {
      const bus = new Bus(space);
      bus.insert(recorder('first').dev, 0x100, 0x10);
      assert.throws(() => bus.insert(recorder('second').dev, 0x10f, 1), /second at 0x10f\+0x1 overlaps first at 0x100\+0x10/);
      assert.throws(() => bus.insert(recorder('third').dev, 0xf8, 9), /overlaps first/);
      assert.throws(() => bus.insert(recorder('empty').dev, 0x200, 0), /invalid range/);
      assert.throws(() => bus.insert(recorder('neg').dev, -1, 2), /invalid range/);
      bus.insert(recorder('adjacent').dev, 0x110, 0x10);
      bus.insert(recorder('below').dev, 0xf0, 0x10);
      assert.deepEqual(bus.list().map((e) => e.label), ['below', 'first', 'adjacent']);
    });
  }

  it('pio: ports beyond 0xffff are rejected', () => {
    const bus = new Bus('pio');
    assert.throws(() => bus.insert(recorder('x').dev, 0xfffc, 8), /invalid range/);
  });

  it('pio: devices inserted in any address order each get their own ports, and gaps stay unclaimed', () => {
    const bus = new Bus('pio');
    const bases = [0x3f8, 0x60, 0x2f8, 0x20, 0xcf8, 0x70, 0x64];
    const devs = bases.map((base) => {
      const r = recorder(`at ${base}`);
      bus.insert(r.dev, base, base === 0xcf8 ? 8 : 4);
      return r;
    });
    bases.forEach((base, i) => assert.equal(bus.read(base + 1, 1), 0x101, `device at ${base.toString(16)}`));
    assert.ok(devs.every((d) => d.log.length === 1), 'each read reached its own device');
    for (const gap of [0x24, 0x68, 0x2fc, 0x3fc, 0xd00, 0]) assert.equal(bus.read(gap, 1), 0xff, `port ${gap.toString(16)} is unclaimed`);
  });

  it('pio: ranges across a 256-port page boundary, and spanning whole pages, are found on every port', () => {
    // Port lookups go through pages of 256 ports (made only where a device is).
    const bus = new Bus('pio');
    const a = recorder('across'), b = recorder('wide'), c = recorder('after');
    bus.insert(a.dev, 0x1fe, 4); // 0x1fe-0x201: the end of one page, the start of the next
    bus.insert(b.dev, 0x4f0, 0x220); // 0x4f0-0x70f: three pages, one of them whole
    bus.insert(c.dev, 0x202, 2); // inserted after, before `wide`: `wide` moves up in the table
    for (const [port, rec, off] of [[0x1fe, a, 0], [0x201, a, 3], [0x202, c, 0], [0x203, c, 1], [0x4f0, b, 0], [0x5ff, b, 0x10f], [0x600, b, 0x110], [0x70f, b, 0x21f]]) {
      assert.equal(bus.read(port, 1), 0x100 + off, `port ${port.toString(16)}`);
      assert.deepEqual(rec.log.at(-1), ['r', off, 1]);
    }
    for (const gap of [0x1fd, 0x204, 0x4ef, 0x710, 0x7ff, 0xffff]) assert.equal(bus.read(gap, 1), 0xff, `port ${gap.toString(16)} is unclaimed`);
    assert.equal(bus.read(0x200, 4), 0xffffffff, 'a read from `across` into `after` is nobody\'s');
  });

  it('mmio: finds the right device among many (binary search)', () => {
    const bus = new Bus('mmio');
    const devs = [];
    for (let i = 0; i < 50; i++) {
      const r = recorder(`d${i}`);
      devs.push(r);
      bus.insert(r.dev, 0x1000_0000 + i * 0x2000, 0x1000);
    }
    for (let i = 49; i >= 0; i--) assert.equal(bus.read(0x1000_0000 + i * 0x2000 + 0xffc, 4), 0x100 + 0xffc);
    assert.equal(bus.read(0x1000_0000 + 0x1000, 4), 0xffffffff); // the gap between two devices
    assert.ok(devs.every((d) => d.log.length === 1));
  });
});
