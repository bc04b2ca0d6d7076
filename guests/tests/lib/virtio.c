/*
 * Modern virtio PCI driver library (see virtio.h). Written from the virtio 1.2 specification:
 * §4.1.4 (PCI capabilities), §4.1.5 (device initialization over PCI), §3.1.1 (the initialization
 * sequence), §2.7 (split virtqueues).
 */
#include "virtio.h"

/* virtio_pci_common_cfg (§4.1.4.3). */
#define CC_DEVICE_FEATURE_SELECT 0
#define CC_DEVICE_FEATURE 4
#define CC_DRIVER_FEATURE_SELECT 8
#define CC_DRIVER_FEATURE 12
#define CC_CONFIG_MSIX_VECTOR 16
#define CC_NUM_QUEUES 18
#define CC_DEVICE_STATUS 20
#define CC_CONFIG_GENERATION 21
#define CC_QUEUE_SELECT 22
#define CC_QUEUE_SIZE 24
#define CC_QUEUE_MSIX_VECTOR 26
#define CC_QUEUE_ENABLE 28
#define CC_QUEUE_NOTIFY_OFF 30
#define CC_QUEUE_DESC 32
#define CC_QUEUE_DRIVER 40
#define CC_QUEUE_DEVICE 48
#define CC_SIZE 56

/* virtio_pci_cap cfg_type values (§4.1.4). */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

#define PCI_CAP_VENDOR 0x09
#define PCI_CAP_MSIX 0x11
#define FOUR_GIB 0x100000000ul

const char *virtio_strerror(int err) {
  switch (err) {
    case 0: return "ok";
    case VIRTIO_ENODEV: return "no such device, or unusable capabilities";
    case VIRTIO_ETIMEDOUT: return "timed out";
    case VIRTIO_ENEEDSRESET: return "device needs reset";
    case VIRTIO_EFULL: return "queue full";
    case VIRTIO_EDEVICE: return "impossible answer from the device";
    case VIRTIO_ENOVERSION1: return "VERSION_1 not offered";
    case VIRTIO_EFEATURES: return "FEATURES_OK refused";
    case VIRTIO_ENOQUEUE: return "no such queue";
    case VIRTIO_EVECTOR: return "MSI-X vector refused";
    case VIRTIO_ENOMEM: return "ring pool exhausted";
    case VIRTIO_EINVAL: return "invalid argument";
    case VIRTIO_EBAR: return "capability in an unusable BAR";
    default: return "unknown error";
  }
}

/* ---------------- memory ---------------- */

/* Rings of a handful of queues of up to 256 entries (12 KiB each). Kept small: c-machine.bin, a
 * flat image, must end below 0x80000 with this in its .bss. */
static u8 pool[160 * 1024] __attribute__((aligned(4096)));
static size_t pool_used;

void *virtio_alloc(size_t size, size_t align) {
  size_t at = (pool_used + align - 1) & ~(align - 1);
  if (at + size > sizeof pool) return NULL;
  pool_used = at + size;
  return pool + at;
}

/* ---------------- interrupts ---------------- */

/* IDT vectors 0x40.. are handed out one per MSI-X table entry in use; each handler counts. */
#define IRQ_BASE 0x40
#define IRQ_COUNT 32
static volatile u32 irq_count[IRQ_COUNT];
static u32 irq_next;
static volatile u32 no_irqs; /* the counter of "no vector": stays 0 */

