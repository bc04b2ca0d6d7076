#!/usr/bin/env node
// Bundles the start-up paths, after tsc (npm run build), with esbuild:
//   dist/cli/cli-bundle.cjs   the command line, which dist/cli/nodevisor.cjs (package.json's bin)
//                             evaluates through V8's code cache (src/code-cache.cts)
//   dist/api/fastify-bundle.cjs  fastify, which the command line loads the same way for `serve`
//                             (with the validators compiled at build time, start-up went from
//                             ~620 to ~310 ms on the dev machine, ~8.4 to ~2.4 s nested)
//   dist/vmm/vcpu-thread.cjs  the vCPU thread every machine spawns (one per vCPU), evaluated the
//                             same way by dist/vmm/vcpu-thread-entry.cjs
// Node 20 compiles every module from source on every start and resolves each import through the
// file system; one file per entry instead of ~70 modules and yargs' and pino's trees cut `nodevisor
// run`'s own start-up from ~165 ms above `node -e 0` to ~90 ms, and a vCPU thread's from ~58 to
// ~41 ms each with 50 started at once (measured on the 2-core dev machine).
// Both are CommonJS scripts: only a script (vm.Script) takes V8's code cache in Node 20, and a worker
// whose main file is CommonJS starts without setting up Node's ES module loader (an empty worker
// started in 53 ms against 58 ms as an ES module, on the dev machine).
// tsc's per-module output stays the library's entry (dist/index.js) and carries the .d.ts files.
// Both bundles sit one folder below dist/, like most of tsc's tree, so that paths relative to the
// running file (the vCPU-thread module's, packageRoot's walk) work from either.
import path from 'node:path';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { build } from 'esbuild';

const dist = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist');
// Left by earlier builds, which split shared code into ES module chunks.
rmSync(path.join(dist, 'chunks'), { recursive: true, force: true });
for (const f of ['vcpu-thread.js', 'vcpu-thread.js.map', 'vcpu-threads.cjs', 'vcpu-threads.cjs.map', 'vcpu-threads.d.cts']) rmSync(path.join(dist, 'vmm', f), { force: true });
const shims = path.join(dist, '..', 'scripts', 'bundle-shims');
/** `require(spec)` in bundled code gets scripts/bundle-shims/`file` instead; the shim's own require(spec) is the real one. */
function shim(name, filter, file) {
  const at = path.join(shims, file);
  return { name, setup: (b) => b.onResolve({ filter }, (args) => (args.importer === at ? undefined : { path: at })) };
}
/**
 * Edits a package's file as it is bundled: each `[from, to]` replaces text that must occur exactly
 * once there, or the build fails, for someone to review the edit against the package's new version.
 */
