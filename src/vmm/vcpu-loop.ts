/**
 * The exit path: the only place that calls KVM_RUN. It runs on the vCPU's own thread and answers
 * every exit synchronously (design.md: a hand-off to another thread costs 4–6× a whole exit), reading
 * kvm_run through typed views created once. Nothing here allocates on the PIO/MMIO path.
 */
import type { ThreadLogger } from './thread-log.js';
import type { Bus, AccessSize } from '../bus/bus.js';
import type { NativeBinding } from '../native/binding.js';
import { KVM_EXIT, KVM_EXIT_IO_OUT, KVM_EXIT_NAME, KVM_INTERNAL_ERROR, KVM_SYSTEM_EVENT } from '../kvm/constants.js';
import { KVM_RUN } from '../kvm/layout.js';
import { hex } from '../errors.js';
import type { StopReason } from './stop.js';
import type { CoalescedRing } from '../kvm/coalesced-ring.js';

/** Words of the per-VM control block shared by the main thread and every vCPU thread. */
export const CONTROL = { STOP: 0, PAUSE: 1, GO: 2, WORDS: 4 } as const;

export interface VcpuLoopDeps {
  readonly n: NativeBinding;
  readonly fd: number;
  readonly id: number;
  readonly run: ArrayBuffer;
  readonly pio: Bus;
  readonly mmio: Bus;
  readonly control: Int32Array;
  readonly log: ThreadLogger;
  /** Told when the loop parks for a pause (true) and leaves it (false). */
  readonly onPark?: (parked: boolean) => void;
  /** Describes the vCPU state for fatal-exit messages (registers, instruction bytes). */
  readonly diagnose: (reason: string, insn: Uint8Array | undefined) => string;
  /**
   * Writes KVM queued in the VM's coalesced ring rather than exiting (a device's zone) and what
   * takes them. They are taken before any exit is answered, so that every device access lands in
   * the order the guest made it, except a port read the device says does not depend on them
   * (`mayWait`: a console's status register, read before each byte, so that bytes go out in
   * batches); and whenever the loop is kicked (a stop, a pause, or the machine's watch for writes
   * no exit came to take).
   */
  readonly queued?: { readonly ring: CoalescedRing; readonly take: () => void; readonly mayWait: (port: number, isRead: boolean) => boolean };
}

const IO_DIRECTION = KVM_RUN['io.direction'];
const IO_SIZE = KVM_RUN['io.size'];
const IO_PORT = KVM_RUN['io.port'];
const IO_COUNT = KVM_RUN['io.count'];
const IO_DATA_OFFSET = KVM_RUN['io.data_offset'];
const MMIO_ADDR = KVM_RUN['mmio.phys_addr'];
const MMIO_DATA = KVM_RUN['mmio.data'];
const MMIO_LEN = KVM_RUN['mmio.len'];
const MMIO_IS_WRITE = KVM_RUN['mmio.is_write'];

export class VcpuLoop {
  readonly #u8: Uint8Array;
  readonly #dv: DataView;
  #stop: StopReason | undefined;
  /** Exits handled, by reason; read by benchmarks and tests. */
  exits = 0;

  constructor(private readonly d: VcpuLoopDeps) {
    this.#u8 = new Uint8Array(d.run);
    this.#dv = new DataView(d.run);
  }

  /** Asks the loop to return `reason` once the current exit has been answered (devices call this). */
  requestStop(reason: StopReason): void {
    this.#stop ??= reason;
  }

  /**
   * Runs until the guest stops, a device requests a stop, or the main thread kicks with STOP set.
   * A pause parks the thread here (a vCPU thread has nothing else to do).
   */
  run(): StopReason {
    return this.#loop(true)!;
  }

  /**
   * Runs like run(), but returns undefined at the first kick that is not a stop: the caller is a
   * thread with an event loop to get back to (main-thread-vcpu.ts), and parks for a pause itself.
   */
  runSlice(): StopReason | undefined {
    return this.#loop(false);
  }

