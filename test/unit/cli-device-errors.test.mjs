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

describe('serve: bad --config-file and socket flags', () => {
  const file = (name, text) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const cases = [
    [[], /^nodevisor: missing --api-sock PATH \(or --no-api with --config-file\)\n$/],
    [['--no-api'], /^nodevisor: --no-api needs --config-file/],
    [['--no-api', '--api-sock', path.join(dir, 's.sock'), '--config-file', file('ok.json', '{}')], /^nodevisor: --no-api and --api-sock exclude each other\n$/],
    [['--no-api', '--config-file', path.join(dir, 'none.json')], /^nodevisor: --config-file .*none\.json: no such file\n$/],
    [['--no-api', '--config-file', file('broken.json', '{')], /^nodevisor: --config-file .*broken\.json: not valid JSON \(/],
    [['--no-api', '--config-file', file('list.json', '[]')], /: expected a JSON object of resources/],
    [['--no-api', '--config-file', file('typo.json', '{"boot_source": {}}')], /: unknown section "boot_source"/],
    [['--no-api', '--config-file', file('noboot.json', '{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}')], /: no "boot-source" section/],
    [['--no-api', '--config-file', file('nokernel.json', `{"boot-source": {"kernel_image_path": "${path.join(dir, 'vmlinux')}"}}`)], /: boot-source: kernel_image_path .*vmlinux: no such file\n$/],
    [['--no-api', '--config-file', file('baddrive.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "${path.join(dir, 'nope.img')}"}]}`)], /: drives\[0\]: path_on_host .*nope\.img: no such file\n$/],
    [['--no-api', '--config-file', file('noid.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "drives": [{"is_root_device": false}]}`)], /: drives\[0\]: drive_id must be a non-empty string\n$/],
    [['--no-api', '--config-file', file('mc.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "machine-config": {"vcpu_count": 0, "mem_size_mib": 64}}`)], /: machine-config: invalid request: vcpu_count must be >= 1\n$/],
  ];
  for (const [flags, expected] of cases) {
    it(flags.join(' ').replaceAll(dir, 'DIR') || '(no flags)', async () => {
      const r = await runCli(['serve', ...flags], { killAfterMs: 20_000 });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, expected);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    });
  }
});
