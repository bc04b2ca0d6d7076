// Bad input: one clear line on stderr naming the problem, a non-zero exit, no stack trace, no hang.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, chmodSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { runCli, guest, needsKvm } from '../helpers/kvm.mjs';

let dir;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nv-cli-'));
  writeFileSync(path.join(dir, 'empty.bin'), '');
  mkdirSync(path.join(dir, 'adir'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function assertOneLineError(r, pattern, status = 2) {
  assert.equal(r.status, status, `status ${r.status}, stderr: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${r.stderr}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  assert.ok(r.ms < 10_000, 'answers at once');
}

describe('CLI rejects bad input with one line', needsKvm, () => {
  it('missing kernel file', async () => {
    assertOneLineError(await runCli(['run', '--kernel', path.join(dir, 'nope.bin')]), /^nodevisor: --kernel .*nope\.bin: no such file$/);
  });

  it('empty kernel file', async () => {
    assertOneLineError(await runCli(['run', '--kernel', path.join(dir, 'empty.bin')]), /^nodevisor: --kernel .*empty\.bin: file is empty$/);
  });

  it('a directory as kernel', async () => {
    assertOneLineError(await runCli(['run', '--kernel', path.join(dir, 'adir')]), /is a directory/);
  });

  it('unreadable kernel file (as an unprivileged user)', { skip: process.getuid() !== 0 && 'needs root to switch user' }, async () => {
    const f = path.join(dir, 'secret.bin');
    writeFileSync(f, 'x');
    chmodSync(f, 0o600);
    chmodSync(dir, 0o755);
    const r = await runCli(['run', '--kernel', f], { uid: 65534 });
    assertOneLineError(r, /--kernel .*secret\.bin: permission denied/);
  });

  it('--mem 0', async () => {
    assertOneLineError(await runCli(['run', '--kernel', guest('hello.bin'), '--mem', '0']), /^nodevisor: --mem 0: guest RAM must be at least 1 MiB$/);
  });

  it('--mem more than the host has', async () => {
    const tooMuch = `${Math.ceil(totalmem() / 2 ** 30) + 1}G`;
    assertOneLineError(await runCli(['run', '--kernel', guest('hello.bin'), '--mem', tooMuch]), new RegExp(`--mem ${tooMuch}: more than this host's .* of RAM`));
  });

  it('--mem that is not a size', async () => {
    assertOneLineError(await runCli(['run', '--kernel', guest('hello.bin'), '--mem', 'lots']), /--mem lots: not a size/);
  });

  it('a flat image too large for --mem', async () => {
    const f = path.join(dir, 'big.bin');
    writeFileSync(f, Buffer.alloc(2 << 20, 0x90));
    assertOneLineError(await runCli(['run', '--kernel', f, '--mem', '2M']), /does not fit in guest RAM .*raise --mem/);
  });

  it('an unknown flag', async () => {
    assertOneLineError(await runCli(['run', '--kernel', guest('hello.bin'), '--frobnicate']), /^nodevisor: Unknown argument: frobnicate$/);
  });

  it('no command', async () => {
    assertOneLineError(await runCli([]), /name a command/);
  });

  it('no /dev/kvm', async () => {
    const r = await runCli(['run', '--kernel', guest('hello.bin')], { env: { NODEVISOR_KVM_DEVICE: '/nonexistent/kvm' } });
    assertOneLineError(r, /^nodevisor: \/nonexistent\/kvm: no such device — KVM is not available/, 1);
  });

  it('no permission on /dev/kvm (as an unprivileged user)', { skip: process.getuid() !== 0 && 'needs root to switch user' }, async () => {
    const r = await runCli(['run', '--kernel', guest('hello.bin')], { uid: 65534 });
    assertOneLineError(r, /^nodevisor: \/dev\/kvm: permission denied — add yourself to the kvm group/, 1);
  });
});