  #loop(parkHere: boolean): StopReason | undefined {
    const { n, fd, control, queued } = this.d;
    const u8 = this.#u8;
    const dv = this.#dv;
    for (;;) {
      if (n.run(fd) !== 0) {
        // Kicked (EINTR) or asked to re-enter (EAGAIN): clear the kick, then look at the control block.
        u8[KVM_RUN.immediate_exit] = 0;
        if (queued !== undefined && queued.ring.pending) queued.take();
        if (Atomics.load(control, CONTROL.STOP) !== 0) return this.#stop ?? { kind: 'stopped' };
        if (!parkHere) return undefined;
        if (Atomics.load(control, CONTROL.PAUSE) !== 0) {
          this.d.onPark?.(true);
          while (Atomics.load(control, CONTROL.PAUSE) !== 0 && Atomics.load(control, CONTROL.STOP) === 0) {
            Atomics.wait(control, CONTROL.PAUSE, 1, 1000);
          }
          this.d.onPark?.(false);
          if (Atomics.load(control, CONTROL.STOP) !== 0) return this.#stop ?? { kind: 'stopped' };
        }
        continue;
      }
      this.exits++;
      const reason = dv.getUint32(KVM_RUN.exit_reason, true);
      if (queued !== undefined && queued.ring.pending && !(reason === KVM_EXIT.IO && queued.mayWait(dv.getUint16(IO_PORT, true), u8[IO_DIRECTION] !== KVM_EXIT_IO_OUT))) queued.take();
      if (reason === KVM_EXIT.IO) this.#io(u8, dv);
      else if (reason === KVM_EXIT.MMIO) this.#mmio(dv);
      else this.#other(reason);
      if (this.#stop !== undefined) return this.#stop;
    }
  }

