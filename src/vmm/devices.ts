/**
 * The machine's device set as plain data (DeviceSpec), so that it can cross to every vCPU thread:
 * each thread builds its own device objects over the same shared register files and registers them
 * on its own buses. Nothing here runs on the exit path except what the devices themselves do.
 */
import { writeSync } from 'node:fs';
import type { ThreadLogger } from './thread-log.js';
import { Bus, allOnes, type BusDevice } from '../bus/bus.js';
import { I8042, I8042_COMMAND_PORT, I8042_DATA_PORT } from '../devices/legacy/i8042.js';
import { CmosRtc, CMOS_LEN, CMOS_PORT } from '../devices/legacy/cmos-rtc.js';
import { PciBus, PciConfigIo, PCI_CONFIG_LEN, PCI_CONFIG_PORT } from '../devices/pci/config-io.js';
import { PciConfigSpace } from '../devices/pci/config-space.js';
import { AcpiPower, ACPI_POWER_LEN, ACPI_POWER_PORT } from '../devices/acpi/power.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { virtioPciBar, type VirtioPciFunctionSpec } from '../devices/virtio/pci-transport.js';
import { Serial8250 } from '../devices/legacy/serial-8250.js';
import { IsaDebugExit } from '../devices/debug/isa-debug-exit.js';
import { ScratchDevice } from '../devices/debug/testdev.js';
import type { Vm } from '../kvm/kvm.js';
import { VmmError, hex } from '../errors.js';
import type { StopReason } from './stop.js';
import type { CoalescedRing } from '../kvm/coalesced-ring.js';

export type DeviceSpec =
  /** `coalesced`: KVM queues writes to THR (the base port) in the coalesced ring rather than exiting. */
  | { type: 'serial8250'; label: string; base: number; gsi: number; state: SharedArrayBuffer; outputFd: number; coalesced: boolean }
  | { type: 'i8042'; gsi: number; state: SharedArrayBuffer }
  | { type: 'cmos'; state: SharedArrayBuffer }
  | { type: 'pci'; address: SharedArrayBuffer; functions: { slot: number; config: SharedArrayBuffer; virtio?: VirtioPciFunctionSpec }[] }
  | { type: 'acpi-power' }
  | { type: 'sink'; label: string; base: number; len: number }
  | { type: 'isa-debug-exit'; base: number; len: number }
  | { type: 'scratch'; space: 'pio' | 'mmio'; label: string; base: number; len: number; state: SharedArrayBuffer };

export interface DeviceContext {
  readonly vm: Vm;
  readonly mem: GuestMemory;
  readonly log: ThreadLogger;
  /** This thread's view of the VM's coalesced I/O ring, where a device's zone is registered. */
  readonly ring?: CoalescedRing;
  requestStop(reason: StopReason): void;
}

/** The device whose writes KVM queues in the coalesced ring: what takes them, and which reads need not. */
export interface QueuedWrites {
  readonly take: () => void;
  /** Whether a port read may be answered with the writes left queued (taken later, in one batch). */
  readonly mayWait: (port: number, isRead: boolean) => boolean;
}

/** This thread's buses, and the device with coalesced writes (if any). */
export interface AttachedDevices {
  readonly pio: Bus;
  readonly mmio: Bus;
  readonly queued?: QueuedWrites;
}

/** How many distinct unclaimed addresses are logged before further ones are only counted. */
const UNCLAIMED_LOG_LIMIT = 256;

