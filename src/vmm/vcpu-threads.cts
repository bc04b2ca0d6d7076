/**
 * Where vCPU threads come from: a Node worker running the bundled vCPU thread. A worker spends
 * ~50 ms starting its own Node environment before it runs a line of ours (52 ms for an empty worker
 * on the 2-core dev machine), which is why `nodevisor run` starts its guest on the main thread and
 * only moves it to a thread once it keeps running (main-thread-vcpu.ts).
 *
 * This module is CommonJS, and left out of the bundles (scripts/bundle.mjs): __dirname must be
 * dist/vmm, where the thread's files are, whether it runs from the command line's bundle or from
 * the library's tree.
 */
import path = require('node:path');
import { Worker } from 'node:worker_threads';

// The bundled thread (scripts/bundle.mjs): one file to load instead of ~30 modules, for every vCPU
// of every machine, run through V8's code cache by vcpu-thread-entry. Both sit beside this file.
const VCPU_THREAD_FILE = path.join(__dirname, 'vcpu-thread-entry.cjs');

/** A new vCPU thread running `init` (a VcpuWorkerInit). */
export function vcpuThread(init: object): Worker {
  return new Worker(VCPU_THREAD_FILE, { stdout: false, stderr: false, workerData: init });
}
