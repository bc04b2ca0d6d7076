/** Register files (struct kvm_regs, kvm_sregs) as byte buffers with named accessors. */
import { KVM_DTABLE, KVM_REGS, KVM_SEGMENT, KVM_SREGS, SIZEOF } from './layout.js';

export type RegName = keyof typeof KVM_REGS;

export class KvmRegs {
  readonly bytes = new Uint8Array(SIZEOF.kvm_regs);
  private readonly view = new DataView(this.bytes.buffer);

  get(name: RegName): bigint {
    return this.view.getBigUint64(KVM_REGS[name], true);
  }

  set(name: RegName, value: bigint | number): this {
    this.view.setBigUint64(KVM_REGS[name], BigInt(value), true);
    return this;
  }

  toJSON(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of Object.keys(KVM_REGS) as RegName[]) out[name] = `0x${this.get(name).toString(16)}`;
    return out;
  }
}

/** A segment register as KVM describes it (the hidden part included). */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export type SegName = 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt';
export type ControlName = 'cr0' | 'cr2' | 'cr3' | 'cr4' | 'cr8' | 'efer' | 'apic_base';

export class KvmSregs {
  readonly bytes = new Uint8Array(SIZEOF.kvm_sregs);
  private readonly view = new DataView(this.bytes.buffer);

  getSegment(name: SegName): Segment {
    const o = KVM_SREGS[name];
    const v = this.view;
    return {
      base: v.getBigUint64(o + KVM_SEGMENT.base, true),
      limit: v.getUint32(o + KVM_SEGMENT.limit, true),
      selector: v.getUint16(o + KVM_SEGMENT.selector, true),
      type: v.getUint8(o + KVM_SEGMENT.type),
      present: v.getUint8(o + KVM_SEGMENT.present),
      dpl: v.getUint8(o + KVM_SEGMENT.dpl),
      db: v.getUint8(o + KVM_SEGMENT.db),
      s: v.getUint8(o + KVM_SEGMENT.s),
      l: v.getUint8(o + KVM_SEGMENT.l),
      g: v.getUint8(o + KVM_SEGMENT.g),
      avl: v.getUint8(o + KVM_SEGMENT.avl),
      unusable: v.getUint8(o + KVM_SEGMENT.unusable),
    };
  }

  setSegment(name: SegName, s: Segment): this {
    const o = KVM_SREGS[name];
    const v = this.view;
    v.setBigUint64(o + KVM_SEGMENT.base, s.base, true);
    v.setUint32(o + KVM_SEGMENT.limit, s.limit, true);
    v.setUint16(o + KVM_SEGMENT.selector, s.selector, true);
    v.setUint8(o + KVM_SEGMENT.type, s.type);
    v.setUint8(o + KVM_SEGMENT.present, s.present);
    v.setUint8(o + KVM_SEGMENT.dpl, s.dpl);
    v.setUint8(o + KVM_SEGMENT.db, s.db);
    v.setUint8(o + KVM_SEGMENT.s, s.s);
    v.setUint8(o + KVM_SEGMENT.l, s.l);
    v.setUint8(o + KVM_SEGMENT.g, s.g);
    v.setUint8(o + KVM_SEGMENT.avl, s.avl);
    v.setUint8(o + KVM_SEGMENT.unusable, s.unusable);
    return this;
  }

  /** Modifies one segment in place. */
  updateSegment(name: SegName, patch: Partial<Segment>): this {
    return this.setSegment(name, { ...this.getSegment(name), ...patch });
  }

  getTable(name: 'gdt' | 'idt'): { base: bigint; limit: number } {
    const o = KVM_SREGS[name];
    return { base: this.view.getBigUint64(o + KVM_DTABLE.base, true), limit: this.view.getUint16(o + KVM_DTABLE.limit, true) };
  }

  setTable(name: 'gdt' | 'idt', base: bigint | number, limit: number): this {
    const o = KVM_SREGS[name];
    this.view.setBigUint64(o + KVM_DTABLE.base, BigInt(base), true);
    this.view.setUint16(o + KVM_DTABLE.limit, limit, true);
    return this;
  }

  get(name: ControlName): bigint {
    return this.view.getBigUint64(KVM_SREGS[name], true);
  }

  set(name: ControlName, value: bigint | number): this {
    this.view.setBigUint64(KVM_SREGS[name], BigInt(value), true);
    return this;
  }
}
