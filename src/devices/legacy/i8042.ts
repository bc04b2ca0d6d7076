/**
 * i8042 keyboard controller (ports 0x60 data, 0x64 status/command), emulated just enough for Linux
 * to find an AT keyboard and for the two ways it reboots through it: command 0xFE (pulse the reset
 * line) and writing the output port with bit 0 clear. The keyboard answers its commands (ACK 0xFA,
 * reset → 0xAA, identify → 0xAB 0x83) and otherwise sends nothing; queueScancodes() lets the host
 * type (Firecracker's SendCtrlAltDel). No mouse (AUX): its interface test fails, so Linux skips it.
 * IRQ 1 follows "output buffer full" while the command byte enables keyboard interrupts.
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';
import { SharedState } from '../shared-state.js';
import type { IrqLine } from './serial-8250.js';

export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
export const I8042_IRQ = 1;

const STATUS_OBF = 0x01;
const STATUS_SYS = 0x04;
const STATUS_CMD = 0x08; // the last write went to the command port
const CMD_BYTE_KBD_INT = 0x01;
const CMD_BYTE_SYS = 0x04;
const CMD_BYTE_KBD_DISABLE = 0x10;
const CMD_BYTE_AUX_DISABLE = 0x20;
const CMD_BYTE_XLATE = 0x40;

const CMD_READ_CMD_BYTE = 0x20;
const CMD_WRITE_CMD_BYTE = 0x60;
const CMD_AUX_DISABLE = 0xa7;
const CMD_AUX_ENABLE = 0xa8;
const CMD_AUX_TEST = 0xa9;
const CMD_SELF_TEST = 0xaa;
const CMD_KBD_TEST = 0xab;
const CMD_KBD_DISABLE = 0xad;
const CMD_KBD_ENABLE = 0xae;
const CMD_READ_OUTPUT_PORT = 0xd0;
const CMD_WRITE_OUTPUT_PORT = 0xd1;
const CMD_WRITE_AUX = 0xd4;
const CMD_PULSE_RESET = 0xfe;

const KBD_ACK = 0xfa;

// Shared words (0 is the lock).
const W_CMD_BYTE = 1, W_STATUS = 2, W_PENDING = 3, W_QHEAD = 4, W_QCOUNT = 5, W_IRQ = 6, W_OUTPORT = 7;
const Q_OFFSET = 64;
const Q_CAPACITY = 64;
const PENDING_NONE = 0, PENDING_CMD_BYTE = 1, PENDING_OUTPUT_PORT = 2, PENDING_AUX = 3;

export interface I8042Deps {
  readonly irq: IrqLine;
  /** The guest asked for a CPU reset (0xFE, or output port bit 0 cleared). */
  readonly onReset: () => void;
}

export class I8042 {
  readonly s: SharedState;

  constructor(private readonly deps: I8042Deps, buffer?: SharedArrayBuffer) {
    if (buffer) this.s = new SharedState(buffer);
    else {
      this.s = SharedState.create(Q_OFFSET + Q_CAPACITY);
      this.s.words[W_CMD_BYTE] = CMD_BYTE_KBD_INT | CMD_BYTE_SYS | CMD_BYTE_XLATE;
      this.s.words[W_STATUS] = STATUS_SYS;
      this.s.words[W_OUTPORT] = 0x03; // reset line high (not in reset), A20 enabled
    }
  }

  get buffer(): SharedArrayBuffer {
    return this.s.buffer;
  }

  /** The device as two bus ranges: register port('data') at 0x60 and port('command') at 0x64. */
  port(which: 'data' | 'command'): BusDevice {
    return {
      debugLabel: `i8042-${which}`,
      read: (_o, size) => this.#access(which, size, undefined),
      write: (_o, size, value) => void this.#access(which, size, value),
    };
  }

  /** Host → guest keyboard input (scancode set 1 after translation), e.g. Ctrl-Alt-Del. */
  queueScancodes(codes: readonly number[]): void {
    this.s.locked(() => {
      for (const c of codes) this.#push(c);
      this.#sync();
    });
  }

