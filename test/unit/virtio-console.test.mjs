import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { VirtioConsole, CONSOLE_CONFIG, CONSOLE_CONTROL_BACKLOG, CONSOLE_TURN_BUDGET, CONSOLE_INPUT_LIMIT, CONSOLE_INPUT_HIGH_WATER, CONSOLE_TX_CHAIN_MAX, CONSOLE_FINISH_MAX, CONSOLE_CONTROL as E, VIRTIO_CONSOLE_F } from '../../dist/devices/virtio/console.js';
import { SplitQueue, VirtqError } from '../../dist/devices/virtio/queue.js';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { DriverQueue } from '../helpers/driver-queue.mjs';
import { fakeContext } from '../helpers/fake-context.mjs';

function setup({ queueSize = 16, ...opts } = {}) {
  const mem = fakeMemory(1 << 20);
  const rx = new DriverQueue(mem, 0x1000, queueSize);
  const tx = new DriverQueue(mem, 0x8000, queueSize); // past rx's rings at every size used here
  const queues = [new SplitQueue(mem, rx.config, { indirect: false, eventIdx: false }), new SplitQueue(mem, tx.config, { indirect: false, eventIdx: false })];
  const out = [];
  const con = new VirtioConsole({ output: (b) => (out.push(Buffer.from(b)), opts.accept?.(b)), ...opts });
  const config = new DataView(new ArrayBuffer(CONSOLE_CONFIG.SIZE));
  con.bindConfig(config);
  const ctx = fakeContext(mem, queues);
  con.activate(ctx);
  return { mem, rx, tx, con, ctx, out, config };
}