/* Handlers have different prototypes (with and without an error code): stored as one type. */
#define H(f) ((void (*)(void *))(void (*)(void))(f))
#define IRQ(n) __attribute__((interrupt)) static void irq_##n(void *f) { (void)f; irq_count[n]++; lapic_eoi(); }
IRQ(0) IRQ(1) IRQ(2) IRQ(3) IRQ(4) IRQ(5) IRQ(6) IRQ(7)
IRQ(8) IRQ(9) IRQ(10) IRQ(11) IRQ(12) IRQ(13) IRQ(14) IRQ(15)
IRQ(16) IRQ(17) IRQ(18) IRQ(19) IRQ(20) IRQ(21) IRQ(22) IRQ(23)
IRQ(24) IRQ(25) IRQ(26) IRQ(27) IRQ(28) IRQ(29) IRQ(30) IRQ(31)
static void (*const irq_handlers[IRQ_COUNT])(void *) = {
    H(irq_0), H(irq_1), H(irq_2), H(irq_3), H(irq_4), H(irq_5), H(irq_6), H(irq_7),
    H(irq_8), H(irq_9), H(irq_10), H(irq_11), H(irq_12), H(irq_13), H(irq_14), H(irq_15),
    H(irq_16), H(irq_17), H(irq_18), H(irq_19), H(irq_20), H(irq_21), H(irq_22), H(irq_23),
    H(irq_24), H(irq_25), H(irq_26), H(irq_27), H(irq_28), H(irq_29), H(irq_30), H(irq_31),
};

/* A CPU exception means a bug in the guest (or a device answer it trusted): say where, and exit
 * with status 125 instead of triple-faulting silently. */
struct iframe { u64 rip, cs, rflags, rsp, ss; };
static void exception(int vec, struct iframe *f, u64 err) {
  u64 cr2;
  __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
  printf("guest: CPU exception %d at rip %lx (error %lx, cr2 %lx)\n", vec, f->rip, err, cr2);
  exit(125);
}
#define EXC(n) __attribute__((interrupt)) static void exc_##n(struct iframe *f) { exception(n, f, 0); }
#define EXCE(n) __attribute__((interrupt)) static void exc_##n(struct iframe *f, unsigned long e) { exception(n, f, e); }
EXC(0) EXC(1) EXC(2) EXC(3) EXC(4) EXC(5) EXC(6) EXC(7)
EXCE(8) EXC(9) EXCE(10) EXCE(11) EXCE(12) EXCE(13) EXCE(14) EXC(15)
EXC(16) EXCE(17) EXC(18) EXC(19) EXC(20) EXCE(21) EXC(22) EXC(23)
EXC(24) EXC(25) EXC(26) EXC(27) EXC(28) EXCE(29) EXCE(30) EXC(31)
static void (*const exc_handlers[32])(void *) = {
    H(exc_0), H(exc_1), H(exc_2), H(exc_3), H(exc_4), H(exc_5), H(exc_6), H(exc_7),
    H(exc_8), H(exc_9), H(exc_10), H(exc_11), H(exc_12), H(exc_13), H(exc_14), H(exc_15),
    H(exc_16), H(exc_17), H(exc_18), H(exc_19), H(exc_20), H(exc_21), H(exc_22), H(exc_23),
    H(exc_24), H(exc_25), H(exc_26), H(exc_27), H(exc_28), H(exc_29), H(exc_30), H(exc_31),
};
__attribute__((interrupt)) static void spurious(void *f) { (void)f; } /* LAPIC spurious: no EOI */

/* Once: exception handlers, the 8259s masked (firmware may leave the PIT's IRQ 0 unmasked at a
 * vector we do not handle), the LAPIC on, interrupts on. */
static void irq_init(void) {
  static int done;
  if (done) return;
  done = 1;
  outb(0x21, 0xff);
  outb(0xa1, 0xff);
  for (int i = 0; i < 32; i++) idt_set(i, exc_handlers[i]);
  idt_set(0xff, spurious);
  idt_load();
  lapic_enable();
  sti();
}

/* A fresh IDT vector with a counting handler, or 0 when all are taken. */
static u8 irq_alloc(void) {
  if (irq_next >= IRQ_COUNT) return 0;
  u8 v = IRQ_BASE + irq_next;
  idt_set(v, irq_handlers[irq_next++]);
  idt_load();
  return v;
}

static volatile u32 *irq_counter(u8 vector) { return vector ? &irq_count[vector - IRQ_BASE] : &no_irqs; }

