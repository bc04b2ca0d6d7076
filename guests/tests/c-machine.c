/*
 * c-machine: guest-side checks of the machine nodevisor builds, one per scenario, chosen by the
 * command line (boot it as c-machine.elf through PVH with --cmdline NAME):
 *   acpi      RSDP, XSDT and every table's checksum; MADT CPU count; prints the tables
 *   smp       starts the APs (INIT-SIPI-SIPI); each increments a shared counter
 *   rtc       prints the RTC's date and time (the test compares it with the host's clock)
 *   pci       enumerates bus 0 through configuration mechanism 1
 *   poweroff  powers off through the FADT's sleep control register (the VMM exits 0)
 *   reset     resets through the i8042 (0xFE to port 0x64)
 *   echo      echoes serial input using RX interrupts (IOAPIC pin 4) until it reads 'q'
 *   kbd       prints i8042 scancodes taken on IRQ 1 until Delete (0x53) arrives (Ctrl-Alt-Del)
 *   rng       drives the virtio-rng PCI device (run with --rng): features, a split queue, MSI-X;
 *             then a broken request (NEEDS_RESET expected), a reset, and service again
 *   demo      all of the read-only ones, then powers off: nodevisor's built-in demo guest
 * Exit codes: 0 pass; 2.. the failing check.
 */
#include "virtio.h"

static const char *cmdline(void) {
  struct hvm_start_info *si = nv_start_info();
  return si && si->cmdline_paddr ? (const char *)si->cmdline_paddr : "";
}

static int has_word(const char *s, const char *w) {
  size_t n = strlen(w);
  for (const char *p = s; *p; p++)
    if ((p == s || p[-1] == ' ') && !memcmp(p, w, n) && (p[n] == 0 || p[n] == ' ')) return 1;
  return 0;
}

/* ---- acpi ---- */
static int tables_bad;
static void print_table(const struct acpi_header *t, void *ctx) {
  (void)ctx;
  int ok = acpi_checksum_ok(t, t->length);
  if (!ok) tables_bad++;
  printf("acpi: %c%c%c%c at %p, %u bytes, OEM %c%c%c%c%c%c, checksum %s\n", t->signature[0], t->signature[1], t->signature[2], t->signature[3],
         (void *)t, t->length, t->oem_id[0], t->oem_id[1], t->oem_id[2], t->oem_id[3], t->oem_id[4], t->oem_id[5], ok ? "ok" : "BAD");
}

static int madt_cpus(void) {
  const struct acpi_header *madt = acpi_find_table("APIC");
  if (!madt) return -1;
  int n = 0;
  for (u32 off = 44; off + 2 <= madt->length; off += ((u8 *)madt)[off + 1]) {
    u8 type = ((u8 *)madt)[off], len = ((u8 *)madt)[off + 1];
    if (len < 2) return -1;
    if (type == 0 && (((u8 *)madt)[off + 4] & 1)) n++;
  }
  return n;
}

static int check_acpi(void) {
  printf("acpi: RSDP at %lx\n", acpi_find_rsdp());
  int n = acpi_each_table(print_table, NULL);
  if (n < 0) return 2;
  if (tables_bad) return 3;
  const struct acpi_header *dsdt_holder = acpi_find_table("FACP");
  if (!dsdt_holder) return 4;
  const struct acpi_header *dsdt = (const struct acpi_header *)*(u64 *)((u64)dsdt_holder + 140);
  printf("acpi: DSDT at %p, %u bytes, checksum %s\n", (void *)dsdt, dsdt->length, acpi_checksum_ok(dsdt, dsdt->length) ? "ok" : "BAD");
  if (!acpi_checksum_ok(dsdt, dsdt->length)) return 5;
  printf("acpi: MADT lists %d CPUs\n", madt_cpus());
  return madt_cpus() > 0 ? 0 : 6;
}

/* ---- smp ---- */
static volatile u32 ap_count;
static void ap_work(u32 apic_id) {
  (void)apic_id;
  __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);
}

static int check_smp(void) {
  int cpus = madt_cpus();
  if (cpus < 1) return 2;
  if (cpus > 1) smp_start_aps(ap_work);
  for (u64 spins = 0; ap_count < (u32)(cpus - 1) && spins < 200000000; spins++) cpu_relax();
  printf("smp: %u of %d APs checked in; %u CPUs up\n", ap_count, cpus - 1, ap_count + 1);
  return ap_count == (u32)(cpus - 1) ? 0 : 3;
}

/* ---- rtc ---- */
static int check_rtc(void) {
  struct rtc_time t;
  rtc_read(&t);
  printf("rtc: %04d-%02d-%02d %02d:%02d:%02d UTC\n", t.year, t.month, t.day, t.hour, t.minute, t.second);
  return t.year >= 2000 && t.month >= 1 && t.month <= 12 && t.day >= 1 && t.day <= 31 ? 0 : 2;
}

/* ---- pci ---- */
static int check_pci(void) {
  int found = 0, bridge = 0;
  for (u8 dev = 0; dev < 32; dev++) {
    u32 id = pci_read32(0, dev, 0, 0);
    if (id == 0xffffffff) continue;
    u32 class = pci_read32(0, dev, 0, 8) >> 8;
    printf("pci: 00:%02x.0 %04x:%04x class %06x\n", dev, id & 0xffff, id >> 16, class);
    found++;
    if (dev == 0 && (class >> 8) == 0x0600) bridge = 1;
  }
  return found > 0 && bridge ? 0 : 2;
}

/* ---- echo ---- */
#define SERIAL_VECTOR 0x24
static volatile int quit;
__attribute__((interrupt)) static void serial_irq(void *frame) {
  (void)frame;
  while (inb(0x3fd) & 1) {
    u8 c = inb(0x3f8);
    if (c == 'q') quit = 1;
    else putchar(c);
  }
  lapic_eoi();
}

