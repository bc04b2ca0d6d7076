// Pause and resume on real KVM: a guest that counts in memory stops counting while paused.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, closeSync } from 'node:fs';
import { Machine } from '../../dist/index.js';
import { guest, needsKvm } from '../helpers/kvm.mjs';

const COUNTER = 0x10008; // counter.bin keeps its count at image offset 8
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

describe('Machine lifecycle', needsKvm, () => {
  it('pause() parks the guest (its counter stops), resume() lets it run on; states are emitted', async () => {
    const fd = openSync('/dev/null', 'w');
    const m = Machine.create({ kernel: guest('counter.bin'), memBytes: 32 << 20, consoleFd: fd });
    const states = [];
    m.on('state', (s) => states.push(s));
    const done = m.start();
    const count = () => m.mem.readU32(COUNTER);
    for (let i = 0; i < 200 && count() === 0; i++) await sleep(10);
    const c0 = count();
    await sleep(100);
    assert.ok(count() > c0, 'counting while running');

    await m.pause();
    assert.equal(m.state, 'paused');
    const p0 = count();
    await sleep(300);
    assert.equal(count(), p0, 'no progress while paused');

    m.resume();
    await sleep(200);
    assert.ok(count() > p0, 'counting again after resume');

    await assert.rejects(() => m.pause().then(() => m.pause()), /pause\(\) in state paused/);
    assert.throws(() => m.start(), /start\(\) in state/);
    m.kill();
    assert.deepEqual(await done, { kind: 'killed' });
    assert.deepEqual(states, ['running', 'paused', 'running', 'paused', 'stopping', 'stopped']);
    closeSync(fd);
  });

  it('the console is a stream of the guest output when no fd is given; it has all of it, and has ended, when start() resolves', async () => {
    const m = Machine.create({ kernel: guest('hello.bin'), memBytes: 32 << 20 });
    let out = '';
    m.console.on('data', (d) => (out += d));
    const reason = await m.start();
    assert.deepEqual(reason, { kind: 'debug-exit', value: 0, status: 1 });
    assert.equal(out, 'Hello from real mode\n');
    assert.equal(m.console.readableEnded, true);
  });

  it('shutdown() asks the guest with Ctrl-Alt-Del, and kills it after the grace period if it does not stop', async () => {
    const kbd = Machine.create({ kernel: guest('c-machine.elf'), memBytes: 32 << 20, cmdline: 'kbd' });
    let out = '';
    kbd.console.on('data', (d) => (out += d));
    void kbd.start();
    for (let i = 0; i < 500 && !out.includes('kbd: ready'); i++) await sleep(10);
    assert.deepEqual(await kbd.shutdown(10_000), { kind: 'debug-exit', value: 0, status: 1 });
    assert.match(out, /kbd: ctrl-alt-del received/);

    const fd = openSync('/dev/null', 'w');
    const spin = Machine.create({ kernel: guest('spin.bin'), memBytes: 32 << 20, consoleFd: fd });
    void spin.start();
    const t0 = performance.now();
    assert.deepEqual(await spin.shutdown(300), { kind: 'killed' });
    assert.ok(performance.now() - t0 >= 290);
    closeSync(fd);
  });

  it('kill() before start() releases the VM and resolves wait()', async () => {
    const m = Machine.create({ kernel: guest('hello.bin'), memBytes: 32 << 20 });
    m.kill();
    assert.deepEqual(await m.wait(), { kind: 'killed' });
    assert.equal(m.state, 'stopped');
  });
});
