// CI-friendly runs: --expect waits for a console line (both ways), --json gives one event per line,
// and many machines run at once from one process with the event loop free.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { guest, needsKvm, runCli } from '../helpers/kvm.mjs';
import { waitFor } from '../helpers/wait.mjs';
import { Machine } from '../../dist/index.js';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

describe('smoke-boot helpers', needsKvm, () => {
  it('--expect succeeds (status 0) as soon as a console line matches, stopping the guest', async () => {
    const r = await runCli(['run', '--kernel', guest('spin.bin'), '--expect', '^spin+ing$', '--timeout', '30', '--log-level', 'error']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'spinning\n');
    assert.ok(r.ms < 10_000);
  });

  it('--expect fails with status 124 on timeout and 14 when the guest ends without the line', async () => {
    const t = await runCli(['run', '--kernel', guest('spin.bin'), '--expect', 'never', '--timeout', '1', '--log-level', 'error']);
    assert.equal(t.status, 124);
    const e = await runCli(['run', '--kernel', guest('hello.bin'), '--expect', 'never', '--log-level', 'error']);
    assert.equal(e.status, 14);
    assert.match(e.stderr, /nodevisor: the guest stopped before a console line matched --expect never/);
    const bad = await runCli(['run', '--kernel', guest('hello.bin'), '--expect', '(']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^nodevisor: --expect \(: not a regular expression/);
  });

  it('a run that booted a guest writes the code cache for later runs (a refused one writes none: test/unit/cli-code-cache)', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    const runCaches = () => {
      try {
        return readdirSync(path.join(home, 'nodevisor', 'code-cache')).filter((f) => /^cli-bundle-.*-run-v\d+.*\.v8$/.test(f));
      } catch {
        return [];
      }
    };
    try {
      const r = await runCli(['run', '--kernel', guest('hello.bin'), '--log-level', 'error'], { env: { XDG_CACHE_HOME: home } });
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stdout, 'Hello from real mode\n');
      assert.equal(runCaches().length, 1);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('--json prints one event per line: started, output, exited with status, reason and timing', async () => {
    const r = await runCli(['run', '--kernel', guest('hello.bin'), '--json', '--log-level', 'error']);
    assert.equal(r.status, 1);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const kinds = [...new Set(events.map((e) => e.event))];
    assert.deepEqual(kinds, ['started', 'output', 'exited']);
    assert.equal(events.filter((e) => e.event === 'output').map((e) => e.data).join(''), 'Hello from real mode\n');
    const exited = events.at(-1);
    assert.equal(exited.status, 1);
    assert.deepEqual(exited.reason, { kind: 'debug-exit', value: 0, status: 1 });
    assert.ok(exited.ms >= events[0].ms);
  });

  it('10 machines at once from one process, each isolated, while the event loop stays responsive', async () => {
    const machines = Array.from({ length: 10 }, (_, i) => Machine.create({ kernel: guest(i % 2 ? 'counter.bin' : 'hello.bin'), memBytes: 32 << 20 }));
    const outputs = machines.map(() => '');
    machines.forEach((m, i) => m.console.on('data', (d) => (outputs[i] += d)));
    const done = machines.map((m) => m.start());
    const late = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 20));
      late.push(performance.now() - t0 - 20);
    }
    for (let i = 1; i < 10; i += 2) {
      await waitFor(() => machines[i].mem.readU32(0x10008) > 0, 5_000);
      assert.ok(machines[i].mem.readU32(0x10008) > 0, `machine ${i} counts in its own memory`);
      machines[i].kill();
    }
    const reasons = await Promise.all(done);
    reasons.forEach((r, i) => assert.deepEqual(r, i % 2 ? { kind: 'killed' } : { kind: 'debug-exit', value: 0, status: 1 }));
    outputs.forEach((o, i) => assert.equal(o, i % 2 ? 'counting\n' : 'Hello from real mode\n'));
    // A blocked event loop would stall for a guest's whole run; the ten vCPU threads starting up may
    // still crowd out a timer or two on a 2-core (or emulated) host.
    const sorted = [...late].sort((a, b) => a - b);
    assert.ok(sorted[5] < 50 && sorted[9] < 1000, `event loop lateness ${late.map((x) => x.toFixed(1)).join(', ')} ms`);
  });

  it('the library validates its config with a schema and names the bad field', () => {
    assert.throws(() => Machine.create({ kernel: guest('hello.bin'), memBytes: 1000 }), /^VmmError: machine config: memBytes must be >= 1048576$|machine config: memBytes must be >= 1048576/);
    assert.throws(() => Machine.create({ kernel: guest('hello.bin'), memBytes: 1 << 20, cpus: 0 }), /machine config: cpus must be >= 1/);
    assert.throws(() => Machine.create({ kernel: guest('hello.bin'), memBytes: 1 << 20, vcpus: 2 }), /machine config: unknown field vcpus/);
    assert.throws(() => Machine.create({ memBytes: 1 << 20 }), /must have required property 'kernel'/);
  });
});