static int check_echo(void) {
  irq_route(4, SERIAL_VECTOR, (void (*)(void *))serial_irq);
  outb(0x3fc, 0x08); /* MCR.OUT2 */
  outb(0x3f9, 0x01); /* IER: receive data available */
  puts("echo: ready");
  sti();
  while (!quit) hlt();
  cli();
  puts("echo: bye");
  return 0;
}

/* ---- kbd ---- */
#define KBD_VECTOR 0x21
static volatile int got_delete;
__attribute__((interrupt)) static void kbd_irq(void *frame) {
  (void)frame;
  while (inb(0x64) & 1) {
    u8 code = inb(0x60);
    printf("kbd: %02x\n", code);
    if (code == 0x53) got_delete = 1;
  }
  lapic_eoi();
}

static int check_kbd(void) {
  irq_route(1, KBD_VECTOR, (void (*)(void *))kbd_irq);
  outb(0x64, 0x60); /* write the command byte: keyboard interrupt on, translation on */
  outb(0x60, 0x41);
  puts("kbd: ready");
  sti();
  while (!got_delete) hlt();
  cli();
  puts("kbd: ctrl-alt-del received");
  return 0;
}

/* ---- virtio-rng (virtio 1.2 §4.1 PCI transport, §2.7 split queue), through lib/virtio ---- */
static u8 rng_buf[64] __attribute__((aligned(64)));

/* Reset, VERSION_1 only, queue 0 with MSI-X, DRIVER_OK; the exit codes name the failing step. */
static int virtio_rng_setup(struct vdev *d) {
  int r = virtio_start(d, 0);
  if (r == VIRTIO_ENOVERSION1) return 10;
  if (r == VIRTIO_EFEATURES) return 11;
  if (r) return 13;
  if ((r = virtio_queue_setup(d, 0, 16))) return r == VIRTIO_EVECTOR ? 13 : 12;
  return virtio_driver_ok(d) ? 14 : 0;
}

/* One 64-byte request, completed with a queue interrupt. */
static int rng_request(struct vdev *d) {
  struct virtq *q = &d->vq[0];
  memset(rng_buf, 0, sizeof rng_buf);
  u32 irqs = vq_irqs(q), len = 0;
  struct vbuf b = {(u64)rng_buf, sizeof rng_buf, 1};
  if (vq_add(q, &b, 1, NULL) < 0) return 20;
  vq_kick(q);
  if (virtio_wait_count(vq_irq_counter(q), irqs + 1, 5000)) return 20;
  if (vq_get(q, &len, NULL) != 1 || len != sizeof rng_buf) return 21;
  int nonzero = 0;
  for (unsigned i = 0; i < sizeof rng_buf; i++) nonzero |= rng_buf[i];
  if (!nonzero) return 22;
  printf("rng: %u random bytes by MSI-X: %02x %02x %02x %02x ...\n", len, rng_buf[0], rng_buf[1], rng_buf[2], rng_buf[3]);
  return 0;
}

static int check_rng(void) {
  static struct vdev dev;
  struct vdev *d = &dev;
  if (virtio_find(VIRTIO_ID_RNG, 0, d)) return 2;
  printf("rng: virtio-rng at 00:%02x.0, common config at %lx\n", d->slot, d->common);
  int r = virtio_rng_setup(d);
  if (r) return r;
  if ((r = rng_request(d))) return r;
  /* A request with a device-readable buffer is a driver bug: the device must refuse it. */
  u32 cfg = virtio_cfg_irqs(d);
  struct vbuf b = {(u64)rng_buf, 16, 0};
  if (vq_add(&d->vq[0], &b, 1, NULL) < 0) return 30;
  vq_kick(&d->vq[0]);
  if (virtio_wait_count(virtio_cfg_irq_counter(d), cfg + 1, 5000)) return 30;
  if (!(virtio_status(d) & VIRTIO_S_NEEDS_RESET)) return 31;
  puts("rng: broken request refused: device needs reset");
  if ((r = virtio_rng_setup(d))) return 40 + r;
  if ((r = rng_request(d))) return 60 + r;
  puts("rng: serving again after reset");
  return 0;
}

int main(void) {
  const char *c = cmdline();
  if (has_word(c, "acpi")) return check_acpi();
  if (has_word(c, "smp")) return check_smp();
  if (has_word(c, "rtc")) return check_rtc();
  if (has_word(c, "pci")) return check_pci();
  if (has_word(c, "echo")) return check_echo();
  if (has_word(c, "kbd")) return check_kbd();
  if (has_word(c, "rng")) return check_rng();
  if (has_word(c, "poweroff")) {
    puts("poweroff: through the FADT sleep control register");
    acpi_poweroff();
    return 2; /* still running: the power-off failed */
  }
  if (has_word(c, "reset")) {
    puts("reset: through the i8042");
    outb(0x64, 0xfe);
    return 2;
  }
  /* demo (and no command line): show what this machine is, then power off. */
  puts("nodevisor demo guest: a freestanding C program describing the machine it runs on");
  int r = check_acpi() | check_pci() | check_rtc() | check_smp();
  struct hvm_start_info *si = nv_start_info();
  if (si) {
    struct { u64 addr, size; u32 type, reserved; } *mm = (void *)si->memmap_paddr;
    for (u32 i = 0; i < si->memmap_entries; i++) printf("memory: %016lx-%016lx %s\n", mm[i].addr, mm[i].addr + mm[i].size - 1, mm[i].type == 1 ? "RAM" : "reserved");
  }
  if (r) return r;
  puts("demo: done, powering off");
  acpi_poweroff();
  return 2;
}
