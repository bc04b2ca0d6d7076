/**
 * A virtual machine from a config: opens KVM, lays out memory, loads the image, creates the vCPUs
 * and devices, runs every vCPU on its own worker thread, and resolves with how the guest ended.
 * The main thread keeps its event loop free: it only reacts to stop reports, timers and kicks.
 * (With startOnMainThread, a one-vCPU guest starts on the main thread, between the event loop's
 * turns, and moves to its thread once it keeps running: main-thread-vcpu.ts.)
 */
import type { Readable } from 'node:stream';
import { EventEmitter } from 'node:events';
import { closeSync } from 'node:fs';
import type { Logger } from 'pino';
import { Kvm, GuestRam, type Vcpu, type Vm, type VmSetup } from '../kvm/kvm.js';
import { KVM_PIT_SPEAKER_DUMMY } from '../kvm/constants.js';
import { hostFlavour, type KvmFlavour } from '../kvm/host.js';
import { native } from '../native/binding.js';
import { lazyNet } from '../lazy-builtins.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { guestMemoryOf } from '../memory/ram-views.js';
import { KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR, MMIO_HOLE_START, ramLayout } from '../arch/x86_64/layout.js';
import { writeAcpiTables, IOAPIC_ADDR, type AcpiLayout } from '../arch/x86_64/acpi/tables.js';
import { writeMpTable } from '../arch/x86_64/mptable.js';
import { I8042, I8042_IRQ } from '../devices/legacy/i8042.js';
import { CmosRtc } from '../devices/legacy/cmos-rtc.js';
import { hostBridge } from '../devices/pci/host-bridge.js';
import { ACPI_RESET_REG, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL, ACPI_SLEEP_STATUS } from '../devices/acpi/power.js';
import { vcpuCpuid } from '../arch/x86_64/cpuid.js';
import { applyEntryState } from '../arch/x86_64/vcpu-setup.js';
import { checkImageFile, readImage, detectImageKind } from '../loader/kernel-file.js';
import { loadFlat } from '../loader/flat.js';
import { loadBzImage, type LinuxBootInput } from '../loader/bzimage.js';
import { loadPvh } from '../loader/pvh.js';
import type { EntryState } from '../loader/entry.js';
import { e820Map } from '../arch/x86_64/e820.js';
import { initVcpuState } from '../arch/x86_64/cpu-init.js';
import { Serial8250 } from '../devices/legacy/serial-8250.js';
import { ISA_DEBUG_EXIT_LEN, ISA_DEBUG_EXIT_PORT } from '../devices/debug/isa-debug-exit.js';
import { TESTDEV_MMIO_BASE, TESTDEV_MMIO_LEN, TESTDEV_PIO_BASE, TESTDEV_PIO_LEN } from '../devices/debug/testdev.js';
import { VmmError } from '../errors.js';
import { silentLogger, type LogLevel } from '../log.js';
import type { DeviceSpec } from './devices.js';
import { CONTROL } from './vcpu-loop.js';
import { ConsoleInput, type ConsoleSinkDevice } from './console-input.js';
import { VirtioRng } from '../devices/virtio/rng.js';
import { VirtioBlk } from '../devices/virtio/blk.js';
import { VirtioNet } from '../devices/virtio/net.js';
import { VirtioNinep } from '../devices/virtio/p9/device.js';
import { VirtioConsole } from '../devices/virtio/console.js';
import { FdSink } from './fd-sink.js';
import { AGENT_PORT_NAME } from '../runner/protocol.js';
import { VirtioPciDevice } from '../devices/virtio/pci-device.js';
import type { VirtioDevice } from '../devices/virtio/device.js';
import type { VirtioPciFunctionSpec } from '../devices/virtio/pci-transport.js';
import { MsiRouter } from '../kvm/msi-routes.js';
import { checkMachineConfig } from './config-check.js';
import type { VcpuWorkerInit, VcpuWorkerMessage } from './vcpu-worker.js';
import { vcpuThread } from './vcpu-threads.js';
import { MainThreadVcpu } from './main-thread-vcpu.js';
import type { StopReason, VcpuStopState } from './stop.js';
import { watchQueuedWrites } from './queued-writes-watch.js';

