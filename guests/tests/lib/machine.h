/* Guest-side drivers for the machine nodevisor emulates: ACPI tables, PCI, CMOS RTC, APICs, SMP. */
#ifndef NV_MACHINE_H
#define NV_MACHINE_H
#include "nv.h"

/* ---- ACPI ---- */
struct acpi_header {
  char signature[4];
  u32 length;
  u8 revision, checksum;
  char oem_id[6], oem_table_id[8];
  u32 oem_revision;
  char creator_id[4];
  u32 creator_revision;
} __attribute__((packed));

/* The RSDP from hvm_start_info, else by scanning 0xE0000-0xFFFFF as an OS without hints does. */
u64 acpi_find_rsdp(void);
/* Calls fn for every table the XSDT lists; returns how many, or -1 if the RSDP/XSDT is bad. */
int acpi_each_table(void (*fn)(const struct acpi_header *t, void *ctx), void *ctx);
const struct acpi_header *acpi_find_table(const char sig[4]);
int acpi_checksum_ok(const void *p, u32 len);
/* Powers off through the FADT's sleep control register with \_S5's SLP_TYP (5 here). */
void acpi_poweroff(void);

/* ---- PCI (configuration mechanism 1) ---- */
u32 pci_read32(u8 bus, u8 dev, u8 fn, u8 reg);
void pci_write32(u8 bus, u8 dev, u8 fn, u8 reg, u32 v);

/* ---- CMOS RTC ---- */
struct rtc_time { int year, month, day, hour, minute, second; };
void rtc_read(struct rtc_time *t);

/* ---- APICs and interrupts ---- */
#define LAPIC_BASE 0xfee00000UL
#define IOAPIC_BASE 0xfec00000UL
u32 lapic_id(void);
void lapic_enable(void);
void lapic_eoi(void);
void ioapic_route(u8 pin, u8 vector, u8 dest_apic);
void idt_set(u8 vector, void (*handler)(void *frame));
void idt_load(void);
/* Masks the 8259s and delivers IOAPIC pin `pin` to this CPU at `vector`, handled by `handler`. */
void irq_route(u8 pin, u8 vector, void (*handler)(void *frame));
static inline void sti(void) { __asm__ volatile("sti"); }
static inline void cli(void) { __asm__ volatile("cli"); }
static inline void hlt(void) { __asm__ volatile("hlt"); }

/* ---- SMP ---- */
/* Starts every AP with INIT-SIPI-SIPI; each runs fn(apic_id) on its own stack, then halts (16 APs at most). */
void smp_start_aps(void (*fn)(u32 apic_id));

u64 rdtsc(void);
void delay_loops(u64 n);

/* ---- time ---- */
/* The TSC's rate in Hz, measured once: from a hypervisor or CPUID leaf when one gives it, else
 * against PIT channel 2. `source` (may be NULL) names where it came from ("cpuid-40000010",
 * "cpuid-15", "pit", or "guess" when nothing worked: then 2 GHz is assumed). */
u64 tsc_hz(const char **source);
/* a * b / c with a 128-bit intermediate (no libgcc here); the quotient must fit in 64 bits. */
static inline u64 muldiv64(u64 a, u64 b, u64 c) {
  u64 q, r;
  __asm__("mulq %3\n\tdivq %4" : "=a"(q), "=&d"(r) : "a"(a), "rm"(b), "rm"(c) : "cc");
  (void)r;
  return q;
}
/* TSC ticks in `ms` milliseconds, and microseconds in `ticks`. */
u64 tsc_ms(u64 ms);
u64 tsc_to_us(u64 ticks);

/* ---- kernel command line (PVH: hvm_start_info.cmdline_paddr; "" when booted flat) ---- */
const char *boot_cmdline(void);
/* Whether `word` appears as a whole space-separated word. */
int cmdline_has(const char *word);
/* The number after "key=" (decimal, or hex with 0x), or `dflt` when the key is absent. */
u64 cmdline_u64(const char *key, u64 dflt);
#endif
