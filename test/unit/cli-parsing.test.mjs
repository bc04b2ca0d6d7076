import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseSize, formatSize } from '../../dist/cli/size.js';
import { detectImageKind } from '../../dist/loader/kernel-file.js';

describe('parseSize', () => {
  it('reads MiB by default and the usual suffixes', () => {
    assert.equal(parseSize('128'), 128 * 2 ** 20);
    assert.equal(parseSize('128M'), 128 * 2 ** 20);
    assert.equal(parseSize('2G'), 2 * 2 ** 30);
    assert.equal(parseSize('2GiB'), 2 * 2 ** 30);
    assert.equal(parseSize('64k'), 64 * 1024);
    assert.equal(parseSize('0'), 0);
    assert.equal(parseSize('1.5G'), 1.5 * 2 ** 30);
    assert.equal(parseSize(' 64 MiB '), 64 * 2 ** 20);
  });
  it('reads a B alone as bytes, not MiB', () => {
    assert.equal(parseSize('134217728B'), 128 * 2 ** 20);
    assert.equal(parseSize('128b'), 128);
  });
  it('rejects what is not a size, or not a whole number of bytes', () => {
    for (const bad of ['', 'lots', '-1', '1X', '1.2.3', '1ib', '1iB', '1\nG', '1\tG', '1.0000001M', '1.5B']) assert.equal(parseSize(bad), undefined, JSON.stringify(bad));
  });
  it('formats sizes for messages', () => {
    assert.equal(formatSize(3 * 2 ** 30), '3 GiB');
    assert.equal(formatSize(1536 * 2 ** 20), '1.5 GiB');
  });
});

describe('detectImageKind', () => {
  it('tells bzImage, ELF and flat images apart', () => {
    const bz = new Uint8Array(0x300);
    bz.set(Buffer.from('HdrS'), 0x202);
    assert.equal(detectImageKind(bz), 'bzimage');
    assert.equal(detectImageKind(Uint8Array.of(0x7f, 0x45, 0x4c, 0x46, 2)), 'elf');
    assert.equal(detectImageKind(Uint8Array.of(0xeb, 0xfe)), 'flat');
  });
});

describe('device flags', async () => {
  const { parseDisk, parseNet, parseShare } = await import('../../dist/cli/device-flags.js');
  it('--disk PATH[,ro][,id=NAME]', () => {
    assert.deepEqual(parseDisk('disk.img'), { path: 'disk.img' });
    assert.deepEqual(parseDisk('/x/disk.img,ro,id=root'), { path: '/x/disk.img', readOnly: true, id: 'root' });
    assert.throws(() => parseDisk(',ro'), /--disk ,ro: no image path/);
    assert.throws(() => parseDisk('d.img,rw'), /--disk d.img,rw: unknown option "rw"/);
    assert.throws(() => parseDisk('d.img,id='), /"id" needs a value/);
    assert.throws(() => parseDisk('d.img,id=' + 'x'.repeat(21)), /longer than 20 bytes/);
  });
  it('--net tap=NAME[,mac=MAC]', () => {
    assert.deepEqual(parseNet('tap=nv0'), { tap: 'nv0' });
    assert.deepEqual(parseNet('tap=nv0,mac=52:54:00:AB:CD:EF'), { tap: 'nv0', mac: '52:54:00:ab:cd:ef' });
    assert.throws(() => parseNet('nv0'), /--net nv0: expected tap=NAME/);
    assert.throws(() => parseNet('tap=much-too-long-name'), /not a valid interface name/);
    assert.throws(() => parseNet('tap=nv0,mac=01:00:5e:00:00:01'), /multicast/);
    assert.throws(() => parseNet('tap=nv0,mac=zz'), /not six hex bytes/);
  });
  it('--share HOSTDIR:TAG[,ro]', () => {
    assert.deepEqual(parseShare('/srv/data:data'), { hostDir: '/srv/data', tag: 'data' });
    assert.deepEqual(parseShare('.:src,ro'), { hostDir: '.', tag: 'src', readOnly: true });
    assert.throws(() => parseShare('/srv/data'), /expected HOSTDIR:TAG/);
    assert.throws(() => parseShare('/srv:'), /expected HOSTDIR:TAG/);
    assert.throws(() => parseShare('/srv:' + 't'.repeat(37)), /longer than 36 bytes/);
  });
});
