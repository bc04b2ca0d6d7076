import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, readSync } from 'node:fs';
import { asyncOutput } from '../../dist/cli/async-output.js';
import { native } from '../../dist/native/binding.js';

/** A pipe whose write end blocks, as a CI runner's stdout pipe does; the read end never blocks. */
const blockingPipe = () => native().pipe(true, false);

/** Everything in the pipe right now. */
function readAvailable(fd) {
  const parts = [];
  const buf = Buffer.alloc(1 << 16);
  for (;;) {
    let n;
    try {
      n = readSync(fd, buf);
    } catch (e) {
      if (e.code === 'EAGAIN') break;
      throw e;
    }
    if (n === 0) break;
    parts.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(parts);
}

describe('asyncOutput (stdout and stderr of run -- COMMAND)', () => {
  it('delivers every byte in order', async () => {
    const [r, w] = blockingPipe();
    const out = asyncOutput(w);
    const sent = [];
    let got = Buffer.alloc(0);
    const reader = setInterval(() => (got = Buffer.concat([got, readAvailable(r)])), 1);
    for (let i = 0; i < 2000; i++) {
      const chunk = Buffer.from(`line ${i} ${'x'.repeat(i % 97)}\n`);
      sent.push(chunk);
      if (!out.write(chunk)) await new Promise((res) => out.once('drain', res));
    }
    await new Promise((res) => out.end(res));
    await new Promise((res) => setTimeout(res, 20));
    clearInterval(reader);
    got = Buffer.concat([got, readAvailable(r)]);
    assert.ok(got.equals(Buffer.concat(sent)));
    closeSync(r);
    closeSync(w);
  });

  it('a reader that stops reading fills the stream (write() says wait) but never stalls the event loop', async () => {
    const [r, w] = blockingPipe();
    const out = asyncOutput(w);
    const chunk = Buffer.alloc(64 << 10, 0x61);
    let written = 0;
    let refused = false;
    while (written < 32 && !refused) {
      refused = !out.write(chunk); // up to 2 MiB: far beyond a pipe's 64 KiB
      written++;
    }
    assert.equal(refused, true);
    // The pipe is full and a pool thread sits in write(2): timers still run on time.
    const t0 = performance.now();
    await new Promise((res) => setTimeout(res, 50));
    assert.ok(performance.now() - t0 < 1000, `a 50 ms timer took ${performance.now() - t0} ms`);
    // Once the reader reads again, everything arrives.
    let total = 0;
    let ended = false;
    out.end(() => (ended = true));
    while (!ended) {
      total += readAvailable(r).length;
      await new Promise((res) => setTimeout(res, 1));
    }
    total += readAvailable(r).length;
    assert.equal(total, written * chunk.length);
    closeSync(r);
    closeSync(w);
  });

  it('when the reader goes away (EPIPE) the rest is dropped quietly', async () => {
    const [r, w] = blockingPipe();
    closeSync(r);
    const out = asyncOutput(w);
    let errors = 0;
    out.on('error', () => errors++);
    for (let i = 0; i < 10; i++) out.write(Buffer.from('nobody reads this\n'));
    await new Promise((res) => out.end(res));
    assert.equal(errors, 0);
    closeSync(w);
  });
});
