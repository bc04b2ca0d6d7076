/**
 * Typed wrappers over the addon: Kvm (the /dev/kvm system fd), Vm, Vcpu and GuestRam. One method
 * per ioctl, no policy beyond turning common failures into messages a user can act on.
 */
import { native, type NativeBinding } from '../native/binding.js';
import { VmmError, isErrno } from '../errors.js';
import { KVM_API_VERSION, KVM_CAP } from './constants.js';
import { SIZEOF } from './layout.js';
import { KvmRegs, KvmSregs } from './regs.js';
import { nowMs } from '../clock.js';
import { CoalescedRing, COALESCED_RING_BYTES } from './coalesced-ring.js';

/** Capabilities nodevisor cannot work without. */
export const REQUIRED_CAPS = [
  'IRQCHIP', 'USER_MEMORY', 'SET_TSS_ADDR', 'PIT2', 'IRQFD', 'IOEVENTFD', 'IRQ_ROUTING', 'EXT_CPUID', 'IMMEDIATE_EXIT', 'MP_STATE',
] as const satisfies readonly (keyof typeof KVM_CAP)[];

export class Kvm {
  private constructor(readonly fd: number, readonly path: string, private readonly n: NativeBinding) {}

  /**
   * Opens /dev/kvm (or NODEVISOR_KVM_DEVICE), turning the usual failures into one-line hints, and
   * checks the API version.
   */
  static open(path = process.env.NODEVISOR_KVM_DEVICE ?? '/dev/kvm'): Kvm {
    let n: NativeBinding;
    try {
      n = native();
    } catch (e) {
      throw new VmmError('INTERNAL', (e as Error).message, { cause: e });
    }
    let fd: number;
    try {
      fd = n.open(path);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw new VmmError('KVM_UNAVAILABLE', `${path}: no such device — KVM is not available on this host (no KVM module has created it: load kvm_intel, kvm_amd or kvm_pvm, or enable nested virtualization)`, { cause: e });
      if (isErrno(e, 'EACCES') || isErrno(e, 'EPERM')) throw new VmmError('KVM_PERMISSION', `${path}: permission denied — add yourself to the kvm group (sudo usermod -aG kvm $USER) and log in again`, { cause: e });
      if (isErrno(e)) throw new VmmError('KVM_UNAVAILABLE', `${path}: ${e.message.replace(/^[^:]*: /, '')}`, { cause: e });
      throw e;
    }
    const kvm = new Kvm(fd, path, n);
    let version: number;
    try {
      version = n.apiVersion(fd);
    } catch (e) {
      kvm.close();
      throw new VmmError('KVM_UNAVAILABLE', `${path}: not a KVM device (KVM_GET_API_VERSION: ${isErrno(e) ? e.code : (e as Error).message})`, { cause: e });
    }
    if (version !== KVM_API_VERSION) {
      kvm.close();
      throw new VmmError('KVM_API_VERSION', `${path}: KVM API version ${version}, expected ${KVM_API_VERSION}`);
    }
    return kvm;
  }

  /**
   * The process's /dev/kvm (or NODEVISOR_KVM_DEVICE), opened and checked (API version and
   * REQUIRED_CAPS) once for all the machines it runs, as QEMU and Firecracker hold one for their VMs.
   * Each machine opening its own cost it an open, a close and a dozen ioctls, for answers that do not
   * change while the process runs. Never closed: it goes with the process. A failure is not kept:
   * the next call tries again.
   */
  static shared(path = process.env.NODEVISOR_KVM_DEVICE ?? '/dev/kvm'): Kvm {
    let kvm = sharedKvm.get(path);
    if (kvm) return kvm;
    kvm = Kvm.open(path);
    try {
      kvm.requireCapabilities();
    } catch (e) {
      kvm.close();
      throw e;
    }
    sharedKvm.set(path, kvm);
    return kvm;
  }

  checkExtension(cap: keyof typeof KVM_CAP): number {
    return this.n.checkExtension(this.fd, KVM_CAP[cap]);
  }

  /** Throws "KVM_CAP_X missing" for the first required capability the host lacks. */
  requireCapabilities(caps: readonly (keyof typeof KVM_CAP)[] = REQUIRED_CAPS): void {
    for (const cap of caps) {
      if (this.checkExtension(cap) <= 0) throw new VmmError('KVM_CAPABILITY', `${this.path}: KVM_CAP_${cap} missing — this host's KVM cannot run nodevisor guests`);
    }
  }

  // The host's answers below are the same for every VM: asked once per Kvm.
  #vcpuMmapSize: number | undefined;
  #supportedCpuid: Uint8Array | undefined;
  #coalescedRingOffset: number | null | undefined;

