/**
 * A single vCPU that starts on the main thread and moves to a vCPU thread once the guest has run for
 * HANDOFF_AFTER_MS.
 *
 * Why: a vCPU thread is a Node worker, and a worker spends ~50 ms of CPU starting its own Node
 * environment before it runs a line of ours (vcpu-threads.ts). For `nodevisor run` of a guest that
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
 * The hook runs one vCPU at a time. Machines started together take turns, first come first served
 * (`holder` and `queue` below): a vCPU holds the hook until its guest ends, or until it has had its
 * HANDOFF_AFTER_MS and starts its thread; if others are waiting then, it lets the next one in and
 * waits for its thread off the main thread. So N short-lived machines started at once from one
 * process cost no thread at all: bench/lifecycle's machines per second. If the event loop has no
 * time for guests (see #checkAfter), the holder starts its thread and the next one gets the hook.
 *
 * To Machine this looks like a vCPU thread: it emits the same 'message's (VcpuWorkerMessage),
 * 'error' and one 'exit'; it calls controlChanged() after it changes CONTROL.PAUSE or STOP, which
 * a vCPU that is not in the hook's slices would not see otherwise.
 */
import { EventEmitter } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { native, type NativeBinding } from '../native/binding.js';
import type { Vcpu } from '../kvm/kvm.js';
import { threadLogger, type ThreadLogger } from './thread-log.js';
import { CONTROL, type VcpuLoop } from './vcpu-loop.js';
import { setUpVcpu, vcpuStopState, type VcpuWorkerInit } from './vcpu-setup.js';
import type { VcpuWorkerMessage } from './vcpu-worker.js';
import type { StopReason } from './stop.js';
import { nowMs } from '../clock.js';

/**
 * How long the guest runs on the main thread before its vCPU thread is started: time spent in the
 * guest, not since start(). Wall time would also count the main thread's own work after start()
 * (console, devices, the caller's code), which under emulation alone can exceed it.
 *
 * As long as a thread costs to start (~50 ms of CPU, above): the rule of renting skis until the
 * rent has cost what buying would, which never spends more than twice the best choice made knowing
 * the guest's run time in advance. It was 20 ms, and a guest that exits at once (c-exit, 2-5 ms in
 * the guest under nested emulation) once took 21 ms there in CI and started a thread it did not need.
 */
export const HANDOFF_AFTER_MS = 50;

/**
 * ...or, whatever the guest has had, this long after its first slice: a main thread whose event loop
 * is too busy to give the guest its time (or never sleeps at all: a caller's setImmediate loop) must
 * not starve it.
 */
export const HANDOFF_AT_LATEST_MS = 250;

/**
 * ...and with no slice at all for this long. Longer: a program that has just set up many machines
 * may have a backlog of callbacks to run before its loop first waits, while a loop that never waits
 * keeps never waiting, so waiting longer for it costs little.
 */
export const HANDOFF_SLICELESS_MS = 1000;

/**
 * A check that fires this much later than it was set for found the event loop unable to run at all
 * meanwhile: one long synchronous call, or no CPU for this process (a busy host; CI's emulated VM
 * has stalled a whole process for a quarter of a second). That time says nothing about whether the
 * loop has time for the guest (the loop did not turn, so it gave no slice to anyone; it gives one as
 * soon as it next waits), so the clocks above leave it out: up to HANDOFF_SLICELESS_MS in all, since
 * a loop that keeps blocking starves the guest too. A loop that turns without waiting (always work to
 * do, or a setImmediate loop) fires its timers on time, and is judged as before.
 */
export const STALL_MS = HANDOFF_AFTER_MS;

/** The vCPU the native hook runs now (it serves one per process), and those waiting their turn. */
let holder: MainThreadVcpu | undefined;
const queue: MainThreadVcpu[] = [];

export class MainThreadVcpu extends EventEmitter {
  readonly #init: VcpuWorkerInit;
  readonly #n: NativeBinding;
  readonly #control: Int32Array;
  readonly #loop: VcpuLoop;
  readonly #vcpu: Vcpu;
  readonly #spawnThread: (init: VcpuWorkerInit) => Worker;
  readonly #log: ThreadLogger;
  #startedAt = 0;
  /** When the holder's guest first got a slice (0: not yet), for its clock (#checkAfter). */
  #firstSliceAt = 0;
  /** Milliseconds spent in slices so far: in the guest, give or take an exit. */
  #inGuestMs = 0;
  /** Slices that entered the guest, and the stalls left out of the clocks (STALL_MS): for the record of a move. */
  #slices = 0;
  #stalledMs = 0;
  /**
   * waiting: for go(); queued: for the hook; running: in the hook's slices; moving: out of the
   * hook, its thread starting; handed-off: on its thread; done: ended here.
   */
  #phase: 'waiting' | 'queued' | 'running' | 'moving' | 'handed-off' | 'done' = 'waiting';
  #parked = false;
  #thread: Worker | undefined;
  #gate: Int32Array | undefined;
  #threadReady = false;
  #timer: NodeJS.Timeout | undefined;

