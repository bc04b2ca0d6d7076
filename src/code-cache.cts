/**
 * Runs one of our CommonJS bundles through V8's code cache. Node 20 compiles every script from
 * source at every start (module.enableCompileCache() came with Node 22.1): ~30 ms of each
 * `nodevisor run` for the command line's 440 KB bundle, and ~5 ms of every vCPU thread's start for
 * its 55 KB one, on the 2-core dev machine. The cache is V8's own compile output for this Node and
 * this bundle (V8 rejects it otherwise), kept in the user's cache folder, and written by save() when
 * it was missing or rejected; called late (at exit), it also holds the functions that ran compiled.
 * Failing to read or write it only means compiling.
 *
 * CommonJS, and outside the bundles, so that the bin and a vCPU thread can load it before anything
 * else: an ES module as the main file costs Node ~14 ms more to start (its module loader).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import Module = require('node:module');
import os = require('node:os');
import path = require('node:path');
import { Script } from 'node:vm';

export interface CachedBundle {
  /** What the bundle assigned to module.exports. */
  readonly exports: unknown;
  /** Writes the cache if it was missing or rejected; a no-op otherwise, and after the first call. */
  save(): void;
}

/**
 * Loads and runs `bundle` (a CommonJS file of ours, in ASCII: esbuild escapes anything else, so
 * latin1 reads it exactly, 2-5 ms faster than UTF-8 for the large one). `kind` names the cache among
 * this install's: one per kind of use, because different runs compile different functions.
 */
export function runCachedBundle(bundle: string, kind: string): CachedBundle {
  const source = readFileSync(bundle, 'latin1');
  const cacheFile = codeCachePath(bundle, kind);
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    // none yet
  }
  const script = new Script(Module.wrap(source), { filename: bundle, ...(cachedData ? { cachedData } : {}) });
  let stale = cachedData === undefined || script.cachedDataRejected === true;
  const wrapper = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: object, filename: string, dirname: string) => void;
  const bundleModule = { exports: {}, filename: bundle, id: bundle, loaded: false };
  wrapper.call(bundleModule.exports, bundleModule.exports, Module.createRequire(bundle), bundleModule, bundle, path.dirname(bundle));
  return {
    exports: bundleModule.exports,
    save() {
      if (!stale) return;
      stale = false;
      saveCodeCache(script, cacheFile);
    },
  };
}

/**
 * One file per install, kind, Node version and bundle build. V8 checks the last two itself; the
 * install's path (hashed) keeps two clones from replacing each other's cache at every run.
 */
function codeCachePath(bundle: string, kind: string): string {
  const st = statSync(bundle);
  let h = 5381;
  for (let i = 0; i < bundle.length; i++) h = ((h * 33) ^ bundle.charCodeAt(i)) >>> 0;
  const dir = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'nodevisor', 'code-cache');
  const name = path.basename(bundle).replace(/\.[^.]*$/, '');
  return path.join(dir, `${name}-${h.toString(16)}-${kind}-${process.version}-${process.arch}-${st.size}-${Math.floor(st.mtimeMs)}.v8`);
}

/**
 * mkdir -p, one level at a time: Node 20's `mkdirSync(dir, { recursive: true })` loops for ever,
 * at full CPU, where mkdir says ENOENT under a parent that exists (XDG_CACHE_HOME=/proc/x: the
 * process hung at exit). Throws what the first failing mkdir says.
 */
function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let d = path.resolve(dir); !existsSync(d) && path.dirname(d) !== d; d = path.dirname(d)) missing.push(d);
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // another process made it meanwhile: fine
    }
  }
}

function saveCodeCache(s: Script, file: string): void {
  try {
    makeDirs(path.dirname(file));
    // Per process and thread: the vCPU threads of one process may all be saving at once. (Required
    // here, not at the top: the main thread of a `run` has no other use for node:worker_threads,
    // whose first require compiles Node's worker modules.)
    const tmp = `${file}.${process.pid}.${(require('node:worker_threads') as typeof import('node:worker_threads')).threadId}`;
    writeFileSync(tmp, s.createCachedData());
    renameSync(tmp, file);
    removeStale(path.dirname(file), path.basename(file));
  } catch {
    // a read-only home: the next start compiles again
  }
}

/**
 * Caches unused for this long are dropped when another is written: those of installs that are gone
 * (every CI clone makes its own) would otherwise pile up, ~0.5 MB each. A cache in use is read at
 * every start, which keeps its access time recent (relatime updates it daily); where the file
 * system keeps no access times, its age is that of its last write, and it is rebuilt once a month.
 */
export const CODE_CACHE_UNUSED_DAYS = 30;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * Removes, from the cache folder, this install's caches of earlier builds or Node versions for the
 * same kind as `current` (of no more use), caches of any install unused for CODE_CACHE_UNUSED_DAYS,
 * and temporary files a day old (a save that died between write and rename).
 */
function removeStale(dir: string, current: string): void {
  const prefix = current.replace(/-v\d.*$/, '-');
  const now = Date.now();
  for (const f of readdirSync(dir)) {
    if (f === current) continue;
    const at = path.join(dir, f);
    try {
      const temporary = /\.v8\./.test(f);
      if (!temporary && !f.endsWith('.v8')) continue; // not ours
      const st = statSync(at);
      const age = now - Math.max(st.atimeMs, st.mtimeMs);
      if ((!temporary && f.startsWith(prefix)) || age > (temporary ? DAY_MS : CODE_CACHE_UNUSED_DAYS * DAY_MS)) rmSync(at, { force: true });
    } catch {
      // gone meanwhile (another process cleaning up), or not ours to remove
    }
  }
}