export interface MachineConfig {
  /** Path of the kernel or guest image. */
  readonly kernel: string;
  /** Guest RAM in bytes. */
  readonly memBytes: number;
  /** Kernel command line (bzImage and PVH kernels). */
  readonly cmdline?: string;
  /** Path of an initrd / initramfs image. */
  readonly initrd?: string;
  readonly cpus?: number;
  /** Adds a virtio-rng PCI device fed from the host's CSPRNG. */
  readonly rng?: boolean;
  /** virtio-blk disks (raw images), in PCI slot order. */
  readonly disks?: readonly { readonly path: string; readonly readOnly?: boolean; readonly id?: string }[];
  /** virtio-net NICs on host tap devices (created if missing). */
  readonly nets?: readonly { readonly tap: string; readonly mac?: string }[];
  /** Host folders shared over virtio-9p (mount -t 9p TAG /mnt). */
  readonly shares?: readonly { readonly hostDir: string; readonly tag: string; readonly readOnly?: boolean }[];
  /**
   * Adds a virtio-console port for the command runner's agent (after the virtio console, if any):
   * the host side is machine.agent, driven by a CommandRunner.
   */
  readonly agent?: boolean;
  /** The guest console: COM1 (ttyS0, the default) or a virtio-console device (hvc0). */
  readonly console?: 'serial' | 'virtio';
  /** Adds the scratch test device (ports 0xe0-0xe7, MMIO 0xd0000000) used by the test guests. */
  readonly testdev?: boolean;
  /** Ends the VM with a 'timeout' stop after this many seconds. */
  readonly timeoutSec?: number;
  /** Where COM1's output goes: an fd (the CLI passes 1), or by default the `console` stream. */
  readonly consoleFd?: number;
  /** Where COM1's input comes from (the CLI passes stdin); Ctrl-A x stops the VM. */
  readonly consoleInput?: Readable;
  /** Log level for the vCPU threads (they log to stderr). */
  readonly logLevel?: LogLevel;
  /**
   * With one vCPU: start it on this (the main) thread and move it to a vCPU thread once the guest
   * has run for 50 ms (main-thread-vcpu.ts), so that a guest that ends at once costs no thread
   * start-up (~50 ms of CPU). One guest runs there at a time; machines started together take turns.
   * A guest the event loop has no time for starts its thread (main-thread-vcpu.ts).
   */
  readonly startOnMainThread?: boolean;
  /**
   * Guest RAM's pages: 0 (default) as the host gives them; 1 transparent huge pages (madvise, and
   * RAM aligned to 2 MiB so that KVM can map the guest's pages 2 MiB at a time); 2 hugetlbfs.
   */
  readonly hugepages?: 0 | 1 | 2;
}

let machineCount = 0;

/** Optional fields given as undefined count as absent (callers spread optional CLI values). */
const stripUndefined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** The command line a Linux kernel gets when none is given. */
export const DEFAULT_CMDLINE = 'console=ttyS0 reboot=k panic=1';
/** The same, with the console on virtio-console (hvc0). */
export const DEFAULT_CMDLINE_VIRTIO_CONSOLE = 'console=hvc0 reboot=k panic=1';

/** Guest RAM kept in small pages from address 0 (see Machine.create). */
const LOW_SMALL_PAGES = 2 << 20;
/**
 * Every VM's first calls (Kvm.createVm): KVM's TSS and identity-map pages in the MMIO hole, the
 * in-kernel irqchip and a PIT whose speaker port is harmless.
 */
export const VM_SETUP: VmSetup = { tssAddr: KVM_TSS_ADDR, identityMapAddr: KVM_IDENTITY_MAP_ADDR, pit2Flags: KVM_PIT_SPEAKER_DUMMY };
/** Where the VMM places virtio BARs in the 32-bit PCI window: slot N's BAR 0 at base + N * 64 KiB. */
const VIRTIO_BAR_BASE = 0xe000_0000;
const VIRTIO_BAR_STRIDE = 0x1_0000;
/** PCI slots 1..31 are free for virtio functions (slot 0 is the host bridge). */
const MAX_PCI_SLOTS = 31;

/** The 64-bit PCI MMIO window the DSDT offers: 64 GiB from 64 GiB (above any RAM nodevisor maps). */
const PCI_MMIO64_WINDOW: readonly [bigint, bigint] = [1n << 36n, (1n << 37n) - 1n];

