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

  it('pino is loaded only when a line is first written; until then levels and children behave as pino\'s', () => {
    const { stdout } = child(`
      import { createRequire } from 'node:module';
      const req = createRequire('${logJs}');
      const loaded = () => Object.keys(req.cache).some((k) => /[\\/]pino[\\/]pino\.js$/.test(k));
      const out = [];
      const l = createLogger('info');
      const c = l.child({ machine: 2 });
      c.debug('hidden');
      silentLogger.child({ a: 1 }).fatal('no');
      out.push(loaded(), l.level, c.level, c.isLevelEnabled('info'), c.isLevelEnabled('debug'));
      const quiet = createLogger('info');
      quiet.level = 'debug';
      out.push(quiet.isLevelEnabled('debug'), loaded());
      c.info('shown');
      out.push(loaded(), typeof l.bindings, JSON.stringify(c.bindings()));
      console.log(JSON.stringify(out));`);
    assert.deepEqual(JSON.parse(stdout), [false, 'info', 'info', true, false, true, false, true, 'function', '{"machine":2}']);
  });

  it('a child made after its parent has written is the parent\'s own pino child, at the parent\'s level', () => {
    const { stderr } = child(`const l = createLogger('warn'); l.warn('first'); l.level = 'info'; const c = l.child({ device: 'x' }); c.info('second'); c.debug('hidden');`);
    assert.deepEqual(stderr.trim().split('\n').map((x) => JSON.parse(x)).map((x) => [x.msg, x.device]), [['first', undefined], ['second', 'x']]);
  });

  it('silentLogger writes nothing anywhere', () => {
    const { stdout, stderr } = child(`silentLogger.fatal('no'); silentLogger.child({ a: 1 }).error('no');`);
    assert.equal(stdout + stderr, '');
  });
});
