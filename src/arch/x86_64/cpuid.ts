/**
 * The CPUID a vCPU sees: KVM_GET_SUPPORTED_CPUID adjusted per vCPU, as real VMMs do: its APIC ID,
 * the hypervisor bit, and a topology of `cpus` single-threaded cores in one package (leaves 1, 4,
 * 0xb, 0x1f and AMD's 0x80000001/0x80000008/0x8000001e). Hypervisor leaves (0x4000_00xx) pass through
 * unchanged, so a guest on a PVM host finds what PVM advertises there.
 */
import { KVM_CPUID_ENTRY2, SIZEOF } from '../../kvm/layout.js';

const E = SIZEOF.kvm_cpuid_entry2;
const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export interface CpuidOptions {
  readonly apicId: number;
  readonly cpus: number;
}

export function parseCpuid(bytes: Uint8Array): CpuidEntry[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: CpuidEntry[] = [];
  for (let at = 0; at + E <= bytes.length; at += E) {
    out.push({
      function: v.getUint32(at + KVM_CPUID_ENTRY2.function, true),
      index: v.getUint32(at + KVM_CPUID_ENTRY2.index, true),
      flags: v.getUint32(at + KVM_CPUID_ENTRY2.flags, true),
      eax: v.getUint32(at + KVM_CPUID_ENTRY2.eax, true),
      ebx: v.getUint32(at + KVM_CPUID_ENTRY2.ebx, true),
      ecx: v.getUint32(at + KVM_CPUID_ENTRY2.ecx, true),
      edx: v.getUint32(at + KVM_CPUID_ENTRY2.edx, true),
    });
  }
  return out;
}

export function serializeCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const out = new Uint8Array(entries.length * E);
  const v = new DataView(out.buffer);
  entries.forEach((e, i) => {
    const at = i * E;
    v.setUint32(at + KVM_CPUID_ENTRY2.function, e.function, true);
    v.setUint32(at + KVM_CPUID_ENTRY2.index, e.index, true);
    v.setUint32(at + KVM_CPUID_ENTRY2.flags, e.flags, true);
    v.setUint32(at + KVM_CPUID_ENTRY2.eax, e.eax >>> 0, true);
    v.setUint32(at + KVM_CPUID_ENTRY2.ebx, e.ebx >>> 0, true);
    v.setUint32(at + KVM_CPUID_ENTRY2.ecx, e.ecx >>> 0, true);
    v.setUint32(at + KVM_CPUID_ENTRY2.edx, e.edx >>> 0, true);
  });
  return out;
}

/** Bits needed to number `n` items (x2APIC ID shift of a topology level). */
const bitsFor = (n: number): number => (n <= 1 ? 0 : 32 - Math.clz32(n - 1));

/** A copy of `supported` with the per-vCPU fields filled in. */
export function vcpuCpuid(supported: Uint8Array, o: CpuidOptions): Uint8Array {
  const coreBits = bitsFor(o.cpus);
  const entries: CpuidEntry[] = [];
  for (const src of parseCpuid(supported)) {
    const e = { ...src };
    switch (e.function) {
      case 0x1:
        // EBX[31:24] initial APIC ID, [23:16] logical processors in the package; ECX[31] hypervisor.
        e.ebx = (e.ebx & 0x0000_ffff) | ((o.cpus & 0xff) << 16) | ((o.apicId & 0xff) << 24);
        e.ecx |= 1 << 31;
        e.edx = o.cpus > 1 ? e.edx | (1 << 28) : e.edx & ~(1 << 28); // HTT: more than one logical CPU
        break;
      case 0x4:
        // Deterministic cache parameters: EAX[31:26] cores per package - 1, [25:14] sharing = 1 thread.
        if (e.eax & 0x1f) e.eax = (e.eax & 0x3fff) | (((o.cpus - 1) & 0x3f) << 26);
        break;
      case 0xb:
      case 0x1f:
        // Extended topology, rebuilt below: level 0 SMT (1 thread), level 1 core (cpus), then the end.
        continue;
      case 0x8000_0001:
        if (o.cpus > 1) e.ecx |= 1 << 1; // CmpLegacy: HTT counts cores (AMD)
        break;
      case 0x8000_0008:
        // AMD: ECX[7:0] cores - 1, [15:12] APIC ID size.
        e.ecx = (e.ecx & ~0xf0ff) | ((o.cpus - 1) & 0xff) | (coreBits << 12);
        break;
      case 0x8000_001e:
        e.eax = o.apicId; // extended APIC ID
        e.ebx = o.apicId & 0xff; // compute unit id, 1 thread per unit
        e.ecx = 0; // node 0, 1 node per package
        break;
    }
    entries.push(e);
  }
  if (parseCpuid(supported).some((e) => e.function === 0xb)) {
    for (const fn of [0xb, ...(parseCpuid(supported).some((e) => e.function === 0x1f) ? [0x1f] : [])]) {
      const f = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
      entries.push({ function: fn, index: 0, flags: f, eax: 0, ebx: 1, ecx: (1 << 8) | 0, edx: o.apicId });
      entries.push({ function: fn, index: 1, flags: f, eax: coreBits, ebx: o.cpus, ecx: (2 << 8) | 1, edx: o.apicId });
      entries.push({ function: fn, index: 2, flags: f, eax: 0, ebx: 0, ecx: 2, edx: o.apicId });
    }
  }
  return serializeCpuid(entries);
}
