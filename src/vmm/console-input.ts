/**
 * Host input to the guest's console UART: bytes from a stream (stdin) go into COM1's receive FIFO,
 * raw when the stream is a terminal, with QEMU's escape: Ctrl-A x stops the VM, Ctrl-A Ctrl-A sends
 * one Ctrl-A. Bytes the FIFO cannot take yet wait here and are retried as the guest drains it.
 * Past PENDING_HIGH_WATER waiting bytes, a pipe or file is paused, so a large file piped into a
 * guest that reads slowly (or not at all) waits in the pipe instead of filling our memory; a
 * terminal is read on, so that Ctrl-A x still works, and what is typed past the mark is dropped
 * (counted in `dropped`), as a UART drops what overruns its FIFO.
 */
import type { Readable } from 'node:stream';
import type { ReadStream } from 'node:tty';

export interface ConsoleSinkDevice {
  enqueueInput(bytes: Uint8Array): number;
}

const CTRL_A = 0x01;
const RETRY_MS = 5;
/** Bytes waiting for the guest past which the input stream is paused (resumed once they fit). */
export const PENDING_HIGH_WATER = 64 * 1024;

export class ConsoleInput {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Typed bytes dropped because the guest was not reading (terminal input only). */
  dropped = 0;
  #tty = false;
  #inputPaused = false;
  #closed = false;
  #escape = false;
  #timer: NodeJS.Timeout | undefined;
  #wasRaw = false;
  readonly #onData = (chunk: Buffer) => this.#accept(chunk);

  /** `input` may be undefined: bytes then come only through push(). */
  constructor(private readonly input: Readable | undefined, private readonly uart: ConsoleSinkDevice, private readonly onEscape: () => void) {
    if (!input) return;
    const tty = input as ReadStream;
    if (tty.isTTY) {
      this.#tty = true;
      this.#wasRaw = tty.isRaw;
      tty.setRawMode(true);
    }
    input.on('data', this.#onData);
    input.resume();
  }

  /** Queues bytes for the guest as they are (no escape processing). */
  push(bytes: Uint8Array): void {
    this.#queue(bytes);
    this.#flush();
  }

  /** Bytes waiting for room in the guest's FIFO. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  #queue(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
  }

  #accept(chunk: Buffer): void {
    const out: number[] = [];
    for (const b of chunk) {
      if (this.#escape) {
        this.#escape = false;
        if (b === 0x78 /* x */) {
          this.onEscape();
          return;
        }
        if (b === CTRL_A) out.push(CTRL_A);
        continue; // Ctrl-A followed by anything else: both dropped, as QEMU does for unknown commands
      }
      if (b === CTRL_A) this.#escape = true;
      else out.push(b);
    }
    if (this.#tty && this.#pendingBytes > PENDING_HIGH_WATER) this.dropped += out.length;
    else this.#queue(Uint8Array.from(out));
    this.#flush();
  }

  #flush(): void {
    while (this.#pending.length > 0) {
      const head = this.#pending[0]!;
      const n = this.uart.enqueueInput(head);
      this.#pendingBytes -= n;
      if (n === head.length) this.#pending.shift();
      else {
        this.#pending[0] = head.subarray(n);
        break;
      }
    }
    this.#backpressure();
    if (this.#pending.length > 0 && !this.#timer) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#flush();
      }, RETRY_MS);
    }
  }

  #backpressure(): void {
    if (!this.input || this.#tty || this.#closed) return;
    const full = this.#pendingBytes > PENDING_HIGH_WATER;
    if (full === this.#inputPaused) return;
    this.#inputPaused = full;
    if (full) this.input.pause();
    else this.input.resume();
  }

  /** Stops reading and gives the terminal back as it was. */
  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (!this.input) return;
    this.input.off('data', this.#onData);
    this.input.pause();
    const tty = this.input as ReadStream;
    if (tty.isTTY) tty.setRawMode(this.#wasRaw);
  }
}
