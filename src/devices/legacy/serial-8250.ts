/**
 * 16550A UART (the PC's COM ports): 8 byte-wide registers at a base such as 0x3f8 (COM1, IRQ 4).
 *
 * Transmission is instantaneous (THR bytes go straight to the output sink), so LSR always shows
 * THRE|TEMT. Received bytes wait in a FIFO in shared memory that the host side fills with
 * enqueueInput(). The interrupt line is driven only when its level changes. Emulated: DLAB divisor
 * latch, IER/IIR/FCR/LCR/MCR/LSR/MSR/SCR, loopback (Linux's autoconfig probes it), RX-data and
 * THR-empty interrupts. Not emulated: line errors, modem-status interrupts, baud timing.
 * Reference: the National Semiconductor PC16550D data sheet.
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';
import { SharedState } from '../shared-state.js';
import type { CoalescedRing } from '../../kvm/coalesced-ring.js';

const DATA = 0, IER = 1, IIR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

const UART_IER_RDI = 0x01; // receive data available
const UART_IER_THRI = 0x02; // transmitter holding register empty
const UART_IIR_NO_INT = 0x01;
const UART_IIR_THRI = 0x02;
const UART_IIR_RDI = 0x04;
const UART_IIR_FIFO_BITS = 0xc0; // reported when FIFOs are enabled
const UART_FCR_ENABLE_FIFO = 0x01;
const UART_FCR_CLEAR_RCVR = 0x02;
const UART_LCR_DLAB = 0x80;
const UART_MCR_LOOP = 0x10;
const UART_LSR_DR = 0x01;
const UART_LSR_THRE = 0x20;
const UART_LSR_TEMT = 0x40;
const UART_MSR_DCD = 0x80, UART_MSR_DSR = 0x20, UART_MSR_CTS = 0x10;

/** Bytes the receive FIFO holds before enqueueInput() refuses more (a software FIFO: pasted text fits). */
export const SERIAL_RX_CAPACITY = 4096;

// Word indices in the shared state (word 0 is the lock).
const W_IER = 1, W_LCR = 2, W_MCR = 3, W_SCR = 4, W_DLL = 5, W_DLM = 6, W_FCR = 7;
const W_THR_PENDING = 8, W_IRQ = 9, W_RX_HEAD = 10, W_RX_COUNT = 11;
const RX_BYTE_OFFSET = 64;

export interface IrqLine {
  setLevel(high: boolean): void;
}

export interface Serial8250Deps {
  readonly irq: IrqLine;
  /** Receives the transmitted bytes, in order: each register write's, or a batch taken from the coalesced ring. Use them before returning. */
  readonly output: (bytes: Uint8Array) => void;
}

/** Bytes sent through `output` at once at most (a full coalesced ring is 170). */
const TX_BATCH = 256;
/** Queued console bytes an LSR read may leave in the ring (mayLeaveQueued): a batch of output. */
export const CONSOLE_BATCH = 64;

export class Serial8250 implements BusDevice {
  readonly s: SharedState;
  /** Bytes transmitted under the current lock, sent at its end (one write for a coalesced batch). */
  readonly #tx = new Uint8Array(TX_BATCH);
  #txLen = 0;

  /** A new UART in its reset state, or another thread's view of an existing one (same buffer). */
  constructor(readonly debugLabel: string, private readonly deps: Serial8250Deps, buffer?: SharedArrayBuffer) {
    if (buffer) {
      this.s = new SharedState(buffer);
    } else {
      this.s = SharedState.create(RX_BYTE_OFFSET + SERIAL_RX_CAPACITY);
      const w = this.s.words;
      w[W_LCR] = 0x03; // 8N1
      w[W_MCR] = 0x08; // OUT2
      w[W_DLL] = 0x0c; // 9600 baud
    }
  }

  get buffer(): SharedArrayBuffer {
    return this.s.buffer;
  }

