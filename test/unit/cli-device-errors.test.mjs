// Bad device flags are refused with one line naming the flag or file, status 2, before any VM
// exists (so these run on any host, with or without /dev/kvm).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, linkSync, mkdtempSync, openSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { cli, guest, runCli } from '../helpers/kvm.mjs';
import { waitFor } from '../helpers/wait.mjs';

const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-flags-'));
const empty = path.join(dir, 'empty.img');
writeFileSync(empty, '');
const big = path.join(dir, 'big.img');
closeSync(openSync(big, 'w'));
truncateSync(big, 200 << 20); // sparse
const bigLink = path.join(dir, 'big-link.img');
symlinkSync(big, bigLink);
const bigHard = path.join(dir, 'big-hard.img');
linkSync(big, bigHard);
const smallInitrd = path.join(dir, 'initrd.img');
writeFileSync(smallInitrd, Buffer.alloc(4096));

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
    [['--console', 'vga'], /^nodevisor: --console "vga": expected one of "serial", "virtio"\n$/],
    [['--share-cwd', 'ro', '--share-cwd', 'rw'], /^nodevisor: --share-cwd given more than once \(it takes one value\)\n$/],
    [['--expect', 'a', '--expect', 'b'], /^nodevisor: --expect given more than once/],
    [['--timeout'], /^nodevisor: --timeout: needs a value\n$/],
    [['--cmdline', '-quiet'], /^nodevisor: --cmdline: needs a value \(a value that starts with "-" is given as --cmdline=-quiet\)\n$/],
    [['--cmdline', '-x foo'], /^nodevisor: --cmdline: needs a value \(a value that starts with "-" is given as --cmdline="-x foo"\)\n$/],
    [['--cmdline', '--timeout', '3'], /^nodevisor: --cmdline: needs a value\n$/],
    [['--api-sock', 'x'], /^nodevisor: Unknown argument: api-sock\n$/],
    // One spelling per flag: no camelCase aliases (and, with two unknown ones, each named once).
    [['--logLevel', 'debug'], /^nodevisor: Unknown argument: logLevel\n$/],
    [['--foo-bar', '1', '--baz'], /^nodevisor: Unknown arguments: foo-bar, baz\n$/],
    [['--timeout', '3000000'], /^nodevisor: --timeout "3000000": must be a positive number of seconds, at most 2147483/],
    [['--cpus', 'abc'], /^nodevisor: --cpus "abc": must be a whole number from 1 to 254\n$/],
    [['--net', 'tap=a,tap=b'], /^nodevisor: --net tap=a,tap=b: option "tap" given twice\n$/],
    [['--net', 'tap=nvdup0', '--net', 'tap=nvdup0'], /^nodevisor: --net: tap nvdup0 is given twice/],
    [['--net', 'tap=nvdup1,mac=02:00:00:00:00:01', '--net', 'tap=nvdup2,mac=02:00:00:00:00:01'], /^nodevisor: --net: mac 02:00:00:00:00:01 is given twice/],
    [['--disk', `${big},id=a`, '--disk', `${big},ro,id=a`], /^nodevisor: --disk: id a is given twice/],
    [['--disk', big, '--disk', big], /^nodevisor: --disk: .*big\.img is given twice, writable/],
    [['--share', `${dir}:t`, '--share', `${dir}:t`], /^nodevisor: --share: tag t is given twice\n$/],
    [['--share', `${dir}:a b`, '--', 'true'], /^nodevisor: --share .*: with -- COMMAND a tag is letters, digits/],
    [['--share', `${dir}:..`, '--', 'true'], /^nodevisor: --share .*: with -- COMMAND a tag is letters, digits/],
    [['--', ''], /^nodevisor: -- COMMAND: the command name is empty\n$/],
    [['--json=maybe'], /^nodevisor: --json=maybe: --json is a switch: give it alone, or =true or =false\n$/],
    [['--initrd', big], /^nodevisor: --initrd .*big\.img: 200 MiB does not fit in 128 MiB of guest RAM\n$/],
    // hello.bin is a flat image: what it cannot use is refused, not dropped.
    [['--initrd', smallInitrd], /^nodevisor: --initrd .*initrd\.img: a flat image takes no initrd\n$/],
    [['--cmdline', 'console=ttyS0'], /^nodevisor: --cmdline "console=ttyS0": a flat image takes no command line \(.*hello\.bin\)\n$/],
    // One file through two writable disks, whatever the paths say.
    [['--disk', big, '--disk', bigLink], /^nodevisor: disk images .*big\.img and .*big-link\.img are one file, both writable/],
    [['--disk', big, '--disk', bigHard], /^nodevisor: disk images .*big\.img and .*big-hard\.img are one file, both writable/],
    // yargs reads --no-X as X=false for any flag: only switches may be negated.
    [['--no-disk'], /^nodevisor: --no-disk: --disk takes a value; only on\/off switches have a --no- form\n$/],
    [['--no-expect'], /^nodevisor: --no-expect: --expect takes a value; only on\/off switches have a --no- form\n$/],
    [['--'], /^nodevisor: -- is not followed by a command \(run \.\.\. -- COMMAND ARGS\.\.\.\)\n$/],
    [['--share-cwd', 'rw'], /^nodevisor: --share-cwd rw applies with -- COMMAND only/],
    [['--on-reboot', 'restart', '--', 'true'], /^nodevisor: --on-reboot applies without -- COMMAND only/],
    // A value with a newline in it does not break the one line.
    [['--disk', path.join(dir, 'two\nlines.img')], /^nodevisor: disk image .*two\\nlines\.img: no such file\n$/],
    [['--mem', '128B'], /^nodevisor: --mem 128B: guest RAM must be at least 1 MiB\n$/],
    [['--mem', '1.0000001M'], /^nodevisor: --mem 1\.0000001M: not a size/],
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
    [['--no-api', '--config-file', file('twice.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "boot-source": {"kernel_image_path": "${guest('pio.bin')}"}}`)], /^nodevisor: --config-file .*twice\.json: boot-source is given twice\n$/],
    [['--no-api', '--config-file', file('twice2.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "/a", "path_on_host": "/b"}]}`)], /: drives\[0\]\.path_on_host is given twice\n$/],
    [['--no-api', '--config-file', file('typo.json', '{"boot_source": {}}')], /: unknown section "boot_source"/],
    [['--no-api', '--config-file', file('noboot.json', '{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}')], /: no "boot-source" section/],
    [['--no-api', '--config-file', file('nokernel.json', `{"boot-source": {"kernel_image_path": "${path.join(dir, 'vmlinux')}"}}`)], /: boot-source: kernel_image_path .*vmlinux: no such file\n$/],
    [['--no-api', '--config-file', file('baddrive.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "${path.join(dir, 'nope.img')}"}]}`)], /: drives\[0\]: path_on_host .*nope\.img: no such file\n$/],
    [['--no-api', '--config-file', file('noid.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "drives": [{"is_root_device": false}]}`)], /: drives\[0\]: drive_id must be a non-empty string\n$/],
    [['--api-sock', ''], /^nodevisor: --api-sock: an empty path\n$/],
    [['--api-sock', path.join(dir, 'x'.repeat(120))], /^nodevisor: --api-sock .*: longer than 107 bytes/],
    [['--api-sock', path.join(dir, 'missing', 'api.sock')], /^nodevisor: --api-sock .*: no such directory .*missing\n$/],
    [['--api-sock', 'a.sock', '--api-sock', 'b.sock'], /^nodevisor: --api-sock given more than once/],
    [['--api-sock'], /^nodevisor: --api-sock: needs a value\n$/],
    [['--api-sock', 'a.sock', '--id', ''], /^nodevisor: --id "": 1 to 64 letters, digits and hyphens\n$/],
    [['--api-sock', 'a.sock', '--id', 'a/b'], /^nodevisor: --id "a\/b": 1 to 64 letters, digits and hyphens\n$/],
    [['--no-api-sock'], /^nodevisor: --no-api-sock: --api-sock takes a value; only on\/off switches have a --no- form\n$/],
    [['--no-api', '--config-file', '/dev/zero'], /^nodevisor: --config-file \/dev\/zero: not a regular file\n$/],
    [['--no-api', '--config-file', file('huge.json', ' '.repeat((1 << 20) + 10))], /: larger than 1048576 bytes: not a configuration\n$/],
    [['--no-api', '--config-file', file('proto.json', `{"boot-source": {"kernel_image_path": "${guest('hello.bin')}"}, "logger": {"level": "__proto__"}}`)], /: logger: level __proto__: expected Error, Warning/],
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

describe('serve: signals', () => {
  for (const [signal, status] of [['SIGTERM', 143], ['SIGINT', 130], ['SIGHUP', 129]]) {
    it(`${signal} ends it at once with ${status}, even while a client is half-way through a request, and removes the socket`, async () => {
      const sock = path.join(dir, `sig-${signal}.sock`);
      const child = spawn(process.execPath, [cli, 'serve', '--api-sock', sock], { stdio: 'ignore' });
      const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        await waitFor(() => existsSync(sock), 10_000);
        const c = net.connect(sock);
        await new Promise((r) => c.on('connect', r));
        c.write('PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{');
        await new Promise((r) => setTimeout(r, 100));
        child.kill(signal);
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        assert.equal(await exited, status);
        clearTimeout(timer);
        assert.equal(existsSync(sock), false);
        c.destroy();
      } finally {
        child.kill('SIGKILL');
      }
    });
  }
});

describe('run: images that are not regular files', () => {
  it('a FIFO as --kernel is refused before anything reads it', async () => {
    const fifo = path.join(dir, 'kernel.fifo');
    execFileSync('mkfifo', [fifo]);
    const r = await runCli(['run', '--kernel', fifo], { killAfterMs: 20_000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^nodevisor: --kernel .*kernel\.fifo: not a regular file\n$/);
  });
});

describe('CLI: command names and output that cannot be written', () => {
  it('a misspelt command is named, with the guess', async () => {
    const r = await runCli(['runn', '--kernel', guest('hello.bin')], { killAfterMs: 20_000 });
    assert.equal(r.status, 2);
    assert.equal(r.stderr, 'nodevisor: unknown command "runn": did you mean run?\n');
  });

  // doctor prints what it knows before it opens /dev/kvm, so it writes on any host.
  for (const [what, shell] of [['a full disk (/dev/full)', `"$0" "$1" doctor >/dev/full`], ['a reader that went away (| true)', `"$0" "$1" doctor | true`]]) {
    it(`doctor with its output going to ${what}: no stack trace`, () => {
      const r = spawnSync('sh', ['-c', shell, process.execPath, cli], { encoding: 'utf8', timeout: 20_000 });
      assert.doesNotMatch(r.stderr, /\n\s+at |Unhandled 'error' event/, r.stderr);
      if (what.includes('full')) assert.match(r.stderr, /^nodevisor: writing to standard output: ENOSPC/m);
      else assert.doesNotMatch(r.stderr, /EPIPE/);
    });
  }
});
