/**
 * What a vCPU needs before it runs, on whichever thread runs it (a vCPU worker, or the main thread
 * for a machine's first milliseconds): its own views of kvm_run and guest RAM, its own buses over the
 * machine's shared device state, and the exit loop.
 */
import { native } from '../native/binding.js';
import { GuestRam, Vcpu, Vm } from '../kvm/kvm.js';
import { guestMemoryOf } from '../memory/ram-views.js';
import type { LogLevel } from '../log.js';
import type { ThreadLogger } from './thread-log.js';
import type { KvmFlavour } from '../kvm/host.js';
import { attachDevices, type DeviceSpec } from './devices.js';
import { VcpuLoop } from './vcpu-loop.js';
import { diagnoser } from './diagnose.js';
import { KVM_MP_STATE } from '../kvm/constants.js';
import { hex } from '../errors.js';
import type { StopReason, VcpuStopState } from './stop.js';

export interface VcpuWorkerInit {
  readonly vmFd: number;
  readonly vcpuId: number;
  readonly vcpuFd: number;
  readonly runMappingId: number;
  readonly ramMappingId: number;
  readonly memBytes: number;
  readonly devices: readonly DeviceSpec[];
  readonly control: SharedArrayBuffer;
  readonly logLevel: LogLevel;
  readonly flavour: KvmFlavour;
  /**
   * One Int32 the thread waits on instead of the control block's GO word: set for a thread that
   * takes over a vCPU already running on the main thread (main-thread-vcpu.ts).
   */
  readonly gate?: SharedArrayBuffer;
  /** Byte offset of the VM's coalesced ring in the kvm_run mapping, when a device's writes are coalesced. */
  readonly coalescedRingOffset?: number;
}

/** The exit loop of the vCPU `init` describes, over this thread's own views and buses. */
export function setUpVcpu(init: VcpuWorkerInit, log: ThreadLogger, onPark?: (parked: boolean) => void): { loop: VcpuLoop; vcpu: Vcpu } {
  const n = native();
  const vm = Vm.borrow(init.vmFd);
  const vcpu = Vcpu.attach(init.vcpuId, init.vcpuFd, init.runMappingId);
  const ram = GuestRam.attach(init.ramMappingId, init.memBytes);
  const mem = guestMemoryOf(ram, init.memBytes);
  let loop: VcpuLoop | undefined;
  const ring = init.coalescedRingOffset === undefined ? undefined : vcpu.coalescedRing(init.coalescedRingOffset);
  const { pio, mmio, queued } = attachDevices(init.devices, { vm, mem, log, ring, requestStop: (r) => loop!.requestStop(r) });
  loop = new VcpuLoop({
    n, fd: init.vcpuFd, id: init.vcpuId, run: vcpu.run, pio, mmio,
    queued: ring && queued ? { ring, ...queued } : undefined,
    control: new Int32Array(init.control), log, diagnose: diagnoser(vcpu, mem, init.flavour, log), onPark,
  });
  return { loop, vcpu };
}

const MP_STATE_NAMES = new Map<number, string>([
  [KVM_MP_STATE.RUNNABLE, 'running'], [KVM_MP_STATE.HALTED, 'halted'], [KVM_MP_STATE.UNINITIALIZED, 'not started'],
  [KVM_MP_STATE.INIT_RECEIVED, 'waiting for SIPI'], [KVM_MP_STATE.SIPI_RECEIVED, 'SIPI received'],
]);

/**
 * Where the guest was as this vCPU stopped: the first thing to look at after a timeout. Only for a
 * vCPU the machine stopped (a timeout, stop(), another vCPU's exit), since a guest that ended by
 * itself said where it was; the whole register set goes to the debug log whatever the reason.
 */
export function vcpuStopState(log: ThreadLogger, vcpu: Vcpu, exits: number, reason: StopReason): VcpuStopState | undefined {
  if (reason.kind !== 'stopped' && !log.isLevelEnabled('debug')) return undefined;
  try {
    const regs = vcpu.getRegs();
    const mp = vcpu.getMpState();
    const where = { vcpu: vcpu.id, rip: hex(regs.get('rip')), state: MP_STATE_NAMES.get(mp) ?? `MP state ${mp}`, exits };
    if (log.isLevelEnabled('debug')) {
      const sregs = vcpu.getSregs();
      log.debug({ regs: regs.toJSON(), cr0: sregs.get('cr0').toString(16), cr3: sregs.get('cr3').toString(16), efer: sregs.get('efer').toString(16), ...where }, 'vcpu state at stop');
    }
    return where;
  } catch (e) {
    log.debug({ err: (e as Error).message }, 'vcpu state unavailable');
    return undefined;
  }
}