int virtio_wait_count(volatile u32 *counter, u32 target, u32 ms) {
  u64 end = rdtsc() + tsc_ms(ms);
  while (*counter < target) {
    if (rdtsc() > end) return VIRTIO_ETIMEDOUT;
    cpu_relax();
  }
  return 0;
}

volatile u32 *virtio_cfg_irq_counter(struct vdev *d) { return irq_counter(d->cfg_vector); }
volatile u32 *vq_irq_counter(struct virtq *q) { return irq_counter(q->vector); }
u32 virtio_cfg_irqs(struct vdev *d) { return *virtio_cfg_irq_counter(d); }
u32 vq_irqs(struct virtq *q) { return *vq_irq_counter(q); }

/* ---------------- PCI ---------------- */

/* Address of BAR `bar` (64-bit BARs span two registers), checked to hold [off, off+len) below
 * 4 GiB, where the runtime's identity map reaches. */
static int bar_range(u8 slot, u8 bar, u32 off, u32 len, u64 *out) {
  if (bar > 5) return VIRTIO_EBAR;
  u32 lo = pci_read32(0, slot, 0, 0x10 + 4 * bar);
  if (lo & 1) return VIRTIO_EBAR; /* I/O space */
  u64 a = lo & ~0xful;
  if (((lo >> 1) & 3) == 2) {
    if (bar == 5) return VIRTIO_EBAR;
    a |= (u64)pci_read32(0, slot, 0, 0x10 + 4 * (bar + 1)) << 32;
  }
  if (!a || a + off + len > FOUR_GIB) return VIRTIO_EBAR;
  *out = a + off;
  return 0;
}

/* Whether slot holds a virtio function of `type`: modern id 0x1040 + type, or a transitional id
 * 0x1000-0x103f whose subsystem id names the type. */
static int is_virtio(u8 slot, u16 type) {
  u32 id = pci_read32(0, slot, 0, 0);
  if ((id & 0xffff) != 0x1af4) return 0;
  u16 dev = id >> 16;
  if (dev == 0x1040 + type) return 1;
  return dev >= 0x1000 && dev <= 0x103f && (pci_read32(0, slot, 0, 0x2c) >> 16) == type;
}

/* One virtio vendor capability at config offset p: records the first of each type. */
static int parse_vendor_cap(struct vdev *d, u8 p) {
  u32 h = pci_read32(0, d->slot, 0, p);
  u8 cap_len = (h >> 16) & 0xff, type = h >> 24;
  if (cap_len < 16 || type < CAP_COMMON || type > CAP_DEVICE) return 0; /* PCI_CFG access and unknown types: unused */
  u8 bar = pci_read32(0, d->slot, 0, p + 4) & 0xff;
  u32 off = pci_read32(0, d->slot, 0, p + 8), len = pci_read32(0, d->slot, 0, p + 12);
  u64 at;
  if (bar > 5) return 0; /* reserved BAR numbers: ignore the capability (§4.1.4) */
  int r = bar_range(d->slot, bar, off, len, &at);
  if (r) return r;
  if (type == CAP_COMMON && !d->common && len >= CC_SIZE) d->common = at;
  if (type == CAP_ISR && !d->isr && len >= 1) d->isr = at;
  if (type == CAP_DEVICE && !d->devcfg) d->devcfg = at, d->devcfg_len = len;
  if (type == CAP_NOTIFY && !d->notify && cap_len >= 20) {
    d->notify = at;
    d->notify_len = len;
    d->notify_mult = pci_read32(0, d->slot, 0, p + 16);
  }
  return 0;
}

/* The MSI-X capability: table size, and where the table is (BIR + offset). */
static int parse_msix_cap(struct vdev *d, u8 p) {
  u16 entries = ((pci_read32(0, d->slot, 0, p) >> 16) & 0x7ff) + 1;
  u32 t = pci_read32(0, d->slot, 0, p + 4);
  int r = bar_range(d->slot, t & 7, t & ~7u, 16u * entries, &d->msix_table);
  if (r) return r;
  d->msix_cap = p;
  d->msix_entries = entries;
  return 0;
}

