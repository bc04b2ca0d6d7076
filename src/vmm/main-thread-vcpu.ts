/**
 * A single vCPU that starts on the main thread and moves to a vCPU thread once the guest has run for
 * HANDOFF_AFTER_MS.
 *
 * Why: a vCPU thread is a Node worker, and a worker spends ~50 ms of CPU starting its own Node
 * environment before it runs a line of ours (vcpu-threads.cts). For `nodevisor run` of a guest that
 * ends at once, that start-up was most of the run. So the guest starts here, at once, and a guest
 * that ends within HANDOFF_AFTER_MS never needs a thread. One that keeps running gets its thread
 * (started in the background, on the other core) and moves there, so that from then on the main
 * thread's device engines and the guest run in parallel, as in every other machine.
 *
 * How the main thread runs a guest without blocking its event loop (design.md, threads rule 2):
 * native/src/loop_vcpu.cc calls #slice just before each poll of the loop that would wait, and kicks
 * the vCPU out of KVM_RUN as soon as the loop has work; the slice then returns, the loop runs its
 * callbacks, and the next poll enters the guest again. Exits are answered here synchronously, by the
 * same VcpuLoop and buses a vCPU thread uses (vcpu-setup.ts).
 *
 * To Machine this looks like a vCPU thread: it emits the same 'message's (VcpuWorkerMessage),
 * 'error' and one 'exit'.
 */
import { EventEmitter } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { native, type NativeBinding } from '../native/binding.js';
import type { Vcpu } from '../kvm/kvm.js';
import { threadLogger, type ThreadLogger } from './thread-log.js';
import { CONTROL, type VcpuLoop } from './vcpu-loop.js';
import { logStopState, setUpVcpu, type VcpuWorkerInit } from './vcpu-setup.js';
import type { VcpuWorkerMessage } from './vcpu-worker.js';
import type { StopReason } from './stop.js';

/**
 * How long the guest runs on the main thread before its vCPU thread is started: time spent in the
 * guest, not since start(). Wall time would also count the main thread's own work after start()
 * (console, devices, the caller's code), which under emulation alone can exceed it.
 */
export const HANDOFF_AFTER_MS = 20;

/**
 * ...or, whatever the guest has had, this long after start(): a main thread whose event loop never
 * sleeps (a caller's setImmediate loop) never runs the guest, and it must not starve there.
 */
export const HANDOFF_AT_LATEST_MS = 250;

/** The native hook serves one vCPU per process; a second machine meanwhile uses a thread from the start. */
let busy = false;

export class MainThreadVcpu extends EventEmitter {
  /** Whether a new machine's vCPU can start on the main thread now. */
  static available(): boolean {
    return !busy;
  }

  readonly #init: VcpuWorkerInit;
  readonly #n: NativeBinding;
  readonly #control: Int32Array;
  readonly #loop: VcpuLoop;
  readonly #vcpu: Vcpu;
  readonly #spawnThread: (init: VcpuWorkerInit) => Worker;
  readonly #log: ThreadLogger;
  #startedAt = 0;
  /** Milliseconds spent in slices so far: in the guest, give or take an exit. */
  #inGuestMs = 0;
  #phase: 'waiting' | 'running' | 'handed-off' | 'done' = 'waiting';
  #parked = false;
  #thread: Worker | undefined;
  #gate: Int32Array | undefined;
  #threadReady = false;
  #timer: NodeJS.Timeout | undefined;

