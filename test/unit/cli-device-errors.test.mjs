// Bad device flags are refused with one line naming the flag or file, status 2, before any VM
// exists (so these run on any host, with or without /dev/kvm).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { guest, runCli } from '../helpers/kvm.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-flags-'));
const empty = path.join(dir, 'empty.img');
writeFileSync(empty, '');

describe('device flags: bad input', () => {
  const cases = [
    [['--disk', path.join(dir, 'missing.img')], /^nodevisor: disk image .*missing\.img: no such file\n$/],
    [['--disk', empty], /^nodevisor: disk image .*empty\.img is empty\n$/],
    [['--disk', dir], /^nodevisor: disk image .* is a directory\n$/],
    [['--disk', 'x.img,bogus'], /^nodevisor: --disk x\.img,bogus: unknown option "bogus"/],
    [['--net', 'eth0'], /^nodevisor: --net eth0: expected tap=NAME/],
    [['--share', dir], /^nodevisor: --share .*: expected HOSTDIR:TAG/],
    [['--share', `${path.join(dir, 'nope')}:t`], /^nodevisor: virtio-9p: shared directory .*nope: no such directory\n$/],
    [['--share', `${empty}:t`], /^nodevisor: virtio-9p: shared path .*empty\.img is not a directory\n$/],
    [['--share', `${dir}:bad\ttag`], /^nodevisor: virtio-9p: mount tag .* contains a control character\n$/],
    [['--console', 'vga'], /Invalid values:|console/],
  ];
  for (const [flags, expected] of cases) {
    it(flags.join(' ').replace(dir, 'DIR'), async () => {
      const r = await runCli(['run', '--kernel', guest('hello.bin'), ...flags], { killAfterMs: 20_000 });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, expected);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }
});
