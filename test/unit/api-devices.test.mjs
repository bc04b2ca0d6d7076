// The Firecracker API's pre-boot device resources (drives, network interfaces), through the server's
// request handling (fastify inject: no socket, no VM needed to check what is accepted and refused).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ApiServer } from '../../dist/api/server.js';
import { silentLogger } from '../../dist/log.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-api-dev-'));
const disk = path.join(dir, 'rootfs.img');
writeFileSync(disk, Buffer.alloc(1 << 20));
const empty = path.join(dir, 'empty.img');
writeFileSync(empty, '');

async function put(api, url, body) {
  const r = await api.app.inject({ method: 'PUT', url, payload: body });
  return { status: r.statusCode, body: r.body ? JSON.parse(r.body) : undefined };
}

describe('REST API: drives and network interfaces before boot', () => {
  it('accepts a drive and a NIC (204), and a PUT of the same id replaces it', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    assert.equal((await put(api, '/drives/rootfs', { drive_id: 'rootfs', path_on_host: disk, is_root_device: true, is_read_only: false })).status, 204);
    assert.equal((await put(api, '/drives/rootfs', { drive_id: 'rootfs', path_on_host: disk, is_root_device: true, is_read_only: true })).status, 204);
    assert.equal((await put(api, '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: 'AA:FC:00:00:00:01' })).status, 204);
  });

  it('refuses bad bodies with a fault_message naming the problem, and changes nothing', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    const cases = [
      ['/drives/a', { drive_id: 'b', path_on_host: disk, is_root_device: false }, /differs from the path/],
      ['/drives/a', { drive_id: 'a', path_on_host: path.join(dir, 'missing.img'), is_root_device: false }, /path_on_host .*missing\.img: no such file/],
      ['/drives/a', { drive_id: 'a', is_root_device: false }, /path_on_host/],
      ['/drives/a', { drive_id: 'a', path_on_host: disk, is_root_device: false, bogus: 1 }, /unknown field bogus/],
      ['/drives/a', { drive_id: 'a', path_on_host: disk, is_root_device: true, partuuid: 'x' }, /partuuid/],
      ['/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'much-too-long-tap-name' }, /host_dev_name/],
      ['/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: '01:00:5e:00:00:01' }, /multicast/],
      ['/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', mtu: 9000 }, /mtu/],
      ['/drives/a%2Fb', { drive_id: 'a/b', path_on_host: disk, is_root_device: false }, /drive_id must match pattern/],
      ['/drives/x', { drive_id: 'x'.repeat(65), path_on_host: disk, is_root_device: false }, /drive_id must match pattern/],
      ['/network-interfaces/e', { iface_id: 'e\u0001', host_dev_name: 'tap0' }, /iface_id must match pattern/],
      ['/drives/a', { drive_id: 'a', path_on_host: dir, is_root_device: false }, /path_on_host .*: not a regular file/],
      ['/drives/a', { drive_id: 'a', path_on_host: empty, is_root_device: false }, /path_on_host .*: the file is empty/],
      ['/boot-source', { kernel_image_path: '/dev/zero' }, /kernel_image_path \/dev\/zero: not a regular file/],
      ['/machine-config', { vcpu_count: 1, mem_size_mib: 2 ** 40 }, /mem_size_mib 1099511627776: more than this host's/],
      ['/logger', { level: '__proto__' }, /level __proto__: expected Error/],
    ];
    for (const [url, body, expected] of cases) {
      const r = await put(api, url, body);
      assert.equal(r.status, 400, `${url} ${JSON.stringify(body)}`);
      assert.match(r.body.fault_message, expected);
    }
  });

  it('one root device only; one NIC per tap', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    assert.equal((await put(api, '/drives/a', { drive_id: 'a', path_on_host: disk, is_root_device: true })).status, 204);
    const r = await put(api, '/drives/b', { drive_id: 'b', path_on_host: disk, is_root_device: true });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /drive a is already the root device/);
    assert.equal((await put(api, '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0' })).status, 204);
    const n = await put(api, '/network-interfaces/eth1', { iface_id: 'eth1', host_dev_name: 'tap0' });
    assert.match(n.body.fault_message, /already used by eth0/);
  });
});

