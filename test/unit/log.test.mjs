import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const logJs = path.resolve('dist/log.js');
/** Runs `body` with createLogger and silentLogger in scope, in a child; its stdout and stderr. */
function child(body) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import { createLogger, silentLogger } from '${logJs}';\n${body}`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { stdout: r.stdout, stderr: r.stderr };
}

describe('loggers', () => {
  it('createLogger: JSON lines on stderr at its level and above, nothing on stdout', () => {
    const { stdout, stderr } = child(`const l = createLogger('info'); l.debug('hidden'); l.info({ a: 1 }, 'shown'); l.child({ machine: 2 }).error('also shown');`);
    assert.equal(stdout, '');
    const lines = stderr.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.a, l.machine]), [[30, 'shown', 1, undefined], [50, 'also shown', undefined, 2]]);
    assert.equal(lines[0].pid, lines[1].pid);
    assert.match(lines[0].time, /^\d{4}-\d\d-\d\dT/);
  });

  it('a line logged just before process.exit() is not lost', () => {
    const { stderr } = child(`createLogger('warn').warn('last words'); process.exit(0);`);
    assert.equal(JSON.parse(stderr).msg, 'last words');
  });

  it('silentLogger writes nothing anywhere', () => {
    const { stdout, stderr } = child(`silentLogger.fatal('no'); silentLogger.child({ a: 1 }).error('no');`);
    assert.equal(stdout + stderr, '');
  });
});
