import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { IsaDebugExit, debugExitStatus } from '../../dist/devices/debug/isa-debug-exit.js';
import { ScratchDevice } from '../../dist/devices/debug/testdev.js';

describe('isa-debug-exit', () => {
  it('maps a written value v to status (v << 1) | 1, 8 bits, as QEMU does', () => {
    const seen = [];
    const d = new IsaDebugExit((value, status) => seen.push([value, status]));
    d.write(0, 1, 0);
    d.write(0, 4, 3);
    d.write(0, 1, 0x80);
    assert.deepEqual(seen, [[0, 1], [3, 7], [0x80, 1]]);
    assert.equal(debugExitStatus(0x7f), 0xff);
    assert.equal(d.read(0, 2), 0xffff);
  });
});

describe('testdev scratch', () => {
  it('reads back what was written at every width, little-endian', () => {
    const d = new ScratchDevice('t', 8);
    d.write(0, 4, 0xdeadbeef);
    assert.equal(d.read(0, 4), 0xdeadbeef);
    assert.equal(d.read(1, 2), 0xadbe);
    assert.equal(d.read(3, 1), 0xde);
    d.write(2, 1, 0x11);
    assert.equal(d.read(0, 4), 0xde11beef);
  });
});
