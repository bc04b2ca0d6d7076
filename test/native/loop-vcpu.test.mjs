// The event-loop hook for a vCPU on the main thread (native/src/loop_vcpu.cc), without /dev/kvm:
// the "vCPU" is a kvm_run-sized mapping of a plain file, and "being in the guest" is a loop that
// spins until a kick sets immediate_exit, as KVM_RUN would return EINTR. Each case runs in its own
// process, so that a hook that never kicks, or keeps the loop alive, fails by its exit instead of
// wedging the test runner.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { addonPath } from '../../dist/native/binding.js';
import { KVM_RUN } from '../../dist/kvm/layout.js';

// Spins without allocating (allocation makes V8 post tasks, which wake the loop on their own) for
// at most ~SPIN_CAP iterations: seconds on any machine, far beyond what the cases wait for.
const PRELUDE = `
const n = require(${JSON.stringify(addonPath())});
const fs = require('node:fs');
const file = process.argv[1] + '/run';
const fd = fs.openSync(file, 'w+'); fs.ftruncateSync(fd, 4096);
const id = n.mapVcpuRun(fd, 4096);
const run = new Uint8Array(n.mappingBuffer(id));
const IMMEDIATE_EXIT = ${KVM_RUN.immediate_exit};
const slices = [];
function guest() {
  n.setRunner(id, true);
  let i = 0;
  for (; run[IMMEDIATE_EXIT] === 0 && i < 4e9; i++);
  const kicked = run[IMMEDIATE_EXIT] === 1;
  run[IMMEDIATE_EXIT] = 0;
  n.setRunner(id, false);
  slices.push(kicked);
}
const t0 = Date.now();
const report = (o) => process.stdout.write(JSON.stringify({ ...o, slices: slices.length, capped: slices.filter((k) => !k).length }) + '\\n');
`;

function runCase(body) {
  const dir = mkdtempSync(path.join(tmpdir(), 'nv-loop-'));
  try {
    const r = spawnSync(process.execPath, ['-e', PRELUDE + body, dir], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.signal, null, `case killed by ${r.signal} (hung?): ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('native loop vCPU hook', () => {
  it('a timer due while the vCPU is in the guest kicks it out, and fires on time', () => {
    const r = runCase(`
      n.loopVcpuStart(id, guest);
      setTimeout(() => { n.loopVcpuStop(); report({ ms: Date.now() - t0 }); }, 400);
    `);
    assert.ok(r.slices >= 1, 'the guest ran');
    assert.equal(r.capped, 0, 'every slice ended by a kick');
    // Late by a whole period (~800 ms) if the loop timed its next poll from the clock it read
    // before the guest ran.
    assert.ok(r.ms >= 400 && r.ms < 700, `timer fired after ${r.ms} ms`);
  });

  it('I/O finished by the thread pool kicks it out (fs.readFile completes while the guest runs)', () => {
    const r = runCase(`
      n.loopVcpuStart(id, guest);
      fs.readFile('/proc/self/stat', (err) => {
        n.loopVcpuStop();
        report({ err: err && err.message, ms: Date.now() - t0 });
      });
    `);
    assert.equal(r.err, null);
    assert.equal(r.capped, 0);
    assert.ok(r.ms < 2000, `readFile took ${r.ms} ms`);
  });

  it('a socket opened after the guest started still wakes the loop (its fd joins epoll first)', () => {
    const r = runCase(`
      const net = require('node:net');
      const sock = process.argv[1] + '/s';
      n.loopVcpuStart(id, guest);
      const server = net.createServer((c) => c.once('data', (d) => {
        n.loopVcpuStop(); server.close(); c.destroy();
        report({ got: d.toString(), ms: Date.now() - t0 });
      })).listen(sock, () => {
        // Another process connects and writes, so that nothing but the socket wakes this loop.
        require('node:child_process').spawn(process.execPath, ['-e', "const c = require('node:net').connect(process.argv[1], () => setTimeout(() => c.end('hello'), 50))", sock], { stdio: 'ignore' });
      });
    `);
    assert.equal(r.got, 'hello');
    assert.equal(r.capped, 0);
  });

  it('stopped from inside a slice, the hook lets the process exit; a second start is EBUSY', () => {
    const r = runCase(`
      let busy;
      n.loopVcpuStart(id, () => {
        guest();
        if (slices.length === 2) { n.loopVcpuStop(); report({ busy }); }
      });
      try { n.loopVcpuStart(id, () => {}); } catch (e) { busy = e.code; }
      setTimeout(() => {}, 10); setTimeout(() => {}, 20);
    `);
    assert.equal(r.busy, 'EBUSY');
    assert.equal(r.slices, 2);
    assert.equal(r.capped, 0);
  });

  it('the first slice comes at the loop\'s next turn, not when it next wakes up: started from a callback, or again from inside a slice', () => {
    const r = runCase(`
      const waits = [];
      let since;
      setTimeout(() => {
        since = Date.now();
        n.loopVcpuStart(id, () => {
          waits.push(Date.now() - since);
          n.loopVcpuStop();
          since = Date.now();
          n.loopVcpuStart(id, () => { waits.push(Date.now() - since); n.loopVcpuStop(); report({ waits }); });
        });
      }, 10);
      // A timer far off is all the loop would otherwise wait for.
      setTimeout(() => {}, 3000).unref();
    `);
    assert.ok(r.waits.every((ms) => ms < 1000), `callbacks came ${r.waits.join(' and ')} ms after their start`);
  });

  it('keeps the process alive while started, and not after loopVcpuStop()', () => {
    const r = runCase(`
      n.loopVcpuStart(id, guest);
      // Nothing else keeps this loop alive: an unref'd timer stops the hook later.
      setTimeout(() => { n.loopVcpuStop(); process.on('exit', () => report({ ms: Date.now() - t0 })); }, 200).unref();
    `);
    assert.ok(r.ms >= 200, `exited after ${r.ms} ms, before the hook was stopped`);
    assert.equal(r.capped, 0);
  });
});
