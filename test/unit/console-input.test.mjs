// Console input (stdin to the guest's UART FIFO), against a fake FIFO that takes what it has room for.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { ConsoleInput, PENDING_HIGH_WATER } from '../../dist/vmm/console-input.js';
import { waitFor } from '../helpers/wait.mjs';

/** A receive FIFO with `room` free bytes; drain() frees more, as the guest reading it would. */
function fakeFifo(room) {
  const got = [];
  return {
    got,
    room,
    enqueueInput(bytes) {
      const n = Math.min(this.room, bytes.length);
      got.push(...bytes.subarray(0, n));
      this.room -= n;
      return n;
    },
    drain(n) {
      this.room += n;
    },
  };
}

describe('console input', () => {
  it('Ctrl-A x stops; Ctrl-A Ctrl-A sends one Ctrl-A; Ctrl-A and anything else are both dropped', async (t) => {
    const input = new PassThrough();
    const fifo = fakeFifo(1 << 20);
    let stopped = 0;
    const ci = new ConsoleInput(input, fifo, () => stopped++);
    t.after(() => ci.close());
    input.write(Buffer.from('a\x01\x01b\x01zc'));
    await tick();
    assert.equal(Buffer.from(fifo.got).toString('latin1'), 'a\x01bc');
    input.write(Buffer.from('\x01'));
    input.write(Buffer.from('x')); // the escape may span two reads
    await tick();
    assert.equal(stopped, 1);
  });

  it('bytes the FIFO cannot take wait, in order, and are retried as it drains', async (t) => {
    const fifo = fakeFifo(3);
    const ci = new ConsoleInput(undefined, fifo, () => {});
    t.after(() => ci.close());
    ci.push(Buffer.from('hello'));
    assert.equal(Buffer.from(fifo.got).toString(), 'hel');
    assert.equal(ci.pendingBytes, 2);
    fifo.drain(10);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(Buffer.from(fifo.got).toString(), 'hello');
    assert.equal(ci.pendingBytes, 0);
  });

  it('pauses a stream the guest does not read past the high-water mark, and resumes it as the FIFO drains', async (t) => {
    const input = new PassThrough({ highWaterMark: 16 * 1024 });
    const fifo = fakeFifo(16);
    const ci = new ConsoleInput(input, fifo, () => {});
    t.after(() => ci.close());
    const total = 4 * PENDING_HIGH_WATER;
    const data = Buffer.alloc(total, 0x41);
    let accepted = 0;
    for (let at = 0; at < total; at += 8192) {
      input.write(data.subarray(at, at + 8192));
      await tick();
    }
    accepted = total - input.readableLength - input.writableLength;
    assert.ok(ci.pendingBytes <= PENDING_HIGH_WATER + 16 * 1024, `${ci.pendingBytes} bytes held in memory`);
    assert.ok(input.isPaused(), 'the stream is paused');
    assert.ok(accepted < total, 'the rest waits in the stream');
    fifo.drain(total);
    await waitFor(() => fifo.got.length >= total, 2_000);
    assert.equal(fifo.got.length, total, 'everything arrives once the guest reads');
    assert.equal(input.isPaused(), false);
  });

  it('a terminal is read on past the mark, so Ctrl-A x still works; what is typed past it is dropped and counted', async (t) => {
    const input = Object.assign(new PassThrough(), { isTTY: true, isRaw: false, setRawMode(on) { this.isRaw = on; } });
    const fifo = fakeFifo(0); // a guest that never reads
    let stopped = 0;
    const ci = new ConsoleInput(input, fifo, () => stopped++);
    t.after(() => ci.close());
    assert.equal(input.isRaw, true, 'raw while we read it');
    input.write(Buffer.alloc(PENDING_HIGH_WATER + 1, 0x61));
    await tick();
    input.write(Buffer.from('more'));
    await tick();
    assert.equal(ci.pendingBytes, PENDING_HIGH_WATER + 1);
    assert.equal(ci.dropped, 4);
    assert.equal(input.isPaused(), false);
    input.write(Buffer.from('\x01x'));
    await tick();
    assert.equal(stopped, 1);
    ci.close();
    assert.equal(input.isRaw, false, 'the terminal mode is given back');
  });
});
