/* Guest-side drivers: ACPI tables, PCI config mechanism 1, CMOS RTC, LAPIC/IOAPIC, IDT, SMP start-up. */
#include "machine.h"

/* ---------------- ACPI ---------------- */

int acpi_checksum_ok(const void *p, u32 len) {
  u8 s = 0;
  for (u32 i = 0; i < len; i++) s += ((const u8 *)p)[i];
  return s == 0;
}

u64 acpi_find_rsdp(void) {
  struct hvm_start_info *si = nv_start_info();
  if (si && si->rsdp_paddr) return si->rsdp_paddr;
  for (u64 a = 0xe0000; a < 0x100000; a += 16)
    if (!memcmp((void *)a, "RSD PTR ", 8) && acpi_checksum_ok((void *)a, 20)) return a;
  return 0;
}

int acpi_each_table(void (*fn)(const struct acpi_header *t, void *ctx), void *ctx) {
  u64 rsdp = acpi_find_rsdp();
  if (!rsdp || *(u8 *)(rsdp + 15) < 2 || !acpi_checksum_ok((void *)rsdp, 36)) return -1;
  const struct acpi_header *xsdt = (const struct acpi_header *)*(u64 *)(rsdp + 24);
  if (memcmp(xsdt->signature, "XSDT", 4) || !acpi_checksum_ok(xsdt, xsdt->length)) return -1;
  int n = 0;
  for (u32 off = sizeof *xsdt; off + 8 <= xsdt->length; off += 8, n++) {
    const struct acpi_header *t = (const struct acpi_header *)*(u64 *)((u64)xsdt + off);
    if (fn) fn(t, ctx);
  }
  return n;
}

struct find_ctx { const char *sig; const struct acpi_header *found; };
static void find_cb(const struct acpi_header *t, void *ctx) {
  struct find_ctx *f = ctx;
  if (!f->found && !memcmp(t->signature, f->sig, 4)) f->found = t;
}

const struct acpi_header *acpi_find_table(const char sig[4]) {
  struct find_ctx f = {sig, NULL};
  acpi_each_table(find_cb, &f);
  return f.found;
}

void acpi_poweroff(void) {
  const struct acpi_header *fadt = acpi_find_table("FACP");
  if (!fadt || fadt->length < 268) return;
  u64 port = *(u64 *)((u64)fadt + 244 + 4); /* SLEEP_CONTROL_REG.Address (System I/O) */
  outb((u16)port, (5 << 2) | (1 << 5));    /* SLP_TYP = S5, SLP_EN */
}

/* ---------------- PCI ---------------- */

static u32 pci_addr(u8 bus, u8 dev, u8 fn, u8 reg) {
  return 0x80000000u | ((u32)bus << 16) | ((u32)dev << 11) | ((u32)fn << 8) | (reg & 0xfc);
}
u32 pci_read32(u8 bus, u8 dev, u8 fn, u8 reg) {
  outl(0xcf8, pci_addr(bus, dev, fn, reg));
  return inl(0xcfc);
}
void pci_write32(u8 bus, u8 dev, u8 fn, u8 reg, u32 v) {
  outl(0xcf8, pci_addr(bus, dev, fn, reg));
  outl(0xcfc, v);
}

/* ---------------- RTC ---------------- */

static u8 cmos(u8 reg) {
  outb(0x70, reg);
  return inb(0x71);
}
static int bcd(u8 v) { return (v >> 4) * 10 + (v & 15); }

void rtc_read(struct rtc_time *t) {
  while (cmos(0x0a) & 0x80) cpu_relax(); /* wait out an update */
  int binary = cmos(0x0b) & 4;
  int (*cv)(u8) = binary ? NULL : bcd;
#define RD(r) (cv ? cv(cmos(r)) : cmos(r))
  t->second = RD(0);
  t->minute = RD(2);
  t->hour = RD(4);
  t->day = RD(7);
  t->month = RD(8);
  t->year = RD(0x32) * 100 + RD(9);
#undef RD
}

/* ---------------- APICs and the IDT ---------------- */

