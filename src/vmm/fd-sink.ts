/**
 * Main-thread output to a file descriptor (stdout, or the console pipe) that never blocks the event
 * loop: bytes are written at once while the fd takes them; when it is full (EAGAIN, a slow reader)
 * the rest waits for an asynchronous write and write() returns false, so the producer (a virtio
 * device holding the guest's buffers) waits for onDrain.
 */
import { write as writeAsync, writeSync } from 'node:fs';

export class FdSink {
  #queue: Uint8Array[] = [];
  #writing = false;
  #closed = false;
  #waiters: (() => void)[] = [];

  constructor(private readonly fd: number, private readonly onDrain: () => void = () => {}) {}

  /** Returns false when the bytes had to be queued: call again after onDrain. */
  write(bytes: Uint8Array): boolean {
    if (this.#closed) return true;
    if (this.#queue.length > 0 || this.#writing) {
      this.#queue.push(bytes);
      return false;
    }
    let done = 0;
    try {
      while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done);
      return true;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EPIPE' || code === 'EBADF') {
        this.#closed = true; // nobody reads the console any more: output is dropped, the guest runs on
        return true;
      }
      if (code !== 'EAGAIN') throw e;
    }
    this.#queue.push(bytes.subarray(done));
    this.#drain();
    return false;
  }

  /** Resolves once everything written so far has reached the fd (or the fd is gone). */
  flushed(): Promise<void> {
    if (this.#queue.length === 0 && !this.#writing) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #drain(): void {
    const next = this.#queue[0];
    if (!next) {
      for (const w of this.#waiters.splice(0)) w();
      this.onDrain();
      return;
    }
    this.#writing = true;
    writeAsync(this.fd, next, 0, next.length, null, (err, n) => {
      this.#writing = false;
      if (err && err.code !== 'EAGAIN') {
        this.#closed = true;
        this.#queue = [];
        for (const w of this.#waiters.splice(0)) w();
        this.onDrain();
        return;
      }
      if (err) {
        setTimeout(() => this.#drain(), 1); // still full: try again shortly
        return;
      }
      if (n === next.length) this.#queue.shift();
      else this.#queue[0] = next.subarray(n);
      this.#drain();
    });
  }
}
