/**
 * Entry point of a vCPU thread: attaches to the VM's fds and shared device state, builds this
 * thread's buses, runs the exit loop, and reports how it stopped to the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../native/binding.js';
import { threadLogger, type ThreadLogRecord } from './thread-log.js';
import { CONTROL } from './vcpu-loop.js';
import { setUpVcpu, vcpuStopState, type VcpuWorkerInit } from './vcpu-setup.js';
import type { StopReason, VcpuStopState } from './stop.js';

export type { VcpuWorkerInit } from './vcpu-setup.js';

export type VcpuWorkerMessage = { type: 'ready' } | { type: 'paused' } | { type: 'resumed' } | ThreadLogRecord | { type: 'stopped'; reason: StopReason; exits: number; at?: VcpuStopState };

function main(init: VcpuWorkerInit): void {
  const n = native();
  const log = threadLogger(parentPort!, init.logLevel);
  const { loop, vcpu } = setUpVcpu(init, log, (parked) => parentPort!.postMessage({ type: parked ? 'paused' : 'resumed' } satisfies VcpuWorkerMessage));
  let reason: StopReason;
  try {
    parentPort!.postMessage({ type: 'ready' } satisfies VcpuWorkerMessage);
    // Threads are spawned while the machine is still being built; they run once start() opens the
    // gate (or, taking over from the main thread, once it has left the guest: init.gate).
    const control = new Int32Array(init.control);
    const [gate, word] = init.gate ? [new Int32Array(init.gate), 0] : [control, CONTROL.GO];
    while (Atomics.load(gate, word) === 0) Atomics.wait(gate, word, 0);
    // Kicks target this thread from here on; one sent before only set immediate_exit, which the
    // first KVM_RUN answers with EINTR.
    n.setRunner(init.runMappingId, true);
    reason = Atomics.load(control, CONTROL.STOP) !== 0 ? { kind: 'stopped' } : loop.run();
  } catch (e) {
    reason = { kind: 'kvm-failure', message: `vcpu${init.vcpuId}: ${(e as Error).message}` };
  } finally {
    n.setRunner(init.runMappingId, false);
  }
  const at = vcpuStopState(log, vcpu, loop.exits, reason);
  parentPort!.postMessage({ type: 'stopped', reason, exits: loop.exits, at } satisfies VcpuWorkerMessage);
}

// A thread started on demand has its init as workerData; a pre-started one (vcpu-threads.ts) waits
// for it as its first message.
if (workerData) main(workerData as VcpuWorkerInit);
else parentPort!.once('message', main);
