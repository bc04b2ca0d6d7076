// The Firecracker API's logger, metrics, entropy, machine-config PATCH, version and full-config
// resources, through the server's request handling (fastify inject: no socket and no VM), and the
// metrics and log files themselves (real files and named pipes).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiServer } from '../../dist/api/server.js';
import { MetricsFile, deviceMetrics } from '../../dist/api/metrics.js';
import { VirtioBlk } from '../../dist/devices/virtio/blk.js';
import { VirtioRng } from '../../dist/devices/virtio/rng.js';
import { OutputFile } from '../../dist/api/output-file.js';
import { createLoggerTo, silentLogger } from '../../dist/log.js';

let dir;
before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'nv-api-obs-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const touch = (name) => {
  const file = path.join(dir, name);
  writeFileSync(file, '');
  return file;
};
const fifo = (name) => {
  const file = path.join(dir, name);
  execFileSync('mkfifo', [file]);
  return file;
};
const newApi = () => new ApiServer({ id: 't', version: '9.8.7', log: silentLogger });

async function call(api, method, url, body) {
  const r = await api.app.inject({ method, url, ...(body === undefined ? {} : { payload: body }) });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined };
}
/** readSync of a non-blocking fd: 0 for EAGAIN. */
function readSafe(fd, buf) {
  try {
    return readSync(fd, buf);
  } catch (e) {
    if (e.code === 'EAGAIN') return 0;
    throw e;
  }
}
const lines = (file) => readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

describe('REST API: PUT /logger', () => {
  it('accepts a file once, with Firecracker levels in any case; the config shows in GET /vm/config', async () => {
    const api = newApi();
    const log = touch('fc.log');
    assert.equal((await call(api, 'PUT', '/logger', { log_path: log, level: 'debug', show_level: true, show_log_origin: true })).status, 204);
    const again = await call(api, 'PUT', '/logger', { log_path: log, level: 'Info' });
    assert.equal(again.status, 400);
    assert.match(again.body.fault_message, /already configured/);
    assert.deepEqual((await call(api, 'GET', '/vm/config')).body.logger, { log_path: log, level: 'debug', show_level: true, show_log_origin: true });
    await api.close();
  });

  it('refuses a missing file, an unknown level and a module filter, naming them, and stays unconfigured', async () => {
    const api = newApi();
    const cases = [
      [{ log_path: path.join(dir, 'nope.log') }, /log_path .*nope\.log: no such file/],
      [{ log_path: dir }, /log_path .*: not a regular file or a named pipe/],
      [{ log_path: touch('a.log'), level: 'Loud' }, /level Loud: expected Error, Warning, Info, Debug, Trace or Off/],
      [{ log_path: touch('b.log'), module: 'api_server::request' }, /module: filtering logs by module is not supported/],
      [{ log_path: touch('c.log'), colour: true }, /unknown field colour/],
    ];
    for (const [body, re] of cases) {
      const r = await call(api, 'PUT', '/logger', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.fault_message, re);
    }
    assert.equal((await call(api, 'GET', '/vm/config')).body.logger, undefined);
    assert.equal((await call(api, 'PUT', '/logger', { log_path: touch('d.log'), level: 'Warning' })).status, 204);
    await api.close();
  });

  it('an output file takes whole lines; a named pipe nobody reads never blocks: what does not fit is dropped and counted', () => {
    const file = new OutputFile(touch('out.log'), 'log_path');
    const log = createLoggerTo('debug', file);
    log.debug({ vcpu: 0 }, 'hello');
    log.trace('filtered out');
    file.close();
    const got = lines(file.path);
    assert.equal(got.length, 1);
    assert.equal(got[0].msg, 'hello');
    assert.equal(got[0].vcpu, 0);
    assert.equal(got[0].level, 20);

    const pipe = new OutputFile(fifo('log.fifo'), 'log_path');
    const t = Date.now();
    const line = `${'x'.repeat(999)}\n`;
    let taken = 0;
    for (let i = 0; i < 10_000; i++) if (pipe.write(line)) taken++; // 10 MB; a pipe holds 64 KiB
    assert.ok(Date.now() - t < 5000, 'writes returned at once');
    assert.ok(taken > 0 && taken < 200, `the pipe took ${taken} lines`);
    assert.equal(pipe.dropped, 10_000 - taken);
    pipe.close();
  });

  it('a line cut short by a full pipe is ended before the next one, so that a reader can resynchronise', () => {
    const name = fifo('cut.fifo');
    const pipe = new OutputFile(name, 'log_path');
    const reader = openSync(name, constants.O_RDONLY | constants.O_NONBLOCK);
    const big = `${'y'.repeat(100_000)}\n`; // more than PIPE_BUF: may go in part
    assert.equal(pipe.write(big), false);
    const drain = Buffer.alloc(1 << 20);
    let got = '';
    for (let n; (n = readSafe(reader, drain)) > 0; ) got += drain.toString('latin1', 0, n);
    assert.ok(got.length > 0 && got.length < big.length, 'part of the line went in');
    assert.equal(pipe.write('{"next":1}\n'), true);
    got = drain.toString('latin1', 0, readSafe(reader, drain));
    assert.equal(got, '\n{"next":1}\n');
    closeSync(reader);
    pipe.close();
  });
});

