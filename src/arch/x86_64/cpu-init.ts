/**
 * Architectural state every vCPU gets before its first KVM_RUN, as real VMMs set it: MSRs a BIOS
 * would have initialised, the FPU's reset control words, and LAPIC LINT0 = ExtINT (the 8259's
 * output) and LINT1 = NMI, as the MP and ACPI tables describe them.
 */
import type { Logger } from 'pino';
import type { Vcpu } from '../../kvm/kvm.js';
import { KVM_FPU } from '../../kvm/layout.js';

export const MSR = {
  IA32_TSC: 0x10,
  IA32_SYSENTER_CS: 0x174,
  IA32_SYSENTER_ESP: 0x175,
  IA32_SYSENTER_EIP: 0x176,
  IA32_MISC_ENABLE: 0x1a0,
  MTRR_DEF_TYPE: 0x2ff,
  STAR: 0xc000_0081,
  LSTAR: 0xc000_0082,
  CSTAR: 0xc000_0083,
  SYSCALL_MASK: 0xc000_0084,
  KERNEL_GS_BASE: 0xc000_0102,
} as const;

const MISC_ENABLE_FAST_STRING = 1n;
const MTRR_ENABLE = 1n << 11n;
const MTRR_TYPE_WRBACK = 6n;

const APIC_LVT0 = 0x350;
const APIC_LVT1 = 0x360;
const APIC_MODE_EXTINT = 0x7;
const APIC_MODE_NMI = 0x4;

export function initVcpuState(vcpu: Vcpu, log: Logger): void {
  const msrs: [number, bigint][] = [
    [MSR.IA32_SYSENTER_CS, 0n], [MSR.IA32_SYSENTER_ESP, 0n], [MSR.IA32_SYSENTER_EIP, 0n],
    [MSR.STAR, 0n], [MSR.CSTAR, 0n], [MSR.KERNEL_GS_BASE, 0n], [MSR.SYSCALL_MASK, 0n], [MSR.LSTAR, 0n],
    [MSR.IA32_TSC, 0n],
    [MSR.IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING],
    [MSR.MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK],
  ];
  const accepted = vcpu.setMsrs(msrs);
  if (accepted !== msrs.length) log.debug({ vcpu: vcpu.id, accepted, msr: `0x${msrs[accepted]![0].toString(16)}` }, 'KVM refused an MSR; the rest were not set');

  const fpu = vcpu.getFpu();
  const f = new DataView(fpu.buffer);
  f.setUint16(KVM_FPU.fcw, 0x37f, true);
  f.setUint32(KVM_FPU.mxcsr, 0x1f80, true);
  vcpu.setFpu(fpu);

  const lapic = vcpu.getLapic();
  const l = new DataView(lapic.buffer);
  const setMode = (reg: number, mode: number) => l.setUint32(reg, (l.getUint32(reg, true) & ~0x700) | (mode << 8), true);
  setMode(APIC_LVT0, APIC_MODE_EXTINT);
  setMode(APIC_LVT1, APIC_MODE_NMI);
  vcpu.setLapic(lapic);
}