/* Walks the capability list. A capability in an unusable BAR is skipped (another of the same type
 * may do); only when a required one is missing does that become the error. Without a usable MSI-X
 * capability the device still works, polled. */
static int parse_caps(struct vdev *d) {
  if (!(pci_read32(0, d->slot, 0, 4) & (0x10u << 16))) return VIRTIO_ENODEV; /* no capability list */
  int bar_err = 0;
  u8 p = pci_read32(0, d->slot, 0, 0x34) & 0xfc;
  for (int n = 0; p >= 0x40 && n < 48; n++) { /* bounded: a looping list ends here */
    u32 h = pci_read32(0, d->slot, 0, p);
    int r = 0;
    if ((h & 0xff) == PCI_CAP_VENDOR) r = parse_vendor_cap(d, p);
    else if ((h & 0xff) == PCI_CAP_MSIX && !d->msix_cap) r = parse_msix_cap(d, p);
    if (r) bar_err = r;
    p = (h >> 8) & 0xfc;
  }
  if (d->common && d->notify && d->isr) return 0;
  return bar_err ? bar_err : VIRTIO_ENODEV;
}

int virtio_find(u16 type, int nth, struct vdev *d) {
  for (u8 slot = 0; slot < 32; slot++) {
    if (!is_virtio(slot, type) || nth-- > 0) continue;
    memset(d, 0, sizeof *d);
    d->slot = slot;
    d->type = type;
    pci_write32(0, slot, 0, 4, (pci_read32(0, slot, 0, 4) & 0xffff) | 0x6); /* memory space, bus master */
    return parse_caps(d);
  }
  return VIRTIO_ENODEV;
}

int virtio_count(u16 type) {
  int n = 0;
  for (u8 slot = 0; slot < 32; slot++) n += is_virtio(slot, type);
  return n;
}

/* ---------------- the device ---------------- */

#define CC(d, off) ((d)->common + (off))

u8 virtio_status(struct vdev *d) { return mmio_read8(CC(d, CC_DEVICE_STATUS)); }
static void set_status(struct vdev *d, u8 bits) { mmio_write8(CC(d, CC_DEVICE_STATUS), virtio_status(d) | bits); }

int virtio_reset(struct vdev *d) {
  mmio_write8(CC(d, CC_DEVICE_STATUS), 0);
  for (int i = 0; i < VIRTIO_MAX_QUEUES; i++) d->vq[i].enabled = 0, d->vq[i].chains = 0;
  /* §4.1.4.3.2: the reset is done once device_status reads 0. */
  u64 end = rdtsc() + tsc_ms(1000);
  while (virtio_status(d)) {
    if (rdtsc() > end) return VIRTIO_ETIMEDOUT;
    cpu_relax();
  }
  return 0;
}

u8 virtio_cfg8(struct vdev *d, u32 off) { return off + 1 <= d->devcfg_len ? mmio_read8(d->devcfg + off) : 0xff; }
u16 virtio_cfg16(struct vdev *d, u32 off) { return off + 2 <= d->devcfg_len ? mmio_read16(d->devcfg + off) : 0xffff; }
u32 virtio_cfg32(struct vdev *d, u32 off) { return off + 4 <= d->devcfg_len ? mmio_read32(d->devcfg + off) : ~0u; }

/* §4.1.3.1 / §2.5.1: a 64-bit field is two 32-bit reads; config_generation tells a torn read. */
u64 virtio_cfg64(struct vdev *d, u32 off) {
  if (off + 8 > d->devcfg_len) return ~0ul;
  u64 v = 0;
  for (int tries = 0; tries < 100; tries++) {
    u8 gen = mmio_read8(CC(d, CC_CONFIG_GENERATION));
    v = mmio_read32(d->devcfg + off) | (u64)mmio_read32(d->devcfg + off + 4) << 32;
    if (mmio_read8(CC(d, CC_CONFIG_GENERATION)) == gen) break;
  }
  return v;
}