describe('REST API: PUT /metrics and FlushMetrics', () => {
  it('FlushMetrics before PUT /metrics is refused; after it, each flush writes a line of device counters', async () => {
    const api = newApi();
    const before = await call(api, 'PUT', '/actions', { action_type: 'FlushMetrics' });
    assert.equal(before.status, 400);
    assert.match(before.body.fault_message, /metrics are not configured/);
    const disk = touch('disk.img');
    writeFileSync(disk, Buffer.alloc(4096));
    assert.equal((await call(api, 'PUT', '/drives/rootfs', { drive_id: 'rootfs', path_on_host: disk, is_root_device: true })).status, 204);
    assert.equal((await call(api, 'PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap9' })).status, 204);
    const file = touch('metrics.json');
    assert.equal((await call(api, 'PUT', '/metrics', { metrics_path: file })).status, 204);
    assert.match((await call(api, 'PUT', '/metrics', { metrics_path: file })).body.fault_message, /already configured/);
    assert.equal((await call(api, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status, 204);
    assert.equal((await call(api, 'PUT', '/actions', { action_type: 'FlushMetrics' })).status, 204);
    const got = lines(file);
    assert.equal(got.length, 2);
    assert.ok(Math.abs(got[0].utc_timestamp_ms - Date.now()) < 60_000);
    assert.deepEqual(Object.keys(got[0]).sort(), ['block', 'block_rootfs', 'net', 'net_eth0', 'utc_timestamp_ms']);
    assert.equal(got[0].block_rootfs.read_count, 0);
    assert.equal((await call(api, 'GET', '/vm/config')).body.metrics.metrics_path, file);
    await api.close();
  });

  it('refuses a missing metrics file, naming it', async () => {
    const r = await call(newApi(), 'PUT', '/metrics', { metrics_path: path.join(dir, 'none.json') });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /metrics_path .*none\.json: no such file/);
  });

  it('counters are per device and in total, each line giving the change since the previous one', () => {
    const img = touch('m.img');
    writeFileSync(img, Buffer.alloc(8192));
    const a = new VirtioBlk({ path: img });
    const b = new VirtioBlk({ path: img, readOnly: true });
    const rng = new VirtioRng();
    const src = { models: [rng, a, b], driveIds: ['one', 'two'], ifaceIds: [], entropy: true };
    const file = new MetricsFile(touch('deltas.json'));
    a.reads = 3;
    a.bytesRead = 3 * 4096;
    b.reads = 1;
    rng.served = 64;
    file.write(deviceMetrics(src), 1000);
    a.reads = 5;
    a.writes = 2;
    file.write(deviceMetrics(src), 2000);
    file.close();
    const [first, second] = lines(file.path);
    assert.equal(first.utc_timestamp_ms, 1000);
    assert.equal(first.block_one.read_count, 3);
    assert.equal(first.block_one.read_bytes, 12288);
    assert.equal(first.block_two.read_count, 1);
    assert.equal(first.block.read_count, 4);
    assert.equal(first.entropy.entropy_bytes, 64);
    assert.deepEqual(first.net, { rx_packets_count: 0, tx_packets_count: 0, rx_dropped_count: 0, tx_dropped_count: 0 });
    assert.equal(second.block_one.read_count, 2);
    assert.equal(second.block_one.write_count, 2);
    assert.equal(second.block.read_count, 2);
    assert.equal(second.block_two.read_count, 0);
    assert.equal(second.entropy.entropy_bytes, 0);
    void a.close();
    void b.close();
  });

  it('a named pipe nobody reads: flushes return at once and count the lines that did not fit', () => {
    const file = new MetricsFile(fifo('metrics.fifo'));
    const groups = { block: { read_count: 1 } };
    for (let i = 0; i < 5000; i++) file.write(groups); // ~50 bytes a line, a pipe holds 64 KiB
    assert.ok(file.dropped > 0, 'some lines dropped');
    assert.ok(file.dropped < 5000, 'the first lines went in');
    file.close();
  });
});

