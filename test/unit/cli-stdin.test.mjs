import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';

describe('stdinUnlessNull: /dev/null as stdin means no console input', () => {
  const probe = `import('${path.resolve('dist/cli/stdin.js')}').then(({ stdinUnlessNull }) => process.stdout.write(String(stdinUnlessNull() === undefined)))`;
  const run = (stdin) => spawnSync(process.execPath, ['-e', probe], { stdio: [stdin, 'pipe', 'inherit'], input: stdin === 'pipe' ? 'data' : undefined, encoding: 'utf8' }).stdout;

  it('is undefined when stdin is /dev/null', () => assert.equal(run('ignore'), 'true'));
  it('is process.stdin for a pipe', () => assert.equal(run('pipe'), 'false'));
  it('is process.stdin for a regular file', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-stdin-'));
    writeFileSync(path.join(dir, 'in'), 'data');
    const r = spawnSync('sh', ['-c', `"${process.execPath}" -e "$0" < in`, probe], { cwd: dir, encoding: 'utf8' });
    rmSync(dir, { recursive: true });
    assert.equal(r.stdout, 'false');
  });
});
