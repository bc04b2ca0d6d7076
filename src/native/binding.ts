/**
 * Loads the native addon and types its surface. The addon is a policy-free mirror of the KVM
 * ioctls (see native/src): fds are plain numbers, structs cross as byte buffers whose layouts are
 * defined once in src/kvm/layout.ts. Nothing outside src/kvm should import this module.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../package-root.js';

type Buf = ArrayBufferView | ArrayBuffer;

export interface NativeBinding {
  // system (/dev/kvm)
  open(path?: string): number;
  close(fd: number): void;
  /** Closes fd on the addon's release thread: for an fd whose close may tear a VM down (slow). */
  closeLater(fd: number): void;
  apiVersion(kvmFd: number): number;
  checkExtension(fd: number, cap: number): number;
  vcpuMmapSize(kvmFd: number): number;
  supportedCpuid(kvmFd: number): Uint8Array;
  msrIndexList(kvmFd: number): Uint32Array;
  createVm(kvmFd: number, type?: number): number;
  /**
   * KVM_CREATE_VM on a thread of the addon's: a job for finishVmCreation, which returns the VM fd.
   * With the last three, that thread also calls KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR,
   * KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 on it, in that order.
   */
  startVmCreation(kvmFd: number, type?: number, tssAddr?: number, identityMapAddr?: number, pit2Flags?: number): number;
  finishVmCreation(job: number): number;
  // VM
  setUserMemoryRegion(vmFd: number, slot: number, flags: number, gpa: number, size: number, mappingId: number, mappingOffset: number): void;
  setTssAddr(vmFd: number, addr: number): void;
  setIdentityMapAddr(vmFd: number, addr: number): void;
  createIrqchip(vmFd: number): void;
  createPit2(vmFd: number, flags: number): void;
  irqLine(vmFd: number, gsi: number, level: number): void;
  irqfd(vmFd: number, eventFd: number, gsi: number, flags?: number, resampleFd?: number): void;
  ioeventfd(vmFd: number, addr: number, len: number, eventFd: number, flags?: number, datamatch?: number | bigint): void;
  registerCoalescedIo(vmFd: number, addr: number, size: number, pio: 0 | 1): void;
  signalMsi(vmFd: number, addressLo: number, addressHi: number, data: number, flags?: number, devid?: number): number;
  setGsiRouting(vmFd: number, entries: Buf): void;
  getIrqchip(vmFd: number, buf: Buf): void;
  setIrqchip(vmFd: number, buf: Buf): void;
  getPit2(vmFd: number, buf: Buf): void;
  setPit2(vmFd: number, buf: Buf): void;
  getClock(vmFd: number, buf: Buf): void;
  setClock(vmFd: number, buf: Buf): void;
  createVcpu(vmFd: number, id: number): number;
  // vCPU
  run(vcpuFd: number): number;
  getRegs(fd: number, buf: Buf): void;
  setRegs(fd: number, buf: Buf): void;
  getSregs(fd: number, buf: Buf): void;
  setSregs(fd: number, buf: Buf): void;
  getFpu(fd: number, buf: Buf): void;
  setFpu(fd: number, buf: Buf): void;
  getLapic(fd: number, buf: Buf): void;
  setLapic(fd: number, buf: Buf): void;
  getXsave(fd: number, buf: Buf): void;
  setXsave(fd: number, buf: Buf): void;
  getXcrs(fd: number, buf: Buf): void;
  setXcrs(fd: number, buf: Buf): void;
  getMpState(fd: number, buf: Buf): void;
  setMpState(fd: number, buf: Buf): void;
  getVcpuEvents(fd: number, buf: Buf): void;
  setVcpuEvents(fd: number, buf: Buf): void;
  setCpuid2(fd: number, entries: Buf): void;
  getMsrs(fd: number, entries: Buf): number;
  setMsrs(fd: number, entries: Buf): number;
  // mappings (process-wide registry; views are SharedArrayBuffers over the mapping, made per isolate)
  mapAnonymous(bytes: number, hugepages?: 0 | 1 | 2): number;
  mapVcpuRun(vcpuFd: number, bytes: number): number;
  /** Guest RAM: a SharedArrayBuffer (outside V8's external-memory count); kvm_run: an ArrayBuffer. */
  mappingBuffer(id: number, offset?: number, length?: number): SharedArrayBuffer | ArrayBuffer;
  /** madvise(2) of [offset, offset+length) of a mapping; `advice` is MADV_* (kvm/kvm.ts). */
  adviseMapping(id: number, offset: number, length: number, advice: number): void;
  /**
   * Drops the registry's reference: the pages go with the last view. A kvm_run mapping is also
   * swapped for zeros at once, off the calling thread, so that its VM goes now (the kernel keeps a
   * VM while a vCPU of it is mapped), not at some later garbage collection.
   */
  releaseMapping(id: number): void;
  setRunner(runMappingId: number, isRunner: boolean): void;
  kick(runMappingId: number): void;
  /**
   * Runs `slice` before every poll of this thread's event loop that would wait, with the vCPU of
   * that kvm_run kicked out of KVM_RUN as soon as the loop has work (native/src/loop_vcpu.cc). One at
   * a time per process (EBUSY).
   */
  loopVcpuStart(runMappingId: number, slice: () => void): void;
  loopVcpuStop(): void;
  // eventfd
  eventfd(initval?: number, nonblock?: boolean): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, value?: number | bigint): void;
  pipe(nonblockRead?: boolean, nonblockWrite?: boolean): [number, number];
  /** Calls onReadable on the main thread while fd is readable (level-triggered); returns stop(). An error stops the watch and is passed as the argument. */
  watchFd(fd: number, onReadable: (error?: string) => void): () => void;
  /** Attaches to (or creates) tap interface `name`, non-blocking; with vnetHdr frames carry a 12-byte virtio_net_hdr_v1. */
  openTap(name: string, vnetHdr?: boolean): { fd: number; name: string };
  /** TUNSETOFFLOAD: the TUN_F_* offloads the kernel may leave to us on frames read from tap `fd`. */
  setTapOffload(fd: number, flags: number): void;
  /** preadv2(RWF_NOWAIT): bytes read, or -errno (-EAGAIN: not all cached; -EOPNOTSUPP: the file system cannot). Never blocks; with mayWait a plain preadv (tmpfs). */
  preadvNoWait(fd: number, views: Uint8Array[], position: number, mayWait?: boolean): number;
  /** A plain (blocking) pwritev: bytes, or -errno. Only for images on tmpfs, where a write is a copy. */
  pwritevAt(fd: number, views: Uint8Array[], position: number): number;
  /** read(2) into one view: bytes, or -errno (-EAGAIN on a non-blocking fd is not thrown). The per-frame tap receive path. */
  readFd(fd: number, view: Uint8Array): number;
  /** write(2) of `count` ranges of `bytes` ((offset, length) pairs in `spans`), one call each, in order; results[i]: bytes or -errno (-ERANGE: outside `bytes`). Frames to a tap. */
  writeEach(fd: number, bytes: Uint8Array, spans: Uint32Array, count: number, results: Int32Array): void;

  readonly layout: Readonly<Record<string, number>>;
  readonly kickSignal: number;
}

/** The addon's path: NODEVISOR_ADDON, else the cmake-js build, else the node-gyp build. */
export function addonPath(): string {
  if (process.env.NODEVISOR_ADDON) return path.resolve(process.env.NODEVISOR_ADDON);
  const root = packageRoot(import.meta.url);
  const candidates = [path.join(root, 'native', 'build', 'Release', 'nodevisor.node'), path.join(root, 'build', 'Release', 'nodevisor.node')];
  return candidates.find((p) => existsSync(p)) ?? candidates[0]!;
}

let cached: NativeBinding | undefined;

/** The addon, loaded once per thread (it is context-aware, so every worker loads its own instance). */
export function native(): NativeBinding {
  if (cached) return cached;
  const file = addonPath();
  // process.dlopen, not require(): require resolves the path first (a stat and a realpath of every
  // folder in it), which costs `run` more than loading the addon under nested emulation.
  const m = { exports: {} as NativeBinding };
  try {
    process.dlopen(m, file);
  } catch (e) {
    if (!existsSync(file)) {
      throw Object.assign(new Error(`native addon not built: ${file} is missing (run \`npm install\` or \`npm run build:native\`)`), { code: 'ENOADDON' });
    }
    throw e;
  }
  cached = m.exports;
  return cached;
}
