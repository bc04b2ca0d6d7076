// The Firecracker-compatible REST API, driven with plain HTTP requests over its unix socket.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from '../helpers/api-socket.mjs';
import { waitFor } from '../helpers/wait.mjs';
import { cli, guest, needsKvm, runCli } from '../helpers/kvm.mjs';

describe('REST API (Firecracker-compatible)', needsKvm, () => {
  let dir, sock, child, exited, stdout;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'nv-api-'));
    sock = path.join(dir, 'api.sock');
    stdout = '';
    child = spawn(process.execPath, [cli, 'serve', '--api-sock', sock, '--id', 'test-vm', '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (stdout += d));
    exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    assert.ok(await waitFor(() => existsSync(sock)), 'socket appears');
  });
  after(() => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates its socket with owner-only permissions', () => {
    assert.equal(statSync(sock).mode & 0o777, 0o600);
  });

  it('GET / describes the instance before boot', async () => {
    const r = await request(sock, 'GET', '/');
    assert.equal(r.status, 200);
    assert.equal(r.body.id, 'test-vm');
    assert.equal(r.body.state, 'Not started');
    assert.equal(r.body.app_name, 'nodevisor');
  });

  it('refuses bad bodies with a fault_message naming the problem, and changes nothing', async () => {
    const before = await request(sock, 'GET', '/machine-config');
    const bad = [
      ['PUT', '/machine-config', { vcpu_count: 0, mem_size_mib: 64 }, /vcpu_count must be >= 1/],
      ['PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64, bogus: true }, /unknown field bogus/],
      ['PUT', '/machine-config', { vcpu_count: 'two', mem_size_mib: 64 }, /vcpu_count must be integer/],
      ['PUT', '/machine-config', '{not json', /./],
      ['PUT', '/boot-source', { kernel_image_path: path.join(dir, 'missing') }, /kernel_image_path .*missing: no such file/],
      ['PUT', '/boot-source', {}, /must have required property 'kernel_image_path'/],
      ['PUT', '/actions', { action_type: 'Explode' }, /action_type must be equal to one of the allowed values/],
      ['PATCH', '/vm', { state: 'Paused' }, /has not been started/],
      ['PUT', '/actions', { action_type: 'InstanceStart' }, /no boot source/],
      ['GET', '/no-such-endpoint', undefined, /Invalid request method and\/or path/],
    ];
    for (const [method, url, body, re] of bad) {
      const r = await request(sock, method, url, body);
      assert.equal(r.status, 400, `${method} ${url}`);
      assert.match(r.body.fault_message, re, `${method} ${url}`);
    }
    assert.deepEqual(await request(sock, 'GET', '/machine-config'), before);
    assert.equal((await request(sock, 'GET', '/')).body.state, 'Not started');
  });

  it('InstanceStart of a kernel the loader refuses: a fault_message in the API\'s terms, and nothing started', async () => {
    const junk = path.join(dir, 'junk.elf');
    writeFileSync(junk, Buffer.concat([Buffer.from('\x7fELF'), Buffer.alloc(60)])); // an ELF magic and nothing else
    assert.equal((await request(sock, 'PUT', '/boot-source', { kernel_image_path: junk })).status, 204);
    const r = await request(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /^kernel_image_path .*junk\.elf: /);
    assert.doesNotMatch(r.body.fault_message, /--kernel|--mem/);
    assert.equal((await request(sock, 'GET', '/')).body.state, 'Not started');
  });

  it('configures, starts, pauses and resumes a guest; pre-boot calls are refused after start', async () => {
    assert.equal((await request(sock, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 })).status, 204);
    assert.deepEqual((await request(sock, 'GET', '/machine-config')).body, { vcpu_count: 1, mem_size_mib: 64, smt: false, track_dirty_pages: false, huge_pages: 'None' });
    assert.equal((await request(sock, 'PUT', '/boot-source', { kernel_image_path: guest('spin.bin') })).status, 204);
    assert.equal((await request(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);
    assert.equal((await request(sock, 'GET', '/')).body.state, 'Running');
    assert.ok(await waitFor(() => /spinning/.test(stdout)), 'guest output on the serial console');

    const again = await request(sock, 'PUT', '/actions', { action_type: 'InstanceStart' });
    assert.equal(again.status, 400);
    const late = await request(sock, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 64 });
    assert.equal(late.status, 400);
    assert.match(late.body.fault_message, /not supported after starting/);
    assert.equal((await request(sock, 'GET', '/machine-config')).body.vcpu_count, 1);

    assert.equal((await request(sock, 'PATCH', '/vm', { state: 'Resumed' })).status, 400); // not paused
    assert.equal((await request(sock, 'PATCH', '/vm', { state: 'Paused' })).status, 204);
    assert.equal((await request(sock, 'GET', '/')).body.state, 'Paused');
    assert.equal((await request(sock, 'PATCH', '/vm', { state: 'Paused' })).status, 400);
    assert.equal((await request(sock, 'PATCH', '/vm', { state: 'Resumed' })).status, 204);
    assert.equal((await request(sock, 'GET', '/')).body.state, 'Running');
  });

  it('ends cleanly on SIGTERM, removing its socket', async () => {
    child.kill('SIGTERM');
    const { code } = await exited;
    assert.equal(code, 143);
    assert.equal(existsSync(sock), false);
  });
});

