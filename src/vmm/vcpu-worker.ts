/**
 * Entry point of a vCPU thread: attaches to the VM's fds and shared device state, builds this
 * thread's buses, runs the exit loop, and reports how it stopped to the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { native } from '../native/binding.js';
import { GuestRam, Vcpu, Vm } from '../kvm/kvm.js';
import { guestMemoryOf } from '../memory/ram-views.js';
import type { LogLevel } from '../log.js';
import { threadLogger, type ThreadLogRecord } from './thread-log.js';
import type { KvmFlavour } from '../kvm/host.js';
import { attachDevices, type DeviceSpec } from './devices.js';
import { CONTROL, VcpuLoop } from './vcpu-loop.js';
import { diagnoser } from './diagnose.js';
import type { StopReason } from './stop.js';

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
}

export type VcpuWorkerMessage = { type: 'ready' } | { type: 'paused' } | { type: 'resumed' } | ThreadLogRecord | { type: 'stopped'; reason: StopReason; exits: number };

function main(init: VcpuWorkerInit): void {
  const n = native();
  const log = threadLogger(parentPort!, init.logLevel);
  const vm = Vm.borrow(init.vmFd);
  const vcpu = Vcpu.attach(init.vcpuId, init.vcpuFd, init.runMappingId);
  const ram = GuestRam.attach(init.ramMappingId, init.memBytes);
  const mem = guestMemoryOf(ram, init.memBytes);
  let loop: VcpuLoop | undefined;
  const { pio, mmio } = attachDevices(init.devices, { vm, mem, log, requestStop: (r) => loop!.requestStop(r) });
  loop = new VcpuLoop({
    n, fd: init.vcpuFd, id: init.vcpuId, run: vcpu.run, pio, mmio,
    control: new Int32Array(init.control), log, diagnose: diagnoser(vcpu, mem, init.flavour, log),
    onPark: (parked) => parentPort!.postMessage({ type: parked ? 'paused' : 'resumed' } satisfies VcpuWorkerMessage),
  });
  n.setRunner(init.runMappingId, true);
  let reason: StopReason;
  try {
    parentPort!.postMessage({ type: 'ready' } satisfies VcpuWorkerMessage);
    // Threads are spawned while the machine is still being built; they run once start() opens the gate.
    const control = new Int32Array(init.control);
    while (Atomics.load(control, CONTROL.GO) === 0) Atomics.wait(control, CONTROL.GO, 0);
    reason = Atomics.load(control, CONTROL.STOP) !== 0 ? { kind: 'stopped' } : loop.run();
  } catch (e) {
    reason = { kind: 'kvm-failure', message: `vcpu${init.vcpuId}: ${(e as Error).message}` };
  } finally {
    n.setRunner(init.runMappingId, false);
  }
  if (log.isLevelEnabled('debug')) {
    // Where the guest was when it stopped: the first thing to look at after a timeout.
    try {
      const sregs = vcpu.getSregs();
      log.debug({ regs: vcpu.getRegs().toJSON(), cr0: sregs.get('cr0').toString(16), cr3: sregs.get('cr3').toString(16), efer: sregs.get('efer').toString(16), exits: loop.exits }, 'vcpu state at stop');
    } catch (e) {
      log.debug({ err: (e as Error).message }, 'vcpu state unavailable');
    }
  }
  parentPort!.postMessage({ type: 'stopped', reason, exits: loop.exits } satisfies VcpuWorkerMessage);
}

// A thread started on demand has its init as workerData; a pre-started one (vcpu-threads.cts) waits
// for it as its first message.
if (workerData) main(workerData as VcpuWorkerInit);
else parentPort!.once('message', main);
