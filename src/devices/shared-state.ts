/**
 * Device register files that live in shared memory, so that every vCPU thread can serve a trap on
 * the device synchronously (no thread hand-off on the exit path) while the main thread's engine
 * (stdin, timers) updates the same state. Word 0 is the lock; critical sections are a handful of
 * loads and stores, so a thread that finds it held spins briefly before sleeping on the word.
 *
 * The lock word says whether anyone may sleep on it (a futex mutex, as in Drepper's "Futexes Are
 * Tricky"): FREE, HELD, or CONTENDED (held, and a thread may be waiting). Only a release that finds
 * it CONTENDED wakes a waiter: Atomics.notify is a call into V8's runtime, under a process-wide
 * mutex, and every console byte's register accesses paid one on each release before.
 */
const FREE = 0, HELD = 1, CONTENDED = 2;
/** Attempts to take a held lock before sleeping: holders keep it for a few dozen instructions. */
const SPINS = 100;

export class SharedState {
  readonly words: Int32Array;
  readonly bytes: Uint8Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
    this.bytes = new Uint8Array(buffer);
  }

  static create(bytes: number): SharedState {
    return new SharedState(new SharedArrayBuffer(Math.max(8, (bytes + 7) & ~7)));
  }

  lock(): void {
    const w = this.words;
    if (Atomics.compareExchange(w, 0, FREE, HELD) === FREE) return;
    for (let spins = 0; spins < SPINS; spins++) {
      if (Atomics.load(w, 0) === FREE && Atomics.compareExchange(w, 0, FREE, HELD) === FREE) return;
    }
    // Say that someone waits, then sleep until the word changes. A thread that takes the lock this
    // way holds it as CONTENDED (others may still be asleep), so its release wakes the next.
    while (Atomics.exchange(w, 0, CONTENDED) !== FREE) Atomics.wait(w, 0, CONTENDED);
  }

  unlock(): void {
    if (Atomics.exchange(this.words, 0, FREE) === CONTENDED) Atomics.notify(this.words, 0, 1);
  }

  /** Runs `fn` holding the lock. */
  locked<T>(fn: () => T): T {
    this.lock();
    try {
      return fn();
    } finally {
      this.unlock();
    }
  }
}