  get vcpuMmapSize(): number {
    return (this.#vcpuMmapSize ??= this.n.vcpuMmapSize(this.fd));
  }

  /**
   * Byte offset of the coalesced ring in a vCPU's kvm_run mapping (KVM_CAP_COALESCED_MMIO gives its
   * page), or undefined when KVM cannot coalesce port writes (KVM_CAP_COALESCED_PIO) or the mapping
   * would not hold the page.
   */
  get coalescedRingOffset(): number | undefined {
    if (this.#coalescedRingOffset === undefined) {
      const page = this.checkExtension('COALESCED_MMIO');
      const offset = page * COALESCED_RING_BYTES;
      const usable = page > 0 && this.checkExtension('COALESCED_PIO') > 0 && offset + COALESCED_RING_BYTES <= this.vcpuMmapSize;
      this.#coalescedRingOffset = usable ? offset : null;
    }
    return this.#coalescedRingOffset ?? undefined;
  }

  /** KVM_GET_SUPPORTED_CPUID's entries (kvm_cpuid2 bytes): the same array each call, not to be modified. */
  supportedCpuid(): Uint8Array {
    return (this.#supportedCpuid ??= this.n.supportedCpuid(this.fd));
  }

  msrIndexList(): Uint32Array {
    return this.n.msrIndexList(this.fd);
  }

  /**
   * A new VM, given the x86 set-up every VM of ours starts with (`setup`). When machines come in a
   * burst (this call less than BURST_MS after the last), the next one's VM is made and set up
   * meanwhile, on another core (native startVmCreation): KVM_CREATE_VM and those four calls take
   * the kernel milliseconds, a third of Machine.create under nested emulation, and the burst's next
   * create then finds its VM ready. A spare nobody takes within BURST_MS is closed.
   */
  createVm(setup: VmSetup): Vm {
    const now = nowMs();
    const spareFd = takeSpareVm(this.n, setup);
    let vm: Vm;
    if (spareFd !== undefined) vm = new Vm(spareFd, this, this.n);
    else {
      vm = new Vm(this.n.createVm(this.fd, 0), this, this.n);
      try {
        vm.setTssAddr(setup.tssAddr);
        vm.setIdentityMapAddr(setup.identityMapAddr);
        vm.createIrqchip();
        vm.createPit2(setup.pit2Flags);
      } catch (e) {
        this.n.closeLater(vm.fd);
        throw e;
      }
    }
    if (now - lastVmCreatedAt < BURST_MS) makeSpareVm(this.n, this.fd, setup);
    lastVmCreatedAt = now;
    return vm;
  }

  /**
   * Starts making the next VM now, on another core, for a caller that knows one is coming and has
   * other work to do first (`run` parsing its command line). The next createVm with the same
   * `setup` takes it; if none comes within BURST_MS it is closed. Failing to start it only means
   * createVm makes its own.
   */
  prepareVm(setup: VmSetup): void {
    makeSpareVm(this.n, this.fd, setup);
  }

  close(): void {
    this.n.close(this.fd);
  }
}

const sharedKvm = new Map<string, Kvm>();

/** Machine creations closer together than this are a burst (see Kvm.createVm). */
export const BURST_MS = 1000;
let lastVmCreatedAt = -Infinity;
/** The VM being made for the burst's next machine (a native job), its set-up, and the timer that gives up on it. */
let spare: { job: number; setup: VmSetup; expiry: NodeJS.Timeout } | undefined;

/**
 * What every VM is given before anything else: KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
 * KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 (with pit2Flags), in that order (the machine's layout
 * says where: src/vmm/machine.ts).
 */
export interface VmSetup {
  readonly tssAddr: number;
  readonly identityMapAddr: number;
  readonly pit2Flags: number;
}

const sameSetup = (a: VmSetup, b: VmSetup): boolean => a.tssAddr === b.tssAddr && a.identityMapAddr === b.identityMapAddr && a.pit2Flags === b.pit2Flags;

function makeSpareVm(n: NativeBinding, kvmFd: number, setup: VmSetup): void {
  if (spare) return;
  let job: number;
  try {
    job = n.startVmCreation(kvmFd, 0, setup.tssAddr, setup.identityMapAddr, setup.pit2Flags);
  } catch {
    return; // no thread or fd to spare: the next machine makes its VM itself
  }
  // Closing it is the VM's teardown (tens of ms under nested KVM): not on this thread.
  const expiry = setTimeout(() => {
    const fd = takeSpareVm(n);
    if (fd !== undefined) n.closeLater(fd);
  }, BURST_MS).unref();
  spare = { job, setup, expiry };
}

/**
 * The spare VM's fd, or undefined when there is none, making it failed (the caller makes one, and
 * sees why), or it was set up otherwise than `setup` asks (then closed). No `setup`: any.
 */
function takeSpareVm(n: NativeBinding, setup?: VmSetup): number | undefined {
  if (!spare) return undefined;
  const { job, expiry } = spare;
  const fits = setup === undefined || sameSetup(spare.setup, setup);
  spare = undefined;
  clearTimeout(expiry);
  let fd: number;
  try {
    fd = n.finishVmCreation(job);
  } catch {
    return undefined;
  }
  if (fits) return fd;
  n.closeLater(fd);
  return undefined;
}

/** madvise(2) advice (Linux uapi asm-generic/mman-common.h). */
export const MADV_NOHUGEPAGE = 15;

/** The largest ArrayBuffer a view of guest RAM uses; bigger RAM is viewed in chunks of this size. */
export const RAM_VIEW_CHUNK = 1 << 30;

/** Guest RAM: anonymous memory mapped once per process, viewed by each thread through its own ArrayBuffers. */
export class GuestRam {
  private constructor(readonly mappingId: number, readonly size: number, private readonly n: NativeBinding) {}

  /**
   * Keeps [offset, offset+length) in small pages (MADV_NOHUGEPAGE), so that a first write there
   * zeroes 4 KiB, not a 2 MiB huge page. Best effort: a kernel without transparent huge pages has
   * nothing to keep apart.
   */
  noHugePages(offset: number, length: number): void {
    try {
      this.n.adviseMapping(this.mappingId, offset, length, MADV_NOHUGEPAGE);
    } catch {
      // EINVAL: no THP in this kernel (or hugetlbfs memory, which is never split)
    }
  }

  /** A view of [offset, offset+length) of the mapping (length at most 2 GiB). */
  view(offset: number, length: number): Uint8Array {
    return new Uint8Array(this.n.mappingBuffer(this.mappingId, offset, length));
  }

  /** Maps `size` bytes; `hugepages`: 0 none, 1 transparent huge pages (madvise), 2 hugetlbfs. */
  static allocate(size: number, hugepages: 0 | 1 | 2 = 0): GuestRam {
    const n = native();
    try {
      return new GuestRam(n.mapAnonymous(size, hugepages), size, n);
    } catch (e) {
      if (isErrno(e)) throw new VmmError('MEMORY', `cannot map ${size} bytes of guest memory: ${e.message.replace(/^[^:]*: /, '')}`, { cause: e });
      throw e;
    }
  }

  /** Another thread's view of an existing mapping (the id crosses threads as a number). */
  static attach(mappingId: number, size: number): GuestRam {
    return new GuestRam(mappingId, size, native());
  }

  /** Drops the process-wide reference; pages go when the last view is collected. Close the VM first. */
  release(): void {
    this.n.releaseMapping(this.mappingId);
  }
}

export class Vm {
  constructor(readonly fd: number, readonly kvm: Kvm | undefined, private readonly n: NativeBinding = native()) {}

  /** A Vm over an fd owned by another thread (workers): never closes it. */
  static borrow(fd: number): Vm {
    return new Vm(fd, undefined);
  }

  checkExtension(cap: keyof typeof KVM_CAP): number {
    return this.n.checkExtension(this.fd, KVM_CAP[cap]);
  }

  /** KVM_SET_USER_MEMORY_REGION: maps [offset, offset+size) of `ram` at guest-physical `gpa`. */
  setMemoryRegion(slot: number, gpa: number, size: number, ram: GuestRam, offset = 0, flags = 0): void {
    this.n.setUserMemoryRegion(this.fd, slot, flags, gpa, size, ram.mappingId, offset);
  }

  setTssAddr(addr: number): void { this.n.setTssAddr(this.fd, addr); }
  setIdentityMapAddr(addr: number): void { this.n.setIdentityMapAddr(this.fd, addr); }
  createIrqchip(): void { this.n.createIrqchip(this.fd); }
  createPit2(flags: number): void { this.n.createPit2(this.fd, flags); }
  irqLine(gsi: number, level: boolean): void { this.n.irqLine(this.fd, gsi, level ? 1 : 0); }
  irqfd(eventFd: number, gsi: number, flags = 0, resampleFd = 0): void { this.n.irqfd(this.fd, eventFd, gsi, flags, resampleFd); }
  /** KVM_REGISTER_COALESCED_MMIO for ports [port, port+size): writes there queue in the coalesced ring instead of exiting. */
  registerCoalescedPio(port: number, size: number): void {
    this.n.registerCoalescedIo(this.fd, port, size, 1);
  }

  ioeventfd(addr: number, len: number, eventFd: number, flags = 0, datamatch: number | bigint = 0): void {
    this.n.ioeventfd(this.fd, addr, len, eventFd, flags, datamatch);
  }
  signalMsi(addressLo: number, addressHi: number, data: number): number { return this.n.signalMsi(this.fd, addressLo, addressHi, data, 0, 0); }
  setGsiRouting(entries: Uint8Array): void { this.n.setGsiRouting(this.fd, entries); }

  createVcpu(id: number, mmapSize: number): Vcpu {
    const fd = this.n.createVcpu(this.fd, id);
    return new Vcpu(id, fd, this.n.mapVcpuRun(fd, mmapSize), this.n);
  }

  close(): void {
    this.n.close(this.fd);
  }
}

export class Vcpu {
  /** The kvm_run area (exit reason and data), shared with the kernel; valid in this thread. */
  readonly run: ArrayBuffer;

  constructor(readonly id: number, readonly fd: number, readonly runMappingId: number, private readonly n: NativeBinding = native()) {
    this.run = n.mappingBuffer(runMappingId) as ArrayBuffer; // kvm_run mappings are viewed as ArrayBuffers
  }

  /** The same vCPU seen from another thread (fd and kvm_run mapping are process-wide). */
  static attach(id: number, fd: number, runMappingId: number): Vcpu {
    return new Vcpu(id, fd, runMappingId);
  }

  /** This thread's view of the VM's coalesced ring, at `offset` in the kvm_run mapping (Kvm.coalescedRingOffset). */
  coalescedRing(offset: number): CoalescedRing {
    return new CoalescedRing(this.n.mappingBuffer(this.runMappingId, offset, COALESCED_RING_BYTES) as ArrayBuffer);
  }

  getRegs(): KvmRegs { const r = new KvmRegs(); this.n.getRegs(this.fd, r.bytes); return r; }
  setRegs(r: KvmRegs): void { this.n.setRegs(this.fd, r.bytes); }
  getSregs(): KvmSregs { const s = new KvmSregs(); this.n.getSregs(this.fd, s.bytes); return s; }
  setSregs(s: KvmSregs): void { this.n.setSregs(this.fd, s.bytes); }
  getFpu(): Uint8Array { const b = new Uint8Array(SIZEOF.kvm_fpu); this.n.getFpu(this.fd, b); return b; }
  setFpu(b: Uint8Array): void { this.n.setFpu(this.fd, b); }
  getLapic(): Uint8Array { const b = new Uint8Array(SIZEOF.kvm_lapic_state); this.n.getLapic(this.fd, b); return b; }
  setLapic(b: Uint8Array): void { this.n.setLapic(this.fd, b); }
  getXsave(): Uint8Array { const b = new Uint8Array(SIZEOF.kvm_xsave); this.n.getXsave(this.fd, b); return b; }
  setXsave(b: Uint8Array): void { this.n.setXsave(this.fd, b); }
  getXcrs(): Uint8Array { const b = new Uint8Array(SIZEOF.kvm_xcrs); this.n.getXcrs(this.fd, b); return b; }
  setXcrs(b: Uint8Array): void { this.n.setXcrs(this.fd, b); }
  getVcpuEvents(): Uint8Array { const b = new Uint8Array(SIZEOF.kvm_vcpu_events); this.n.getVcpuEvents(this.fd, b); return b; }
  setVcpuEvents(b: Uint8Array): void { this.n.setVcpuEvents(this.fd, b); }
  getMpState(): number { const b = new Uint32Array(1); this.n.getMpState(this.fd, b); return b[0]!; }
  setMpState(state: number): void { this.n.setMpState(this.fd, Uint32Array.of(state)); }
  setCpuid2(entries: Uint8Array): void { this.n.setCpuid2(this.fd, entries); }

  /** KVM_SET_MSRS with (index, value) pairs; returns how many KVM accepted. */
  setMsrs(msrs: ReadonlyArray<readonly [number, bigint]>): number {
    const buf = new DataView(new ArrayBuffer(msrs.length * SIZEOF.kvm_msr_entry));
    msrs.forEach(([index, value], i) => {
      buf.setUint32(i * SIZEOF.kvm_msr_entry, index, true);
      buf.setBigUint64(i * SIZEOF.kvm_msr_entry + 8, value, true);
    });
    return this.n.setMsrs(this.fd, buf);
  }

  /** KVM_GET_MSRS for the given indices; a Map of those KVM returned. */
  getMsrs(indices: readonly number[]): Map<number, bigint> {
    const buf = new DataView(new ArrayBuffer(indices.length * SIZEOF.kvm_msr_entry));
    indices.forEach((index, i) => buf.setUint32(i * SIZEOF.kvm_msr_entry, index, true));
    const n = this.n.getMsrs(this.fd, buf);
    const out = new Map<number, bigint>();
    for (let i = 0; i < n; i++) out.set(buf.getUint32(i * SIZEOF.kvm_msr_entry, true), buf.getBigUint64(i * SIZEOF.kvm_msr_entry + 8, true));
    return out;
  }

  close(): void {
    this.n.close(this.fd);
  }
}
