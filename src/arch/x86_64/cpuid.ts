/**
 * The CPUID a vCPU sees: KVM_GET_SUPPORTED_CPUID, adjusted per vCPU (APIC ID, hypervisor bit).
 * KVM refuses long mode to a vCPU whose CPUID lacks it, so even flat test guests need this.
 */
import { KVM_CPUID_ENTRY2, SIZEOF } from '../../kvm/layout.js';

const E = SIZEOF.kvm_cpuid_entry2;

export interface CpuidOptions {
  readonly apicId: number;
  readonly cpus: number;
}

/** A copy of `supported` with the per-vCPU fields filled in. */
export function vcpuCpuid(supported: Uint8Array, o: CpuidOptions): Uint8Array {
  const out = supported.slice();
  const v = new DataView(out.buffer);
  for (let at = 0; at + E <= out.length; at += E) {
    const fn = v.getUint32(at + KVM_CPUID_ENTRY2.function, true);
    if (fn === 1) {
      // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package; ECX[31] hypervisor present.
      const ebx = v.getUint32(at + KVM_CPUID_ENTRY2.ebx, true);
      v.setUint32(at + KVM_CPUID_ENTRY2.ebx, ((ebx & 0x0000ffff) | ((o.cpus & 0xff) << 16) | ((o.apicId & 0xff) << 24)) >>> 0, true);
      v.setUint32(at + KVM_CPUID_ENTRY2.ecx, (v.getUint32(at + KVM_CPUID_ENTRY2.ecx, true) | 0x8000_0000) >>> 0, true);
      if (o.cpus > 1) v.setUint32(at + KVM_CPUID_ENTRY2.edx, (v.getUint32(at + KVM_CPUID_ENTRY2.edx, true) | (1 << 28)) >>> 0, true); // HTT
    } else if (fn === 0xb || fn === 0x1f) {
      v.setUint32(at + KVM_CPUID_ENTRY2.edx, o.apicId, true); // x2APIC ID of this logical processor
    }
  }
  return out;
}
