/**
 * A virtio PCI function, main-thread side: owns the shared register files, the notification
 * eventfds and the MSI-X delivery, and drives one device model (blk, net, console, 9p, rng).
 *
 * The data path never leaves the kernel on the guest's side: a queue notification is a KVM
 * ioeventfd on the notify area (the vCPU re-enters the guest at once), which the main thread's event
 * loop sees as a readable eventfd; the model does its work and the interrupt goes back through an
 * irqfd. Status changes (DRIVER_OK, reset) happen on vCPU threads; they signal a control eventfd and
 * the main thread reconciles the model with the registers (activate, reset).
 */
import { closeSync } from 'node:fs';
import type { GuestMemory } from '../../memory/guest-memory.js';
import type { Vm } from '../../kvm/kvm.js';
import type { MsiRouter } from '../../kvm/msi-routes.js';
import { native } from '../../native/binding.js';
import { CommonConfig } from './common-config.js';
import { VIRTIO_F, VIRTIO_MSI_NO_VECTOR, VIRTIO_STATUS, bit } from './constants.js';
import { SplitQueue, VirtqError } from './queue.js';
import { isGuestFault, type VirtioDevice, type VirtioDeviceContext } from './device.js';
import { BAR0, NOTIFY_MULTIPLIER, VirtioPciInterrupts, transportState, virtioPciConfig, type VirtioPciFunctionSpec } from './pci-transport.js';
import type { PciConfigSpace } from '../pci/config-space.js';

/** Every device model gets these ring features; the queue implementation supports them. */
const TRANSPORT_FEATURES = bit(VIRTIO_F.RING_EVENT_IDX) | bit(VIRTIO_F.RING_INDIRECT_DESC);

export interface VirtioPciDeps {
  readonly mem: GuestMemory;
  readonly vm: Vm;
  readonly msi: MsiRouter;
  /** Guest-physical address of BAR 0. */
  readonly bar0: number;
  readonly log: VirtioDeviceContext['log'];
}

interface Activation extends VirtioDeviceContext {
  readonly queues: (SplitQueue | undefined)[];
}

/** Device failures logged per device; later ones only put it into NEEDS_RESET. */
const FAILURES_LOGGED = 8;

export class VirtioPciDevice {
  readonly config: PciConfigSpace;
  readonly common: CommonConfig;
  readonly spec: VirtioPciFunctionSpec;
  readonly #irq: VirtioPciInterrupts;
  readonly #notifyFds: number[];
  readonly #controlFd: number;
  readonly #msiHandles: number[];
  readonly #stops: (() => void)[] = [];
  #epoch = 0;
  #active: Activation | undefined;
  #failed = false;
  #failures = 0;
  /** Notifications that reached the model (counted for tests and benchmarks). */
  notifications = 0;
  /** Interrupts delivered. */
  interrupts = 0;

  constructor(readonly model: VirtioDevice, private readonly deps: VirtioPciDeps) {
    const numQueues = model.queueMaxSizes.length;
    const msixVectors = numQueues + 1; // one per queue, plus configuration changes
    const { config, msixCap } = virtioPciConfig({ deviceId: model.deviceId, numQueues, msixVectors, deviceConfigSize: model.configSize, bar0: deps.bar0 });
    this.config = config;
    const features = model.features | TRANSPORT_FEATURES;
    // The main thread's view of the registers never sees their writes (those happen on vCPU threads).
    this.common = new CommonConfig({ features, queueMaxSizes: model.queueMaxSizes, onQueueEnable: () => undefined, onReset() {}, onDriverOk() {}, msixVectors });
    const transport = transportState(msixVectors);
    this.#msiHandles = Array.from({ length: msixVectors }, () => deps.msi.allocate());
    this.#irq = new VirtioPciInterrupts(config, msixCap, transport, msixVectors, (vector, lo, hi, data) => deps.msi.fire(this.#msiHandles[vector]!, lo, hi, data));
    this.#notifyFds = Array.from({ length: numQueues }, () => native().eventfd(0, true));
    this.#controlFd = native().eventfd(0, true);
    const deviceConfig = new SharedArrayBuffer(Math.max(8, (model.configSize + 7) & ~7));
    model.bindConfig?.(new DataView(deviceConfig, 0, model.configSize));
    this.spec = {
      kind: model.kind, config: config.buffer, common: this.common.buffer, transport, deviceConfig, deviceConfigSize: model.configSize,
      deviceConfigWritable: model.configWritable ?? false, notifyFds: this.#notifyFds, controlFd: this.#controlFd, msixVectors,
      barSize: BAR0.SIZE, features, queueMaxSizes: model.queueMaxSizes,
    };
  }

