import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readSync, closeSync } from 'node:fs';
import { FdSink } from '../../dist/vmm/fd-sink.js';
import { native } from '../../dist/native/binding.js';

describe('FdSink (console output that never blocks the event loop)', () => {
  it('writes at once while the fd takes bytes; queues when it is full and drains later, in order', async () => {
    const [r, w] = native().pipe(true, true);
    let drains = 0;
    const sink = new FdSink(w, () => drains++);
    assert.equal(sink.write(Buffer.from('abc')), true);
    const big = Buffer.alloc(1 << 20, 0x78); // more than a pipe holds
    assert.equal(sink.write(big), false, 'queued: the pipe is full');
    assert.equal(sink.write(Buffer.from('end')), false);
    const got = [];
    const buf = Buffer.alloc(65536);
    const done = sink.flushed();
    let total = 0;
    while (total < 3 + big.length + 3) {
      try {
        const n = readSync(r, buf);
        got.push(Buffer.from(buf.subarray(0, n)));
        total += n;
      } catch (e) {
        if (e.code !== 'EAGAIN') throw e;
        await new Promise((res) => setTimeout(res, 1));
      }
    }
    await done;
    const all = Buffer.concat(got);
    assert.equal(all.subarray(0, 3).toString(), 'abc');
    assert.equal(all.subarray(-3).toString(), 'end');
    assert.ok(drains >= 1);
    closeSync(r);
    closeSync(w);
  });

  it('a closed reader (EPIPE) drops output instead of failing', () => {
    const [r, w] = native().pipe(true, true);
    closeSync(r);
    const sink = new FdSink(w);
    assert.equal(sink.write(Buffer.from('x')), true);
    closeSync(w);
  });
});