/** How long the end of a machine waits for a paused reader of its console stream (see #consoleDrained). */
const CONSOLE_DRAIN_MS = 500;
const COM1_BASE = 0x3f8;
const COM1_GSI = 4;

export type MachineState = 'created' | 'running' | 'paused' | 'stopping' | 'stopped';

/**
 * Events: 'state' (MachineState) on every change; 'console' (Buffer) for guest console output when
 * no consoleFd was given (the same bytes flow through `console`).
 */
export class Machine extends EventEmitter {
  readonly flavour: KvmFlavour;
  readonly mem: GuestMemory;
  readonly com1: Serial8250;
  /** The keyboard controller (host-side view: queueScancodes for Ctrl-Alt-Del). */
  readonly i8042: I8042;
  /** The virtio PCI functions, in slot order (slot = index + 1). */
  readonly virtio: VirtioPciDevice[] = [];
  readonly #msi: MsiRouter;
  /** The virtio console, with `console: 'virtio'`. */
  readonly virtioConsole: VirtioConsole | undefined;
  /** The command runner's channel, with `agent: true`: write() sends to the guest's agent. */
  readonly agent: VirtioConsole | undefined;
  /** Receives the agent's bytes; returns false to hold the guest until agent.resume(). */
  #agentOutput: (bytes: Uint8Array) => boolean = () => true;
  /** Called when the agent's input, after agent.write() returned false, has room again. */
  #agentInputRoom: () => void = () => {};
  /** The virtio console's output, flushed before the console fd closes. */
  #consoleSink: FdSink | undefined;
  /** Where the ACPI tables went (the RSDP is what boot protocols pass on). */
  acpi: AcpiLayout | undefined;
  readonly #control = new SharedArrayBuffer(CONTROL.WORDS * 4);
  readonly #controlWords = new Int32Array(this.#control);
  readonly #devices: DeviceSpec[] = [];
  /** Per vCPU: its worker thread, or a MainThreadVcpu (same events). */
  #workers: EventEmitter[] = [];
  #stop: StopReason | undefined;
  /** Where each vCPU was as it stopped, for a timeout's message. */
  readonly #stopStates: VcpuStopState[] = [];
  #closed = false;
  #state: MachineState = 'created';
  #resolve!: (r: StopReason) => void;
  readonly #done = new Promise<StopReason>((resolve) => (this.#resolve = resolve));
  readonly #parked = new Set<number>();
  #onAllParked: (() => void) | undefined;
  #input: ConsoleInput | undefined;
  #exited = 0;
  #allExited: (() => void) | undefined;
  #consoleWriteFd: number | undefined;
  /** Where the coalesced ring is in each vCPU's kvm_run mapping; undefined where KVM cannot coalesce port writes. */
  readonly #ringOffset: number | undefined;
  /** Guest console output as a stream (live, like a serial line: bytes nobody reads are dropped), unless consoleFd was given. */
  readonly console: Readable | undefined;

