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
  });
  it('rejects what is not a size', () => {
    for (const bad of ['', 'lots', '-1', '1X', '1.2.3']) assert.equal(parseSize(bad), undefined, bad);
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
