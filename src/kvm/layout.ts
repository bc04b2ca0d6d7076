/**
 * Byte offsets of the KVM structs that TypeScript reads and writes, defined once here.
 * Values are from <linux/kvm.h> on x86-64; test/native/layout.test.ts checks every entry against
 * the addon's offsetof() table (native/src/kvm_abi.c), so a header change fails a test, not a guest.
 */

/** struct kvm_run (the exit area mapped from the vCPU fd). The union `u` starts at 32. */
export const KVM_RUN = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  'hw.hardware_exit_reason': 32,
  'fail_entry.hardware_entry_failure_reason': 32,
  'fail_entry.cpu': 40,
  'ex.exception': 32,
  'ex.error_code': 36,
  'io.direction': 32,
  'io.size': 33,
  'io.port': 34,
  'io.count': 36,
  'io.data_offset': 40,
  'mmio.phys_addr': 32,
  'mmio.data': 40,
  'mmio.len': 48,
  'mmio.is_write': 52,
  'internal.suberror': 32,
  'internal.ndata': 36,
  'internal.data': 40,
  'system_event.type': 32,
  'system_event.ndata': 36,
  'system_event.data': 40,
} as const;

/** struct kvm_regs: 18 u64 general registers. */
export const KVM_REGS = {
  rax: 0, rbx: 8, rcx: 16, rdx: 24, rsi: 32, rdi: 40, rsp: 48, rbp: 56,
  r8: 64, r9: 72, r10: 80, r11: 88, r12: 96, r13: 104, r14: 112, r15: 120,
  rip: 128, rflags: 136,
} as const;

/** struct kvm_segment (24 bytes). */
export const KVM_SEGMENT = {
  base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22,
} as const;

/** struct kvm_dtable (16 bytes). */
export const KVM_DTABLE = { base: 0, limit: 8 } as const;

/** struct kvm_sregs. */
export const KVM_SREGS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168, gdt: 192, idt: 208,
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apic_base: 272, interrupt_bitmap: 280,
} as const;

/** struct kvm_fpu. */
export const KVM_FPU = {
  fpr: 0, fcw: 128, fsw: 130, ftwx: 132, last_opcode: 134, last_ip: 136, last_dp: 144, xmm: 152, mxcsr: 408,
} as const;

/** struct kvm_cpuid_entry2 (40 bytes). */
export const KVM_CPUID_ENTRY2 = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 } as const;

/** struct kvm_msr_entry (16 bytes). */
export const KVM_MSR_ENTRY = { index: 0, data: 8 } as const;

/** struct kvm_irq_routing_entry (48 bytes). */
export const KVM_IRQ_ROUTING_ENTRY = {
  gsi: 0, type: 4, flags: 8,
  'u.irqchip.irqchip': 16, 'u.irqchip.pin': 20,
  'u.msi.address_lo': 16, 'u.msi.address_hi': 20, 'u.msi.data': 24,
} as const;

/** struct kvm_clock_data. */
export const KVM_CLOCK_DATA = { clock: 0, flags: 8 } as const;

/**
 * struct kvm_coalesced_mmio_ring: one page of every vCPU's mmap (at the page KVM_CAP_COALESCED_MMIO
 * names), shared by the VM's vCPUs. KVM appends at `last`; userspace consumes from `first`.
 */
export const KVM_COALESCED_MMIO_RING = { first: 0, last: 4, coalesced_mmio: 8 } as const;

/** struct kvm_coalesced_mmio: one queued write (`pio` 1 for port I/O), its bytes in `data`. */
export const KVM_COALESCED_MMIO = { phys_addr: 0, len: 8, pio: 12, data: 16 } as const;

/** sizeof() of every struct that crosses the addon boundary as a buffer. */
export const SIZEOF = {
  kvm_run: 2352,
  kvm_regs: 144,
  kvm_segment: 24,
  kvm_dtable: 16,
  kvm_sregs: 312,
  kvm_fpu: 416,
  kvm_cpuid_entry2: 40,
  kvm_msr_entry: 16,
  kvm_irq_routing_entry: 48,
  kvm_lapic_state: 1024,
  kvm_mp_state: 4,
  kvm_vcpu_events: 64,
  kvm_xsave: 4096,
  kvm_xcrs: 392,
  kvm_irqchip: 520,
  kvm_pit_state2: 112,
  kvm_clock_data: 48,
  kvm_coalesced_mmio_ring: 8,
  kvm_coalesced_mmio: 24,
} as const;

/** Every (struct.field → offset) pair above, flattened with the names the addon's table uses. */
export function flatLayout(): Record<string, number> {
  const out: Record<string, number> = {};
  const add = (struct: string, table: Record<string, number>) => {
    for (const [field, off] of Object.entries(table)) out[`${struct}.${field}`] = off;
  };
  add('kvm_run', KVM_RUN);
  add('kvm_regs', KVM_REGS);
  add('kvm_segment', KVM_SEGMENT);
  add('kvm_dtable', KVM_DTABLE);
  add('kvm_sregs', KVM_SREGS);
  add('kvm_fpu', KVM_FPU);
  add('kvm_cpuid_entry2', KVM_CPUID_ENTRY2);
  add('kvm_msr_entry', KVM_MSR_ENTRY);
  add('kvm_irq_routing_entry', KVM_IRQ_ROUTING_ENTRY);
  add('kvm_clock_data', KVM_CLOCK_DATA);
  add('kvm_coalesced_mmio_ring', KVM_COALESCED_MMIO_RING);
  add('kvm_coalesced_mmio', KVM_COALESCED_MMIO);
  for (const [name, size] of Object.entries(SIZEOF)) out[`sizeof.${name}`] = size;
  return out;
}
