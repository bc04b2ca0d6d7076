// See kvm_abi.h for why this file is C.
#include "kvm_abi.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

const size_t nv_sizeof_xsave = sizeof(struct kvm_xsave);
const size_t nv_sizeof_cpuid_entry2 = sizeof(struct kvm_cpuid_entry2);
const size_t nv_sizeof_msr_entry = sizeof(struct kvm_msr_entry);
const size_t nv_sizeof_irq_routing_entry = sizeof(struct kvm_irq_routing_entry);

int nv_get_supported_cpuid(int kvm_fd, void* entries, uint32_t* nent) {
  struct kvm_cpuid2* c = calloc(1, sizeof(*c) + *nent * sizeof(struct kvm_cpuid_entry2));
  if (!c) return -ENOMEM;
  c->nent = *nent;
  int r = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
  if (r < 0) r = -errno;
  else {
    *nent = c->nent;
    memcpy(entries, c->entries, c->nent * sizeof(struct kvm_cpuid_entry2));
  }
  free(c);
  return r;
}

int nv_set_cpuid2(int vcpu_fd, const void* entries, uint32_t nent) {
  struct kvm_cpuid2* c = calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
  if (!c) return -ENOMEM;
  c->nent = nent;
  memcpy(c->entries, entries, nent * sizeof(struct kvm_cpuid_entry2));
  int r = ioctl(vcpu_fd, KVM_SET_CPUID2, c);
  if (r < 0) r = -errno;
  free(c);
  return r;
}

int nv_msr_index_list(int kvm_fd, uint32_t* indices, uint32_t* n) {
  struct kvm_msr_list* l = calloc(1, sizeof(*l) + *n * sizeof(uint32_t));
  if (!l) return -ENOMEM;
  l->nmsrs = *n;
  int r = ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l);
  if (r < 0) r = -errno;
  if (r >= 0 || r == -E2BIG) {
    if (r >= 0) memcpy(indices, l->indices, l->nmsrs * sizeof(uint32_t));
    *n = l->nmsrs;  // on E2BIG: how many there are
  }
  free(l);
  return r;
}

static int msrs(int vcpu_fd, unsigned long req, void* entries, uint32_t n) {
  struct kvm_msrs* m = calloc(1, sizeof(*m) + n * sizeof(struct kvm_msr_entry));
  if (!m) return -ENOMEM;
  m->nmsrs = n;
  memcpy(m->entries, entries, n * sizeof(struct kvm_msr_entry));
  int r = ioctl(vcpu_fd, req, m);
  if (r < 0) r = -errno;
  else memcpy(entries, m->entries, n * sizeof(struct kvm_msr_entry));
  free(m);
  return r;
}
int nv_get_msrs(int vcpu_fd, void* entries, uint32_t n) { return msrs(vcpu_fd, KVM_GET_MSRS, entries, n); }
int nv_set_msrs(int vcpu_fd, const void* entries, uint32_t n) { return msrs(vcpu_fd, KVM_SET_MSRS, (void*)entries, n); }

int nv_set_gsi_routing(int vm_fd, const void* entries, uint32_t n) {
  struct kvm_irq_routing* r = calloc(1, sizeof(*r) + n * sizeof(struct kvm_irq_routing_entry));
  if (!r) return -ENOMEM;
  r->nr = n;
  memcpy(r->entries, entries, n * sizeof(struct kvm_irq_routing_entry));
  int ret = ioctl(vm_fd, KVM_SET_GSI_ROUTING, r);
  if (ret < 0) ret = -errno;
  free(r);
  return ret;
}

int nv_get_xsave(int vcpu_fd, void* xsave) { return ioctl(vcpu_fd, KVM_GET_XSAVE, xsave) < 0 ? -errno : 0; }
int nv_set_xsave(int vcpu_fd, const void* xsave) { return ioctl(vcpu_fd, KVM_SET_XSAVE, xsave) < 0 ? -errno : 0; }