static u64 read_features(struct vdev *d) {
  mmio_write32(CC(d, CC_DEVICE_FEATURE_SELECT), 0);
  u64 lo = mmio_read32(CC(d, CC_DEVICE_FEATURE));
  mmio_write32(CC(d, CC_DEVICE_FEATURE_SELECT), 1);
  return lo | (u64)mmio_read32(CC(d, CC_DEVICE_FEATURE)) << 32;
}

static void write_features(struct vdev *d, u64 f) {
  mmio_write32(CC(d, CC_DRIVER_FEATURE_SELECT), 0);
  mmio_write32(CC(d, CC_DRIVER_FEATURE), (u32)f);
  mmio_write32(CC(d, CC_DRIVER_FEATURE_SELECT), 1);
  mmio_write32(CC(d, CC_DRIVER_FEATURE), (u32)(f >> 32));
}

/* Points MSI-X table entry `entry` at this CPU's LAPIC with IDT vector `vector` (fixed delivery,
 * edge), then unmasks it. The table is PCI state: a virtio reset leaves it alone. */
static void msix_program(struct vdev *d, u16 entry, u8 vector) {
  u64 e = d->msix_table + 16ul * entry;
  mmio_write32(e + 0, 0xfee00000u | (lapic_id() << 12));
  mmio_write32(e + 4, 0);
  mmio_write32(e + 8, vector);
  mmio_write32(e + 12, 0);
}

/* The IDT vector of MSI-X entry `entry` of this device (entry 0: configuration changes; entry
 * 1 + i: queue i, or the last entry when the table is smaller), allocated once per device and
 * kept across resets. */
static u8 entry_vector(struct vdev *d, u16 entry) {
  if (entry > VIRTIO_MAX_QUEUES) return 0;
  if (!d->entry_vector[entry]) d->entry_vector[entry] = irq_alloc();
  return d->entry_vector[entry];
}

static int msix_start(struct vdev *d) {
  if (!d->msix_cap) {
    d->cfg_msix = VIRTIO_NO_VECTOR;
    return 0; /* no MSI-X: the driver polls */
  }
  u32 ctrl = pci_read32(0, d->slot, 0, d->msix_cap);
  pci_write32(0, d->slot, 0, d->msix_cap, (ctrl | (1u << 31)) & ~(1u << 30)); /* enable, function unmasked */
  u8 v = entry_vector(d, 0);
  if (!v) return VIRTIO_EVECTOR;
  d->cfg_vector = v;
  msix_program(d, 0, v);
  d->cfg_msix = 0;
  mmio_write16(CC(d, CC_CONFIG_MSIX_VECTOR), 0);
  return mmio_read16(CC(d, CC_CONFIG_MSIX_VECTOR)) == 0 ? 0 : VIRTIO_EVECTOR;
}

int virtio_start(struct vdev *d, u64 wanted) {
  irq_init();
  int r = virtio_reset(d);
  if (r) return r;
  set_status(d, VIRTIO_S_ACKNOWLEDGE);
  set_status(d, VIRTIO_S_DRIVER);
  d->offered = read_features(d);
  if (!(d->offered & VIRTIO_F_VERSION_1)) {
    set_status(d, VIRTIO_S_FAILED);
    return VIRTIO_ENOVERSION1;
  }
  d->features = d->offered & (wanted | VIRTIO_F_VERSION_1);
  write_features(d, d->features);
  set_status(d, VIRTIO_S_FEATURES_OK);
  if (!(virtio_status(d) & VIRTIO_S_FEATURES_OK)) {
    set_status(d, VIRTIO_S_FAILED);
    return VIRTIO_EFEATURES;
  }
  d->num_queues = mmio_read16(CC(d, CC_NUM_QUEUES));
  return msix_start(d);
}