  /** `spawnThread` starts the vCPU thread that takes over (vcpu-threads.cts' vcpuThread). */
  constructor(init: VcpuWorkerInit, spawnThread: (init: VcpuWorkerInit) => Worker) {
    super();
    busy = true;
    this.#init = init;
    this.#n = native();
    this.#spawnThread = spawnThread;
    this.#control = new Int32Array(init.control);
    // Records reach the machine's listeners, which it attaches right after this returns.
    const port = { postMessage: (m: VcpuWorkerMessage) => queueMicrotask(() => this.emit('message', m)) };
    this.#log = threadLogger(port, init.logLevel);
    ({ loop: this.#loop, vcpu: this.#vcpu } = setUpVcpu(init, this.#log));
  }

  /** Called by the machine as it opens the control block's GO gate (start(), or a stop before it). */
  go(): void {
    if (this.#phase === 'waiting') this.#begin();
  }

  #begin(): void {
    if (Atomics.load(this.#control, CONTROL.STOP) !== 0) return this.#finish({ kind: 'stopped' });
    this.#phase = 'running';
    this.#startedAt = performance.now();
    this.#n.loopVcpuStart(this.#init.runMappingId, this.#slice);
    this.#startThreadAfter(HANDOFF_AFTER_MS);
  }

  /** Checks again in `ms`, and starts the thread once the guest has had HANDOFF_AFTER_MS (or at HANDOFF_AT_LATEST_MS). */
  #startThreadAfter(ms: number): void {
    this.#timer = setTimeout(() => {
      const left = Math.min(HANDOFF_AFTER_MS - this.#inGuestMs, HANDOFF_AT_LATEST_MS - (performance.now() - this.#startedAt));
      if (left > 0) this.#startThreadAfter(left);
      else this.#startThread();
    }, ms).unref();
  }

  /** One stretch in the guest, until the event loop has work (native/src/loop_vcpu.cc calls this). */
  readonly #slice = (): void => {
    if (this.#phase !== 'running') return;
    const c = this.#control;
    if (Atomics.load(c, CONTROL.STOP) !== 0) return this.#finish({ kind: 'stopped' });
    // Paused: this callback keeps coming, once per loop iteration, and returns until resume() or a
    // stop. Both are called on this thread, so the loop turns after them and this sees the change.
    if (Atomics.load(c, CONTROL.PAUSE) !== 0) {
      if (!this.#parked) {
        this.#parked = true;
        this.emit('message', { type: 'paused' } satisfies VcpuWorkerMessage);
      }
      return;
    }
    if (this.#parked) {
      this.#parked = false;
      this.emit('message', { type: 'resumed' } satisfies VcpuWorkerMessage);
    }
    if (this.#threadReady) return this.#handOff();
    const n = this.#n;
    n.setRunner(this.#init.runMappingId, true);
    let reason: StopReason | undefined;
    const t0 = performance.now();
    try {
      reason = this.#loop.runSlice();
    } catch (e) {
      reason = { kind: 'kvm-failure', message: `vcpu${this.#init.vcpuId}: ${(e as Error).message}` };
    } finally {
      n.setRunner(this.#init.runMappingId, false);
      this.#inGuestMs += performance.now() - t0;
    }
    if (reason !== undefined) this.#finish(reason);
  };

  /** Starts the vCPU thread that takes over once it is ready (its 'ready' message). */
  #startThread(): void {
    if (this.#phase !== 'running') return;
    this.#log.debug({ ms: Math.round(performance.now() - this.#startedAt), inGuestMs: Math.round(this.#inGuestMs) }, 'guest still running: starting its vCPU thread');
    const gate = new SharedArrayBuffer(4);
    this.#gate = new Int32Array(gate);
    const t = this.#spawnThread({ ...this.#init, gate });
    this.#thread = t;
    t.on('message', (msg: VcpuWorkerMessage) => {
      if (msg.type === 'ready') {
        this.#threadReady = true;
        // This runs between slices, so the guest can move now; while paused, the slice that
        // resumes it moves it instead.
        if (this.#phase === 'running' && !this.#parked && Atomics.load(this.#control, CONTROL.PAUSE) === 0) this.#handOff();
        return;
      }
      // A thread let go without taking over reports a stop that is not the guest's.
      if (this.#phase !== 'handed-off') return;
      this.emit('message', msg.type === 'stopped' ? { ...msg, exits: msg.exits + this.#loop.exits } : msg);
    });
    // A thread that fails before it takes over costs the guest nothing: it stays here.
    t.on('error', (e) => {
      if (this.#phase === 'handed-off') this.emit('error', e);
      else this.#log.warn({ err: e.message }, 'vcpu thread failed before taking over: the guest stays on the main thread');
    });
    t.on('exit', (code) => {
      if (this.#phase === 'running') {
        this.#thread = undefined;
        this.#threadReady = false;
      } else {
        this.emit('exit', code);
      }
    });
  }

  /** Leaves the vCPU to its thread: the main thread never enters the guest again. */
  #handOff(): void {
    this.#phase = 'handed-off';
    this.#n.loopVcpuStop();
    busy = false;
    this.#log.debug({ ms: Math.round(performance.now() - this.#startedAt), exits: this.#loop.exits }, 'vcpu moved from the main thread to its own thread');
    this.#open();
  }

  #finish(reason: StopReason): void {
    this.#phase = 'done';
    this.#n.loopVcpuStop();
    busy = false;
    clearTimeout(this.#timer);
    logStopState(this.#log, this.#vcpu, this.#loop.exits);
    // The machine sets STOP as it takes this in, so a thread started meanwhile, let go below, leaves
    // without entering the guest; its 'exit' is then this vCPU's.
    this.emit('message', { type: 'stopped', reason, exits: this.#loop.exits } satisfies VcpuWorkerMessage);
    if (this.#thread) this.#open();
    else setImmediate(() => this.emit('exit', 0));
  }

  #open(): void {
    Atomics.store(this.#gate!, 0, 1);
    Atomics.notify(this.#gate!, 0);
  }
}