describe('REST API: InstanceStart refusing a bad boot source', () => {
  it('names the API fields (kernel_image_path, initrd_path, mem_size_mib), not the CLI flags', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    // (Errors found before /dev/kvm is opened: this runs without KVM. api.test.mjs has one from the loader.)
    const gone = path.join(dir, 'emptied.bin');
    writeFileSync(gone, 'x');
    assert.equal((await put(api, '/boot-source', { kernel_image_path: gone })).status, 204);
    writeFileSync(gone, '');
    let r = await put(api, '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /^kernel_image_path .*emptied\.bin: file is empty$/);

    const kernel = path.join(dir, 'flat.bin');
    writeFileSync(kernel, Buffer.alloc(512, 0xf4)); // hlt: a flat image, which loads
    const initrd = path.join(dir, 'big.initrd');
    writeFileSync(initrd, Buffer.alloc(33 << 20));
    assert.equal((await put(api, '/machine-config', { vcpu_count: 1, mem_size_mib: 32 })).status, 204);
    assert.equal((await put(api, '/boot-source', { kernel_image_path: kernel, initrd_path: initrd })).status, 204);
    r = await put(api, '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /^initrd_path .*big\.initrd: 33 MiB does not fit in 32 MiB of guest RAM/);
    assert.equal((await api.app.inject({ method: 'GET', url: '/' })).json().state, 'Not started');

    // A flat image has no command line: boot_args for one is refused, not dropped.
    assert.equal((await put(api, '/boot-source', { kernel_image_path: kernel, boot_args: 'console=ttyS0' })).status, 204);
    r = await put(api, '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /^boot_args "console=ttyS0": a flat image takes no command line/);
  });

  it('two writable drives on one file (through a link) are refused at InstanceStart', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    const kernel = path.join(dir, 'flat2.bin');
    writeFileSync(kernel, Buffer.alloc(512, 0xf4));
    const link = path.join(dir, 'rootfs-link.img');
    symlinkSync(disk, link);
    assert.equal((await put(api, '/boot-source', { kernel_image_path: kernel })).status, 204);
    assert.equal((await put(api, '/drives/a', { drive_id: 'a', path_on_host: disk, is_root_device: false, is_read_only: false })).status, 204);
    assert.equal((await put(api, '/drives/b', { drive_id: 'b', path_on_host: link, is_root_device: false, is_read_only: false })).status, 204);
    const r = await put(api, '/actions', { action_type: 'InstanceStart' });
    assert.equal(r.status, 400);
    assert.match(r.body.fault_message, /^disk images .*rootfs\.img and .*rootfs-link\.img are one file, both writable/);
    assert.equal((await api.app.inject({ method: 'GET', url: '/' })).json().state, 'Not started');
  });
});

describe('REST API: requests fastify refuses before any route', () => {
  it('a bad URL escape is answered with a fault_message too', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    const r = await api.app.inject({ method: 'GET', url: '/%zz' });
    assert.equal(r.statusCode, 400);
    assert.match(JSON.parse(r.body).fault_message, /invalid request/);
  });
});

describe('REST API: requests Node\'s HTTP parser refuses', () => {
  it('two Content-Length headers get a 400 with a fault_message, over the real socket', async () => {
    const api = new ApiServer({ id: 't', version: '0', log: silentLogger });
    const sock = path.join(dir, 'parse.sock');
    await api.listen(sock);
    try {
      const reply = await new Promise((resolve, reject) => {
        const c = net.connect(sock);
        let text = '';
        c.on('data', (d) => (text += d));
        c.on('end', () => resolve(text));
        c.on('error', reject);
        c.write('PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello');
      });
      assert.match(reply, /^HTTP\/1\.1 400 /);
      assert.match(JSON.parse(reply.slice(reply.indexOf('\r\n\r\n') + 4)).fault_message, /Duplicate Content-Length/);
    } finally {
      await api.close();
    }
  });
});