  /**
   * Registers the notify area with KVM (ioeventfds) and starts watching the eventfds. Without
   * ioeventfd support the notifications still arrive, through MMIO exits (the BAR signals the fd).
   */
  start(): void {
    const base = this.deps.bar0 + BAR0.NOTIFY;
    this.#notifyFds.forEach((fd, i) => {
      try {
        // Length 0 matches a write of any width (KVM_CAP_IOEVENTFD_ANY_LENGTH); drivers write 16 bits.
        this.deps.vm.ioeventfd(base + i * NOTIFY_MULTIPLIER, this.deps.vm.checkExtension('IOEVENTFD_ANY_LENGTH') ? 0 : 2, fd);
      } catch (e) {
        this.deps.log.debug({ queue: i }, `virtio-${this.model.kind}: no ioeventfd (${(e as Error).message}): notifications will exit to userspace`);
      }
      this.#stops.push(native().watchFd(fd, () => this.#kick(i)));
    });
    this.#stops.push(native().watchFd(this.#controlFd, () => {
      native().eventfdRead(this.#controlFd);
      this.#reconcile();
    }));
  }

  async close(): Promise<void> {
    for (const stop of this.#stops.splice(0)) stop();
    // Notifications still in the eventfds, and output held back by a slow reader, are in the rings.
    const act = this.#active;
    if (act && this.model.finish) this.#guard(act, () => this.model.finish!());
    this.#deactivate();
    await this.model.close?.();
    for (const fd of [...this.#notifyFds, this.#controlFd]) {
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
    }
  }

  #kick(index: number): void {
    native().eventfdRead(this.#notifyFds[index]!);
    this.#reconcile();
    const act = this.#active;
    if (!act || !act.queues[index]) return;
    this.notifications++;
    this.#guard(act, () => this.model.notify(index));
  }

  /** Brings the model in line with the registers: a reset deactivates it, DRIVER_OK activates it. */
  #reconcile(): void {
    const epoch = this.common.epoch;
    if (epoch !== this.#epoch) {
      this.#epoch = epoch;
      this.#failed = false;
      this.#deactivate();
      // The driver sees the reset done only once nothing started before it can still write guest memory.
      const idle = this.model.idle?.();
      if (idle) void idle.then(() => this.common.completeReset(epoch));
      else this.common.completeReset(epoch);
    }
    const status = this.common.status;
    if (this.#active || this.#failed || !(status & VIRTIO_STATUS.DRIVER_OK) || status & VIRTIO_STATUS.DEVICE_NEEDS_RESET) return;
    this.#activate();
  }

  #activate(): void {
    const negotiated = this.common.negotiated;
    const features = { indirect: (negotiated & bit(VIRTIO_F.RING_INDIRECT_DESC)) !== 0n, eventIdx: (negotiated & bit(VIRTIO_F.RING_EVENT_IDX)) !== 0n };
    const queues: (SplitQueue | undefined)[] = [];
    const self = this;
    let act: Activation;
    try {
      for (let i = 0; i < this.common.numQueues; i++) {
        const q = this.common.queue(i);
        const queue = q.enabled ? new SplitQueue(this.deps.mem, { size: q.size, descAddr: Number(q.desc), availAddr: Number(q.driver), usedAddr: Number(q.device) }, features) : undefined;
        // The used ring's flags and avail_event are the device's: a ring reused across a reset may
        // still say "do not notify" from the last activation. (Every queue is looked at below.)
        queue?.enableNotifications();
        queues.push(queue);
      }
    } catch (e) {
      this.#fail((e as Error).message);
      return;
    }
    act = {
      mem: this.deps.mem,
      negotiated,
      queues,
      log: this.deps.log,
      queue: (i) => queues[i],
      usedAdded: (i, before) => {
        if (self.#active !== act) return;
        const q = queues[i];
        if (q && q.needsInterrupt(before)) self.#raise(self.common.queue(i).msixVector, 1);
      },
      configChanged: () => {
        self.common.bumpConfigGeneration();
        self.#raise(self.common.configMsixVector, 2);
      },
      fail: (e) => {
        if (self.#active === act) self.#fail(e.message);
      },
      get live() {
        return self.#active === act;
      },
    };
    this.#active = act;
    this.#guard(act, () => this.model.activate(act));
    // Notifications may have come before the main thread saw DRIVER_OK: look at every queue once.
    queues.forEach((q, i) => q && this.#active === act && this.#guard(act, () => this.model.notify(i)));
  }

  #deactivate(): void {
    if (!this.#active) return;
    this.#active = undefined;
    this.model.reset();
  }

  /** Runs model work; a broken request puts the device into NEEDS_RESET (anything else is our bug). */
  #guard(act: Activation, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      if (!isGuestFault(e)) throw e;
      if (this.#active === act) this.#fail((e as Error).message);
    }
  }

  #fail(why: string): void {
    // A guest that resets and breaks the device in a loop gets a few lines, not one per cycle.
    this.#failures++;
    if (this.#failures <= FAILURES_LOGGED) {
      const more = this.#failures === FAILURES_LOGGED ? ' (further failures of this device are not logged)' : '';
      this.deps.log.warn({ device: this.model.kind }, `virtio-${this.model.kind}: ${why}: device needs reset${more}`);
    }
    this.#failed = true;
    this.common.needsReset(why);
    this.#deactivate();
    this.#raise(this.common.configMsixVector, 2);
  }

  #raise(vector: number, isrBit: 1 | 2): void {
    if (vector === VIRTIO_MSI_NO_VECTOR) return;
    if (this.#irq.raise(vector, isrBit)) this.interrupts++;
  }
}
