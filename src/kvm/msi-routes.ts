/**
 * MSI delivery through irqfds: each MSI source (a virtio queue's MSI-X vector) gets a GSI routed to
 * its current MSI message and an eventfd bound to that GSI, so raising the interrupt is one write(2)
 * from the main thread and KVM injects it without any vCPU leaving the guest.
 *
 * KVM_SET_GSI_ROUTING replaces the whole table, so the table always carries the default routes of
 * the in-kernel PIC and IOAPIC (the ones KVM_CREATE_IRQCHIP installs) plus our MSI routes. The main
 * thread owns the table; a route is rewritten only when the guest has changed the message since the
 * last delivery (rare: at driver set-up), which keeps the fast path a single eventfd write.
 */
import { closeSync } from 'node:fs';
import type { Vm } from './kvm.js';
import { KVM_IRQCHIP, KVM_IRQ_ROUTING } from './constants.js';
import { KVM_IRQ_ROUTING_ENTRY as E, SIZEOF } from './layout.js';
import { native } from '../native/binding.js';

/** GSIs 0-23 belong to the IOAPIC pins (0-15 also to the PICs); MSI routes start after them. */
const FIRST_MSI_GSI = 24;
const IOAPIC_PINS = 24;

interface MsiRoute {
  readonly gsi: number;
  readonly fd: number;
  addrLo: number;
  addrHi: number;
  data: number;
  routed: boolean;
}

export class MsiRouter {
  readonly #routes: MsiRoute[] = [];
  #irqfds = true;

  constructor(private readonly vm: Vm, private readonly log: (msg: string) => void = () => {}) {}

  /** A new MSI source; returns its handle for fire(). */
  allocate(): number {
    const gsi = FIRST_MSI_GSI + this.#routes.length;
    const fd = native().eventfd(0, true);
    this.#routes.push({ gsi, fd, addrLo: 0, addrHi: 0, data: 0, routed: false });
    return this.#routes.length - 1;
  }

  /** Delivers the message (addrLo, addrHi, data) for source `handle`. */
  fire(handle: number, addrLo: number, addrHi: number, data: number): void {
    const r = this.#routes[handle];
    if (!r) return;
    if (!this.#irqfds) {
      this.vm.signalMsi(addrLo, addrHi, data);
      return;
    }
    if (!r.routed || r.addrLo !== addrLo || r.addrHi !== addrHi || r.data !== data) {
      const first = !r.routed;
      Object.assign(r, { addrLo, addrHi, data, routed: true });
      try {
        this.vm.setGsiRouting(this.#table());
        if (first) this.vm.irqfd(r.fd, r.gsi);
      } catch (e) {
        // A kernel without irqfd or MSI routing still has KVM_SIGNAL_MSI: same delivery, one ioctl.
        this.log(`MSI through irqfd unavailable (${(e as Error).message}): using KVM_SIGNAL_MSI`);
        this.#irqfds = false;
        this.vm.signalMsi(addrLo, addrHi, data);
        return;
      }
    }
    native().eventfdWrite(r.fd, 1);
  }

  close(): void {
    for (const r of this.#routes) {
      try {
        closeSync(r.fd);
      } catch {
        /* already closed */
      }
    }
    this.#routes.length = 0;
  }

  /** The whole routing table: the irqchips' default routes, then every MSI route set so far. */
  #table(): Uint8Array {
    const entries: ((v: DataView) => void)[] = [];
    const chip = (gsi: number, irqchip: number, pin: number) => (v: DataView) => {
      v.setUint32(E.gsi, gsi, true);
      v.setUint32(E.type, KVM_IRQ_ROUTING.IRQCHIP, true);
      v.setUint32(E['u.irqchip.irqchip'], irqchip, true);
      v.setUint32(E['u.irqchip.pin'], pin, true);
    };
    for (let gsi = 0; gsi < 16; gsi++) entries.push(chip(gsi, gsi < 8 ? KVM_IRQCHIP.PIC_MASTER : KVM_IRQCHIP.PIC_SLAVE, gsi % 8));
    for (let gsi = 0; gsi < IOAPIC_PINS; gsi++) entries.push(chip(gsi, KVM_IRQCHIP.IOAPIC, gsi));
    for (const r of this.#routes) {
      if (!r.routed) continue;
      entries.push((v) => {
        v.setUint32(E.gsi, r.gsi, true);
        v.setUint32(E.type, KVM_IRQ_ROUTING.MSI, true);
        v.setUint32(E['u.msi.address_lo'], r.addrLo, true);
        v.setUint32(E['u.msi.address_hi'], r.addrHi, true);
        v.setUint32(E['u.msi.data'], r.data, true);
      });
    }
    const size = SIZEOF.kvm_irq_routing_entry;
    const buf = new Uint8Array(size * entries.length);
    entries.forEach((fill, i) => fill(new DataView(buf.buffer, i * size, size)));
    return buf;
  }
}