u32 lapic_id(void) { return mmio_read32(LAPIC_BASE + 0x20) >> 24; }
void lapic_enable(void) { mmio_write32(LAPIC_BASE + 0xf0, mmio_read32(LAPIC_BASE + 0xf0) | 0x1ff); }
void lapic_eoi(void) { mmio_write32(LAPIC_BASE + 0xb0, 0); }

void ioapic_route(u8 pin, u8 vector, u8 dest) {
  mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin + 1);
  mmio_write32(IOAPIC_BASE + 0x10, (u32)dest << 24);
  mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin);
  mmio_write32(IOAPIC_BASE + 0x10, vector); /* fixed, physical, edge, active high, unmasked */
}

struct idt_entry { u16 off0, sel; u8 ist, type; u16 off1; u32 off2, zero; } __attribute__((packed));
static struct idt_entry idt[256] __attribute__((aligned(16)));

void idt_set(u8 vector, void (*handler)(void *frame)) {
  u64 a = (u64)handler;
  idt[vector] = (struct idt_entry){(u16)a, 0x18, 0, 0x8e, (u16)(a >> 16), (u32)(a >> 32), 0};
}

void irq_route(u8 pin, u8 vector, void (*handler)(void *frame)) {
  outb(0x21, 0xff); /* mask the 8259s: interrupts come through the IOAPIC */
  outb(0xa1, 0xff);
  idt_set(vector, handler);
  idt_load();
  lapic_enable();
  ioapic_route(pin, vector, (u8)lapic_id());
}

void idt_load(void) {
  struct { u16 limit; u64 base; } __attribute__((packed)) d = {sizeof idt - 1, (u64)idt};
  __asm__ volatile("lidt %0" : : "m"(d));
}

u64 rdtsc(void) {
  u32 lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32) | lo;
}

void delay_loops(u64 n) {
  for (volatile u64 i = 0; i < n; i++) cpu_relax();
}

/* ---------------- SMP ---------------- */

#define TRAMPOLINE 0x8000UL
extern char ap_trampoline_start[], ap_trampoline_end[];
extern volatile u64 ap_trampoline_cr3, ap_trampoline_stack, ap_trampoline_entry;
static void (*volatile ap_fn)(u32);
/* 16 APs with 4 KiB each: a flat image and its .bss must end below the page tables at 0x80000. */
static u8 ap_stacks[16][4096] __attribute__((aligned(16)));

/* Runs on each AP once it reaches long mode (entered from the trampoline). */
void ap_main(void) {
  ap_fn(lapic_id());
  for (;;) __asm__ volatile("cli; hlt");
}

void smp_start_aps(void (*fn)(u32)) {
  ap_fn = fn;
  memcpy((void *)TRAMPOLINE, ap_trampoline_start, ap_trampoline_end - ap_trampoline_start);
  u64 cr3;
  __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
  /* The trampoline's variables live in the copy at TRAMPOLINE. */
  u64 off = (u64)TRAMPOLINE - (u64)ap_trampoline_start;
  *(volatile u64 *)((u64)&ap_trampoline_cr3 + off) = cr3;
  *(volatile u64 *)((u64)&ap_trampoline_entry + off) = (u64)ap_main;
  *(volatile u64 *)((u64)&ap_trampoline_stack + off) = (u64)ap_stacks;
  mmio_write32(LAPIC_BASE + 0x310, 0);
  mmio_write32(LAPIC_BASE + 0x300, 0x000c4500); /* INIT to all excluding self */
  delay_loops(10000);
  for (int i = 0; i < 2; i++) {
    mmio_write32(LAPIC_BASE + 0x300, 0x000c4600 | (TRAMPOLINE >> 12)); /* SIPI, vector = page */
    delay_loops(1000);
  }
}

/* ---------------- time ---------------- */

