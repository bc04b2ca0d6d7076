// SharedState's lock: mutual exclusion between threads (two workers and the main thread), and a
// lock word left free, whether the lock was ever contended or not.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { SharedState } from '../../dist/devices/shared-state.js';
import { hammer } from '../helpers/shared-state-hammer.mjs';

const ROUNDS = 50000;

/** Three threads increment one counter ROUNDS times each; returns the count and the lock word after. */
async function race(useLock) {
  const s = SharedState.create(32);
  const workers = [0, 1].map(() => new Worker(new URL('../helpers/shared-state-worker.mjs', import.meta.url), { workerData: { buffer: s.buffer, rounds: ROUNDS, useLock } }));
  while (Atomics.load(s.words, 4) < 2) await new Promise((r) => setTimeout(r, 1)); // both workers at the start line
  Atomics.store(s.words, 2, 1);
  hammer(s.buffer, ROUNDS, useLock);
  await Promise.all(workers.map((w) => new Promise((resolve, reject) => w.once('message', resolve).once('error', reject))));
  await Promise.all(workers.map((w) => w.terminate()));
  return { count: s.words[1], word: s.words[0] };
}

describe('SharedState lock', () => {
  it('lets one thread at a time in: no increment is lost among three threads', async () => {
    const r = await race(true);
    assert.equal(r.count, 3 * ROUNDS);
    assert.equal(r.word, 0, 'free at the end');
  });

  it('(the same race without the lock loses increments: the test can tell)', async () => {
    // Losses need the threads to run at the same time, which a busy host does not always grant a
    // single race: a few tries.
    const counts = [];
    for (let i = 0; i < 5 && !(counts.at(-1) < 3 * ROUNDS); i++) counts.push((await race(false)).count);
    assert.ok(counts.at(-1) < 3 * ROUNDS, `no increment lost in ${counts.length} races: ${counts.join(', ')} of ${3 * ROUNDS}`);
  });

  it('takes and gives back an uncontended lock without marking it contended; locked() returns and releases on a throw', () => {
    const s = SharedState.create(8);
    s.lock();
    assert.equal(s.words[0], 1);
    s.unlock();
    assert.equal(s.words[0], 0);
    assert.equal(s.locked(() => 42), 42);
    assert.throws(() => s.locked(() => { throw new Error('inside'); }), /inside/);
    assert.equal(s.words[0], 0);
  });
});
