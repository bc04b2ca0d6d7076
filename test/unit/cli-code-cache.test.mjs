// The `nodevisor` bin and every vCPU thread evaluate their bundles through V8's code cache
// (src/code-cache.cts). The cache only ever saves time: a missing, corrupt or unwritable one still
// gives a working command. Runs on any host: `--version`, a refused flag, `serve` before any guest
// and a vCPU thread ended before it reaches KVM need no /dev/kvm.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import os from 'node:os';
import path from 'node:path';
import { request } from '../helpers/api-socket.mjs';
import { waitFor } from '../helpers/wait.mjs';
import { cli, runCli } from '../helpers/kvm.mjs';

const { CODE_CACHE_UNUSED_DAYS } = createRequire(import.meta.url)('../../dist/code-cache.cjs');
const version = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;

function cacheFiles(home) {
  const dir = path.join(home, 'nodevisor', 'code-cache');
  try {
    return readdirSync(dir).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

/** `nodevisor serve --api-sock`: GET / once it answers, then SIGTERM; its body, how serve ended and its stderr. */
async function serveOnce(env) {
  const sock = path.join(mkdtempSync(path.join(os.tmpdir(), 'nv-cc-sock-')), 'api.sock');
  const child = spawn(process.execPath, [cli, 'serve', '--api-sock', sock], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let reply;
  await waitFor(async () => (reply = await request(sock, 'GET', '/').catch(() => undefined)) !== undefined || child.exitCode !== null);
  child.kill(reply ? 'SIGTERM' : 'SIGKILL');
  if (!reply) throw new Error(`serve did not answer; stderr: ${stderr}`);
  return { body: reply.body, ...(await exited), stderr };
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
    // `run` keeps its own, written only by a run that booted a guest (test/kvm/smoke.test.mjs): one
    // that stopped at a refused flag or at --help compiled too little of a run to cache.
    const bad = await runCli(['run', '--mem', '5x'], { env });
    assert.equal(bad.status, 2);
    assert.equal(bad.stderr, 'nodevisor: --mem 5x: not a size (examples: 256M, 2G)\n');
    const help = await runCli(['run', '--help'], { env });
    assert.equal(help.status, 0, help.stderr);
    assert.deepEqual(cacheFiles(home).filter((f) => /-run-v\d+/.test(f)), []);
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

  it('a cache folder under a parent where mkdir says ENOENT (/proc) only means compiling: the command ends at once', async () => {
    // Node 20's recursive mkdirSync loops for ever there, at full CPU: the bin hung at exit.
    const r = await runCli(['--version'], { env: { XDG_CACHE_HOME: '/proc/nonexistent-nodevisor' }, killAfterMs: 15_000 });
    assert.equal(r.signal, null, 'killed: it did not end');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), version);
    assert.equal(r.stderr, '');
  });

  it('writing a cache removes the caches of any install unused for a month, and temporary files a day old', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    const dir = path.join(home, 'nodevisor', 'code-cache');
    mkdirSync(dir, { recursive: true });
    const daysAgo = (d) => new Date(Date.now() - d * 24 * 60 * 60 * 1000);
    const file = (name, age) => {
      const f = path.join(dir, name);
      writeFileSync(f, 'x');
      utimesSync(f, daysAgo(age), daysAgo(age));
      return f;
    };
    // Another install's: gone (not read for a month), and in use (read yesterday).
    const gone = file('cli-bundle-deadbeef-run-v20.0.0-x64-1-1.v8', CODE_CACHE_UNUSED_DAYS + 1);
    const inUse = file('cli-bundle-cafef00d-run-v20.0.0-x64-1-1.v8', 1);
    const deadTemp = file('cli-bundle-cafef00d-other-v20.0.0-x64-1-1.v8.4242.0', 2);
    const liveTemp = file('cli-bundle-cafef00d-other-v20.0.0-x64-1-1.v8.4343.0', 0);
    const notOurs = file('notes.txt', 400);
    const r = await runCli(['--version'], { env: { XDG_CACHE_HOME: home } });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(cacheFiles(home).some((f) => /^cli-bundle-.*-other-v\d.*\.v8$/.test(path.basename(f)) && !f.includes('cafef00d')), 'its own cache written');
    assert.deepEqual([gone, inUse, deadTemp, liveTemp, notOurs].map((f) => existsSync(f)), [false, true, false, true, true]);
  });

  it('serve loads its REST framework from a bundle of its own with a cache of its own, written at exit and used by the next', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    const first = await serveOnce({ XDG_CACHE_HOME: home });
    assert.equal(first.body.state, 'Not started', first.stderr);
    const fastifyCache = () => cacheFiles(home).filter((f) => /^fastify-bundle-.*-serve-v\d+/.test(path.basename(f)));
    const [file] = fastifyCache();
    assert.ok(file, `no cache for the framework's bundle: ${cacheFiles(home).map((f) => path.basename(f))}`);
    assert.ok(statSync(file).size > 10_000);
    const inode = statSync(file).ino;
    const second = await serveOnce({ XDG_CACHE_HOME: home });
    assert.equal(second.body.app_name, 'nodevisor', second.stderr);
    assert.deepEqual(fastifyCache(), [file]);
    assert.equal(statSync(file).ino, inode, 'accepted: not written again');
  });

  it('a vCPU thread writes its own cache when it ends, and the next thread uses it', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'nv-cc-'));
    // A thread that gets an init it cannot use ends at once (with an error), as any thread ends: through exit.
    const runThread = () =>
      new Promise((resolve) => {
        const w = new Worker(new URL('../../dist/vmm/vcpu-thread-entry.cjs', import.meta.url), { env: { ...process.env, XDG_CACHE_HOME: home } });
        w.on('error', () => {});
        w.on('exit', resolve);
        w.postMessage({});
      });
    await runThread();
    const files = cacheFiles(home);
    assert.equal(files.length, 1, 'one cache, for the vCPU thread');
    assert.match(path.basename(files[0]), /^vcpu-thread-.*-vcpu-v\d+/);
    assert.ok(statSync(files[0]).size > 10_000);
    const inode = statSync(files[0]).ino;
    await runThread();
    assert.equal(statSync(files[0]).ino, inode, 'accepted: not written again');
  });
});
