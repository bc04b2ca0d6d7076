// virtio over PCI, driven from inside by the C test guest c-machine.elf: the guest finds the device
// by its PCI ids, negotiates features, sets up a split queue and MSI-X, and checks each answer.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { guest, needsKvm, runCli } from '../helpers/kvm.mjs';

const machine = (cmdline, extra = []) =>
  runCli(['run', '--kernel', guest('c-machine.elf'), '--cmdline', cmdline, '--log-level', 'error', ...extra], { killAfterMs: 60_000 });

describe('virtio PCI devices, seen from a C guest', needsKvm, () => {
  it('virtio-rng: random bytes by MSI-X; a broken request sets NEEDS_RESET; service resumes after a reset', async () => {
    const r = await machine('rng', ['--rng']);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /rng: virtio-rng at 00:01\.0/);
    const lines = [...r.stdout.matchAll(/rng: 64 random bytes by MSI-X: ([0-9a-f ]+)/g)];
    assert.equal(lines.length, 2, r.stdout);
    assert.notEqual(lines[0][1], lines[1][1], 'two requests got the same bytes');
    assert.match(r.stdout, /rng: broken request refused: device needs reset/);
    assert.match(r.stdout, /rng: serving again after reset/);
  });

  it('without --rng there is no virtio-rng function, and the guest says so', async () => {
    const r = await machine('rng');
    assert.equal(r.status, (2 << 1) | 1, r.stdout + r.stderr);
  });
});
