import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, utimesSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readImage, RECENT_MAX_BYTES } from '../../dist/loader/kernel-file.js';

describe('readImage: images read again only when their file changed', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-image-'));
  const file = path.join(dir, 'kernel');
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('gives the same bytes for an unchanged file, and the new bytes once it changes in any way', () => {
    writeFileSync(file, Buffer.from('first version'));
    utimesSync(file, 1_000_000, 1_000_000);
    const a = readImage(file);
    assert.equal(Buffer.from(a).toString(), 'first version');
    assert.equal(readImage(file), a, 'an unchanged file is not read again');

    // Same size and the same modification time put back: only the change time tells.
    writeFileSync(file, Buffer.from('other version'));
    utimesSync(file, 1_000_000, 1_000_000);
    const b = readImage(file);
    assert.equal(Buffer.from(b).toString(), 'other version');

    // Another file moved into its place: another inode.
    writeFileSync(`${file}.new`, Buffer.from('third version'));
    renameSync(`${file}.new`, file);
    assert.equal(Buffer.from(readImage(file)).toString(), 'third version');
  });

  it('still refuses a file that has become empty or gone', () => {
    writeFileSync(file, Buffer.from('x'));
    readImage(file);
    writeFileSync(file, Buffer.alloc(0));
    assert.throws(() => readImage(file), /--kernel .*kernel: file is empty/);
    rmSync(file);
    assert.throws(() => readImage(file), /--kernel .*kernel: no such file/);
  });

  it('keeps no image larger than its budget', () => {
    const big = path.join(dir, 'big');
    writeFileSync(big, Buffer.alloc(RECENT_MAX_BYTES + 1, 1));
    const a = readImage(big);
    assert.notEqual(readImage(big), a, 'read again: too large to keep');
  });
});
