/**
 * MC146818 CMOS RTC and NVRAM (ports 0x70 index, 0x71 data). The index is masked to 7 bits (bit 7
 * of port 0x70 is the NMI mask, kept but without effect). Time registers read the host's clock
 * (UTC, or an injected clock), in BCD or binary and 12- or 24-hour form as register B says; a guest
 * that sets the time keeps an offset so its clock runs on from what it set. Register A never shows
 * "update in progress". Memory-size bytes are preset for firmware-style probes. Not emulated:
 * periodic, alarm and update interrupts (IRQ 8), daylight saving.
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';
import { SharedState } from '../shared-state.js';

export const CMOS_PORT = 0x70;
export const CMOS_LEN = 2;

const SECONDS = 0x00, MINUTES = 0x02, HOURS = 0x04, WEEKDAY = 0x06, DAY = 0x07, MONTH = 0x08, YEAR = 0x09;
const REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c, REG_D = 0x0d, CENTURY = 0x32;
const REG_B_24H = 0x02;
const REG_B_BINARY = 0x04;
const HOURS_PM = 0x80;

// Shared state: word 0 lock, word 1 index, then a float64 clock offset (ms) and the 128 NVRAM bytes.
const W_INDEX = 1;
const OFFSET_F64 = 1; // Float64Array index (byte 8)
const NVRAM = 16;

export interface CmosOptions {
  readonly now?: () => number;
  /** Guest RAM in bytes, for the memory-size bytes (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5b-0x5d). */
  readonly memBytes?: number;
  /** RAM below the 32-bit MMIO hole, in bytes (default: all of memBytes). */
  readonly lowMemBytes?: number;
}

const toBcd = (v: number) => ((Math.floor(v / 10) << 4) | (v % 10)) & 0xff;
const fromBcd = (v: number) => (v >> 4) * 10 + (v & 0x0f);

export class CmosRtc implements BusDevice {
  readonly debugLabel = 'cmos-rtc';
  readonly s: SharedState;
  readonly #offset: Float64Array;
  readonly #now: () => number;

  constructor(opts: CmosOptions = {}, buffer?: SharedArrayBuffer) {
    this.#now = opts.now ?? Date.now;
    const fresh = !buffer;
    this.s = buffer ? new SharedState(buffer) : SharedState.create(NVRAM + 128);
    this.#offset = new Float64Array(this.s.buffer, 0, 2);
    if (fresh) this.#reset(opts);
  }

  get buffer(): SharedArrayBuffer {
    return this.s.buffer;
  }

  #reset(o: CmosOptions): void {
    const n = this.s.bytes;
    n[NVRAM + REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz rate
    n[NVRAM + REG_B] = REG_B_24H; // BCD, 24-hour, as PCs boot
    n[NVRAM + REG_D] = 0x80; // valid RAM and time
    const mem = o.memBytes ?? 0;
    const low = Math.min(o.lowMemBytes ?? mem, mem);
    const setWord = (reg: number, v: number) => {
      n[NVRAM + reg] = v & 0xff;
      n[NVRAM + reg + 1] = (v >> 8) & 0xff;
    };
    setWord(0x15, 640); // base memory, KiB
    const extKiB = Math.min(Math.max(0, low - 0x10_0000) / 1024, 0xffff); // above 1 MiB, KiB
    setWord(0x17, extKiB);
    setWord(0x30, extKiB);
    setWord(0x34, Math.min(Math.max(0, low - 0x100_0000) / 0x1_0000, 0xffff)); // above 16 MiB, 64 KiB units
    const high = Math.max(0, mem - low) / 0x1_0000; // above 4 GiB, 64 KiB units
    n[NVRAM + 0x5b] = high & 0xff;
    n[NVRAM + 0x5c] = (high >> 8) & 0xff;
    n[NVRAM + 0x5d] = (high >> 16) & 0xff;
  }

