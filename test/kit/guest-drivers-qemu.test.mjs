// The C test guests' virtio drivers (guests/tests/lib/virtio.c, c-virtio.elf) against QEMU's own
// virtio PCI devices under TCG: the reference they were written against, checked on every host
// (no KVM needed). Under nodevisor the same scenarios run in test/kvm/virtio-devices.test.mjs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { root } from '../helpers/kvm.mjs';
import { needsQemuKit, qemuAccel } from '../helpers/qemu-kit.mjs';

describe(`C guest virtio drivers against QEMU (${qemuAccel})`, needsQemuKit, () => {
  it('every scenario passes (blk, blk-broken, blk-bench, net, net-bench, console, agent, 9p, 9p-ro, 9p-escape, rng)', async () => {
    const out = await new Promise((resolve) => {
      const c = spawn('bash', [path.join(root, 'guests', 'tests', 'qemu-check.sh')], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, QEMU_ACCEL: qemuAccel } });
      let text = '';
      c.stdout.on('data', (d) => (text += d));
      c.stderr.on('data', (d) => (text += d));
      c.on('close', (status) => resolve({ status, text }));
    });
    const m = /---- (\d+) passed, (\d+) failed, (\d+) skipped/.exec(out.text);
    assert.ok(m, out.text.slice(-3000));
    assert.equal(Number(m[2]), 0, out.text.slice(-3000));
    assert.equal(Number(m[3]), 0, `skipped scenarios:\n${out.text.slice(-3000)}`);
    assert.ok(Number(m[1]) >= 16, out.text.slice(-3000));
    assert.equal(out.status, 0);
  });
});
