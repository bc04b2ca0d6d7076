// The `nodevisor` bin evaluates the command line's bundle through V8's code cache (src/cli/nodevisor.cts).
// The cache only ever saves time: a missing, corrupt or unwritable one still gives a working command.
// Runs on any host: `--version` and a refused flag need no /dev/kvm.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from '../helpers/kvm.mjs';

const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

function cacheFiles(home) {
  const dir = path.join(home, 'nodevisor', 'code-cache');
  try {
    return readdirSync(dir).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

describe('CLI code cache', () => {
  it('is written by the first run, one per command kind, and used by the next', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    const env = { XDG_CACHE_HOME: home };
    const first = await runCli(['--version'], { env });
    assert.equal(first.status, 0, first.stderr);
    assert.equal(first.stdout.trim(), version);
    const [file] = cacheFiles(home);
    assert.ok(file, 'no cache written');
    assert.match(path.basename(file), /-other-v\d+/);
    const bytes = readFileSync(file);
    assert.ok(bytes.length > 10_000, `a ${bytes.length}-byte cache`);
    // Accepted: nothing is rewritten.
    const second = await runCli(['--version'], { env });
    assert.equal(second.stdout.trim(), version);
    assert.deepEqual(readFileSync(file), bytes);
    // `run` keeps its own (a refused flag still runs the command line far enough to compile it).
    const bad = await runCli(['run', '--mem', '5x'], { env });
    assert.equal(bad.status, 2);
    assert.equal(bad.stderr, 'nodevisor: --mem 5x: not a size (examples: 256M, 2G)\n');
    assert.equal(cacheFiles(home).filter((f) => /-run-v\d+/.test(f)).length, 1);
  });

  it('a corrupt cache is rejected by V8, replaced, and the command still works', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    const env = { XDG_CACHE_HOME: home };
    await runCli(['--version'], { env });
    const [file] = cacheFiles(home);
    writeFileSync(file, Buffer.alloc(4096, 0x5a));
    const r = await runCli(['--version'], { env });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), version);
    assert.notDeepEqual(readFileSync(file), Buffer.alloc(4096, 0x5a));
  });

  it('an unwritable cache folder only means compiling', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    // A file where the cache folder should be: mkdir fails whoever we are (root ignores permissions).
    writeFileSync(path.join(home, 'nodevisor'), '');
    const r = await runCli(['--version'], { env: { XDG_CACHE_HOME: home } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), version);
    assert.equal(r.stderr, '');
  });
});