  #access(which: 'data' | 'command', size: AccessSize, value: number | undefined): number {
    if (size !== 1) return value === undefined ? allOnes(size) : 0;
    let reset = false;
    const result = this.s.locked(() => {
      let r = 0;
      if (value === undefined) r = which === 'data' ? this.#readData() : this.#status();
      else if (which === 'command') reset = this.#command(value & 0xff);
      else reset = this.#writeData(value & 0xff);
      this.#sync();
      return r;
    });
    if (reset) this.deps.onReset(); // outside the lock: the reset tears the machine down
    return result;
  }

  #status(): number {
    const w = this.s.words;
    return w[W_STATUS]! | (w[W_QCOUNT]! > 0 ? STATUS_OBF : 0);
  }

  #readData(): number {
    const w = this.s.words;
    if (w[W_QCOUNT] === 0) return 0;
    const v = this.s.bytes[Q_OFFSET + w[W_QHEAD]!]!;
    w[W_QHEAD] = (w[W_QHEAD]! + 1) % Q_CAPACITY;
    w[W_QCOUNT]!--;
    return v;
  }

  #push(v: number): void {
    const w = this.s.words;
    if (w[W_QCOUNT]! >= Q_CAPACITY) return; // a real controller has one byte; excess is dropped
    this.s.bytes[Q_OFFSET + ((w[W_QHEAD]! + w[W_QCOUNT]!) % Q_CAPACITY)] = v;
    w[W_QCOUNT]!++;
  }

  /** Returns true when the command resets the CPU. */
  #command(cmd: number): boolean {
    const w = this.s.words;
    w[W_STATUS] = w[W_STATUS]! | STATUS_CMD;
    switch (cmd) {
      case CMD_READ_CMD_BYTE: this.#push(w[W_CMD_BYTE]!); break;
      case CMD_WRITE_CMD_BYTE: w[W_PENDING] = PENDING_CMD_BYTE; break;
      case CMD_AUX_DISABLE: w[W_CMD_BYTE] = w[W_CMD_BYTE]! | CMD_BYTE_AUX_DISABLE; break;
      case CMD_AUX_ENABLE: w[W_CMD_BYTE] = w[W_CMD_BYTE]! & ~CMD_BYTE_AUX_DISABLE; break;
      case CMD_AUX_TEST: this.#push(0xff); break; // no AUX port
      case CMD_SELF_TEST: this.#push(0x55); w[W_STATUS] = w[W_STATUS]! | STATUS_SYS; break;
      case CMD_KBD_TEST: this.#push(0x00); break;
      case CMD_KBD_DISABLE: w[W_CMD_BYTE] = w[W_CMD_BYTE]! | CMD_BYTE_KBD_DISABLE; break;
      case CMD_KBD_ENABLE: w[W_CMD_BYTE] = w[W_CMD_BYTE]! & ~CMD_BYTE_KBD_DISABLE; break;
      case CMD_READ_OUTPUT_PORT: this.#push(w[W_OUTPORT]!); break;
      case CMD_WRITE_OUTPUT_PORT: w[W_PENDING] = PENDING_OUTPUT_PORT; break;
      case CMD_WRITE_AUX: w[W_PENDING] = PENDING_AUX; break;
      case CMD_PULSE_RESET: return true;
      default:
        // 0xF0-0xFF pulse output lines: bit 0 clear in the low nibble pulses reset.
        if (cmd >= 0xf0 && (cmd & 0x01) === 0) return true;
        break; // other commands are accepted and ignored
    }
    return false;
  }

  /** Returns true when the write resets the CPU. */
  #writeData(v: number): boolean {
    const w = this.s.words;
    w[W_STATUS] = w[W_STATUS]! & ~STATUS_CMD;
    const pending = w[W_PENDING]!;
    w[W_PENDING] = PENDING_NONE;
    switch (pending) {
      case PENDING_CMD_BYTE:
        w[W_CMD_BYTE] = v;
        return false;
      case PENDING_OUTPUT_PORT:
        w[W_OUTPORT] = v;
        return (v & 0x01) === 0; // reset line driven low
      case PENDING_AUX:
        return false; // no mouse: the byte goes nowhere
    }
    // A command for the keyboard itself.
    this.#push(KBD_ACK);
    if (v === 0xff) this.#push(0xaa); // reset: self-test passed
    else if (v === 0xf2) { this.#push(0xab); this.#push(0x83); } // identify: MF2 keyboard
    return false;
  }

  #sync(): void {
    const w = this.s.words;
    const want = w[W_QCOUNT]! > 0 && (w[W_CMD_BYTE]! & CMD_BYTE_KBD_INT) !== 0;
    if (want !== (w[W_IRQ] !== 0)) {
      w[W_IRQ] = want ? 1 : 0;
      this.deps.irq.setLevel(want);
    }
  }
}
