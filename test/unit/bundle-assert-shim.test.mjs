// scripts/bundle-shims/assert.cjs stands in for node:assert inside the bundles: same outcomes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const shimPath = path.resolve('scripts/bundle-shims/assert.cjs');
const shim = createRequire(import.meta.url)(shimPath);

describe('the bundles\' assert', () => {
  it('passes what node:assert passes', () => {
    shim(true);
    shim(1, 'truthy');
    shim.ok('x');
    shim.strictEqual(1, 1);
    shim.strictEqual(NaN, NaN);
    shim.notStrictEqual(1, '1');
    shim.notStrictEqual(0, -0);
  });

  it('throws node:assert\'s AssertionError, with the message, for what it fails', () => {
    assert.throws(() => shim(false, 'sonic.fd must be a number'), { name: 'AssertionError', message: 'sonic.fd must be a number' });
    assert.throws(() => shim.ok(0), assert.AssertionError);
    assert.throws(() => shim.strictEqual(1, '1'), assert.AssertionError);
    assert.throws(() => shim.strictEqual(0, -0), assert.AssertionError);
    assert.throws(() => shim.notStrictEqual(NaN, NaN, 'same'), { name: 'AssertionError', message: 'same' });
  });

  it('loads node:assert only once a check fails', () => {
    const loaded = `process.moduleLoadList.includes('NativeModule assert')`;
    const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(shimPath)}); a(true); a.strictEqual(1, 1); a.notStrictEqual(1, 2); const before = ${loaded}; try { a(false); } catch {} console.log(before, ${loaded});`], { encoding: 'utf8' });
    assert.equal(r.stdout.trim(), 'false true');
  });
});
