import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Serial8250, SERIAL_RX_CAPACITY } from '../../dist/devices/legacy/serial-8250.js';

const DATA = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

function uart() {
  const out = [];
  const levels = [];
  const s = new Serial8250('com1', { irq: { setLevel: (h) => levels.push(h) }, output: (b) => out.push(...b) });
  return { s, out, levels, rd: (o) => s.read(o, 1), wr: (o, v) => s.write(o, 1, v) };
}

describe('Serial8250', () => {
  it('sends THR bytes to the output sink and always reports THRE|TEMT', () => {
    const u = uart();
    for (const c of Buffer.from('ok\n')) u.wr(DATA, c);
    assert.equal(Buffer.from(u.out).toString(), 'ok\n');
    assert.equal(u.rd(LSR) & 0x60, 0x60);
  });

  it('ignores wide accesses and reads them as all ones', () => {
    const u = uart();
    u.s.write(DATA, 2, 0x4141);
    assert.deepEqual(u.out, []);
    assert.equal(u.s.read(LSR, 2), 0xffff);
  });

  it('DLAB switches offsets 0 and 1 to the divisor latch', () => {
    const u = uart();
    u.wr(LCR, 0x83);
    u.wr(DATA, 0x01);
    u.wr(IER, 0x00);
    assert.equal(u.rd(DATA), 0x01);
    assert.equal(u.rd(IER), 0x00);
    assert.deepEqual(u.out, []);
    u.wr(LCR, 0x03);
    u.wr(DATA, 0x41);
    assert.deepEqual(u.out, [0x41]);
  });

  it('scratch register holds its value', () => {
    const u = uart();
    u.wr(SCR, 0xa5);
    assert.equal(u.rd(SCR), 0xa5);
  });

  it('loopback wires MCR outputs to MSR inputs (Linux autoconfig probes this)', () => {
    const u = uart();
    u.wr(MCR, 0x10 | 0x0a);
    assert.equal(u.rd(MSR) & 0xf0, 0x90);
    u.wr(DATA, 0x55); // loops back into the receiver, not to the output
    assert.deepEqual(u.out, []);
    assert.equal(u.rd(LSR) & 1, 1);
    assert.equal(u.rd(DATA), 0x55);
    u.wr(MCR, 0x08);
    assert.equal(u.rd(MSR) & 0xf0, 0xb0);
  });

  it('received bytes set DR, come out in order, and raise the IRQ only with RDI enabled', () => {
    const u = uart();
    assert.equal(u.s.enqueueInput(Buffer.from('ab')), 2);
    assert.deepEqual(u.levels, []);
    assert.equal(u.rd(LSR) & 1, 1);
    u.wr(IER, 0x01);
    assert.deepEqual(u.levels, [true]);
    assert.equal(u.rd(IIR) & 0x0f, 0x04);
    assert.equal(u.rd(DATA), 0x61);
    assert.equal(u.rd(DATA), 0x62);
    assert.equal(u.rd(LSR) & 1, 0);
    assert.deepEqual(u.levels, [true, false]);
    assert.equal(u.rd(IIR) & 0x0f, 0x01);
  });

  it('THR-empty interrupt fires when enabled and is acknowledged by reading IIR', () => {
    const u = uart();
    u.wr(IER, 0x02);
    assert.deepEqual(u.levels, [true]);
    assert.equal(u.rd(IIR) & 0x0f, 0x02);
    assert.deepEqual(u.levels, [true, false]);
    assert.equal(u.rd(IIR) & 0x0f, 0x01);
    u.wr(DATA, 0x41); // transmitted at once: THR empty again
    assert.deepEqual(u.levels, [true, false, true]);
  });

  it('FIFO enable shows in IIR and FCR clears the receiver', () => {
    const u = uart();
    u.wr(IIR, 0x01);
    assert.equal(u.rd(IIR) & 0xc0, 0xc0);
    u.s.enqueueInput(Buffer.from('xyz'));
    u.wr(IIR, 0x03);
    assert.equal(u.rd(LSR) & 1, 0);
    assert.equal(u.s.rxPending, 0);
  });

  it('the receive FIFO refuses bytes beyond its capacity', () => {
    const u = uart();
    assert.equal(u.s.enqueueInput(new Uint8Array(SERIAL_RX_CAPACITY + 10)), SERIAL_RX_CAPACITY);
    assert.equal(u.s.enqueueInput(Uint8Array.of(1)), 0);
    u.rd(DATA);
    assert.equal(u.s.enqueueInput(Uint8Array.of(1, 2)), 1);
  });

  it('two views over one shared buffer see the same state (one per vCPU thread)', () => {
    const a = uart();
    const out = [];
    const b = new Serial8250('com1', { irq: { setLevel() {} }, output: (x) => out.push(...x) }, a.s.buffer);
    a.wr(SCR, 0x42);
    assert.equal(b.read(SCR, 1), 0x42);
    a.s.enqueueInput(Uint8Array.of(9));
    assert.equal(b.read(DATA, 1), 9);
    b.write(DATA, 1, 0x21);
    assert.deepEqual(out, [0x21]);
  });
});