/** Builds this thread's buses from the machine's device specs. */
export function attachDevices(specs: readonly DeviceSpec[], ctx: DeviceContext): AttachedDevices {
  const pio = new Bus('pio');
  const mmio = new Bus('mmio');
  let queued: QueuedWrites | undefined;
  for (const spec of specs) {
    switch (spec.type) {
      case 'serial8250': {
        const irq = { setLevel: (high: boolean) => ctx.vm.irqLine(spec.gsi, high) };
        const serial = new Serial8250(spec.label, { irq, output: fdBytesWriter(spec.outputFd) }, spec.state);
        pio.insert(serial, spec.base, 8);
        const ring = ctx.ring;
        if (spec.coalesced && ring) {
          if (queued) throw new VmmError('INTERNAL', 'two devices with coalesced writes: the ring is taken for one only');
          const base = spec.base;
          queued = {
            take: () => serial.transmitQueued(ring, base),
            mayWait: (port, isRead) => isRead && port >= base && port < base + 8 && serial.mayLeaveQueued(port - base, ring.count),
          };
        }
        break;
      }
      case 'i8042': {
        const i8042 = new I8042({ irq: { setLevel: (high) => ctx.vm.irqLine(spec.gsi, high) }, onReset: () => ctx.requestStop({ kind: 'reboot' }) }, spec.state);
        pio.insert(i8042.port('data'), I8042_DATA_PORT, 1);
        pio.insert(i8042.port('command'), I8042_COMMAND_PORT, 1);
        break;
      }
      case 'cmos':
        pio.insert(new CmosRtc({}, spec.state), CMOS_PORT, CMOS_LEN);
        break;
      case 'pci': {
        const bus = new PciBus();
        for (const f of spec.functions) {
          const space = new PciConfigSpace(f.config);
          bus.add(f.slot, space, f.virtio ? [{ bar: 0, size: f.virtio.barSize, dev: virtioPciBar(f.virtio, ctx.mem, (msg) => ctx.log.warn({ slot: f.slot }, msg)) }] : []);
        }
        pio.insert(new PciConfigIo(bus, spec.address), PCI_CONFIG_PORT, PCI_CONFIG_LEN);
        mmio.dynamic = (addr, size) => bus.resolveMmio(addr, size);
        break;
      }
      case 'acpi-power':
        pio.insert(new AcpiPower({ onPowerOff: () => ctx.requestStop({ kind: 'poweroff' }), onReset: () => ctx.requestStop({ kind: 'reboot' }) }), ACPI_POWER_PORT, ACPI_POWER_LEN);
        break;
      case 'sink':
        pio.insert(sink(spec.label), spec.base, spec.len);
        break;
      case 'isa-debug-exit':
        pio.insert(new IsaDebugExit((value, status) => ctx.requestStop({ kind: 'debug-exit', value, status })), spec.base, spec.len);
        break;
      case 'scratch':
        (spec.space === 'pio' ? pio : mmio).insert(new ScratchDevice(spec.label, spec.len, spec.state), spec.base, spec.len);
        break;
    }
  }
  for (const bus of [pio, mmio]) bus.onUnclaimed = unclaimedLogger(bus.space, ctx.log);
  return { pio, mmio, queued };
}

/** A port range that exists and does nothing (e.g. port 0x80, which Linux writes to for I/O delays). */
function sink(label: string): BusDevice {
  return { debugLabel: label, read: (_o, size) => allOnes(size), write: () => {} };
}

/** Logs an unclaimed access once per address (a guest probing hardware is normal; a flood is not). */
function unclaimedLogger(space: 'pio' | 'mmio', log: ThreadLogger) {
  const seen = new Set<number>();
  return (addr: number, size: number, isWrite: boolean, value: number) => {
    if (seen.has(addr) || seen.size > UNCLAIMED_LOG_LIMIT) return;
    seen.add(addr);
    if (seen.size > UNCLAIMED_LOG_LIMIT) {
      log.info({ space }, `more than ${UNCLAIMED_LOG_LIMIT} unclaimed ${space} addresses: no longer logging them`);
      return;
    }
    // Info, not warn: a guest probing for hardware it may not have (Linux looks for COM2-4, Super
    // I/O chips, the DMA page registers) is normal and must not clutter a default run's stderr.
    if (isWrite) log.info({ space, addr: hex(addr), size, value: hex(value) }, `unclaimed ${space} write at ${hex(addr)} ignored`);
    else log.info({ space, addr: hex(addr), size }, `unclaimed ${space} read at ${hex(addr)} returns all ones`);
  };
}

/** A console sink that writes the bytes it is given to `fd` at once, waiting out EAGAIN on a non-blocking pipe. */
export function fdBytesWriter(fd: number): (bytes: Uint8Array) => void {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  return (bytes: Uint8Array) => {
    let done = 0;
    while (done < bytes.length) {
      try {
        done += writeSync(fd, bytes, done, bytes.length - done);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') {
          Atomics.wait(nap, 0, 0, 1);
          continue;
        }
        if (code === 'EPIPE' || code === 'EBADF') return; // nobody is reading the console any more
        throw e;
      }
    }
  };
}
