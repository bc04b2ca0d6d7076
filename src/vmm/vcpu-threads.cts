/**
 * Where vCPU threads come from. A Node worker spends ~50 ms starting its own Node environment before
 * it runs a line of ours (52 ms for an empty worker on the 2-core dev machine, most of a `run` of a
 * guest that exits at once). A process that knows it is about to build a machine (the `nodevisor`
 * bin, for `run`) calls prespawnVcpuThread() first thing, so that this start-up overlaps the loading
 * of the rest of the program on the other core; Machine then takes that thread instead of starting
 * one.
 *
 * A pre-started thread loads the vCPU bundle and waits for its VcpuWorkerInit as its first message;
 * a thread started on demand gets it as workerData. It is unref'd while it waits, so an unused one
 * never keeps the process alive.
 *
 * This module is CommonJS, and left out of the bundles (scripts/bundle.mjs), so that the bin can
 * require it before anything else and the machine code finds the same instance, with its waiting
 * thread, whether it runs from the command line's bundle or from the library's tree.
 */
import path = require('node:path');
import { Worker } from 'node:worker_threads';

// The bundled thread (scripts/bundle.mjs): one file to load instead of ~30 modules, for every vCPU
// of every machine, run through V8's code cache by vcpu-thread-entry. Both sit beside this file.
const VCPU_THREAD_FILE = path.join(__dirname, 'vcpu-thread-entry.cjs');
const WORKER_OPTIONS = { stdout: false, stderr: false } as const;

const waiting = new Set<Worker>();

/** Starts a vCPU thread now, for the next vcpuThread() call to take. */
export function prespawnVcpuThread(): void {
  const w = new Worker(VCPU_THREAD_FILE, WORKER_OPTIONS);
  w.unref();
  waiting.add(w);
  // One that fails before it is taken is dropped (the error resurfaces in a fresh thread, if at all).
  const drop = (): void => void waiting.delete(w);
  w.once('error', drop).once('exit', drop);
}

/** A vCPU thread running `init` (a VcpuWorkerInit): a pre-started one if one is waiting, else a new one. */
export function vcpuThread(init: object): Worker {
  for (const w of waiting) {
    waiting.delete(w);
    w.ref();
    w.postMessage(init);
    return w;
  }
  return new Worker(VCPU_THREAD_FILE, { ...WORKER_OPTIONS, workerData: init });
}
