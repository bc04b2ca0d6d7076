#!/usr/bin/env node
/**
 * The `nodevisor` executable: runs the bundled command line (cli-bundle.cjs, built by
 * scripts/bundle.mjs) through V8's code cache (code-cache.cts), with the cache written at exit. This
 * file is CommonJS too: an ES module as the main file costs Node ~14 ms more to start.
 */
import path = require('node:path');
import { runCachedBundle } from '../code-cache.cjs';

const args = process.argv.slice(2);

// `run` has a cache of its own: its runs compile other functions than the other commands'. Only a
// run that booted a guest writes it (guest-ran.ts says why).
const isRun = args[0] === 'run';
const cli = runCachedBundle(path.join(__dirname, 'cli-bundle.cjs'), isRun ? 'run' : 'other');
const exported = cli.exports as typeof import('./main.js');
process.once('exit', () => {
  if (!isRun || exported.guestRan()) cli.save();
});
void exported.main(args);