describe('REST API: SendCtrlAltDel reaches the guest through the i8042', needsKvm, () => {
  it('is refused before start, then delivers Ctrl-Alt-Del scancodes on IRQ 1; the process exits with the guest', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-api-'));
    const sock = path.join(dir, 'api.sock');
    let stdout = '';
    const child = spawn(process.execPath, [cli, 'serve', '--api-sock', sock, '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (stdout += d));
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      assert.ok(await waitFor(() => existsSync(sock)));
      const early = await request(sock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' });
      assert.equal(early.status, 400);
      assert.match(early.body.fault_message, /not running/);
      assert.equal((await request(sock, 'PUT', '/boot-source', { kernel_image_path: guest('c-machine.elf'), boot_args: 'kbd' })).status, 204);
      assert.equal((await request(sock, 'PUT', '/actions', { action_type: 'InstanceStart' })).status, 204);
      assert.ok(await waitFor(() => /kbd: ready/.test(stdout)), stdout);
      assert.equal((await request(sock, 'PUT', '/actions', { action_type: 'SendCtrlAltDel' })).status, 204);
      assert.equal(await exited, 1); // the guest exits 0 through isa-debug-exit once Delete arrives
      assert.match(stdout, /kbd: 1d\nkbd: 38\nkbd: e0\nkbd: 53\n/);
      assert.match(stdout, /kbd: ctrl-alt-del received/);
      assert.equal(existsSync(sock), false, 'the socket is removed on exit');
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('REST API: a Firecracker-style script with logger, metrics, a drive and entropy', needsKvm, () => {
  it('logs to the file at the level asked, and the metrics line written on exit counts the guest\'s disk I/O', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-api-'));
    const sock = path.join(dir, 'api.sock');
    const logFile = path.join(dir, 'fc.log');
    const metricsFile = path.join(dir, 'metrics.json');
    const disk = path.join(dir, 'rootfs.img');
    writeFileSync(logFile, '');
    writeFileSync(metricsFile, '');
    writeFileSync(disk, Buffer.alloc(1 << 20));
    let stdout = '';
    let stderr = '';
    const child = spawn(process.execPath, [cli, 'serve', '--api-sock', sock, '--log-level', 'error'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      assert.ok(await waitFor(() => existsSync(sock)));
      const script = [
        ['/logger', { log_path: logFile, level: 'Debug', show_level: true, show_log_origin: true }],
        ['/metrics', { metrics_path: metricsFile }],
        ['/boot-source', { kernel_image_path: guest('c-virtio.elf'), boot_args: 'blk' }],
        ['/drives/rootfs', { drive_id: 'rootfs', path_on_host: disk, is_root_device: false, is_read_only: false }],
        ['/entropy', {}],
        ['/machine-config', { vcpu_count: 1, mem_size_mib: 128 }],
        ['/actions', { action_type: 'InstanceStart' }],
      ];
      for (const [url, body] of script) {
        const r = await request(sock, 'PUT', url, body);
        assert.equal(r.status, 204, `PUT ${url}: ${JSON.stringify(r.body)}`);
      }
      assert.equal(await exited, 1, stdout + stderr); // c-virtio passes through isa-debug-exit
      assert.match(stdout, /blk: wrote and read back 65536 bytes/);
      assert.equal(stderr, '', 'logs went to the log file, not stderr');
      const logs = readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      assert.ok(logs.some((l) => l.level === 20 && l.machine !== undefined), 'debug lines from the machine');
      const metrics = readFileSync(metricsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
      const last = metrics.at(-1);
      assert.ok(last.block_rootfs.write_count > 0 && last.block_rootfs.read_count > 0, JSON.stringify(last));
      assert.ok(last.block_rootfs.flush_count >= 1);
      assert.ok(last.block_rootfs.write_bytes >= 65536);
      assert.deepEqual(last.block, last.block_rootfs);
      assert.equal(typeof last.entropy.entropy_bytes, 'number');
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('serve --config-file: a Firecracker configuration file boots the microVM at once', needsKvm, () => {
  it('--no-api: the drive and metrics of the file are used, and the process exits with the guest', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-api-'));
    try {
      const disk = path.join(dir, 'data.img');
      const metricsFile = path.join(dir, 'metrics.json');
      writeFileSync(disk, Buffer.alloc(1 << 20));
      writeFileSync(metricsFile, '');
      const config = path.join(dir, 'vm.json');
      writeFileSync(config, JSON.stringify({
        'boot-source': { kernel_image_path: guest('c-virtio.elf'), boot_args: 'blk' },
        drives: [{ drive_id: 'data', path_on_host: disk, is_root_device: false, is_read_only: false }],
        'machine-config': { vcpu_count: 1, mem_size_mib: 128 },
        metrics: { metrics_path: metricsFile },
      }));
      const r = await runCli(['serve', '--no-api', '--config-file', config, '--log-level', 'error'], { killAfterMs: 120_000 });
      assert.equal(r.status, 1, r.stdout + r.stderr); // c-virtio passes through isa-debug-exit
      assert.match(r.stdout, /blk: vda 2048 sectors id=data rw/);
      const last = JSON.parse(readFileSync(metricsFile, 'utf8').trim().split('\n').at(-1));
      assert.ok(last.block_data.write_count > 0, JSON.stringify(last));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('with --api-sock: the API serves the running microVM (GET / says Running, pause and resume work); the guest started on the main thread', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-api-'));
    const sock = path.join(dir, 'api.sock');
    const config = path.join(dir, 'vm.json');
    writeFileSync(config, JSON.stringify({ 'boot-source': { kernel_image_path: guest('spin.bin') }, 'machine-config': { vcpu_count: 1, mem_size_mib: 64 } }));
    let stdout = '';
    let stderr = '';
    const child = spawn(process.execPath, [cli, 'serve', '--api-sock', sock, '--config-file', config, '--log-level', 'debug'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      assert.ok(await waitFor(() => existsSync(sock)));
      // The socket is bound before the file's microVM is built: it answers Running once it is.
      assert.ok(await waitFor(async () => (await request(sock, 'GET', '/')).body.state === 'Running'), 'GET / says Running');
      assert.ok(await waitFor(() => /spinning/.test(stdout)), 'guest output on the serial console');
      assert.equal((await request(sock, 'PUT', '/boot-source', { kernel_image_path: guest('spin.bin') })).status, 400);
      assert.equal((await request(sock, 'PATCH', '/vm', { state: 'Paused' })).status, 204);
      assert.equal((await request(sock, 'PATCH', '/vm', { state: 'Resumed' })).status, 204);
      // InstanceStart did not wait for a worker thread's start-up: the guest ran on the main thread
      // first, and moved to its own thread once it kept running (debug log).
      assert.ok(await waitFor(() => /"msg":"vcpu moved from the main thread to its own thread"/.test(stderr)), 'the vCPU moved from the main thread');
      child.kill('SIGTERM');
      assert.equal(await exited, 143);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
