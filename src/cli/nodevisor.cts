#!/usr/bin/env node
/**
 * The `nodevisor` executable: evaluates the bundled command line (cli-bundle.cjs, built by
 * scripts/bundle.mjs) through V8's code cache. Node 20 compiles every script from source at every
 * start (module.enableCompileCache() came with Node 22.1), and compiling the ~440 KB bundle was
 * ~30 ms of each `nodevisor run` on the 2-core dev machine. The cache is V8's own compile output for
 * this Node and this bundle (V8 rejects it otherwise), kept in the user's cache folder and written
 * at exit when it was missing or rejected, so it also holds the functions that run compiled. Failing
 * to read or write it only means compiling. This file is CommonJS too: an ES module as the main
 * file costs Node ~14 ms more to start (its module loader), on the dev machine.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import Module = require('node:module');
import os = require('node:os');
import path = require('node:path');
import { Script } from 'node:vm';
import { prespawnVcpuThread } from '../vmm/vcpu-threads.cjs';

// For `run`, a vCPU thread starts its own Node environment before anything else is done here, so
// that the two overlap on two cores instead of adding up (vmm/vcpu-threads.cts).
const args = process.argv.slice(2);
if (args[0] === 'run') prespawnVcpuThread();

const bundle = path.join(__dirname, 'cli-bundle.cjs');
// The bundle is ASCII (esbuild escapes anything else), so latin1 reads it exactly, 2-5 ms faster than UTF-8.
const source = readFileSync(bundle, 'latin1');
const cacheFile = codeCachePath();
let cachedData: Buffer | undefined;
try {
  cachedData = readFileSync(cacheFile);
} catch {
  // none yet
}
const script = new Script(Module.wrap(source), { filename: bundle, ...(cachedData ? { cachedData } : {}) });
if (cachedData === undefined || script.cachedDataRejected) process.once('exit', () => saveCodeCache(script, cacheFile));
const wrapper = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
const bundleModule = { exports: {}, filename: bundle, id: bundle, loaded: false };
wrapper.call(bundleModule.exports, bundleModule.exports, Module.createRequire(bundle), bundleModule, bundle, path.dirname(bundle));
void (bundleModule.exports as typeof import('./main.js')).main(args);

/**
 * One file per install, command kind, Node version and bundle build. V8 checks the last two itself;
 * the install's path (hashed) keeps two clones from replacing each other's cache at every run, and
 * `run` has its own because its runs compile other functions than the other commands'.
 */
function codeCachePath(): string {
  const st = statSync(bundle);
  const command = args[0] === 'run' ? 'run' : 'other';
  let h = 5381;
  for (let i = 0; i < bundle.length; i++) h = ((h * 33) ^ bundle.charCodeAt(i)) >>> 0;
  const dir = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'nodevisor', 'code-cache');
  return path.join(dir, `cli-${h.toString(16)}-${command}-${process.version}-${process.arch}-${st.size}-${Math.floor(st.mtimeMs)}.v8`);
}

function saveCodeCache(s: Script, file: string): void {
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, s.createCachedData());
    renameSync(tmp, file);
    // This install's caches from earlier builds or Node versions, for the same command, are of no more use.
    const prefix = path.basename(file).replace(/-v\d.*$/, '-');
    for (const f of readdirSync(path.dirname(file))) if (f.startsWith(prefix) && f !== path.basename(file)) rmSync(path.join(path.dirname(file), f), { force: true });
  } catch {
    // a read-only home: the next start compiles again
  }
}
