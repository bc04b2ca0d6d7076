/**
 * A virtio-rng PCI device, main-thread side: owns the shared register files and the doorbell, and
 * runs the engine (devices/virtio/rng.ts) when the driver notifies. Its `spec` is what each vCPU
 * thread needs to build the register side (VirtioPciBar) over the same shared memory.
 */
import { Socket } from 'node:net';
import { closeSync } from 'node:fs';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { CommonConfig } from './common-config.js';
import { VIRTIO_F, VIRTIO_STATUS, bit } from './constants.js';
import { SplitQueue, VirtqError } from './queue.js';
import { VirtioRng } from './rng.js';
import { VirtioPciInterrupts, transportState, virtioPciConfig, BAR0 } from './pci-transport.js';
import type { PciConfigSpace } from '../pci/config-space.js';
import { native } from '../../native/binding.js';

const MSIX_VECTORS = 2; // config changes + the request queue

/** What a vCPU thread needs to serve this device's registers. */
export interface VirtioPciFunctionSpec {
  readonly kind: 'rng';
  readonly config: SharedArrayBuffer;
  readonly common: SharedArrayBuffer;
  readonly transport: SharedArrayBuffer;
  readonly doorbellFd: number;
  readonly msixVectors: number;
  readonly barSize: number;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[];
}

export class VirtioRngPci {
  readonly config: PciConfigSpace;
  readonly common: CommonConfig;
  readonly spec: VirtioPciFunctionSpec;
  readonly rng: VirtioRng;
  readonly #irq: VirtioPciInterrupts;
  readonly #doorbell: [number, number];
  #socket: Socket | undefined;
  #queue: SplitQueue | undefined;
  #queueKey = '';

  constructor(private readonly mem: GuestMemory, bar0: number, signalMsi: (lo: number, hi: number, data: number) => void, private readonly log: (msg: string) => void) {
    const { config, msixCap } = virtioPciConfig({ deviceId: VirtioRng.deviceId, numQueues: 1, msixVectors: MSIX_VECTORS, deviceConfigSize: 0, bar0 });
    this.config = config;
    const transport = transportState(MSIX_VECTORS);
    // The main thread's view never sees register writes (those happen on vCPU threads): no callbacks.
    this.common = new CommonConfig({ features: VirtioRng.features, queueMaxSizes: VirtioRng.queueMaxSizes, onQueueEnable: () => undefined, onReset() {}, onDriverOk() {} });
    this.#irq = new VirtioPciInterrupts(config, msixCap, transport, MSIX_VECTORS, signalMsi);
    this.#doorbell = pipeNonblocking();
    this.rng = new VirtioRng(mem, () => this.#irq.raise(this.common.queue(0).msixVector, 1));
    this.spec = {
      kind: 'rng', config: config.buffer, common: this.common.buffer, transport, doorbellFd: this.#doorbell[1], msixVectors: MSIX_VECTORS,
      barSize: BAR0.SIZE, features: VirtioRng.features, queueMaxSizes: VirtioRng.queueMaxSizes,
    };
  }

  /** Starts reading the doorbell on the main thread's event loop. */
  start(): void {
    const s = new Socket({ fd: this.#doorbell[0], readable: true, writable: false });
    s.on('data', () => this.process());
    s.on('error', () => {});
    this.#socket = s;
  }

  /** Serves the request queue if the driver has it running; a broken queue makes the device need a reset. */
  process(): void {
    const status = this.common.status;
    if (!(status & VIRTIO_STATUS.DRIVER_OK) || status & VIRTIO_STATUS.DEVICE_NEEDS_RESET) return;
    const q = this.common.queue(0);
    if (!q.enabled) return;
    try {
      const key = `${this.common.generation}:${q.size}:${q.desc}:${q.driver}:${q.device}`;
      if (key !== this.#queueKey) {
        // A new set-up (first use, or after a device reset): start from index 0 again.
        const negotiated = this.common.negotiated;
        this.#queue = new SplitQueue(this.mem, { size: q.size, descAddr: Number(q.desc), availAddr: Number(q.driver), usedAddr: Number(q.device) }, {
          indirect: (negotiated & bit(VIRTIO_F.RING_INDIRECT_DESC)) !== 0n,
          eventIdx: (negotiated & bit(VIRTIO_F.RING_EVENT_IDX)) !== 0n,
        });
        this.#queueKey = key;
      }
      this.rng.process(this.#queue!);
    } catch (e) {
      if (!(e instanceof VirtqError) && (e as { code?: string }).code !== 'GUEST_MEMORY') throw e;
      this.log(`virtio-rng: ${(e as Error).message}: device needs reset`);
      this.common.needsReset((e as Error).message);
      this.#irq.raise(this.common.configMsixVector, 2);
    }
  }

  close(): void {
    this.#socket?.destroy();
    try {
      closeSync(this.#doorbell[1]);
    } catch {
      /* already closed */
    }
  }
}

/** The doorbell: a pipe whose write end vCPU threads never block on (a full pipe already means "work queued"). */
function pipeNonblocking(): [number, number] {
  return native().pipe(true, true);
}