  #io(u8: Uint8Array, dv: DataView): void {
    const size = u8[IO_SIZE]! as AccessSize;
    const port = dv.getUint16(IO_PORT, true);
    const count = dv.getUint32(IO_COUNT, true);
    let off = dv.getUint32(IO_DATA_OFFSET, true);
    if ((size !== 1 && size !== 2 && size !== 4) || off + size * count > u8.byteLength) {
      this.requestStop({ kind: 'kvm-failure', message: `vcpu${this.d.id}: malformed KVM_EXIT_IO (port ${hex(port)}, size ${size}, count ${count})` });
      return;
    }
    const pio = this.d.pio;
    if (u8[IO_DIRECTION] === KVM_EXIT_IO_OUT) {
      for (let i = 0; i < count; i++, off += size) {
        pio.write(port, size, size === 1 ? u8[off]! : size === 2 ? dv.getUint16(off, true) : dv.getUint32(off, true));
      }
    } else {
      for (let i = 0; i < count; i++, off += size) {
        const v = pio.read(port, size);
        if (size === 1) u8[off] = v;
        else if (size === 2) dv.setUint16(off, v, true);
        else dv.setUint32(off, v, true);
      }
    }
  }

  #mmio(dv: DataView): void {
    const addr = dv.getUint32(MMIO_ADDR, true) + dv.getUint32(MMIO_ADDR + 4, true) * 0x1_0000_0000;
    const len = dv.getUint32(MMIO_LEN, true);
    const mmio = this.d.mmio;
    const write = dv.getUint8(MMIO_IS_WRITE) !== 0;
    if (len === 1 || len === 2 || len === 4) {
      if (write) mmio.write(addr, len, len === 1 ? dv.getUint8(MMIO_DATA) : len === 2 ? dv.getUint16(MMIO_DATA, true) : dv.getUint32(MMIO_DATA, true));
      else {
        const v = mmio.read(addr, len);
        if (len === 1) dv.setUint8(MMIO_DATA, v);
        else if (len === 2) dv.setUint16(MMIO_DATA, v, true);
        else dv.setUint32(MMIO_DATA, v, true);
      }
      return;
    }
    // 8-byte (and any odd-sized) accesses: 4-byte pieces where they fit, bytes for the rest, low first.
    const n = Math.min(len, 8);
    for (let o = 0; o < n; ) {
      const size: AccessSize = n - o >= 4 ? 4 : 1;
      if (write) mmio.write(addr + o, size, size === 4 ? dv.getUint32(MMIO_DATA + o, true) : dv.getUint8(MMIO_DATA + o));
      else if (size === 4) dv.setUint32(MMIO_DATA + o, mmio.read(addr + o, 4), true);
      else dv.setUint8(MMIO_DATA + o, mmio.read(addr + o, 1));
      o += size;
    }
  }

  #other(reason: number): void {
    const dv = this.#dv;
    const id = this.d.id;
    switch (reason) {
      case KVM_EXIT.HLT:
        // Only reached without an in-kernel LAPIC: treat as the guest stopping for good.
        this.requestStop({ kind: 'poweroff' });
        return;
      case KVM_EXIT.SHUTDOWN:
        this.requestStop({ kind: 'triple-fault', message: this.d.diagnose(`vcpu${id}: triple fault (KVM_EXIT_SHUTDOWN)`, undefined) });
        return;
      case KVM_EXIT.INTR:
        return; // a signal interrupted the guest; the loop re-enters
      case KVM_EXIT.SYSTEM_EVENT: {
        const type = dv.getUint32(KVM_RUN['system_event.type'], true);
        if (type === KVM_SYSTEM_EVENT.RESET) this.requestStop({ kind: 'reboot' });
        else if (type === KVM_SYSTEM_EVENT.SHUTDOWN) this.requestStop({ kind: 'poweroff' });
        else this.requestStop({ kind: 'kvm-failure', message: `vcpu${id}: KVM_EXIT_SYSTEM_EVENT type ${type}` });
        return;
      }
      case KVM_EXIT.FAIL_ENTRY: {
        const hw = dv.getBigUint64(KVM_RUN['fail_entry.hardware_entry_failure_reason'], true);
        this.requestStop({ kind: 'kvm-failure', message: this.d.diagnose(`vcpu${id}: KVM_EXIT_FAIL_ENTRY, hardware entry failure reason ${hex(hw)}`, undefined) });
        return;
      }
      case KVM_EXIT.INTERNAL_ERROR: {
        const sub = dv.getUint32(KVM_RUN['internal.suberror'], true);
        if (sub === KVM_INTERNAL_ERROR.EMULATION) {
          this.requestStop({ kind: 'emulation-failure', message: this.d.diagnose(`vcpu${id}: emulation failure (KVM_EXIT_INTERNAL_ERROR)`, this.#insnBytes()) });
        } else {
          this.requestStop({ kind: 'kvm-failure', message: this.d.diagnose(`vcpu${id}: KVM_EXIT_INTERNAL_ERROR, suberror ${sub}`, undefined) });
        }
        return;
      }
      default:
        this.requestStop({ kind: 'kvm-failure', message: this.d.diagnose(`vcpu${id}: unhandled exit ${KVM_EXIT_NAME[reason] ?? 'UNKNOWN'} (${reason})`, undefined) });
    }
  }

  /** Instruction bytes KVM reports with an emulation failure (flag bit 0 of data[0], size in data[1]). */
  #insnBytes(): Uint8Array | undefined {
    const dv = this.#dv;
    const ndata = dv.getUint32(KVM_RUN['internal.ndata'], true);
    const data = KVM_RUN['internal.data'];
    if (ndata < 3 || (dv.getUint32(data, true) & 1) === 0) return undefined;
    const size = Math.min(dv.getUint32(data + 8, true), 15);
    return new Uint8Array(this.d.run, data + 16, size).slice();
  }
}
