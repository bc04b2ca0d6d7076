/**
 * virtio-console (virtio 1.2 §5.3), one port: receiveq 0 carries host → guest bytes, transmitq 1
 * guest → host bytes. Host input is queued (bounded) until the driver posts receive buffers; output
 * is handed to `output` as it arrives, in order. Backpressure to the guest: when `output` returns
 * false, transmit chains are held (not returned) until resume(), or until finish() once the guest
 * has stopped (what it wrote before powering off still arrives).
 *
 * Without a port name the port is a console (Linux: /dev/hvcN). With `portName` the device also
 * offers MULTIPORT, and a driver that takes it gets the port as a named generic port (Linux:
 * /dev/vportNp0, its name in /sys/class/virtio-ports/vportNp0/name) through the control queues
 * (2: host → guest, 3: guest → host). That is what a program-to-program channel wants: Linux writes
 * to a console port with interrupts off, spinning until the host takes each buffer, while a
 * generic port's writer sleeps. A driver without MULTIPORT still gets the plain single port.
 */
import { VirtqError } from './queue.js';
import { VIRTIO_ID, bit } from './constants.js';
import { isGuestFault, onNextTurn, type VirtioDevice, type VirtioDeviceContext } from './device.js';
import { chainLength, gatherBytes, scatterBytes } from './chain-bytes.js';

/** struct virtio_console_config offsets. */
export const CONSOLE_CONFIG = { cols: 0, rows: 2, max_nr_ports: 4, emerg_wr: 8, SIZE: 12 } as const;
export const VIRTIO_CONSOLE_F = { SIZE: 0, MULTIPORT: 1, EMERG_WRITE: 2 } as const;
/** struct virtio_console_control events (§5.3.6.2). */
export const CONSOLE_CONTROL = {
  DEVICE_READY: 0, DEVICE_ADD: 1, DEVICE_REMOVE: 2, PORT_READY: 3, CONSOLE_PORT: 4, RESIZE: 5, PORT_OPEN: 6, PORT_NAME: 7,
} as const;
/** struct virtio_console_control: le32 id, le16 event, le16 value (then PORT_NAME's name bytes). */
export const CONSOLE_CONTROL_SIZE = 8;
const RECEIVEQ = 0;
const TRANSMITQ = 1;
const CONTROL_RECEIVEQ = 2;
const CONTROL_TRANSMITQ = 3;
/** Control messages from the guest are this small; a longer one is broken. */
const CONTROL_MESSAGE_MAX = 4096;
/** Host input waiting for receive buffers is capped; past this, older input is kept and newer is dropped. */
export const CONSOLE_INPUT_LIMIT = 1 << 20;
/**
 * Past this much waiting input, write() returns false: a writer that can wait (the command
 * runner's stdin) stops until `inputRoom` is called, and so never reaches the cap above.
 */
export const CONSOLE_INPUT_HIGH_WATER = 256 * 1024;
/**
 * The longest transmit chain taken (Linux's buffers are at most 32 KiB); a longer one is a broken
 * request. Each chain is copied out of guest RAM and buffered until the sink takes it, so without a
 * cap one chain could make us copy its descriptors' lengths, up to RAM size each.
 */
export const CONSOLE_TX_CHAIN_MAX = 1 << 20;
/** What finish() takes at most, past the sink's backpressure (Linux queues at most 256 x 32 KiB). */
export const CONSOLE_FINISH_MAX = 16 << 20;
/**
 * Chains taken from the transmit or control-transmit queue per event-loop turn, the rest on the next:
 * a guest refilling its ring as fast as we empty it must not keep the main thread to itself.
 */
export const CONSOLE_TURN_BUDGET = 64;
/** ...and bytes copied out of the transmit queue per turn (a chain may hold up to CONSOLE_TX_CHAIN_MAX). */
export const CONSOLE_TURN_BYTES = 1 << 20;
/** Control messages waiting for the driver's control receive buffers; more are dropped. */
export const CONSOLE_CONTROL_BACKLOG = 16;

export interface VirtioConsoleOptions {
  /** Guest output. Return false to ask the guest to wait (call resume() when ready for more). */
  readonly output: (bytes: Uint8Array) => boolean | void;
  readonly cols?: number;
  readonly rows?: number;
  /** Offer the port as a named generic port (MULTIPORT) to drivers that can take it. */
  readonly portName?: string;
  /** After write() returned false: the guest has taken enough input that writing may go on. */
  readonly inputRoom?: () => void;
}