int virtio_driver_ok(struct vdev *d) {
  set_status(d, VIRTIO_S_DRIVER_OK);
  return virtio_status(d) & VIRTIO_S_NEEDS_RESET ? VIRTIO_ENEEDSRESET : 0;
}

/* ---------------- queues ---------------- */

/* Ring memory for `size` entries (§2.7: descriptors 16-aligned, avail 2, used 4; pages here),
 * kept per slot and queue so that setting a queue up again (after a reset, or from a fresh
 * virtio_find of the same function) reuses it instead of draining the pool. */
static struct { struct vq_desc *desc; void *avail, *used; u16 cap; } rings[32][VIRTIO_MAX_QUEUES];

static int ring_alloc(u8 slot, struct virtq *q, u16 size) {
  typeof(rings[0][0]) *r = &rings[slot][q->index];
  if (!r->desc || r->cap < size) {
    r->desc = virtio_alloc(16ul * size, 4096);
    r->avail = virtio_alloc(6 + 2ul * size, 4096);
    r->used = virtio_alloc(6 + 8ul * size, 4096);
    if (!r->desc || !r->avail || !r->used) return VIRTIO_ENOMEM;
    r->cap = size;
  }
  q->desc = r->desc;
  q->avail = r->avail;
  q->used = r->used;
  return 0;
}

static void ring_reset(struct virtq *q, u16 size) {
  q->size = size;
  memset(q->desc, 0, 16ul * size);
  memset((void *)q->avail, 0, 6 + 2ul * size);
  memset((void *)q->used, 0, 6 + 8ul * size);
  for (u16 i = 0; i < size; i++) q->desc[i].next = i + 1;
  q->free_head = 0;
  q->num_free = size;
  q->avail_idx = q->last_used = q->chains = 0;
  memset(q->ndesc, 0, sizeof q->ndesc);
}

static void write64(u64 at, u64 v) { /* two 32-bit halves: §4.1.3.1 */
  mmio_write32(at, (u32)v);
  mmio_write32(at + 4, (u32)(v >> 32));
}

static int queue_vector(struct vdev *d, struct virtq *q) {
  q->msix = VIRTIO_NO_VECTOR;
  if (!d->msix_cap) return 0;
  u16 entry = 1 + q->index < d->msix_entries ? 1 + q->index : d->msix_entries - 1;
  u8 v = entry_vector(d, entry);
  if (!v) return VIRTIO_EVECTOR;
  q->vector = v;
  q->msix = entry;
  msix_program(d, entry, v);
  mmio_write16(CC(d, CC_QUEUE_MSIX_VECTOR), entry);
  return mmio_read16(CC(d, CC_QUEUE_MSIX_VECTOR)) == entry ? 0 : VIRTIO_EVECTOR;
}

int virtio_queue_setup(struct vdev *d, u16 index, u16 size) {
  if (index >= VIRTIO_MAX_QUEUES || !size) return VIRTIO_EINVAL;
  if (index >= d->num_queues) return VIRTIO_ENOQUEUE;
  struct virtq *q = &d->vq[index];
  q->index = index;
  mmio_write16(CC(d, CC_QUEUE_SELECT), index);
  u16 max = mmio_read16(CC(d, CC_QUEUE_SIZE));
  if (!max) return VIRTIO_ENOQUEUE;
  if (size > max) size = max;
  if (size > VQ_MAX_SIZE) size = VQ_MAX_SIZE;
  while (size & (size - 1)) size &= size - 1; /* split queues are powers of two */
  int r = ring_alloc(d->slot, q, size);
  if (r) return r;
  ring_reset(q, size);
  mmio_write16(CC(d, CC_QUEUE_SIZE), size);
  write64(CC(d, CC_QUEUE_DESC), (u64)q->desc);
  write64(CC(d, CC_QUEUE_DRIVER), (u64)q->avail);
  write64(CC(d, CC_QUEUE_DEVICE), (u64)q->used);
  if ((r = queue_vector(d, q))) return r;
  u32 off = (u32)mmio_read16(CC(d, CC_QUEUE_NOTIFY_OFF)) * d->notify_mult;
  if (off + 2 > d->notify_len) return VIRTIO_ENODEV; /* the notify register lies outside its capability */
  q->notify = d->notify + off;
  mmio_write16(CC(d, CC_QUEUE_ENABLE), 1);
  q->enabled = 1;
  return 0;
}