  /** `spawnThread` starts the vCPU thread that takes over (vcpu-threads.ts' vcpuThread). */
  constructor(init: VcpuWorkerInit, spawnThread: (init: VcpuWorkerInit) => Worker) {
    super();
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
    if (this.#phase !== 'waiting') return;
    if (Atomics.load(this.#control, CONTROL.STOP) !== 0) return this.#finish({ kind: 'stopped' });
    this.#startedAt = nowMs();
    if (holder) {
      // No clock of its own while queued: the line moves as fast as the holders' guests end or
      // move out, and a starved holder moves out too (#checkAfter).
      this.#phase = 'queued';
      queue.push(this);
    } else this.#take();
  }

  /** Takes the hook: from the next turn of the event loop on, the guest runs in its slices. */
  #take(): void {
    holder = this;
    this.#phase = 'running';
    this.#firstSliceAt = 0;
    this.#stalledMs = 0;
    this.#n.loopVcpuStart(this.#init.runMappingId, this.#slice);
    this.#checkAfter(HANDOFF_AFTER_MS);
  }

  /** Gives the hook up, to the vCPU that has waited longest (called with this one as the holder). */
  #release(): void {
    this.#n.loopVcpuStop();
    holder = undefined;
    const next = queue.shift();
    if (next) next.#take();
  }

  /**
   * The holder's clock. Its thread starts once the guest has had HANDOFF_AFTER_MS in slices, or
   * HANDOFF_AT_LATEST_MS after its first slice: the event loop is then too busy to run a guest, and
   * so is a loop that never waits at all (no slice for HANDOFF_SLICELESS_MS from the first check on).
   * The clock starts at the first slice, not at take(): after a long stretch of synchronous work
   * (a program creating 50 machines in one go) the first check comes late, and the loop is fine.
   */
  #checkAfter(ms: number, slicelessSince = 0): void {
    const due = nowMs() + ms;
    this.#timer = setTimeout(() => {
      if (this.#phase !== 'running') return;
      const now = nowMs();
      const late = now - due;
      const clockStart = this.#firstSliceAt || slicelessSince; // 0: no clock runs yet
      if (late >= STALL_MS && clockStart !== 0 && this.#stalledMs < HANDOFF_SLICELESS_MS) {
        // The loop could not run from `due` to now: move the clock's start past that stretch.
        const stalled = Math.min(now - Math.max(due, clockStart), HANDOFF_SLICELESS_MS - this.#stalledMs);
        if (stalled > 0) {
          this.#stalledMs += stalled;
          if (this.#firstSliceAt !== 0) this.#firstSliceAt += stalled;
          else slicelessSince += stalled;
          this.#log.debug({ lateMs: Math.round(late), notCountedMs: Math.round(stalled) }, 'the event loop could not run for a while: not counted against it');
        }
      }
      if (this.#firstSliceAt === 0) {
        // No slice yet: look again every HANDOFF_AFTER_MS, so that the guest's clock runs from
        // soon after its first slice. (Looking only once more, HANDOFF_SLICELESS_MS later, let a
        // guest whose first slice came just after the first look run on this thread for a second:
        // under nested emulation, a disk benchmark's guest and its I/O took turns here for 1.8 s.)
        const since = slicelessSince || now;
        if (now - since >= HANDOFF_SLICELESS_MS) return this.#starved();
        return this.#checkAfter(HANDOFF_AFTER_MS, since);
      }
      const guestLeft = HANDOFF_AFTER_MS - this.#inGuestMs;
      const left = Math.min(guestLeft, HANDOFF_AT_LATEST_MS - (now - this.#firstSliceAt));
      if (left > 0) this.#checkAfter(left);
      else if (guestLeft > 0 && !this.#parked) this.#starved();
      else {
        // It had its time, or is paused: either way the hook is not starved.
        this.#log.debug({ ms: Math.round(now - this.#startedAt), inGuestMs: Math.round(this.#inGuestMs), slices: this.#slices, notCountedMs: Math.round(this.#stalledMs) }, 'guest still running: starting its vCPU thread');
        this.#moveOut();
      }
    }, ms).unref();
  }

  /** The guest keeps running: its thread starts, and others waiting for the hook get it meanwhile. */
  #moveOut(): void {
    if (queue.length > 0) {
      this.#release();
      this.#phase = 'moving';
    }
    this.#startThread();
  }

  /**
   * The event loop has had no time for this guest: it starts its thread, and the next in line gets
   * the hook with a clock of its own. Only the holder moves: a loop that is busy for a while (a
   * program setting up 50 machines) calms down, and the others then run here without threads. A
   * loop that never waits sends them to threads one after the other.
   */
  #starved(): void {
    this.#log.debug({ ms: Math.round(nowMs() - this.#startedAt), inGuestMs: Math.round(this.#inGuestMs), slices: this.#slices, notCountedMs: Math.round(this.#stalledMs), sliceless: this.#firstSliceAt === 0, queued: queue.length }, 'the event loop is busy: starting its vCPU thread');
    this.#moveOut();
  }

  /**
   * Machine changed CONTROL.PAUSE or STOP. The holder sees that in its next slice; a vCPU that is
   * queued or moving gets no slices, so it answers here.
   */
  controlChanged(): void {
    // Later, not inside pause() or a stop: what this emits calls back into the machine.
    queueMicrotask(() => this.#onControlChanged());
  }

  #onControlChanged(): void {
    if (this.#phase !== 'queued' && this.#phase !== 'moving') return;
    if (Atomics.load(this.#control, CONTROL.STOP) !== 0) return this.#finish({ kind: 'stopped' });
    const paused = Atomics.load(this.#control, CONTROL.PAUSE) !== 0;
    if (paused !== this.#parked) {
      this.#parked = paused;
      this.emit('message', { type: paused ? 'paused' : 'resumed' } satisfies VcpuWorkerMessage);
    }
    if (!paused && this.#phase === 'moving' && this.#threadReady) this.#handOff();
  }

  /** One stretch in the guest, until the event loop has work (native/src/loop_vcpu.cc calls this). */
  readonly #slice = (): void => {
    if (this.#phase !== 'running') return;
    if (this.#firstSliceAt === 0) this.#firstSliceAt = nowMs();
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
    this.#slices++;
    const t0 = nowMs();
    try {
      reason = this.#loop.runSlice();
    } catch (e) {
      reason = { kind: 'kvm-failure', message: `vcpu${this.#init.vcpuId}: ${(e as Error).message}` };
    } finally {
      n.setRunner(this.#init.runMappingId, false);
      this.#inGuestMs += nowMs() - t0;
    }
    if (reason !== undefined) this.#finish(reason);
  };

  /** Starts the vCPU thread that takes over once it is ready (its 'ready' message). */
  #startThread(): void {
    const gate = new SharedArrayBuffer(4);
    this.#gate = new Int32Array(gate);
    const t = this.#spawnThread({ ...this.#init, gate });
    this.#thread = t;
    t.on('message', (msg: VcpuWorkerMessage) => {
      if (msg.type === 'ready') {
        this.#threadReady = true;
        // This runs between slices, so the guest can move now; while paused, the slice that
        // resumes it moves it instead.
        if ((this.#phase === 'running' || this.#phase === 'moving') && !this.#parked && Atomics.load(this.#control, CONTROL.PAUSE) === 0) this.#handOff();
        return;
      }
      // A thread let go without taking over reports a stop that is not the guest's.
      if (this.#phase !== 'handed-off') return;
      if (msg.type !== 'stopped') return void this.emit('message', msg);
      const exits = msg.exits + this.#loop.exits; // the guest's, on both threads
      this.emit('message', { ...msg, exits, at: msg.at && { ...msg.at, exits } });
    });
    // A thread that fails before it takes over costs the guest nothing: it stays here.
    t.on('error', (e) => {
      if (this.#phase === 'handed-off') this.emit('error', e);
      else this.#log.warn({ err: e.message }, 'vcpu thread failed before taking over: the guest stays on the main thread');
    });
    t.on('exit', (code) => {
      if (this.#phase === 'handed-off' || this.#phase === 'done') return void this.emit('exit', code);
      this.#thread = undefined;
      this.#threadReady = false;
      if (this.#phase === 'moving') this.#requeue();
    });
  }

  /** Leaves the vCPU to its thread: the main thread never enters the guest again. */
  #handOff(): void {
    if (holder === this) this.#release();
    this.#phase = 'handed-off';
    this.#log.debug({ ms: Math.round(nowMs() - this.#startedAt), exits: this.#loop.exits }, 'vcpu moved from the main thread to its own thread');
    this.#open();
  }

  /** A moving vCPU whose thread failed: back into the hook, at once if it is free. */
  #requeue(): void {
    if (holder) {
      this.#phase = 'queued';
      queue.push(this);
    } else this.#take();
  }

  #finish(reason: StopReason): void {
    if (holder === this) this.#release();
    else if (this.#phase === 'queued') queue.splice(queue.indexOf(this), 1);
    this.#phase = 'done';
    clearTimeout(this.#timer);
    const at = vcpuStopState(this.#log, this.#vcpu, this.#loop.exits, reason);
    // The machine sets STOP as it takes this in, so a thread started meanwhile, let go below, leaves
    // without entering the guest; its 'exit' is then this vCPU's.
    this.emit('message', { type: 'stopped', reason, exits: this.#loop.exits, at } satisfies VcpuWorkerMessage);
    if (this.#thread) this.#open();
    else setImmediate(() => this.emit('exit', 0));
  }

  #open(): void {
    Atomics.store(this.#gate!, 0, 1);
    Atomics.notify(this.#gate!, 0);
  }
}