describe('virtio-console model', () => {
  it('publishes its size and one port in the configuration space, and a resize is a config change', () => {
    const { con, config, ctx } = setup({ cols: 132, rows: 50 });
    assert.equal(config.getUint16(CONSOLE_CONFIG.cols, true), 132);
    assert.equal(config.getUint16(CONSOLE_CONFIG.rows, true), 50);
    assert.equal(config.getUint32(CONSOLE_CONFIG.max_nr_ports, true), 1);
    con.resize(100, 40);
    assert.equal(config.getUint16(CONSOLE_CONFIG.cols, true), 100);
    assert.equal(ctx.configChanges, 1);
  });

  it('guest output arrives in order, across chains and descriptors', () => {
    const { mem, tx, con, out, ctx } = setup();
    mem.write(0x10000, Buffer.from('hello '));
    mem.write(0x11000, Buffer.from('world'));
    mem.write(0x12000, Buffer.from('!\n'));
    tx.addChain([{ addr: 0x10000, len: 6 }, { addr: 0x11000, len: 5 }]);
    tx.addChain([{ addr: 0x12000, len: 2 }]);
    con.notify(1);
    assert.equal(Buffer.concat(out).toString(), 'hello world!\n');
    assert.equal(tx.usedIdx(), 2);
    assert.equal(ctx.interrupts, 1);
  });

  it('host input waits for receive buffers, then fills them in order without overrunning any', () => {
    const { mem, rx, con } = setup();
    con.write(Buffer.from('abcdefghij'));
    assert.equal(rx.usedIdx(), 0, 'no buffers yet');
    mem.slice(0x20000, 16).fill(0xee);
    rx.addChain([{ addr: 0x20000, len: 4, write: true }]);
    rx.addChain([{ addr: 0x21000, len: 100, write: true }]);
    con.notify(0);
    assert.equal(rx.usedIdx(), 2);
    assert.deepEqual(rx.usedElem(0), { id: 0, len: 4 });
    assert.deepEqual(rx.usedElem(1), { id: 1, len: 6 });
    assert.equal(Buffer.from(mem.read(0x20000, 4)).toString(), 'abcd');
    assert.equal(mem.read(0x20004, 1)[0], 0xee, 'nothing written past the buffer');
    assert.equal(Buffer.from(mem.read(0x21000, 6)).toString(), 'efghij');
    con.write(Buffer.from('k'));
    assert.equal(rx.usedIdx(), 2, 'waits for the next buffer');
  });

  it('bounds queued input, counting what it drops', () => {
    const { con } = setup();
    con.write(new Uint8Array(CONSOLE_INPUT_LIMIT - 10));
    con.write(new Uint8Array(30));
    assert.equal(con.inputDropped, 20);
  });

  it('write() returns false past the high-water mark, and inputRoom fires once the guest has taken enough', () => {
    let rooms = 0;
    const { rx, con } = setup({ inputRoom: () => rooms++ });
    assert.equal(con.write(new Uint8Array(CONSOLE_INPUT_HIGH_WATER)), true);
    assert.equal(con.write(new Uint8Array(1000)), false, 'over the mark');
    for (let i = 0; i < 5; i++) rx.addChain([{ addr: 0x20000 + i * 0x4000, len: 0x4000, write: true }]);
    con.notify(0);
    assert.equal(rooms, 0, 'not yet below half the mark');
    for (let i = 0; i < 5; i++) rx.addChain([{ addr: 0x20000 + i * 0x4000, len: 0x4000, write: true }]);
    con.notify(0);
    assert.ok(con.pendingInputBytes <= CONSOLE_INPUT_HIGH_WATER / 2);
    assert.equal(rooms, 1);
    assert.equal(con.inputDropped, 0);
  });

  it('enqueueInput() (console input) takes only what fits under the mark; the caller keeps the rest', () => {
    const { con } = setup();
    assert.equal(con.enqueueInput(new Uint8Array(CONSOLE_INPUT_HIGH_WATER - 10)), CONSOLE_INPUT_HIGH_WATER - 10);
    assert.equal(con.enqueueInput(new Uint8Array(100)), 10);
    assert.equal(con.enqueueInput(new Uint8Array(100)), 0);
    assert.equal(con.inputDropped, 0);
  });

  it('holds transmit buffers while the sink is full, and takes them again on resume()', () => {
    let accept = false;
    const { mem, tx, con, out } = setup({ accept: () => accept });
    mem.write(0x10000, Buffer.from('a'));
    mem.write(0x11000, Buffer.from('b'));
    tx.addChain([{ addr: 0x10000, len: 1 }]);
    tx.addChain([{ addr: 0x11000, len: 1 }]);
    con.notify(1);
    assert.equal(tx.usedIdx(), 1, 'second chain held');
    accept = true;
    con.resume();
    assert.equal(tx.usedIdx(), 2);
    assert.equal(Buffer.concat(out).toString(), 'ab');
  });

  it('finish(): once the guest has stopped, held and never-notified transmit chains go out, in order, with the sink still full', () => {
    const { mem, tx, con, out } = setup({ accept: () => false });
    for (const [i, s] of ['one ', 'two ', 'three'].entries()) mem.write(0x10000 + i * 0x1000, Buffer.from(s));
    tx.addChain([{ addr: 0x10000, len: 4 }]);
    tx.addChain([{ addr: 0x11000, len: 4 }]);
    con.notify(1);
    assert.equal(tx.usedIdx(), 1, 'the sink is full: the second chain is held');
    tx.addChain([{ addr: 0x12000, len: 5 }]); // queued without a notification, as right before a power-off
    con.finish();
    assert.equal(Buffer.concat(out).toString(), 'one two three');
    assert.equal(tx.usedIdx(), 3);
  });

  it('refuses a transmit chain longer than CONSOLE_TX_CHAIN_MAX (descriptors may all point at the same RAM) without copying it', () => {
    const { tx, con, out } = setup();
    tx.addChain([{ addr: 0x10000, len: CONSOLE_TX_CHAIN_MAX / 2 }, { addr: 0x10000, len: CONSOLE_TX_CHAIN_MAX / 2 + 1 }]);
    assert.throws(() => con.notify(1), (e) => e instanceof VirtqError && /at most/.test(e.message));
    assert.equal(out.length, 0);
  });

  it('finish() takes at most CONSOLE_FINISH_MAX bytes, with a warning', () => {
    const mem = fakeMemory(1 << 20);
    const tx = new DriverQueue(mem, 0x3000, 32);
    const queues = [undefined, new SplitQueue(mem, tx.config, { indirect: false, eventIdx: false })];
    let bytes = 0;
    const con = new VirtioConsole({ output: (b) => ((bytes += b.length), false) });
    con.bindConfig(new DataView(new ArrayBuffer(CONSOLE_CONFIG.SIZE)));
    const ctx = fakeContext(mem, queues);
    con.activate(ctx);
    for (let i = 0; i < 20; i++) tx.addChain([{ addr: 0, len: CONSOLE_TX_CHAIN_MAX }]);
    con.finish();
    assert.equal(bytes, CONSOLE_FINISH_MAX);
    assert.deepEqual(ctx.logs.map(([level]) => level), ['warn']);
  });

  it('refuses a transmit chain with a device-writable buffer and a receive chain with a readable one', () => {
    const { tx, rx, con } = setup();
    tx.addChain([{ addr: 0x10000, len: 4, write: true }]);
    assert.throws(() => con.notify(1), VirtqError);
    con.write(Buffer.from('x'));
    const s2 = setup();
    s2.con.write(Buffer.from('x'));
    s2.rx.addChain([{ addr: 0x10000, len: 4 }]);
    assert.throws(() => s2.con.notify(0), VirtqError);
  });

  it('a buffer outside guest RAM is refused, not read', () => {
    const { tx, con } = setup();
    tx.writeDesc(0, 0xfffff0, 0x100, 0, 0);
    tx.publish(0);
    assert.throws(() => con.notify(1), VirtqError);
  });

  describe('a named port (MULTIPORT)', () => {
    // The driver's side of Linux's virtio_console with MULTIPORT: port 0's queues, then the control
    // queues (2: host -> guest, 3: guest -> host).
    function multiport() {
      const mem = fakeMemory(1 << 20);
      const drivers = [0x1000, 0x3000, 0x5000, 0x7000].map((at) => new DriverQueue(mem, at, 16));
      const queues = drivers.map((d) => new SplitQueue(mem, d.config, { indirect: false, eventIdx: false }));
      const out = [];
      const con = new VirtioConsole({ output: (b) => void out.push(Buffer.from(b)), portName: 'org.nodevisor.agent' });
      const ctx = fakeContext(mem, queues, 1n << BigInt(VIRTIO_CONSOLE_F.MULTIPORT));
      con.activate(ctx);
      let slot = 0;
      const send = (id, event, value) => {
        const at = 0x20000 + 0x100 * slot++;
        const v = mem.view(at, 8);
        v.setUint32(0, id, true);
        v.setUint16(4, event, true);
        v.setUint16(6, value, true);
        drivers[3].addChain([{ addr: at, len: 8 }]);
        con.notify(3);
      };
      let got = 0;
      const received = () => {
        const msgs = [];
        for (; got < drivers[2].usedIdx(); got++) {
          const { id: head, len } = drivers[2].usedElem(got);
          const at = 0x40000 + 0x1000 * head;
          const v = mem.view(at, 8);
          msgs.push({ id: v.getUint32(0, true), event: v.getUint16(4, true), value: v.getUint16(6, true), ...(len > 8 ? { name: Buffer.from(mem.read(at + 8, len - 8)).toString() } : {}) });
        }
        return msgs;
      };
      const postControlBuffers = (n) => {
        for (let i = 0; i < n; i++) {
          const head = drivers[2].nextDesc;
          drivers[2].addChain([{ addr: 0x40000 + 0x1000 * head, len: 0x1000, write: true }]);
        }
        con.notify(2);
      };
      return { mem, drivers, con, ctx, out, send, received, postControlBuffers };
    }

    it('control replies waiting for the driver are capped: repeating DEVICE_READY cannot grow them without bound', () => {
      const { con, ctx, send, received, postControlBuffers } = multiport();
      for (let i = 0; i < 3 * CONSOLE_CONTROL_BACKLOG; i++) send(0, E.DEVICE_READY, 1);
      postControlBuffers(16);
      postControlBuffers(16);
      postControlBuffers(16);
      assert.equal(received().length, CONSOLE_CONTROL_BACKLOG);
      assert.equal(ctx.logs.filter(([, m]) => /control messages wait for the driver/.test(m)).length, 1, 'logged once');
      void con;
    });

    it('offers MULTIPORT and four queues only when named', () => {
      assert.equal(new VirtioConsole({ output() {} }).features & (1n << BigInt(VIRTIO_CONSOLE_F.MULTIPORT)), 0n);
      assert.deepEqual(new VirtioConsole({ output() {} }).queueMaxSizes.length, 2);
      const named = new VirtioConsole({ output() {}, portName: 'x' });
      assert.notEqual(named.features & (1n << BigInt(VIRTIO_CONSOLE_F.MULTIPORT)), 0n);
      assert.equal(named.queueMaxSizes.length, 4);
    });

    it('DEVICE_READY -> DEVICE_ADD; PORT_READY -> PORT_OPEN then PORT_NAME; the guest opening the port is noted; data flows on port 0', () => {
      const { mem, drivers, con, ctx, out, send, received, postControlBuffers } = multiport();
      send(0xffffffff, E.DEVICE_READY, 1);
      assert.deepEqual(received(), [], 'no control buffer yet: the message waits');
      postControlBuffers(4);
      assert.deepEqual(received(), [{ id: 0, event: E.DEVICE_ADD, value: 0 }]);
      send(0, E.PORT_READY, 1);
      assert.deepEqual(received(), [{ id: 0, event: E.PORT_OPEN, value: 1 }, { id: 0, event: E.PORT_NAME, value: 0, name: 'org.nodevisor.agent' }]);
      assert.equal(con.guestOpen, false);
      send(0, E.PORT_OPEN, 1);
      assert.equal(con.guestOpen, true);
      mem.write(0x60000, Buffer.from('frame'));
      drivers[1].addChain([{ addr: 0x60000, len: 5 }]);
      con.notify(1);
      assert.equal(Buffer.concat(out).toString(), 'frame');
      assert.deepEqual(ctx.failures, []);
    });

    it('a control message for a port that does not exist, or a short one, is a broken request', () => {
      const { drivers, con, send, mem } = multiport();
      assert.throws(() => send(5, E.PORT_READY, 1), VirtqError);
      drivers[3].addChain([{ addr: 0x30000, len: 4 }]);
      assert.throws(() => con.notify(3), VirtqError);
      void mem;
    });

    it('a driver without MULTIPORT gets the plain single port (the control queues stay idle)', () => {
      const mem = fakeMemory(1 << 20);
      const rx = new DriverQueue(mem, 0x1000, 16);
      const tx = new DriverQueue(mem, 0x3000, 16);
      const out = [];
      const con = new VirtioConsole({ output: (b) => void out.push(Buffer.from(b)), portName: 'org.nodevisor.agent' });
      const ctx = fakeContext(mem, [new SplitQueue(mem, rx.config, { indirect: false, eventIdx: false }), new SplitQueue(mem, tx.config, { indirect: false, eventIdx: false })]);
      con.activate(ctx);
      mem.write(0x10000, Buffer.from('hi'));
      tx.addChain([{ addr: 0x10000, len: 2 }]);
      con.notify(1);
      con.notify(3);
      assert.equal(Buffer.concat(out).toString(), 'hi');
    });
  });
});