void vq_interrupts(struct virtq *q, int on) { q->avail->flags = on ? 0 : VQ_AVAIL_F_NO_INTERRUPT; }

int vq_add(struct virtq *q, const struct vbuf *bufs, int n, void *token) {
  if (!q->enabled || n < 1) return VIRTIO_EINVAL;
  if (n > q->num_free) return VIRTIO_EFULL;
  u16 head = q->free_head, at = head, last = head;
  u32 wlen = 0;
  for (int i = 0; i < n; i++) {
    struct vq_desc *dsc = &q->desc[at];
    dsc->addr = bufs[i].addr;
    dsc->len = bufs[i].len;
    dsc->flags = (bufs[i].write ? VQ_DESC_F_WRITE : 0) | (i + 1 < n ? VQ_DESC_F_NEXT : 0);
    if (bufs[i].write) wlen += bufs[i].len;
    last = at;
    at = dsc->next; /* the free list is threaded through next */
  }
  q->free_head = at;
  q->num_free -= n;
  q->token[head] = token;
  q->wlen[head] = wlen;
  q->ndesc[head] = n;
  q->tail[head] = last;
  q->chains++;
  q->avail->ring[q->avail_idx & (q->size - 1)] = head;
  __atomic_thread_fence(__ATOMIC_RELEASE); /* the entry before the index that publishes it */
  q->avail->idx = ++q->avail_idx;
  return head;
}

void vq_kick(struct virtq *q) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the new index is visible before we read used->flags */
  if (!(q->used->flags & VQ_USED_F_NO_NOTIFY)) {
    mmio_write16(q->notify, q->index);
    q->kicks++;
  }
}

int vq_get(struct virtq *q, u32 *len, void **token) {
  u16 idx = q->used->idx;
  if (idx == q->last_used) return 0;
  if ((u16)(idx - q->last_used) > q->size) return VIRTIO_EDEVICE; /* more used than ever published */
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  struct vq_used_elem e = q->used->ring[q->last_used & (q->size - 1)];
  if (e.id >= q->size || !q->ndesc[e.id]) return VIRTIO_EDEVICE; /* not a head in flight */
  if (e.len > q->wlen[e.id]) return VIRTIO_EDEVICE;               /* wrote more than it was given */
  q->desc[q->tail[e.id]].next = q->free_head;
  q->free_head = e.id;
  q->num_free += q->ndesc[e.id];
  q->ndesc[e.id] = 0;
  q->chains--;
  q->last_used++;
  if (len) *len = e.len;
  if (token) *token = q->token[e.id];
  return 1;
}

int vq_wait(struct vdev *d, struct virtq *q, u32 ms, u32 *len, void **token) {
  u64 now = rdtsc(), end = now + tsc_ms(ms), step = tsc_ms(1), next_status = now + step;
  for (;;) {
    int r = vq_get(q, len, token);
    if (r) return r < 0 ? r : 0;
    now = rdtsc();
    if (now >= next_status) { /* a register read may exit to the VMM: not on every spin */
      if (virtio_status(d) & VIRTIO_S_NEEDS_RESET) return VIRTIO_ENEEDSRESET;
      next_status = now + step;
    }
    if (now > end) return VIRTIO_ETIMEDOUT;
    cpu_relax();
  }
}

int vq_call(struct vdev *d, struct virtq *q, const struct vbuf *bufs, int n, u32 ms, u32 *len) {
  int head = vq_add(q, bufs, n, NULL);
  if (head < 0) return head;
  vq_kick(q);
  return vq_wait(d, q, ms, len, NULL);
}
