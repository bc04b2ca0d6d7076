/**
 * virtio-console (virtio 1.2 §5.3), single port: receiveq 0 carries host → guest bytes, transmitq 1
 * guest → host bytes. The guest sees it as /dev/hvc0. Host input is queued (bounded) until the
 * driver posts receive buffers; output is handed to `output` as it arrives, in order. Backpressure
 * to the guest: when `output` returns false, transmit chains are held (not returned) until resume().
 */
import { VirtqError } from './queue.js';
import { VIRTIO_ID, bit } from './constants.js';
import type { VirtioDevice, VirtioDeviceContext } from './device.js';

/** struct virtio_console_config offsets. */
export const CONSOLE_CONFIG = { cols: 0, rows: 2, max_nr_ports: 4, emerg_wr: 8, SIZE: 12 } as const;
export const VIRTIO_CONSOLE_F = { SIZE: 0, MULTIPORT: 1, EMERG_WRITE: 2 } as const;
const RECEIVEQ = 0;
const TRANSMITQ = 1;
/** Host input waiting for receive buffers is capped; past this, older input is kept and newer is dropped. */
export const CONSOLE_INPUT_LIMIT = 1 << 20;

export interface VirtioConsoleOptions {
  /** Guest output. Return false to ask the guest to wait (call resume() when ready for more). */
  readonly output: (bytes: Uint8Array) => boolean | void;
  readonly cols?: number;
  readonly rows?: number;
}

export class VirtioConsole implements VirtioDevice {
  readonly kind = 'console';
  readonly deviceId = VIRTIO_ID.CONSOLE;
  readonly features = bit(VIRTIO_CONSOLE_F.SIZE);
  readonly queueMaxSizes = [256, 256] as const;
  readonly configSize = CONSOLE_CONFIG.SIZE;
  /** Bytes dropped because the input queue was full. */
  inputDropped = 0;
  bytesIn = 0;
  bytesOut = 0;
  #config: DataView | undefined;
  #ctx: VirtioDeviceContext | undefined;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #paused = false;

  constructor(private readonly opts: VirtioConsoleOptions) {}

  bindConfig(config: DataView): void {
    this.#config = config;
    config.setUint16(CONSOLE_CONFIG.cols, this.opts.cols ?? 80, true);
    config.setUint16(CONSOLE_CONFIG.rows, this.opts.rows ?? 25, true);
    config.setUint32(CONSOLE_CONFIG.max_nr_ports, 1, true);
  }

  /** The host terminal changed size (SIGWINCH): the driver re-reads cols/rows. */
  resize(cols: number, rows: number): void {
    if (!this.#config) return;
    this.#config.setUint16(CONSOLE_CONFIG.cols, cols, true);
    this.#config.setUint16(CONSOLE_CONFIG.rows, rows, true);
    this.#ctx?.configChanged();
  }

  activate(ctx: VirtioDeviceContext): void {
    this.#ctx = ctx;
  }

  reset(): void {
    this.#ctx = undefined;
    this.#paused = false;
  }

  notify(index: number): void {
    if (index === RECEIVEQ) this.#deliver();
    else if (index === TRANSMITQ) this.#transmit();
  }

  /** Host → guest bytes (keyboard, or the command runner's input). */
  write(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const room = CONSOLE_INPUT_LIMIT - this.#pendingBytes;
    if (room <= 0) {
      this.inputDropped += bytes.length;
      return;
    }
    const take = bytes.length <= room ? bytes : bytes.subarray(0, room);
    this.inputDropped += bytes.length - take.length;
    this.#pending.push(Uint8Array.from(take));
    this.#pendingBytes += take.length;
    this.#deliver();
  }

  /** ConsoleInput's sink interface: takes everything (up to the input limit). */
  enqueueInput(bytes: Uint8Array): number {
    this.write(bytes);
    return bytes.length;
  }

  /** The output sink has drained: take the guest's held transmit buffers again. */
  resume(): void {
    this.#paused = false;
    this.#transmit();
  }

  #deliver(): void {
    const ctx = this.#ctx;
    const q = ctx?.queue(RECEIVEQ);
    if (!ctx || !q || this.#pendingBytes === 0) return;
    const before = q.nextUsed;
    let used = 0;
    while (this.#pendingBytes > 0) {
      const c = q.pop();
      if (!c) break;
      if (c.readable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-console receive buffer ${c.head} is device-readable`);
      let written = 0;
      for (const b of c.writable) {
        let at = 0;
        while (at < b.len && this.#pendingBytes > 0) {
          const head = this.#pending[0]!;
          const n = Math.min(head.length, b.len - at);
          ctx.mem.write(b.addr + at, head.subarray(0, n), 'virtio-console receive buffer');
          at += n;
          this.#consume(n);
        }
        written += at;
        if (this.#pendingBytes === 0) break;
      }
      q.pushUsed(c.head, written);
      this.bytesIn += written;
      used++;
    }
    if (used > 0) ctx.usedAdded(RECEIVEQ, before);
  }

  #consume(n: number): void {
    const head = this.#pending[0]!;
    if (n === head.length) this.#pending.shift();
    else this.#pending[0] = head.subarray(n);
    this.#pendingBytes -= n;
  }

  #transmit(): void {
    const ctx = this.#ctx;
    const q = ctx?.queue(TRANSMITQ);
    if (!ctx || !q) return;
    const before = q.nextUsed;
    let used = 0;
    while (!this.#paused) {
      const c = q.pop();
      if (!c) break;
      if (c.writable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-console transmit buffer ${c.head} is device-writable`);
      for (const b of c.readable) {
        if (b.len === 0) continue;
        // A copy: the guest may reuse the buffer as soon as it is returned.
        const bytes = ctx.mem.read(b.addr, b.len, 'virtio-console transmit buffer');
        this.bytesOut += bytes.length;
        if (this.opts.output(bytes) === false) this.#paused = true;
      }
      q.pushUsed(c.head, 0);
      used++;
    }
    if (used > 0) ctx.usedAdded(TRANSMITQ, before);
  }
}