describe('REST API: machine-config PATCH, entropy, version and the full configuration', () => {
  it('PATCH changes only the fields given; a bad one changes nothing', async () => {
    const api = newApi();
    assert.equal((await call(api, 'PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 256, cpu_template: 'None' })).status, 204);
    assert.equal((await call(api, 'PATCH', '/machine-config', { mem_size_mib: 512 })).status, 204);
    assert.deepEqual((await call(api, 'GET', '/machine-config')).body, { vcpu_count: 2, mem_size_mib: 512, smt: false, track_dirty_pages: false, huge_pages: 'None' });
    for (const [body, re] of [
      [{ vcpu_count: 64 }, /vcpu_count must be <= 32/],
      [{ smt: true }, /SMT is not supported/],
      [{ cpu_template: 'T2' }, /cpu_template T2: CPU templates are not supported/],
      [{ memory: 1 }, /unknown field memory/],
    ]) {
      const r = await call(api, 'PATCH', '/machine-config', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.fault_message, re);
    }
    assert.equal((await call(api, 'GET', '/machine-config')).body.mem_size_mib, 512);
    // PUT sets every field: what it leaves out goes back to the defaults.
    assert.equal((await call(api, 'PUT', '/machine-config', { vcpu_count: 1, mem_size_mib: 64 })).status, 204);
    assert.equal((await call(api, 'GET', '/machine-config')).body.vcpu_count, 1);
  });

  it('PUT /entropy adds virtio-rng (a rate limiter is refused); GET /version and GET /vm/config describe the instance', async () => {
    const api = newApi();
    const limited = await call(api, 'PUT', '/entropy', { rate_limiter: { bandwidth: { size: 1, refill_time: 1 } } });
    assert.equal(limited.status, 400);
    assert.match(limited.body.fault_message, /rate_limiter: rate limiting is not supported/);
    assert.equal((await call(api, 'GET', '/vm/config')).body.entropy, undefined);
    assert.equal((await call(api, 'PUT', '/entropy', {})).status, 204);
    assert.deepEqual((await call(api, 'GET', '/version')).body, { firecracker_version: '9.8.7' });
    const kernel = touch('vmlinux');
    writeFileSync(kernel, 'not really a kernel: PUT only checks that the file is there');
    assert.equal((await call(api, 'PUT', '/boot-source', { kernel_image_path: kernel, boot_args: 'console=ttyS0' })).status, 204);
    const cfg = (await call(api, 'GET', '/vm/config')).body;
    assert.deepEqual(cfg['boot-source'], { kernel_image_path: kernel, boot_args: 'console=ttyS0' });
    assert.deepEqual(cfg.entropy, {});
    assert.deepEqual(cfg.drives, []);
    assert.deepEqual(cfg['network-interfaces'], []);
    assert.equal(cfg['machine-config'].mem_size_mib, 128);
  });
});
