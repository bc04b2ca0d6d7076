// The guest kit's artifacts (guests/kit/build.sh): a small kernel with a PVH entry, a bzImage, and
// an initramfs whose init prints the boot marker and loads the stock kernel's virtio/9p modules.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { execSync } from 'node:child_process';
import path from 'node:path';
import { needsKit, smallVmlinux, smallBzImage, initramfs, kitDir } from '../helpers/kit.mjs';
import { parseElf } from '../../dist/loader/pvh.js';
import { parseSetupHeader } from '../../dist/loader/bzimage.js';

describe('guest kit', needsKit, () => {
  it('the small kernel is a PVH ELF and a 64-bit bzImage, built with the options we asked for', () => {
    assert.ok(parseElf(readFileSync(smallVmlinux), 'vmlinux').pvhEntry > 0x100000);
    const hdr = parseSetupHeader(readFileSync(smallBzImage), 'bzImage');
    assert.ok(hdr.version >= 0x020f);
    const config = readFileSync(path.join(kitDir, 'small', 'config'), 'utf8');
    for (const opt of ['CONFIG_PVH=y', 'CONFIG_SERIAL_8250_CONSOLE=y', 'CONFIG_ACPI=y', 'CONFIG_SMP=y', 'CONFIG_VIRTIO_PCI=y', 'CONFIG_9P_FS=y']) assert.ok(config.includes(`${opt}\n`), opt);
  });

  it('the initramfs has busybox, an init that prints the marker, and the modules in load order', { skip: !existsSync(initramfs) && !process.env.CI && 'initramfs not built (guests/kit/build.sh --what initramfs)' }, () => {
    const list = execSync(`zcat ${initramfs} | cpio -t --quiet`, { encoding: 'utf8' }).split('\n');
    for (const f of ['init', 'bin/busybox', 'bin/sh', 'lib/modules/load-order']) assert.ok(list.includes(f), f);
    const init = execSync(`zcat ${initramfs} | cpio -i --to-stdout --quiet init`, { encoding: 'utf8' });
    assert.match(init, /echo NODEVISOR-BOOT-OK/);
    const order = execSync(`zcat ${initramfs} | cpio -i --to-stdout --quiet lib/modules/load-order`, { encoding: 'utf8' }).trim().split('\n');
    assert.ok(order.includes('virtio_blk') && order.includes('9p'), `modules: ${order.join(' ')}`);
    assert.ok(order.indexOf('9pnet') < order.indexOf('9pnet_virtio') && order.indexOf('9pnet_virtio') < order.indexOf('9p'), 'dependency order');
    for (const m of order) assert.ok(list.includes(`lib/modules/${m}.ko`), `${m}.ko`);
  });
});
