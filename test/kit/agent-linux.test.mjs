// The guest side of `nodevisor run -- COMMAND` under real Linux: the kit's Debian kernel, its init
// and nv-agent, with the Linux virtio-console and 9p drivers, on QEMU as the reference VMM (this
// needs no KVM). The same kit under nodevisor is tested in test/kvm where a host runs Linux.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { needsQemuKit, runInKitGuest } from '../helpers/qemu-kit.mjs';

describe('guest kit agent under Linux (QEMU reference)', needsQemuKit, () => {
  let dir;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'nv-kit-share-'));
    writeFileSync(path.join(dir, 'hello.txt'), 'hello from the host\n');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('runs the command in the shared current directory (read-only) and returns its status 7; stdout and stderr apart', async () => {
    const r = await runInKitGuest(['sh', '-c', 'pwd; cat hello.txt; echo oops >&2; touch new 2>/dev/null || echo read-only; exit 7'], { share: dir });
    assert.equal(r.status, 7, r.serial);
    assert.equal(r.stdout, '/mnt/cwd\nhello from the host\nread-only\n');
    assert.equal(r.stderr, 'oops\n');
  });

  it('10 MB of output arrives complete and in order', async () => {
    const r = await runInKitGuest(['seq', '1', '1300000']);
    assert.equal(r.status, 0, r.serial);
    let expected = '';
    for (let i = 1; i <= 1300000; i++) expected += `${i}\n`;
    assert.equal(r.stdout.length, expected.length);
    assert.ok(r.stdout === expected, 'output differs from seq');
  });

  it("the host's stdin reaches the command", async () => {
    const r = await runInKitGuest(['sh', '-c', 'tr a-z A-Z'], { stdin: Readable.from([Buffer.from('shout\n')]) });
    assert.equal(r.status, 0, r.serial);
    assert.equal(r.stdout, 'SHOUT\n');
  });
});