describe('virtio-console: broken chains met by work the host started, and per-turn budgets', () => {
  it('a device-readable receive buffer met when the host types fails the device instead of throwing into the input stream', () => {
    const { rx, con, ctx } = setup();
    rx.addChain([{ addr: 0x20000, len: 16 }]); // readable: not a receive buffer
    con.notify(0); // no input yet: not looked at
    assert.doesNotThrow(() => con.write(Buffer.from('ls\n')));
    assert.equal(ctx.failures.length, 1);
    assert.match(ctx.failures[0].message, /receive buffer 0 is device-readable/);
    assert.doesNotThrow(() => con.write(Buffer.from('more')), 'a failed device ignores input until reset');
  });

  it('a broken transmit chain met when the sink drains fails the device instead of throwing into the drain callback', () => {
    let room = true;
    const { mem, tx, con, ctx } = setup({ accept: () => room });
    room = false;
    mem.write(0x10000, Buffer.from('x'));
    tx.addChain([{ addr: 0x10000, len: 1 }]);
    con.notify(1); // the sink is full: paused
    tx.addChain([{ addr: 0x11000, len: 1, write: true }]); // device-writable: broken
    room = true;
    assert.doesNotThrow(() => con.resume());
    assert.equal(ctx.failures.length, 1);
    assert.match(ctx.failures[0].message, /transmit buffer 1 is device-writable/);
  });

  it(`takes at most ${CONSOLE_TURN_BUDGET} transmit chains per event-loop turn, the rest on the next turns`, async () => {
    const { mem, rx, tx, con } = setup({ queueSize: 256, accept: () => true });
    mem.write(0x10000, Buffer.from('y'));
    for (let i = 0; i < 200; i++) tx.addChain([{ addr: 0x10000, len: 1 }]);
    con.notify(1);
    assert.equal(tx.usedIdx(), CONSOLE_TURN_BUDGET);
    for (let turn = 0; turn < 10 && tx.usedIdx() < 200; turn++) await new Promise((r) => setImmediate(r));
    assert.equal(tx.usedIdx(), 200);
    assert.equal(con.bytesOut, 200);
    con.reset();
  });

  it(`takes at most ${CONSOLE_TURN_BUDGET} receive chains per turn too: zero-length ones, which take no input, cannot hold the main thread`, async () => {
    const { mem, rx, tx, con } = setup({ queueSize: 256, accept: () => true });
    con.write(Buffer.from('x'));
    for (let i = 0; i < 200; i++) rx.addChain([{ addr: 0x10000, len: 0, write: true }]);
    rx.addChain([{ addr: 0x20000, len: 16, write: true }]);
    con.notify(0);
    assert.equal(rx.usedIdx(), CONSOLE_TURN_BUDGET, 'one turn\'s share');
    for (let turn = 0; turn < 10 && rx.usedIdx() < 201; turn++) await new Promise((r) => setImmediate(r));
    assert.equal(rx.usedIdx(), 201, 'the rest on the next turns, up to the buffer that takes the input');
    assert.equal(Buffer.from(mem.read(0x20000, 1)).toString(), 'x');
    assert.equal(con.bytesIn, 1);
    con.reset();
  });
});