export class VirtioConsole implements VirtioDevice {
  readonly kind = 'console';
  readonly deviceId = VIRTIO_ID.CONSOLE;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly configSize = CONSOLE_CONFIG.SIZE;
  /** Bytes dropped because the input queue was full. */
  inputDropped = 0;
  bytesIn = 0;
  bytesOut = 0;
  #config: DataView | undefined;
  #ctx: VirtioDeviceContext | undefined;
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** write() returned false: call inputRoom once the guest has taken enough. */
  #inputFull = false;
  #paused = false;
  /** MULTIPORT negotiated in this activation: port 0 is the named generic port. */
  #multiport = false;
  /** Host → guest control messages waiting for control receive buffers. */
  #controlOut: Uint8Array[] = [];
  #continuation: NodeJS.Immediate | undefined;
  readonly #warned = new Set<string>();
  /** Whether the guest has the port open (PORT_OPEN from the guest; MULTIPORT only). */
  guestOpen = false;

  constructor(private readonly opts: VirtioConsoleOptions) {
    const named = opts.portName !== undefined;
    this.features = bit(VIRTIO_CONSOLE_F.SIZE) | (named ? bit(VIRTIO_CONSOLE_F.MULTIPORT) : 0n);
    this.queueMaxSizes = named ? [256, 256, 64, 64] : [256, 256];
  }

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
    this.#multiport = (ctx.negotiated & bit(VIRTIO_CONSOLE_F.MULTIPORT)) !== 0n;
    // #warned is kept across activations: one line per kind of problem per device, resets included.
  }

  reset(): void {
    this.#ctx = undefined;
    if (this.#continuation) clearImmediate(this.#continuation);
    this.#continuation = undefined;
    this.#paused = false;
    this.#multiport = false;
    this.#controlOut = [];
    this.guestOpen = false;
  }

  notify(index: number): void {
    if (index === RECEIVEQ) this.#deliver();
    else if (index === TRANSMITQ) this.#transmit();
    else if (this.#multiport && index === CONTROL_TRANSMITQ) this.#controlReceive();
    else if (this.#multiport && index === CONTROL_RECEIVEQ) this.#controlSend();
  }

  /**
   * Runs work the host started (input typed, the sink drained, a continuation): a broken chain it
   * meets fails the device, as one met in notify() does through the transport, instead of
   * throwing into the stream or timer that called.
   */
  #hostInitiated(fn: () => void): void {
    const ctx = this.#ctx;
    try {
      fn();
    } catch (e) {
      if (!ctx || ctx !== this.#ctx || !isGuestFault(e)) throw e;
      this.#ctx = undefined; // nothing more until the driver resets the device
      ctx.fail(e as Error);
    }
  }

  /** Finishes, on the next event-loop turn, work a budget cut short. */
  #continueLater(): void {
    const ctx = this.#ctx;
    if (!ctx) return;
    this.#continuation ??= onNextTurn(ctx, () => {
      this.#continuation = undefined;
      this.#deliver();
      this.#transmit();
      if (this.#multiport) this.#controlReceive();
    });
  }

  #warnOnce(ctx: VirtioDeviceContext, key: string, msg: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    ctx.log.warn({}, `${msg} (further ones are not logged)`);
  }

  /**
   * Host → guest bytes (keyboard, or the command runner's input). Returns false once more than
   * CONSOLE_INPUT_HIGH_WATER bytes wait for the guest, as a stream's write() does: wait for the
   * `inputRoom` callback before writing more. Input past CONSOLE_INPUT_LIMIT is dropped.
   */
  write(bytes: Uint8Array): boolean {
    if (bytes.length > 0) {
      const room = CONSOLE_INPUT_LIMIT - this.#pendingBytes;
      const take = bytes.length <= room ? bytes : bytes.subarray(0, Math.max(0, room));
      this.inputDropped += bytes.length - take.length;
      if (take.length > 0) {
        this.#pending.push(Uint8Array.from(take));
        this.#pendingBytes += take.length;
        this.#hostInitiated(() => this.#deliver());
      }
    }
    if (this.#pendingBytes <= CONSOLE_INPUT_HIGH_WATER) return true;
    this.#inputFull = true;
    return false;
  }

  /** Input waiting for the guest's receive buffers. */
  get pendingInputBytes(): number {
    return this.#pendingBytes;
  }

  /** ConsoleInput's sink interface: takes what fits under the high-water mark; ConsoleInput keeps the rest. */
  enqueueInput(bytes: Uint8Array): number {
    const take = bytes.subarray(0, Math.max(0, CONSOLE_INPUT_HIGH_WATER - this.#pendingBytes));
    this.write(take);
    return take.length;
  }

  /** The output sink has drained: take the guest's held transmit buffers again. */
  resume(): void {
    this.#paused = false;
    this.#hostInitiated(() => this.#transmit());
  }

  #deliver(): void {
    const ctx = this.#ctx;
    const q = ctx?.queue(RECEIVEQ);
    if (!ctx || !q || this.#pendingBytes === 0) return;
    const before = q.nextUsed;
    let used = 0;
    while (this.#pendingBytes > 0) {
      // A turn's share, as for every other queue: a guest posting receive buffers as fast as they
      // are taken (zero-length ones take nothing) must not hold the main thread.
      if (used === CONSOLE_TURN_BUDGET) {
        this.#continueLater();
        break;
      }
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
    if (this.#inputFull && this.#pendingBytes <= CONSOLE_INPUT_HIGH_WATER / 2) {
      this.#inputFull = false;
      this.opts.inputRoom?.();
    }
  }

  #consume(n: number): void {
    const head = this.#pending[0]!;
    if (n === head.length) this.#pending.shift();
    else this.#pending[0] = head.subarray(n);
    this.#pendingBytes -= n;
  }

  /**
   * The guest has stopped: what it queued goes out now, whether the sink has room or not (up to
   * CONSOLE_FINISH_MAX; a guest queueing more is not one that printed and powered off).
   */
  finish(): void {
    this.#transmit(CONSOLE_FINISH_MAX);
  }

  /** Takes transmit chains while the sink has room, or, with `budget`, up to that many bytes regardless. */
  #transmit(budget = 0): void {
    const ctx = this.#ctx;
    const q = ctx?.queue(TRANSMITQ);
    if (!ctx || !q) return;
    const before = q.nextUsed;
    let used = 0;
    let copied = 0;
    const finishing = budget > 0;
    while (finishing || !this.#paused) {
      if (!finishing && (used === CONSOLE_TURN_BUDGET || copied >= CONSOLE_TURN_BYTES)) {
        this.#continueLater();
        break;
      }
      const c = q.pop();
      if (!c) break;
      if (c.writable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-console transmit buffer ${c.head} is device-writable`);
      const len = chainLength(c.readable);
      if (len > CONSOLE_TX_CHAIN_MAX) throw new VirtqError('BAD_REQUEST', `virtio-console transmit chain ${c.head} is ${len} bytes (at most ${CONSOLE_TX_CHAIN_MAX})`);
      if (finishing) {
        if (len > budget) {
          ctx.log.warn({}, `virtio-console: the stopped guest left more than ${CONSOLE_FINISH_MAX} bytes queued; the rest is dropped`);
          break;
        }
        budget -= len;
      }
      for (const b of c.readable) {
        if (b.len === 0) continue;
        // A copy: the guest may reuse the buffer as soon as it is returned.
        const bytes = ctx.mem.read(b.addr, b.len, 'virtio-console transmit buffer');
        this.bytesOut += bytes.length;
        copied += bytes.length;
        if (this.opts.output(bytes) === false) this.#paused = true;
      }
      q.pushUsed(c.head, 0);
      used++;
    }
    if (used > 0) ctx.usedAdded(TRANSMITQ, before);
  }

  /** Guest → host control messages: the driver's side of the port's life (§5.3.6.2). */
  #controlReceive(): void {
    const ctx = this.#ctx;
    const q = ctx?.queue(CONTROL_TRANSMITQ);
    if (!ctx || !q) return;
    const before = q.nextUsed;
    let used = 0;
    for (let c = q.pop(); c; c = used < CONSOLE_TURN_BUDGET ? q.pop() : undefined) {
      if (c.writable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-console control message ${c.head} is device-writable`);
      const len = chainLength(c.readable);
      if (len < CONSOLE_CONTROL_SIZE || len > CONTROL_MESSAGE_MAX) throw new VirtqError('BAD_REQUEST', `virtio-console control message ${c.head} is ${len} bytes`);
      const msg = gatherBytes(ctx.mem, c.readable, new Uint8Array(CONSOLE_CONTROL_SIZE), 'virtio-console control message');
      const v = new DataView(msg.buffer);
      this.#onControl(v.getUint32(0, true), v.getUint16(4, true), v.getUint16(6, true), ctx);
      q.pushUsed(c.head, 0);
      used++;
    }
    if (used > 0) ctx.usedAdded(CONTROL_TRANSMITQ, before);
    if (used === CONSOLE_TURN_BUDGET) this.#continueLater();
    this.#controlSend();
  }

  #onControl(id: number, event: number, value: number, ctx: VirtioDeviceContext): void {
    const E = CONSOLE_CONTROL;
    switch (event) {
      case E.DEVICE_READY:
        if (value === 1) this.#queueControl(ctx, 0, E.DEVICE_ADD, 0);
        else this.#warnOnce(ctx, 'device-ready', 'virtio-console: the driver could not set the device up (DEVICE_READY 0)');
        return;
      case E.PORT_READY:
        if (id !== 0) throw new VirtqError('BAD_REQUEST', `virtio-console: PORT_READY for port ${id}, which does not exist`);
        if (value !== 1) {
          this.#warnOnce(ctx, 'port-ready', 'virtio-console: the driver could not add port 0 (PORT_READY 0)');
          return;
        }
        // The host end is connected before the name is out: whoever waits for the name may open
        // the port at once and find it connected (Linux reads end-of-file from an unconnected port).
        this.#queueControl(ctx, 0, E.PORT_OPEN, 1);
        this.#queueControl(ctx, 0, E.PORT_NAME, 0, new TextEncoder().encode(this.opts.portName ?? ''));
        return;
      case E.PORT_OPEN:
        if (id !== 0) throw new VirtqError('BAD_REQUEST', `virtio-console: PORT_OPEN for port ${id}, which does not exist`);
        this.guestOpen = value === 1;
        return;
      default:
        // Other events are the host's to send; a driver sending them is ignored, as QEMU does.
        ctx.log.debug({ id, event, value }, 'virtio-console: control message ignored');
    }
  }

  #queueControl(ctx: VirtioDeviceContext, id: number, event: number, value: number, payload?: Uint8Array): void {
    // Linux sends DEVICE_READY and PORT_READY once; a driver repeating them without taking the
    // answers must not grow this queue without bound.
    if (this.#controlOut.length >= CONSOLE_CONTROL_BACKLOG) {
      this.#warnOnce(ctx, 'control-backlog', `virtio-console: more than ${CONSOLE_CONTROL_BACKLOG} control messages wait for the driver; dropped`);
      return;
    }
    const msg = new Uint8Array(CONSOLE_CONTROL_SIZE + (payload?.length ?? 0));
    const v = new DataView(msg.buffer);
    v.setUint32(0, id, true);
    v.setUint16(4, event, true);
    v.setUint16(6, value, true);
    if (payload) msg.set(payload, CONSOLE_CONTROL_SIZE);
    this.#controlOut.push(msg);
  }

  /** Host → guest control messages, one per control receive buffer. */
  #controlSend(): void {
    const ctx = this.#ctx;
    const q = ctx?.queue(CONTROL_RECEIVEQ);
    if (!ctx || !q) return;
    const before = q.nextUsed;
    let used = 0;
    while (this.#controlOut.length > 0) {
      const c = q.pop();
      if (!c) break;
      if (c.readable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-console control buffer ${c.head} is device-readable`);
      const msg = this.#controlOut[0]!;
      const room = chainLength(c.writable);
      if (room < msg.length) throw new VirtqError('BAD_REQUEST', `virtio-console control buffer ${c.head} holds ${room} bytes, the message ${msg.length}`);
      scatterBytes(ctx.mem, c.writable, msg, 'virtio-console control buffer');
      this.#controlOut.shift();
      q.pushUsed(c.head, msg.length);
      used++;
    }
    if (used > 0) ctx.usedAdded(CONTROL_RECEIVEQ, before);
  }
}
