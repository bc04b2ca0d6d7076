/** KVM ABI constants from <linux/kvm.h>, named as in the header so they can be grepped against it. */

/** kvm_run.exit_reason values. */
export const KVM_EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  SET_TPR: 11,
  TPR_ACCESS: 12,
  NMI: 16,
  INTERNAL_ERROR: 17,
  OSI: 18,
  PAPR_HCALL: 19,
  WATCHDOG: 21,
  EPR: 23,
  SYSTEM_EVENT: 24,
  IOAPIC_EOI: 26,
  HYPERV: 27,
  X86_RDMSR: 29,
  X86_WRMSR: 30,
  DIRTY_RING_FULL: 31,
  AP_RESET_HOLD: 32,
  X86_BUS_LOCK: 33,
  XEN: 34,
  NOTIFY: 37,
  MEMORY_FAULT: 39,
} as const;

/** Reverse map for messages: 17 → 'INTERNAL_ERROR'. */
export const KVM_EXIT_NAME: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(KVM_EXIT).map(([k, v]) => [v, k]),
);

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

/** kvm_run.internal.suberror values. */
export const KVM_INTERNAL_ERROR = {
  EMULATION: 1,
  SIMUL_EX: 2,
  DELIVERY_EV: 3,
  UNEXPECTED_EXIT_REASON: 4,
} as const;

/** kvm_run.system_event.type values. */
export const KVM_SYSTEM_EVENT = { SHUTDOWN: 1, RESET: 2, CRASH: 3, WAKEUP: 4, SUSPEND: 5, SEV_TERM: 6 } as const;

/** Capabilities nodevisor checks (KVM_CHECK_EXTENSION). */
export const KVM_CAP = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  PIT: 11,
  MP_STATE: 14,
  COALESCED_MMIO: 15,
  IRQ_ROUTING: 25,
  SET_IDENTITY_MAP_ADDR: 37,
  IRQFD: 32,
  PIT2: 33,
  SET_BOOT_CPU_ID: 34,
  IOEVENTFD: 36,
  ADJUST_CLOCK: 39,
  VCPU_EVENTS: 41,
  XSAVE: 55,
  XCRS: 56,
  MAX_VCPUS: 66,
  SIGNAL_MSI: 77,
  IOEVENTFD_ANY_LENGTH: 122,
  IMMEDIATE_EXIT: 136,
  COALESCED_PIO: 162,
} as const;

/** KVM_CREATE_PIT2 flags. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** KVM_IOEVENTFD flags. */
export const KVM_IOEVENTFD_FLAG = { DATAMATCH: 1 << 0, PIO: 1 << 1, DEASSIGN: 1 << 2 } as const;

/** KVM_IRQFD flags. */
export const KVM_IRQFD_FLAG = { DEASSIGN: 1 << 0, RESAMPLE: 1 << 1 } as const;

/** Memory slot flags. */
export const KVM_MEM = { LOG_DIRTY_PAGES: 1 << 0, READONLY: 1 << 1 } as const;

/** kvm_mp_state.mp_state values. */
export const KVM_MP_STATE = { RUNNABLE: 0, UNINITIALIZED: 1, INIT_RECEIVED: 2, HALTED: 3, SIPI_RECEIVED: 4 } as const;

/** The API version every supported kernel reports. */
export const KVM_API_VERSION = 12;

/** kvm_irq_routing_entry.type and the in-kernel irqchip ids (KVM_IRQCHIP_*). */
export const KVM_IRQ_ROUTING = { IRQCHIP: 1, MSI: 2 } as const;
export const KVM_IRQCHIP = { PIC_MASTER: 0, PIC_SLAVE: 1, IOAPIC: 2 } as const;
