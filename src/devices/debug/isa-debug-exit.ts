/**
 * QEMU's isa-debug-exit (kvm-unit-tests and many test guests use it at port 0xf4): a write of
 * value v ends the VM with process status (v << 1) | 1, truncated to 8 bits by the OS as QEMU's is.
 */
import { allOnes, type AccessSize, type BusDevice } from '../../bus/bus.js';

export const ISA_DEBUG_EXIT_PORT = 0xf4;
export const ISA_DEBUG_EXIT_LEN = 4;

export const debugExitStatus = (value: number): number => ((value << 1) | 1) & 0xff;

export class IsaDebugExit implements BusDevice {
  readonly debugLabel = 'isa-debug-exit';
  constructor(private readonly onExit: (value: number, status: number) => void) {}

  read(_offset: number, size: AccessSize): number {
    return allOnes(size);
  }

  write(_offset: number, _size: AccessSize, value: number): void {
    this.onExit(value >>> 0, debugExitStatus(value));
  }
}
