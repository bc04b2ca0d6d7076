/**
 * What a vCPU thread starts with: the bundled thread (vcpu-thread.cjs, scripts/bundle.mjs) run
 * through V8's code cache (code-cache.cts), written when the thread ends. Compiling the bundle from
 * source was ~5 ms of every vCPU thread's start on the dev machine, and starting threads is most of
 * what starting many machines at once costs.
 */
import path = require('node:path');
import { runCachedBundle } from '../code-cache.cjs';

const thread = runCachedBundle(path.join(__dirname, 'vcpu-thread.cjs'), 'vcpu');
process.once('exit', () => thread.save());