  private constructor(
    readonly config: MachineConfig,
    readonly log: Logger,
    private readonly vm: Vm,
    private readonly ram: GuestRam,
    private readonly vcpus: Vcpu[],
    hostModels: readonly VirtioDevice[],
  ) {
    super();
    this.flavour = hostFlavour();
    let consoleFd = config.consoleFd;
    if (consoleFd === undefined) {
      const [readFd, writeFd] = native().pipe(true);
      this.#consoleWriteFd = consoleFd = writeFd;
      const stream = new (lazyNet().Socket)({ fd: readFd, readable: true, writable: false });
      stream.on('data', (chunk: Buffer) => this.emit('console', chunk));
      this.console = stream;
    }
    this.mem = guestMemoryOf(ram, config.memBytes);
    this.com1 = new Serial8250('com1', { irq: { setLevel: (h) => vm.irqLine(COM1_GSI, h) }, output: () => {} });
    // Writes to COM1's THR queue in KVM's coalesced ring instead of exiting: a console byte costs one
    // exit (the driver's LSR read before it), not two. Taken at the next exit, before it is answered.
    this.#ringOffset = vm.kvm?.coalescedRingOffset;
    if (this.#ringOffset !== undefined) vm.registerCoalescedPio(COM1_BASE, 1);
    this.#devices.push({ type: 'serial8250', label: 'com1', base: COM1_BASE, gsi: COM1_GSI, state: this.com1.buffer, outputFd: consoleFd, coalesced: this.#ringOffset !== undefined });
    this.i8042 = new I8042({ irq: { setLevel: (h) => vm.irqLine(I8042_IRQ, h) }, onReset: () => this.#halt({ kind: 'reboot' }) });
    const low = Math.min(config.memBytes, MMIO_HOLE_START);
    this.#devices.push({ type: 'i8042', gsi: I8042_IRQ, state: this.i8042.buffer });
    this.#devices.push({ type: 'cmos', state: new CmosRtc({ memBytes: config.memBytes, lowMemBytes: low }).buffer });
    const pciFunctions: { slot: number; config: SharedArrayBuffer; virtio?: VirtioPciFunctionSpec }[] = [{ slot: 0, config: hostBridge().buffer }];
    this.#msi = new MsiRouter(vm, (msg) => log.info({}, msg));
    const models: VirtioDevice[] = [];
    if (config.console === 'virtio') {
      // Output goes where COM1's would; the guest's buffers wait while a slow reader catches up.
      const sink = new FdSink(consoleFd, () => this.virtioConsole?.resume());
      this.#consoleSink = sink;
      this.virtioConsole = new VirtioConsole({ output: (bytes) => sink.write(bytes) });
      models.push(this.virtioConsole);
    }
    if (config.agent) {
      this.agent = new VirtioConsole({ output: (bytes) => this.#agentOutput(bytes), inputRoom: () => this.#agentInputRoom(), portName: AGENT_PORT_NAME });
      models.push(this.agent);
    }
    models.push(...hostModels);
    for (const model of models) {
      const slot = this.virtio.length + 1;
      if (slot > MAX_PCI_SLOTS) throw new VmmError('BAD_CONFIG', `too many virtio devices: at most ${MAX_PCI_SLOTS}`);
      const dev = new VirtioPciDevice(model, { mem: this.mem, vm, msi: this.#msi, bar0: VIRTIO_BAR_BASE + slot * VIRTIO_BAR_STRIDE, log: log.child({ device: `virtio-${model.kind}`, slot }) });
      this.virtio.push(dev);
      pciFunctions.push({ slot, config: dev.config.buffer, virtio: dev.spec });
    }
    this.#devices.push({ type: 'pci', address: new SharedArrayBuffer(4), functions: pciFunctions });
    this.#devices.push({ type: 'acpi-power' });
    this.#devices.push({ type: 'sink', label: 'post-delay', base: 0x80, len: 1 });
    this.#devices.push({ type: 'isa-debug-exit', base: ISA_DEBUG_EXIT_PORT, len: ISA_DEBUG_EXIT_LEN });
    if (config.testdev) {
      this.#devices.push({ type: 'scratch', space: 'pio', label: 'testdev', base: TESTDEV_PIO_BASE, len: TESTDEV_PIO_LEN, state: new SharedArrayBuffer(TESTDEV_PIO_LEN) });
      this.#devices.push({ type: 'scratch', space: 'mmio', label: 'testdev-mmio', base: TESTDEV_MMIO_BASE, len: TESTDEV_MMIO_LEN, state: new SharedArrayBuffer(TESTDEV_MMIO_LEN) });
    }
  }

  /** Builds the VM (no guest code runs until start()). Throws VmmError with a one-line message. */
  static create(config: MachineConfig, log: Logger = silentLogger): Machine {
    checkMachineConfig(stripUndefined(config));
    log = log.child({ machine: ++machineCount });
    const image = readImage(config.kernel);
    const kind = detectImageKind(image);
    if (config.initrd !== undefined) {
      // Before reading it: an initrd larger than guest RAM cannot fit, however it is placed.
      const size = Number(checkImageFile(config.initrd, '--initrd').size);
      if (size >= config.memBytes) throw new VmmError('BAD_CONFIG', `--initrd ${config.initrd}: ${mib(size)} MiB does not fit in ${mib(config.memBytes)} MiB of guest RAM`);
    }
    const initrd = config.initrd !== undefined ? { bytes: readImage(config.initrd, '--initrd'), path: config.initrd } : undefined;
    if (initrd && kind === 'flat') throw new VmmError('BAD_CONFIG', `--initrd ${config.initrd}: a flat image takes no initrd`);
    // Nor a command line: it would be dropped without a word (loadFlat has nowhere to put it).
    if (config.cmdline !== undefined && kind === 'flat') throw new VmmError('BAD_CONFIG', `--cmdline ${JSON.stringify(config.cmdline)}: a flat image takes no command line (${config.kernel})`);
    const cpus = config.cpus ?? 1;
    // Host resources named by the config (disk images, taps, shared folders) are opened first, so
    // that a bad one is a clear error before any VM exists.
    const hostModels = openVirtioModels(config, log);
    let kvm: Kvm;
    try {
      kvm = Kvm.shared();
    } catch (e) {
      for (const m of hostModels) void m.close?.();
      throw e;
    }
    let vm: Vm | undefined;
    let ram: GuestRam | undefined;
    const vcpus: Vcpu[] = [];
    let machine: Machine | undefined;
    try {
      vm = kvm.createVm(VM_SETUP);
      ram = GuestRam.allocate(config.memBytes, config.hugepages ?? 0);
      // Below 2 MiB go the firmware tables, the boot parameters and a test guest's image: a few
      // KiB written at once by every machine. In small pages, that zeroes a few KiB, not a huge
      // page (~7 ms of every machine under nested emulation, with THP on: +15% machines started
      // per second there). Linux itself loads at 16 MiB, in huge pages as before.
      if (config.hugepages !== 2) ram.noHugePages(0, Math.min(LOW_SMALL_PAGES, config.memBytes));
      ramLayout(config.memBytes).forEach((r, slot) => vm!.setMemoryRegion(slot, r.gpa, r.size, ram!, r.offset));
      const mmapSize = kvm.vcpuMmapSize;
      const supported = kvm.supportedCpuid();
      for (let id = 0; id < cpus; id++) {
        const vcpu = vm.createVcpu(id, mmapSize);
        vcpus.push(vcpu);
        vcpu.setCpuid2(vcpuCpuid(supported, { apicId: id, cpus }));
        initVcpuState(vcpu, log);
      }
      const m = new Machine(config, log, vm, ram, vcpus, hostModels);
      machine = m;
      m.#spawn();
      // Firmware tables: ACPI (hardware-reduced) and, for acpi=off guests, an MP table.
      m.acpi = writeAcpiTables(m.mem, {
        cpus, ioapicId: cpus, sleepControlPort: ACPI_SLEEP_CONTROL, sleepStatusPort: ACPI_SLEEP_STATUS, resetPort: ACPI_RESET_REG,
        resetValue: ACPI_RESET_VALUE, s5SlpTyp: ACPI_S5_SLP_TYP, pciMmio32: [MMIO_HOLE_START, IOAPIC_ADDR - 1], pciMmio64: PCI_MMIO64_WINDOW,
      });
      writeMpTable(m.mem, { cpus, ioapicId: cpus });
      let entry: EntryState;
      if (kind === 'flat') {
        entry = loadFlat(m.mem, image, config.kernel);
      } else {
        const boot: LinuxBootInput = {
          mem: m.mem, memBytes: config.memBytes, image, path: config.kernel, cmdline: config.cmdline ?? (config.console === 'virtio' ? DEFAULT_CMDLINE_VIRTIO_CONSOLE : DEFAULT_CMDLINE),
          e820: e820Map(config.memBytes), rsdpAddr: m.acpi.rsdpAddr, ...(initrd ? { initrd } : {}),
        };
        entry = kind === 'bzimage' ? loadBzImage(boot) : loadPvh(boot);
      }
      applyEntryState(vcpus[0]!, m.mem, entry);
      return m;
    } catch (e) {
      if (machine) {
        // Let the threads that were already spawned leave without running, then release everything.
        machine.#stop ??= { kind: 'error', message: (e as Error).message };
        Atomics.store(machine.#controlWords, CONTROL.STOP, 1);
        machine.#openGate();
        machine.#closed = true;
        void Promise.all(machine.#workers.map((w) => new Promise((r) => w.once('exit', r)))).then(() => {
          for (const v of vcpus) v.close();
          vm?.close();
          ram?.release();
          for (const dev of machine!.virtio) void dev.close();
        });
        throw e;
      }
      for (const v of vcpus) v.close();
      vm?.close();
      ram?.release();
      for (const m of hostModels) void m.close?.();
      throw e;
    }
  }

  /**
   * Spawns one thread per vCPU. Called while the machine is being built, so that the threads load
   * their modules in parallel with kernel loading; they wait at CONTROL.GO until start().
   */
  #spawn(): void {
    for (const vcpu of this.vcpus) {
      const init: VcpuWorkerInit = {
        vmFd: this.vm.fd, vcpuId: vcpu.id, vcpuFd: vcpu.fd, runMappingId: vcpu.runMappingId,
        ramMappingId: this.ram.mappingId, memBytes: this.config.memBytes, devices: this.#devices, coalescedRingOffset: this.#ringOffset,
        control: this.#control, logLevel: this.config.logLevel ?? (this.log.level as LogLevel), flavour: this.flavour,
      };
      const onMain = this.config.startOnMainThread === true && this.vcpus.length === 1;
      const w: EventEmitter = onMain ? new MainThreadVcpu(init, vcpuThread) : vcpuThread(init);
      let reported = false;
      w.on('message', (msg: VcpuWorkerMessage) => {
        if (msg.type === 'stopped') {
          reported = true;
          if (msg.at) this.#stopStates.push(msg.at);
          this.log.debug({ vcpu: vcpu.id, exits: msg.exits, reason: msg.reason }, 'vcpu stopped');
          this.#halt(msg.reason);
        } else if (msg.type === 'paused') {
          this.#parked.add(vcpu.id);
          if (this.#parked.size === this.vcpus.length) this.#onAllParked?.();
        } else if (msg.type === 'log') {
          this.log[msg.level]({ vcpu: vcpu.id, ...msg.obj }, msg.msg);
        } else if (msg.type === 'resumed') {
          this.#parked.delete(vcpu.id);
        }
      });
      w.on('error', (e) => {
        this.log.error({ vcpu: vcpu.id, err: e }, 'vcpu thread failed');
        this.#halt({ kind: 'error', message: `vcpu${vcpu.id} thread failed: ${e.message}` });
      });
      w.on('exit', () => {
        if (!reported) this.#halt({ kind: 'error', message: `vcpu${vcpu.id} thread exited unexpectedly` });
        this.#exited++;
        this.#checkExited();
      });
      this.#workers.push(w);
    }
  }

  /** Runs `fn` once every vCPU thread has exited (now, if they already have). */
  #whenAllExited(fn: () => void): void {
    this.#allExited = fn;
    this.#checkExited();
  }

  #checkExited(): void {
    if (this.#exited === this.vcpus.length && this.#allExited) {
      const fn = this.#allExited;
      this.#allExited = undefined;
      fn();
    }
  }

  /** Lifecycle state; every change is also emitted as a 'state' event. */
  get state(): MachineState {
    return this.#state;
  }

  #setState(next: MachineState): void {
    if (next === this.#state) return;
    this.#state = next;
    this.emit('state', next);
  }

  /** Sets where the agent's bytes go (see `agent`). */
  onAgentOutput(handler: (bytes: Uint8Array) => boolean): void {
    this.#agentOutput = handler;
  }

  /** Sets what runs when the agent can take input again after agent.write() returned false. */
  onAgentInputRoom(handler: () => void): void {
    this.#agentInputRoom = handler;
  }

  /** Where console input goes: the virtio console when there is one, else COM1. */
  get #consoleDevice(): ConsoleSinkDevice {
    return this.virtioConsole ?? this.com1;
  }

  /** Starts every vCPU on its own thread; resolves with how the guest ended (same promise as wait()). */
  start(): Promise<StopReason> {
    if (this.#state !== 'created') throw new VmmError('BAD_CONFIG', `machine: start() in state ${this.#state}`);
    const input = this.config.consoleInput ? new ConsoleInput(this.config.consoleInput, this.#consoleDevice, () => this.#halt({ kind: 'stopped' })) : undefined;
    this.#input = input;
    let timer: NodeJS.Timeout | undefined;
    if (this.config.timeoutSec !== undefined) {
      timer = setTimeout(() => this.#halt({ kind: 'timeout', seconds: this.config.timeoutSec! }), this.config.timeoutSec * 1000);
    }
    const unwatch = this.#watchQueuedWrites();
    this.#whenAllExited(() => {
      if (timer) clearTimeout(timer);
      unwatch?.();
      input?.close();
      void this.#close().then(() => {
        this.#setState('stopped');
        const stop = this.#stop ?? { kind: 'stopped' };
        this.#resolve(stop.kind === 'timeout' ? { ...stop, vcpus: this.#stopStates.sort((a, b) => a.vcpu - b.vcpu) } : stop);
      });
    });
    this.#openGate();
    for (const dev of this.virtio) dev.start();
    this.#setState('running');
    return this.#done;
  }

  /** Has vCPU 0 kicked when console bytes stay queued in the coalesced ring with no exit to take them (queued-writes-watch.ts). */
  #watchQueuedWrites(): (() => void) | undefined {
    if (this.#ringOffset === undefined) return undefined;
    const vcpu = this.vcpus[0]!;
    return watchQueuedWrites(vcpu.coalescedRing(this.#ringOffset), () => native().kick(vcpu.runMappingId));
  }

  /** Resolves with how the guest ended. */
  wait(): Promise<StopReason> {
    return this.#done;
  }

  /** Parks every vCPU outside KVM_RUN; resolves once all of them are parked. Guest time stops for its code. */
  pause(): Promise<void> {
    if (this.#state !== 'running') return Promise.reject(new VmmError('BAD_CONFIG', `machine: pause() in state ${this.#state}`));
    const parked = new Promise<void>((resolve) => {
      this.#onAllParked = () => {
        this.#onAllParked = undefined;
        resolve();
      };
    });
    Atomics.store(this.#controlWords, CONTROL.PAUSE, 1);
    this.#kickAll();
    return parked.then(() => {
      if (this.#state === 'running') this.#setState('paused');
    });
  }

  /** Lets paused vCPUs run again. */
  resume(): void {
    if (this.#state !== 'paused') throw new VmmError('BAD_CONFIG', `machine: resume() in state ${this.#state}`);
    Atomics.store(this.#controlWords, CONTROL.PAUSE, 0);
    Atomics.notify(this.#controlWords, CONTROL.PAUSE);
    this.#tellMainThreadVcpus();
    this.#setState('running');
  }

  /** Sends bytes to the guest's console (COM1), as if typed; they wait while the guest's FIFO is full. */
  sendConsole(data: Uint8Array | string): void {
    (this.#input ??= new ConsoleInput(undefined, this.#consoleDevice, () => this.#halt({ kind: 'stopped' }))).push(typeof data === 'string' ? Buffer.from(data) : data);
  }

  /** Presses Ctrl-Alt-Del on the i8042 keyboard (set-1 scancodes, make then break), as Firecracker's SendCtrlAltDel. */
  sendCtrlAltDel(): void {
    if (this.#state !== 'running' && this.#state !== 'paused') throw new VmmError('BAD_CONFIG', `machine: Ctrl-Alt-Del in state ${this.#state}`);
    this.i8042.queueScancodes([0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
  }

  /**
   * Asks the guest to shut down (Ctrl-Alt-Del), and kills it if it has not stopped after `graceMs`.
   * Resolves with how it ended.
   */
  async shutdown(graceMs = 10_000): Promise<StopReason> {
    if (this.#state === 'created' || this.#state === 'stopping' || this.#state === 'stopped') {
      this.kill();
      return this.#done;
    }
    if (this.#state === 'paused') this.resume();
    this.sendCtrlAltDel();
    const timer = setTimeout(() => this.kill(), graceMs);
    try {
      return await this.#done;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the VM now (the guest gets no chance to shut down). */
  kill(): void {
    this.#halt({ kind: 'killed' });
  }

  /**
   * Asks the guest to shut down (Ctrl-Alt-Del, as Firecracker's SendCtrlAltDel) and forces it off
   * after `graceMs`; resolves with how it ended. Same as shutdown().
   */
  stop(graceMs = 10_000): Promise<StopReason> {
    return this.shutdown(graceMs);
  }

  /** Ends the VM now, recording `reason` as how it ended (the first reason given wins). */
  end(reason: StopReason): void {
    this.#halt(reason);
  }

  /** Stops every vCPU (the first reason given wins): sets STOP and kicks each out of KVM_RUN. */
  #halt(reason: StopReason): void {
    if (this.#state === 'created') {
      // Never started: open the gate with STOP set, so the waiting threads leave without running.
      this.#stop ??= reason;
      this.#whenAllExited(() => {
        void this.#close().then(() => {
          this.#setState('stopped');
          this.#resolve(this.#stop!);
        });
      });
      Atomics.store(this.#controlWords, CONTROL.STOP, 1);
      this.#openGate();
      return;
    }
    if (this.#state === 'stopped') return;
    this.#stop ??= reason;
    this.#setState('stopping');
    Atomics.store(this.#controlWords, CONTROL.STOP, 1);
    Atomics.notify(this.#controlWords, CONTROL.PAUSE);
    this.#kickAll();
  }

  /** Lets the vCPUs go: into the guest, or, with STOP set, out without running. */
  #openGate(): void {
    Atomics.store(this.#controlWords, CONTROL.GO, 1);
    Atomics.notify(this.#controlWords, CONTROL.GO);
    for (const w of this.#workers) if (w instanceof MainThreadVcpu) w.go();
  }

  /** After a change of CONTROL.PAUSE or STOP: vCPUs in KVM_RUN are kicked out to see it, and a main-thread one is told. */
  #kickAll(): void {
    const n = native();
    for (const v of this.vcpus) n.kick(v.runMappingId);
    this.#tellMainThreadVcpus();
  }

  #tellMainThreadVcpus(): void {
    for (const w of this.#workers) if (w instanceof MainThreadVcpu) w.controlChanged();
  }

  /**
   * Releases everything once the vCPU threads are gone. Device models finish their in-flight I/O
   * first (a disk write lands, and nothing writes into guest RAM after it is unmapped).
   */
  async #close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.virtio.map((d) => d.close()));
    await this.#consoleSink?.flushed();
    this.#msi.close();
    for (const v of this.vcpus) v.close();
    this.vm.close(); // after the vCPUs; RAM may go only once the VM (and its memory slots) is gone
    this.ram.release();
    for (const v of this.vcpus) native().releaseMapping(v.runMappingId);
    if (this.#consoleWriteFd !== undefined) {
      closeSync(this.#consoleWriteFd); // the console stream then ends
      await this.#consoleDrained();
    }
  }

  /**
   * Resolves once the console stream has passed on everything the guest wrote (its 'end'), so that
   * the guest's last output reaches listeners before wait() resolves: the vCPU threads wrote it to
   * the pipe before they stopped, but the main thread may learn of the stop first. A reader that
   * holds the stream paused gets CONSOLE_DRAIN_MS, not the power to hold the machine's end.
   */
  #consoleDrained(): Promise<void> {
    const stream = this.console;
    if (!stream || stream.readableEnded || stream.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, CONSOLE_DRAIN_MS);
      function done(): void {
        clearTimeout(timer);
        stream!.off('end', done).off('close', done);
        resolve();
      }
      stream.once('end', done).once('close', done);
    });
  }
}


/** The virtio device models that hold host resources, opened in PCI slot order (after the console). */
function openVirtioModels(config: MachineConfig, log: Logger): VirtioDevice[] {
  const models: VirtioDevice[] = [];
  try {
    if (config.rng) models.push(new VirtioRng());
    // One file written through two disks would be corrupted (two guest caches, one image). The
    // command line refuses a path given twice; a symbolic or hard link is the same file too.
    const writable = new Map<string, string>();
    for (const d of config.disks ?? []) {
      const blk = new VirtioBlk({ ...d, log });
      models.push(blk);
      if (blk.readOnly) continue;
      const first = writable.get(blk.file);
      if (first !== undefined) throw new VmmError('BAD_CONFIG', `disk images ${first} and ${d.path} are one file, both writable (make one read-only to share it)`);
      writable.set(blk.file, d.path);
    }
    for (const n of config.nets ?? []) models.push(new VirtioNet(n));
    for (const sh of config.shares ?? []) models.push(new VirtioNinep({ root: sh.hostDir, tag: sh.tag, readOnly: sh.readOnly ?? false }));
    return models;
  } catch (e) {
    for (const m of models) void m.close?.();
    throw e;
  }
}

const mib = (bytes: number): string => `${+(bytes / 2 ** 20).toFixed(1)}`;
