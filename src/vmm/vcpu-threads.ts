/**
 * Where vCPU threads come from: a Node worker running the bundled vCPU thread. A worker spends
 * ~50 ms starting its own Node environment before it runs a line of ours (52 ms for an empty worker
 * on the 2-core dev machine), which is why `nodevisor run` starts its guest on the main thread and
 * only moves it to a thread once it keeps running (main-thread-vcpu.ts).
 *
 * node:worker_threads is loaded at the first thread, not at start-up: Node compiles its worker
 * modules on first require, which a `run` whose guest ends on the main thread never needs.
 */
import type { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// The bundled thread (scripts/bundle.mjs), run through V8's code cache by vcpu-thread-entry. It sits
// in dist/vmm; this module runs from dist/vmm (tsc's tree) or from dist/cli (the command line's
// bundle), both one folder below dist/, so one relative path finds it from either.
const VCPU_THREAD_URL = new URL('../vmm/vcpu-thread-entry.cjs', import.meta.url);

const load = createRequire(import.meta.url);

/** A new vCPU thread running `init` (a VcpuWorkerInit). */
export function vcpuThread(init: object): Worker {
  const { Worker: W } = load('node:worker_threads') as typeof import('node:worker_threads');
  return new W(fileURLToPath(VCPU_THREAD_URL), { stdout: false, stderr: false, workerData: init });
}
