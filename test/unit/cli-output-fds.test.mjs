// outputFdsLikeNode: stdout and stderr made non-blocking where Node's own streams would (pipes and
// sockets), without creating Node's streams for other kinds of fd.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const O_NONBLOCK = 0o4000;
const mod = path.resolve('dist/cli/output-fds.js');
// Prints, on fd 3 (a file), fd 1's status flags before and after, and whether Node's stdout exists.
const probe = `const fs = require('node:fs');
const flags = () => parseInt(/^flags:\\s+(\\d+)/m.exec(fs.readFileSync('/proc/self/fdinfo/1', 'utf8'))[1], 8);
const before = flags();
import(${JSON.stringify(mod)}).then(({ outputFdsLikeNode }) => {
  outputFdsLikeNode();
  fs.writeSync(3, JSON.stringify({ before, after: flags(), fileStream: process.moduleLoadList.includes('NativeModule internal/fs/sync_write_stream') }));
});`;

function run(stdout) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-outfds-'));
  const report = path.join(dir, 'report');
  const stdoutFile = path.join(dir, 'out');
  const sh = stdout === 'file' ? `exec "$0" -e "$1" 3>"$2" >"$3" 2>"$3.err"` : `exec "$0" -e "$1" 3>"$2" 2>"$3.err" | cat >/dev/null`;
  spawnSync('sh', ['-c', sh, process.execPath, probe, report, stdoutFile], { stdio: ['ignore', 'ignore', 'inherit'] });
  const r = JSON.parse(readFileSync(report, 'utf8'));
  rmSync(dir, { recursive: true });
  return r;
}

describe('outputFdsLikeNode', () => {
  it('makes a pipe on stdout non-blocking, as Node\'s process.stdout does', () => {
    const r = run('pipe');
    assert.equal(r.before & O_NONBLOCK, 0, 'a fresh pipe is blocking');
    assert.equal(r.after & O_NONBLOCK, O_NONBLOCK);
  });

  it('leaves a file alone, without creating Node\'s stream for it', () => {
    const r = run('file');
    assert.equal(r.after, r.before);
    assert.equal(r.fileStream, false, 'process.stdout (a SyncWriteStream for a file) was not created');
  });
});