// Every struct field the TypeScript side reads or writes. src/kvm/layout.ts defines the same
// offsets once for the hot path; a native test checks them against this table.
#define OFF(T, f) {#T "." #f, offsetof(struct T, f)}
#define SIZE(T) {"sizeof." #T, sizeof(struct T)}
const struct nv_layout_entry nv_layout[] = {
    SIZE(kvm_run),
    OFF(kvm_run, request_interrupt_window), OFF(kvm_run, immediate_exit), OFF(kvm_run, exit_reason),
    OFF(kvm_run, ready_for_interrupt_injection), OFF(kvm_run, if_flag), OFF(kvm_run, flags),
    OFF(kvm_run, cr8), OFF(kvm_run, apic_base),
    OFF(kvm_run, hw.hardware_exit_reason),
    OFF(kvm_run, fail_entry.hardware_entry_failure_reason), OFF(kvm_run, fail_entry.cpu),
    OFF(kvm_run, ex.exception), OFF(kvm_run, ex.error_code),
    OFF(kvm_run, io.direction), OFF(kvm_run, io.size), OFF(kvm_run, io.port), OFF(kvm_run, io.count),
    OFF(kvm_run, io.data_offset),
    OFF(kvm_run, mmio.phys_addr), OFF(kvm_run, mmio.data), OFF(kvm_run, mmio.len), OFF(kvm_run, mmio.is_write),
    OFF(kvm_run, internal.suberror), OFF(kvm_run, internal.ndata), OFF(kvm_run, internal.data),
    OFF(kvm_run, system_event.type), OFF(kvm_run, system_event.ndata), OFF(kvm_run, system_event.data),

    SIZE(kvm_regs),
    OFF(kvm_regs, rax), OFF(kvm_regs, rbx), OFF(kvm_regs, rcx), OFF(kvm_regs, rdx),
    OFF(kvm_regs, rsi), OFF(kvm_regs, rdi), OFF(kvm_regs, rsp), OFF(kvm_regs, rbp),
    OFF(kvm_regs, r8), OFF(kvm_regs, r9), OFF(kvm_regs, r10), OFF(kvm_regs, r11),
    OFF(kvm_regs, r12), OFF(kvm_regs, r13), OFF(kvm_regs, r14), OFF(kvm_regs, r15),
    OFF(kvm_regs, rip), OFF(kvm_regs, rflags),

    SIZE(kvm_segment),
    OFF(kvm_segment, base), OFF(kvm_segment, limit), OFF(kvm_segment, selector), OFF(kvm_segment, type),
    OFF(kvm_segment, present), OFF(kvm_segment, dpl), OFF(kvm_segment, db), OFF(kvm_segment, s),
    OFF(kvm_segment, l), OFF(kvm_segment, g), OFF(kvm_segment, avl), OFF(kvm_segment, unusable),
    SIZE(kvm_dtable), OFF(kvm_dtable, base), OFF(kvm_dtable, limit),
    SIZE(kvm_sregs),
    OFF(kvm_sregs, cs), OFF(kvm_sregs, ds), OFF(kvm_sregs, es), OFF(kvm_sregs, fs), OFF(kvm_sregs, gs),
    OFF(kvm_sregs, ss), OFF(kvm_sregs, tr), OFF(kvm_sregs, ldt), OFF(kvm_sregs, gdt), OFF(kvm_sregs, idt),
    OFF(kvm_sregs, cr0), OFF(kvm_sregs, cr2), OFF(kvm_sregs, cr3), OFF(kvm_sregs, cr4), OFF(kvm_sregs, cr8),
    OFF(kvm_sregs, efer), OFF(kvm_sregs, apic_base), OFF(kvm_sregs, interrupt_bitmap),

    SIZE(kvm_fpu),
    OFF(kvm_fpu, fpr), OFF(kvm_fpu, fcw), OFF(kvm_fpu, fsw), OFF(kvm_fpu, ftwx), OFF(kvm_fpu, last_opcode),
    OFF(kvm_fpu, last_ip), OFF(kvm_fpu, last_dp), OFF(kvm_fpu, xmm), OFF(kvm_fpu, mxcsr),

    SIZE(kvm_cpuid_entry2),
    OFF(kvm_cpuid_entry2, function), OFF(kvm_cpuid_entry2, index), OFF(kvm_cpuid_entry2, flags),
    OFF(kvm_cpuid_entry2, eax), OFF(kvm_cpuid_entry2, ebx), OFF(kvm_cpuid_entry2, ecx), OFF(kvm_cpuid_entry2, edx),

    SIZE(kvm_msr_entry), OFF(kvm_msr_entry, index), OFF(kvm_msr_entry, data),

    SIZE(kvm_irq_routing_entry),
    OFF(kvm_irq_routing_entry, gsi), OFF(kvm_irq_routing_entry, type), OFF(kvm_irq_routing_entry, flags),
    OFF(kvm_irq_routing_entry, u.irqchip.irqchip), OFF(kvm_irq_routing_entry, u.irqchip.pin),
    OFF(kvm_irq_routing_entry, u.msi.address_lo), OFF(kvm_irq_routing_entry, u.msi.address_hi),
    OFF(kvm_irq_routing_entry, u.msi.data),

    SIZE(kvm_lapic_state), SIZE(kvm_mp_state), SIZE(kvm_vcpu_events), SIZE(kvm_xsave), SIZE(kvm_xcrs),
    SIZE(kvm_irqchip), SIZE(kvm_pit_state2), SIZE(kvm_clock_data),
    OFF(kvm_clock_data, clock), OFF(kvm_clock_data, flags),

    SIZE(kvm_coalesced_mmio_ring), OFF(kvm_coalesced_mmio_ring, first), OFF(kvm_coalesced_mmio_ring, last),
    OFF(kvm_coalesced_mmio_ring, coalesced_mmio),
    SIZE(kvm_coalesced_mmio), OFF(kvm_coalesced_mmio, phys_addr), OFF(kvm_coalesced_mmio, len),
    OFF(kvm_coalesced_mmio, pio), OFF(kvm_coalesced_mmio, data),
};
const size_t nv_layout_count = sizeof(nv_layout) / sizeof(nv_layout[0]);
