/** nodevisor's library API. */
export { Machine, type MachineConfig } from './vmm/machine.js';
export { type StopReason, type VcpuStopState, exitStatus, describeStop, EXIT_STATUS } from './vmm/stop.js';
export { Kvm, Vm, Vcpu, GuestRam } from './kvm/kvm.js';
export { detectFlavour, type KvmFlavour } from './kvm/host.js';
export { VmmError, type VmmErrorCode } from './errors.js';
export { Bus, type BusDevice, type AccessSize } from './bus/bus.js';
export { GuestMemory } from './memory/guest-memory.js';