  read(offset: number, size: AccessSize): number {
    if (size !== 1) return allOnes(size);
    // Reading the index port gives the last index written.
    return this.s.locked(() => (offset === 0 ? this.s.words[W_INDEX]! : this.#readReg(this.s.words[W_INDEX]! & 0x7f)));
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (size !== 1) return;
    this.s.locked(() => {
      if (offset === 0) this.s.words[W_INDEX] = value & 0xff;
      else this.#writeReg(this.s.words[W_INDEX]! & 0x7f, value & 0xff);
    });
  }

  #time(): Date {
    return new Date(this.#now() + this.#offset[OFFSET_F64]!);
  }

  #encode(v: number): number {
    return this.s.bytes[NVRAM + REG_B]! & REG_B_BINARY ? v : toBcd(v);
  }

  #decode(v: number): number {
    return this.s.bytes[NVRAM + REG_B]! & REG_B_BINARY ? v : fromBcd(v);
  }

  #readReg(reg: number): number {
    const n = this.s.bytes;
    const t = this.#time();
    switch (reg) {
      case SECONDS: return this.#encode(t.getUTCSeconds());
      case MINUTES: return this.#encode(t.getUTCMinutes());
      case HOURS: {
        const h = t.getUTCHours();
        if (n[NVRAM + REG_B]! & REG_B_24H) return this.#encode(h);
        return this.#encode(h % 12 === 0 ? 12 : h % 12) | (h >= 12 ? HOURS_PM : 0);
      }
      case WEEKDAY: return this.#encode(t.getUTCDay() + 1);
      case DAY: return this.#encode(t.getUTCDate());
      case MONTH: return this.#encode(t.getUTCMonth() + 1);
      case YEAR: return this.#encode(t.getUTCFullYear() % 100);
      case CENTURY: return this.#encode(Math.floor(t.getUTCFullYear() / 100));
      case REG_A: return n[NVRAM + REG_A]! & 0x7f; // UIP never set
      case REG_C: {
        const v = n[NVRAM + REG_C]!;
        n[NVRAM + REG_C] = 0; // reading C acknowledges interrupts
        return v;
      }
      default: return n[NVRAM + reg]!;
    }
  }

  #writeReg(reg: number, v: number): void {
    const n = this.s.bytes;
    if (reg === REG_C || reg === REG_D) return; // read-only
    if (reg === REG_A) {
      n[NVRAM + REG_A] = v & 0x7f;
      return;
    }
    if (reg === REG_B) {
      n[NVRAM + REG_B] = v;
      return;
    }
    const timeRegs = [SECONDS, MINUTES, HOURS, DAY, MONTH, YEAR, CENTURY];
    if (!timeRegs.includes(reg)) {
      n[NVRAM + reg] = v;
      return;
    }
    // Setting a time field moves the guest's clock: keep the new time as an offset from the host's.
    const t = this.#time();
    let hours = t.getUTCHours();
    if (reg === HOURS) {
      if (n[NVRAM + REG_B]! & REG_B_24H) hours = this.#decode(v);
      else hours = (this.#decode(v & 0x7f) % 12) + (v & HOURS_PM ? 12 : 0);
    }
    const year = reg === YEAR ? Math.floor(t.getUTCFullYear() / 100) * 100 + this.#decode(v)
      : reg === CENTURY ? this.#decode(v) * 100 + (t.getUTCFullYear() % 100) : t.getUTCFullYear();
    const next = Date.UTC(
      year,
      reg === MONTH ? this.#decode(v) - 1 : t.getUTCMonth(),
      reg === DAY ? this.#decode(v) : t.getUTCDate(),
      hours,
      reg === MINUTES ? this.#decode(v) : t.getUTCMinutes(),
      reg === SECONDS ? this.#decode(v) : t.getUTCSeconds(),
      t.getUTCMilliseconds(),
    );
    if (Number.isFinite(next)) this.#offset[OFFSET_F64] = next - this.#now();
  }
}