function patchSource(name, filter, edits) {
  return {
    name,
    setup(b) {
      b.onLoad({ filter }, (args) => {
        let source = readFileSync(args.path, 'utf8');
        for (const [from, to] of edits) {
          if (source.split(from).length !== 2) throw new Error(`${args.path}: the package has changed: review the ${name} edit in scripts/bundle.mjs`);
          source = source.replace(from, to);
        }
        return { contents: source, loader: 'js' };
      });
    },
  };
}
// require('assert') in bundled packages gets scripts/bundle-shims/assert.cjs (why: see there).
const lazyAssert = shim('lazy-assert', /^(node:)?assert$/, 'assert.cjs');
// yargs' platform shim measures the terminal's width (for help text) when it loads, by creating
// process.stdout: that loads Node's stream stack, ~40 ms of `nodevisor run` under nested emulation,
// which otherwise never creates process.stdout. Bundled, it measures when help is rendered instead.
const lazyYargsColumns = patchSource('lazy-yargs-columns', /yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/, [
  ["stdColumns: typeof process.stdout.columns !== 'undefined' ? process.stdout.columns : null", "get stdColumns() { return typeof process.stdout.columns !== 'undefined' ? process.stdout.columns : null; }"],
]);
// pino requires node:worker_threads when it loads (its tools, for isMainThread, and thread-stream
// for its transports), which loads Node's worker and stream modules: with both deferred to their
// use, a `run` that never starts a vCPU thread loads neither. isMainThread matters only for an
// asynchronous destination; ours are synchronous (src/log.ts).
const lazyThreadStream = shim('lazy-thread-stream', /^thread-stream$/, 'thread-stream.cjs');
const lazyPinoIsMainThread = patchSource('lazy-pino-is-main-thread', /pino[\\/]lib[\\/]tools\.js$/, [
  ["const { isMainThread } = require('worker_threads')\n", ''],
  ['!opts.sync && isMainThread)', "!opts.sync && require('worker_threads').isMainThread)"],
]);
// yargs() registers --version with a version it guesses from the nearest package.json above the
// current directory (listing every folder on the way, as many as the user's cwd has above it);
// src/cli/main.ts registers its own at once, so the guess is skipped in the bundle.
const noYargsVersionGuess = patchSource('no-yargs-version-guess', /yargs[\\/]build[\\/]lib[\\/]yargs-factory\.js$/, [['        yargs.version();\n', '']]);
// yargs checks the types of the arguments of each call to its own API (argsert: it parses a usage
// string such as '<string|array> [object]' at every call, ~5% of `nodevisor run` under nested
// emulation), and only warns on a mismatch, never fails. Our calls are type-checked by tsc against
// yargs' own declarations, so the bundle leaves the check out.
const noYargsArgsert = patchSource('no-yargs-argsert', /yargs[\\/]build[\\/]lib[\\/]argsert\.js$/, [
  ['export function argsert(arg1, arg2, arg3) {\n', 'export function argsert() {}\nfunction checkArguments(arg1, arg2, arg3) {\n'],
]);
// `serve`'s REST framework, in a bundle of its own (so that `run`'s stays as small), which the command
// line's loads through the code cache when serve first needs it (scripts/bundle-shims/fastify.cjs).
const fastifyFromItsBundle = shim('fastify-bundle', /^fastify$/, 'fastify.cjs');
const common = {
  bundle: true,
  plugins: [lazyAssert, lazyYargsColumns, lazyThreadStream, lazyPinoIsMainThread, noYargsVersionGuess, noYargsArgsert],
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  // import() becomes require(): a vm.Script has no module loader for import() to use.
  supported: { 'dynamic-import': false },
  define: { 'import.meta.url': '__nodevisorModuleUrl' },
  // jsonc-parser's main file is a UMD module whose requires esbuild cannot follow. Its ES module
  // build's parser module is where visit() (all src/api/duplicate-keys.ts takes) comes from; its main
  // module would bring the formatter and editor too (+18 KB of bundle that every start reads).
  alias: { 'jsonc-parser': 'jsonc-parser/lib/esm/impl/parser.js' },
  banner: { js: "const __nodevisorModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
  // Smaller source is less to decode and parse at every start; names are kept for stack traces.
  // ASCII only (the default, made explicit): the bin reads the bundle as latin1, without UTF-8 decoding.
  charset: 'ascii',
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: true,
  logLevel: 'warning',
};
await build({
  ...common,
  entryPoints: [path.join(dist, 'cli', 'main.js')],
  outfile: path.join(dist, 'cli', 'cli-bundle.cjs'),
  plugins: [...common.plugins, fastifyFromItsBundle],
  // --version without finding and reading package.json at every start (src/cli/main.ts).
  define: { ...common.define, __NODEVISOR_VERSION__: JSON.stringify(JSON.parse(readFileSync(path.join(dist, '..', 'package.json'), 'utf8')).version) },
});
await build({
  ...common,
  entryPoints: [createRequire(import.meta.url).resolve('fastify')],
  outfile: path.join(dist, 'api', 'fastify-bundle.cjs'),
  // The schema compilers fastify would make by default: ajv and fast-json-stringify, ~40% of the
  // bundle. The API server passes its own (src/api/server.ts), so these requires never run.
  external: ['@fastify/ajv-compiler', '@fastify/fast-json-stringify-compiler'],
});
await build({
  ...common,
  entryPoints: [path.join(dist, 'vmm', 'vcpu-worker.js')],
  outfile: path.join(dist, 'vmm', 'vcpu-thread.cjs'),
});
chmodSync(path.join(dist, 'cli', 'nodevisor.cjs'), 0o755); // tsc's output of the bin, run directly from a clone
// The bin's earlier path, for scripts that name it and for npx, whose cache of a local package keeps
// the bin links it made when first run there (an ES module, so ~14 ms slower to start than the bin).
const legacyBin = path.join(dist, 'cli', 'nodevisor.js');
writeFileSync(legacyBin, "#!/usr/bin/env node\nimport './nodevisor.cjs';\n");
chmodSync(legacyBin, 0o755);
