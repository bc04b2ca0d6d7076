/**
 * Device register files that live in shared memory, so that every vCPU thread can serve a trap on
 * the device synchronously (no thread hand-off on the exit path) while the main thread's engine
 * (stdin, timers) updates the same state. Word 0 is a spin lock; critical sections are a handful
 * of loads and stores, so waiting threads spin briefly before sleeping on the word.
 */
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
    for (let spins = 0; Atomics.compareExchange(w, 0, 0, 1) !== 0; spins++) {
      if (spins > 100) Atomics.wait(w, 0, 1, 1);
    }
  }

  unlock(): void {
    Atomics.store(this.words, 0, 0);
    Atomics.notify(this.words, 0, 1);
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