  read(offset: number, size: AccessSize): number {
    if (size !== 1) return allOnes(size); // byte-wide registers only
    return this.s.locked(() => {
      const v = this.#readReg(offset);
      this.#syncIrq();
      return v;
    });
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 1) return;
    this.s.locked(() => {
      this.#writeReg(offset, value & 0xff);
      this.#syncIrq();
      this.#flushTx();
    });
  }

  /**
   * Applies the writes to THR (offset 0, at port `dataPort`) that KVM queued in the coalesced ring
   * instead of exiting, in their order, as if each had exited: output, divisor latch or loopback,
   * and THR-empty interrupts. Every other register access exits, and the exit path calls this
   * first, so the queued writes land before any later access.
   */
  transmitQueued(ring: CoalescedRing, dataPort: number): void {
    this.s.locked(() => {
      ring.take((addr, len, pio, value) => {
        if (pio && len === 1 && addr === dataPort) this.#writeReg(DATA, value & 0xff); // nothing else is registered
      });
      this.#syncIrq();
      this.#flushTx();
    });
  }

  /**
   * Whether a read of register `offset` may be answered with THR writes still queued in the
   * coalesced ring (`queued` of them), to be taken later in one batch: one write(2) for many bytes
   * instead of one a byte. Only LSR, Linux's wait before each console byte: its answer does not
   * depend on them (transmission is instantaneous) unless loopback turns them into received bytes,
   * and they raise no interrupt while THR-empty interrupts are off (Linux's console write turns
   * them off). Up to CONSOLE_BATCH of them, so that output keeps flowing; the exit loop takes them
   * at any other exit, a kick or a stop, and the machine's watch kicks a vCPU for those left queued.
   */
  mayLeaveQueued(offset: number, queued: number): boolean {
    const w = this.s.words;
    return offset === LSR && queued < CONSOLE_BATCH && (Atomics.load(w, W_IER) & UART_IER_THRI) === 0 && (Atomics.load(w, W_MCR) & UART_MCR_LOOP) === 0;
  }

  #flushTx(): void {
    if (this.#txLen === 0) return;
    const n = this.#txLen;
    this.#txLen = 0;
    this.deps.output(this.#tx.subarray(0, n));
  }

  /** Host → guest. Returns how many bytes fit in the receive FIFO (the caller retries the rest). */
  enqueueInput(bytes: Uint8Array): number {
    return this.s.locked(() => {
      const n = Math.min(bytes.length, SERIAL_RX_CAPACITY - this.s.words[W_RX_COUNT]!);
      for (let i = 0; i < n; i++) this.#rxPush(bytes[i]!);
      this.#syncIrq();
      return n;
    });
  }

  /** Bytes waiting for the guest to read. */
  get rxPending(): number {
    return Atomics.load(this.s.words, W_RX_COUNT);
  }

  #rxPush(b: number): void {
    const w = this.s.words;
    const tail = (w[W_RX_HEAD]! + w[W_RX_COUNT]!) % SERIAL_RX_CAPACITY;
    this.s.bytes[RX_BYTE_OFFSET + tail] = b;
    w[W_RX_COUNT]!++;
  }

  #rxPop(): number {
    const w = this.s.words;
    if (w[W_RX_COUNT] === 0) return 0;
    const b = this.s.bytes[RX_BYTE_OFFSET + w[W_RX_HEAD]!]!;
    w[W_RX_HEAD] = (w[W_RX_HEAD]! + 1) % SERIAL_RX_CAPACITY;
    w[W_RX_COUNT]!--;
    return b;
  }

  #readReg(offset: number): number {
    const w = this.s.words;
    const dlab = (w[W_LCR]! & UART_LCR_DLAB) !== 0;
    switch (offset) {
      case DATA:
        if (dlab) return w[W_DLL]!;
        return this.#rxPop();
      case IER:
        return dlab ? w[W_DLM]! : w[W_IER]!;
      case IIR: {
        const fifo = w[W_FCR]! & UART_FCR_ENABLE_FIFO ? UART_IIR_FIFO_BITS : 0;
        if (w[W_IER]! & UART_IER_RDI && w[W_RX_COUNT]! > 0) return fifo | UART_IIR_RDI;
        if (w[W_IER]! & UART_IER_THRI && w[W_THR_PENDING]) {
          w[W_THR_PENDING] = 0; // reading IIR acknowledges a THR-empty interrupt
          return fifo | UART_IIR_THRI;
        }
        return fifo | UART_IIR_NO_INT;
      }
      case LCR:
        return w[W_LCR]!;
      case MCR:
        return w[W_MCR]!;
      case LSR:
        return UART_LSR_THRE | UART_LSR_TEMT | (w[W_RX_COUNT]! > 0 ? UART_LSR_DR : 0);
      case MSR: {
        const mcr = w[W_MCR]!;
        if (mcr & UART_MCR_LOOP) {
          // Loopback wires RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
          return ((mcr & 0x02) << 3) | ((mcr & 0x01) << 5) | ((mcr & 0x04) << 4) | ((mcr & 0x08) << 4);
        }
        return UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;
      }
      case SCR:
        return w[W_SCR]!;
      default:
        return 0xff;
    }
  }

  #writeReg(offset: number, v: number): void {
    const w = this.s.words;
    const dlab = (w[W_LCR]! & UART_LCR_DLAB) !== 0;
    switch (offset) {
      case DATA:
        if (dlab) {
          w[W_DLL] = v;
        } else if (w[W_MCR]! & UART_MCR_LOOP) {
          if (w[W_RX_COUNT]! < SERIAL_RX_CAPACITY) this.#rxPush(v); // loopback: transmit into our own receiver
          w[W_THR_PENDING] = 1;
        } else {
          if (this.#txLen === TX_BATCH) this.#flushTx();
          this.#tx[this.#txLen++] = v;
          w[W_THR_PENDING] = 1; // sent at once, so THR is empty again
        }
        break;
      case IER:
        if (dlab) {
          w[W_DLM] = v;
        } else {
          const was = w[W_IER]!;
          w[W_IER] = v & 0x0f;
          // Enabling THRI while THR is empty raises the interrupt at once (as the 16550 does).
          if (!(was & UART_IER_THRI) && v & UART_IER_THRI) w[W_THR_PENDING] = 1;
        }
        break;
      case IIR: // FCR on write
        w[W_FCR] = v & UART_FCR_ENABLE_FIFO;
        if (v & UART_FCR_CLEAR_RCVR) {
          w[W_RX_HEAD] = 0;
          w[W_RX_COUNT] = 0;
        }
        break;
      case LCR:
        w[W_LCR] = v;
        break;
      case MCR:
        w[W_MCR] = v & 0x1f;
        break;
      case SCR:
        w[W_SCR] = v;
        break;
      default: // LSR and MSR are read-only
        break;
    }
  }

  #syncIrq(): void {
    const w = this.s.words;
    const want =
      ((w[W_IER]! & UART_IER_RDI) !== 0 && w[W_RX_COUNT]! > 0) || ((w[W_IER]! & UART_IER_THRI) !== 0 && w[W_THR_PENDING] !== 0);
    if (want !== (w[W_IRQ] !== 0)) {
      w[W_IRQ] = want ? 1 : 0;
      this.deps.irq.setLevel(want);
    }
  }
}
