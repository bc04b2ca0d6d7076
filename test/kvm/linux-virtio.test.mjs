// Full Linux with nodevisor's virtio devices and `run -- COMMAND`, run only where
// NODEVISOR_TEST_KERNEL names a kernel this host can run to userspace (see helpers/kit.mjs): the
// kit's initramfs loads the virtio modules, its init runs nv-agent, and each check is a command.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, symlinkSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { cli, runCli } from '../helpers/kvm.mjs';
import { downloadPattern } from '../helpers/patterns.mjs';
import { fullLinux } from '../helpers/kit.mjs';

const run = (flags, command, opts = {}) =>
  runCli(['run', '--kernel', fullLinux.kernel, '--initrd', fullLinux.initrd, '--mem', '512M', '--timeout', '240', '--log-level', 'error', ...flags, '--', ...command], { killAfterMs: 300_000, ...opts });

describe('full Linux: run -- COMMAND and virtio devices (NODEVISOR_TEST_KERNEL)', fullLinux, () => {
  let dir;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'nv-linux-virtio-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('exit status 7 comes back as 7; stdout and stderr apart', async () => {
    const r = await run([], ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(r.status, 7, r.stderr);
    assert.equal(r.stdout, 'out\n');
    assert.match(r.stderr, /err\n/);
  });

  it('10 MB of output arrives complete and in order', async () => {
    const r = await run([], ['seq', '1', '1300000']);
    assert.equal(r.status, 0, r.stderr);
    let expected = '';
    for (let i = 1; i <= 1300000; i++) expected += `${i}\n`;
    assert.ok(r.stdout === expected, `got ${r.stdout.length} bytes`);
  });

  it('16 MB of stdin reaches the command whole (more than the agent channel queues at once)', async () => {
    const input = Buffer.alloc(16 << 20);
    for (let i = 0; i < input.length; i++) input[i] = (i * 131 + (i >> 12)) & 0xff;
    const r = await run([], ['sh', '-c', 'sha256sum | cut -d" " -f1'], { input });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), createHash('sha256').update(input).digest('hex'));
  });

  it('--json: started, booted, output and exited events with timings', async () => {
    const r = await run(['--json'], ['echo', 'hi']);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(events.map((e) => e.event).filter((e, i, a) => a.indexOf(e) === i), ['started', 'booted', 'output', 'exited']);
    assert.equal(events.at(-1).status, 0);
    assert.ok(events.at(-1).timings.bootMs > 0);
  });

  it('--timeout ends a hung command with status 124', async () => {
    const r = await runCli(['run', '--kernel', fullLinux.kernel, '--initrd', fullLinux.initrd, '--timeout', '30', '--', 'sleep', '1000'], { killAfterMs: 120_000 });
    assert.equal(r.status, 124, r.stderr);
  });

  it('the current directory is the working directory, read-only', async () => {
    writeFileSync(path.join(dir, 'hello.txt'), 'hello from the host\n');
    const r = await run([], ['sh', '-c', 'cat hello.txt; touch x 2>/dev/null || echo read-only'], { cwd: dir });
    assert.equal(r.stdout, 'hello from the host\nread-only\n', r.stderr);
  });

  it('virtio-blk: dd to /dev/vda lands in the image; a read-only disk refuses writes; two disks', async () => {
    const a = path.join(dir, 'a.img');
    const b = path.join(dir, 'b.img');
    writeFileSync(a, Buffer.alloc(8 << 20));
    writeFileSync(b, Buffer.alloc(4 << 20, 0x5a));
    const r = await run(['--disk', a, '--disk', `${b},ro`], ['sh', '-c', 'echo nodevisor-blk-ok | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null; cat /sys/block/vdb/size; echo x | dd of=/dev/vdb 2>/dev/null && echo wrote || echo refused']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(a).subarray(51200, 51200 + 16).toString(), 'nodevisor-blk-ok');
    assert.match(r.stdout, /^8192\nrefused\n$/);
    assert.ok(readFileSync(b).every((x) => x === 0x5a));
  });

  it('virtio-9p: a shared folder is read and written; escapes are refused; ro is enforced', async () => {
    const share = path.join(dir, 'share');
    execFileSync('mkdir', ['-p', share]);
    writeFileSync(path.join(share, 'in.txt'), 'in\n');
    if (!existsSync(path.join(share, 'escape'))) symlinkSync('/etc/passwd', path.join(share, 'escape'));
    const r = await run(['--share', `${share}:data`, '--share', `${share}:dataro,ro`], ['sh', '-c', 'cat /mnt/data/in.txt; echo out > /mnt/data/out.txt; cat /mnt/data/escape 2>/dev/null || echo escape-refused; echo x > /mnt/dataro/y 2>/dev/null || echo ro-refused']);
    assert.equal(r.stdout, 'in\nescape-refused\nro-refused\n', r.stderr);
    assert.equal(readFileSync(path.join(share, 'out.txt'), 'utf8'), 'out\n');
  });

  it('virtio-rng: /dev/hwrng gives bytes', async () => {
    const r = await run(['--rng'], ['sh', '-c', 'cat /sys/class/misc/hw_random/rng_current; head -c 32 /dev/hwrng | od -An -tx1 | tr -d " \\n"']);
    assert.match(r.stdout, /^virtio_rng\.\d+\n[0-9a-f]{64}$/, r.stderr);
  });

  it('virtio-console: hvc0 as the console', async () => {
    const r = await runCli(['run', '--kernel', fullLinux.kernel, '--initrd', fullLinux.initrd, '--console', 'virtio', '--timeout', '240', '--expect', 'NODEVISOR-BOOT-OK'], { killAfterMs: 300_000 });
    assert.equal(r.status, 0, r.stderr);
  });

  it('virtio-net: the guest pings the host and moves 4 MiB each way over TCP, with the offloads negotiated', async () => {
    const ns = `nvl-${process.pid}`;
    const bytes = 4 << 20;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const ip = (...a) => execFileSync('ip', ['netns', 'exec', ns, 'ip', ...a]);
      ip('link', 'set', 'lo', 'up');
      ip('tuntap', 'add', 'nvl0', 'mode', 'tap');
      ip('addr', 'add', '10.0.2.1/24', 'dev', 'nvl0');
      ip('link', 'set', 'nvl0', 'up');
      // Both transfers are checked by MD5 on both ends. The features line is virtio's negotiated bits.
      const guest = [
        'set -e',
        'ip link set eth0 up',
        'ip addr add 10.0.2.15/24 dev eth0',
        'ping -c 2 -W 5 10.0.2.1 >/dev/null && echo pinged',
        'echo "features $(cat /sys/class/net/eth0/device/features)"',
        `dd if=/dev/urandom of=/tmp/up bs=64k count=${bytes >> 16} 2>/dev/null`,
        'echo "upload $(md5sum < /tmp/up)"',
        'nc 10.0.2.1 7000 < /tmp/up > /dev/null',
        'echo "download $(nc 10.0.2.1 7001 | md5sum)"',
      ].join('; ');
      const helper = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'helpers', 'tcp-peer.mjs');
      const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, helper, '--in-namespace', String(bytes), '--', process.execPath, cli,
        'run', '--kernel', fullLinux.kernel, '--initrd', fullLinux.initrd, '--mem', '512M', '--net', 'tap=nvl0', '--timeout', '240', '--log-level', 'error', '--', 'sh', '-c', guest], { encoding: 'utf8', timeout: 300_000 });
      const r = JSON.parse(out.trim().split('\n').pop());
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /pinged/);
      // Linux took checksum and TSO offloads both ways and mergeable buffers (bits 0, 1, 7, 11, 15).
      const features = /features ([01]+)/.exec(r.stdout)?.[1] ?? '';
      for (const bit of [0, 1, 7, 11, 15]) assert.equal(features[bit], '1', `feature bit ${bit} in ${features}`);
      const sent = /upload ([0-9a-f]{32})/.exec(r.stdout)?.[1];
      assert.deepEqual(r.upload, { bytes, md5: sent });
      assert.match(r.stdout, new RegExp(`download ${createHash('md5').update(downloadPattern(bytes)).digest('hex')}`));
    } finally {
      execFileSync('ip', ['netns', 'delete', ns]);
    }
  });
});