static void cpuid(u32 leaf, u32 *a, u32 *b, u32 *c, u32 *d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

/* A hypervisor that publishes the TSC rate (leaf 0x40000010, in kHz: VMware's convention, which
 * KVM VMMs may fill in) makes measuring unnecessary. */
static u64 tsc_from_hypervisor(void) {
  u32 a, b, c, d;
  cpuid(1, &a, &b, &c, &d);
  if (!(c & (1u << 31))) return 0; /* not running under a hypervisor */
  cpuid(0x40000000, &a, &b, &c, &d);
  if (a < 0x40000010) return 0;
  cpuid(0x40000010, &a, &b, &c, &d);
  return (u64)a * 1000;
}

/* CPUID leaf 0x15: TSC = crystal * numerator / denominator, when the crystal rate is given. */
static u64 tsc_from_cpuid15(void) {
  u32 a, b, c, d;
  cpuid(0, &a, &b, &c, &d);
  if (a < 0x15) return 0;
  cpuid(0x15, &a, &b, &c, &d);
  if (!a || !b || !c) return 0;
  return (u64)c * b / a;
}

#define PIT_HZ 1193182u
/* Counts TSC ticks while PIT channel 2 counts down `count` ticks in mode 0 (its output, read in
 * bit 5 of port 0x61, rises at terminal count). Gate on, speaker off. Bounded: a missing PIT
 * (port 0x61 reading 0xff) gives a result the caller throws away. */
static u64 pit_measure(u16 count) {
  outb(0x61, (inb(0x61) & ~0x02) | 0x01);
  outb(0x43, 0xb0); /* channel 2, lobyte/hibyte, mode 0, binary */
  outb(0x42, count & 0xff);
  outb(0x42, count >> 8);
  u64 t0 = rdtsc();
  for (u32 i = 0; i < 50000000 && !(inb(0x61) & 0x20); i++) cpu_relax();
  return rdtsc() - t0;
}

static u64 tsc_from_pit(void) {
  u64 best = ~0ul;
  for (int i = 0; i < 3; i++) { /* the shortest of three: a preempted measurement only runs long */
    u64 t = pit_measure(PIT_HZ / 20); /* 50 ms */
    if (t < best) best = t;
  }
  u64 hz = best * 20;
  return hz > 100000000ul && hz < 20000000000ul ? hz : 0;
}

static u64 tsc_rate;
static const char *tsc_source;

u64 tsc_hz(const char **source) {
  if (!tsc_rate) {
    if ((tsc_rate = tsc_from_hypervisor())) tsc_source = "cpuid-40000010";
    else if ((tsc_rate = tsc_from_cpuid15())) tsc_source = "cpuid-15";
    else if ((tsc_rate = tsc_from_pit())) tsc_source = "pit";
    else tsc_rate = 2000000000ul, tsc_source = "guess";
  }
  if (source) *source = tsc_source;
  return tsc_rate;
}

u64 tsc_ms(u64 ms) { return tsc_hz(NULL) / 1000 * ms; }
u64 tsc_to_us(u64 ticks) { return muldiv64(ticks, 1000000, tsc_hz(NULL)); }

/* ---------------- kernel command line ---------------- */

const char *boot_cmdline(void) {
  struct hvm_start_info *si = nv_start_info();
  return si && si->cmdline_paddr ? (const char *)si->cmdline_paddr : "";
}

/* Start of `word` as a whole word in the command line (followed by `end` or a space/NUL), or NULL. */
static const char *cmdline_find(const char *word, char end) {
  const char *s = boot_cmdline();
  size_t n = strlen(word);
  for (const char *p = s; *p; p++) {
    if ((p != s && p[-1] != ' ') || memcmp(p, word, n)) continue;
    if (p[n] == end || (!end && p[n] == ' ')) return p;
  }
  return NULL;
}

int cmdline_has(const char *word) { return cmdline_find(word, 0) != NULL; }

u64 cmdline_u64(const char *key, u64 dflt) {
  const char *p = cmdline_find(key, '=');
  if (!p) return dflt;
  p += strlen(key) + 1;
  u64 v = 0;
  int base = 10;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) base = 16, p += 2;
  for (;; p++) {
    int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : *p >= 'A' && *p <= 'F' ? *p - 'A' + 10 : 99;
    if (d >= base) break;
    v = v * base + d;
  }
  return v;
}
