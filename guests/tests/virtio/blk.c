/*
 * virtio-blk scenarios (virtio 1.2 §5.2): blk, blk-broken and blk-bench.
 * A request is a chain: a 16-byte header {type, reserved, sector} the device reads, the data
 * (device-writable for reads, readable for writes), and a status byte the device writes.
 */
#include "scenarios.h"

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_F_RO (1ul << 5)
#define BLK_F_FLUSH (1ul << 9)
#define BLK_ID_BYTES 20
#define SECTOR 512
#define WANTED (BLK_F_RO | BLK_F_FLUSH)
#define QSIZE 128
#define MAX_DISKS 4

struct blk_hdr { u32 type, reserved; u64 sector; };

struct disk {
  struct vdev d;
  char name[4];
  u64 capacity; /* sectors */
  int ro;
  char id[BLK_ID_BYTES + 1];
};

/* One request's header and status byte, in guest memory the device reads and writes. */
struct slot { struct blk_hdr hdr; u8 status; } __attribute__((aligned(32)));

static struct disk disks[MAX_DISKS];

/* ---------------- single requests ---------------- */

/*
 * Runs one request and waits for it. `data`/`len` may be empty (FLUSH); `dev_writes` says which
 * way the data goes. Returns 0 with *status set (0xff: the device wrote none), or a VIRTIO_E*
 * code. The used length must cover the status byte and no more than was offered.
 */
static int blk_request(struct disk *k, u32 type, u64 sector, void *data, u32 len, int dev_writes, u8 *status) {
  static struct slot s;
  s.hdr = (struct blk_hdr){type, 0, sector};
  s.status = 0xff;
  struct vbuf b[3];
  int n = 0;
  b[n++] = (struct vbuf){(u64)&s.hdr, sizeof s.hdr, 0};
  if (len) b[n++] = (struct vbuf){(u64)data, len, (u8)dev_writes};
  b[n++] = (struct vbuf){(u64)&s.status, 1, 1};
  u32 used = 0;
  int r = vq_call(&k->d, &k->d.vq[0], b, n, REQUEST_MS, &used);
  if (r) return r;
  if (used < 1) return VIRTIO_EDEVICE; /* the status byte was not written */
  *status = s.status;
  return 0;
}

/* GET_ID: up to 20 bytes of ASCII, NUL-padded (not terminated when 20 long). */
static int blk_get_id(struct disk *k) {
  static u8 buf[BLK_ID_BYTES] __attribute__((aligned(32)));
  memset(buf, 0, sizeof buf);
  u8 st;
  int r = blk_request(k, BLK_T_GET_ID, 0, buf, sizeof buf, 1, &st);
  if (r) return r;
  int i = 0;
  for (; i < BLK_ID_BYTES && buf[i]; i++) k->id[i] = buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '?';
  k->id[i] = 0;
  return st == BLK_S_OK ? 0 : VIRTIO_EDEVICE;
}

static int disk_open(struct disk *k, int nth) {
  int r = device_up(&k->d, "blk", VIRTIO_ID_BLOCK, nth, WANTED, 1, QSIZE);
  if (r) return r;
  k->name[0] = 'v', k->name[1] = 'd', k->name[2] = 'a' + nth, k->name[3] = 0;
  k->capacity = virtio_cfg64(&k->d, 0);
  k->ro = (k->d.features & BLK_F_RO) != 0;
  return blk_get_id(k);
}

/* ---------------- blk ---------------- */

/* The pattern the guest writes: byte at disk offset o. The host test recomputes it. */
static u8 pattern(u64 o) { return (u8)(o * 7 + (o >> 9)); }

#define RW_BYTES 65536
static u8 wbuf[RW_BYTES] __attribute__((aligned(4096)));
static u8 rbuf[RW_BYTES] __attribute__((aligned(4096)));

static int blk_flush(struct disk *k) {
  if (!(k->d.features & BLK_F_FLUSH)) return 0; /* no volatile cache to flush */
  u8 st;
  int r = blk_request(k, BLK_T_FLUSH, 0, NULL, 0, 0, &st);
  return r ? r : st == BLK_S_OK ? 0 : VIRTIO_EDEVICE;
}

/* 64 KiB of pattern at sector 0, a flush, and the same bytes read back. */
static int write_read_back(struct disk *k) {
  if (k->capacity * SECTOR < RW_BYTES) return fail(12, "blk", "%s has only %lu sectors", k->name, k->capacity);
  for (u32 i = 0; i < RW_BYTES; i++) wbuf[i] = pattern(i);
  u8 st;
  if (blk_request(k, BLK_T_OUT, 0, wbuf, RW_BYTES, 0, &st) || st != BLK_S_OK) return fail(13, "blk", "write of %d bytes: status %u", RW_BYTES, st);
  if (blk_flush(k)) return fail(14, "blk", "flush failed");
  puts(k->d.features & BLK_F_FLUSH ? "blk: flush ok" : "blk: flush not offered (write-through disk)");
  memset(rbuf, 0, sizeof rbuf);
  if (blk_request(k, BLK_T_IN, 0, rbuf, RW_BYTES, 1, &st) || st != BLK_S_OK) return fail(15, "blk", "read of %d bytes: status %u", RW_BYTES, st);
  for (u32 i = 0; i < RW_BYTES; i++)
    if (rbuf[i] != wbuf[i]) return fail(16, "blk", "byte %u read back as %02x, wrote %02x", i, rbuf[i], wbuf[i]);
  printf("blk: wrote and read back %d bytes\n", RW_BYTES);
  return 0;
}

/* A read of the sector just past the end must fail with IOERR, not wrap or succeed. */
static int read_past_end(struct disk *k) {
  u8 st;
  int r = blk_request(k, BLK_T_IN, k->capacity, rbuf, SECTOR, 1, &st);
  if (r) return fail(17, "blk", "read past the end: %s", virtio_strerror(r));
  if (st != BLK_S_IOERR) return fail(18, "blk", "read past the end: status %u, expected IOERR", st);
  puts("blk: read past the end: IOERR");
  return 0;
}

/* The line the host checks after power-off: at byte 0 of sector 100, made durable by a flush. */
static int write_marker(struct disk *k) {
  static const char line[] = "nodevisor-blk-ok\n";
  if (k->capacity <= 100) return fail(19, "blk", "%s is too small for the marker at sector 100", k->name);
  memset(wbuf, 0, SECTOR);
  memcpy(wbuf, line, sizeof line - 1);
  u8 st;
  if (blk_request(k, BLK_T_OUT, 100, wbuf, SECTOR, 0, &st) || st != BLK_S_OK) return fail(20, "blk", "marker write: status %u", st);
  if (blk_flush(k)) return fail(21, "blk", "flush after the marker failed");
  puts("blk: marker written at sector 100");
  return 0;
}

/* A read-only disk reads, and answers a write with IOERR. */
static int check_read_only(struct disk *k) {
  u8 st;
  if (blk_request(k, BLK_T_IN, 0, rbuf, SECTOR, 1, &st) || st != BLK_S_OK) return fail(22, "blk", "read from read-only %s: status %u", k->name, st);
  memset(wbuf, 0xee, SECTOR);
  int r = blk_request(k, BLK_T_OUT, 0, wbuf, SECTOR, 0, &st);
  if (r) return fail(23, "blk", "write to read-only %s: %s", k->name, virtio_strerror(r));
  if (st != BLK_S_IOERR) return fail(24, "blk", "write to read-only %s: status %u, expected IOERR", k->name, st);
  puts("blk: read-only disk refused a write");
  return 0;
}

int scenario_blk(void) {
  int n = virtio_count(VIRTIO_ID_BLOCK);
  if (!n) return fail(2, "blk", "no virtio-blk device");
  if (n > MAX_DISKS) n = MAX_DISKS;
  printf("blk: %d disk(s)\n", n);
  struct disk *rw = NULL;
  for (int i = 0; i < n; i++) {
    struct disk *k = &disks[i];
    int r = disk_open(k, i);
    if (r) return fail(10, "blk", "disk %d: %s", i, virtio_strerror(r));
    printf("blk: %s %lu sectors id=%s %s\n", k->name, k->capacity, k->id[0] ? k->id : "(none)", k->ro ? "ro" : "rw");
    if (!k->ro && !rw) rw = k;
  }
  int r;
  if (rw) {
    printf("blk: testing %s\n", rw->name);
    if ((r = write_read_back(rw)) || (r = read_past_end(rw)) || (r = write_marker(rw))) return r;
  } else {
    puts("blk: no writable disk");
  }
  for (int i = 0; i < n; i++)
    if (disks[i].ro && (r = check_read_only(&disks[i]))) return r;
  puts("blk: all checks passed");
  return 0;
}

/* ---------------- blk-broken ---------------- */

/* Publishes a chain that is not a request and expects DEVICE_NEEDS_RESET, then a reset, a new
 * set-up and one good read. */
static int broken_then_recover(struct disk *k, const struct vbuf *b, int n, const char *what, int code) {
  u32 cfg = virtio_cfg_irqs(&k->d);
  if (vq_add(&k->d.vq[0], b, n, NULL) < 0) return fail(code, "blk-broken", "could not queue the chain");
  vq_kick(&k->d.vq[0]);
  int r = vq_wait(&k->d, &k->d.vq[0], REQUEST_MS, NULL, NULL);
  if (r != VIRTIO_ENEEDSRESET) return fail(code + 1, "blk-broken", "%s: expected NEEDS_RESET, got %s (status %02x)", what, r ? virtio_strerror(r) : "a completion", virtio_status(&k->d));
  /* The device sets the status bit first and then notifies: give the interrupt a moment to land. */
  virtio_wait_count(virtio_cfg_irq_counter(&k->d), cfg + 1, 1000);
  printf("blk-broken: %s: device needs reset (config interrupts %u)\n", what, virtio_cfg_irqs(&k->d) - cfg);
  if ((r = device_restart(&k->d, "blk-broken", WANTED, 1, QSIZE))) return fail(code + 2, "blk-broken", "restart: %s", virtio_strerror(r));
  u8 st;
  if ((r = blk_request(k, BLK_T_IN, 0, rbuf, SECTOR, 1, &st)) || st != BLK_S_OK) return fail(code + 3, "blk-broken", "read after reset: %s, status %u", virtio_strerror(r), st);
  puts("blk-broken: serving again after reset");
  return 0;
}

int scenario_blk_broken(void) {
  struct disk *k = &disks[0];
  int r = disk_open(k, 0);
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 30, "blk-broken", "%s", virtio_strerror(r));
  static struct slot s;
  s.hdr = (struct blk_hdr){BLK_T_IN, 0, 0};
  /* 1: a header and nothing device-writable: no status byte to answer in. */
  struct vbuf no_status[1] = {{(u64)&s.hdr, sizeof s.hdr, 0}};
  if ((r = broken_then_recover(k, no_status, 1, "request without a status byte", 31))) return r;
  /* 2: a 4-byte header, then room for a sector and a status byte. */
  struct vbuf short_hdr[3] = {{(u64)&s.hdr, 4, 0}, {(u64)rbuf, SECTOR, 1}, {(u64)&s.status, 1, 1}};
  if ((r = broken_then_recover(k, short_hdr, 3, "4-byte header", 35))) return r;
  puts("blk-broken: all checks passed");
  return 0;
}

/* ---------------- blk-bench ---------------- */

#define BENCH_MAX_QD 32
#define SEQ_BYTES (128 * 1024)
#define RAND_BYTES 4096
static u8 bench_buf[BENCH_MAX_QD][SEQ_BYTES] __attribute__((aligned(4096)));
static struct slot bench_slot[BENCH_MAX_QD];

struct job {
  u32 type, bytes, qd;
  u64 count;                       /* requests */
  u64 (*sector)(struct job *, u64); /* sector of request i */
  u64 span;                        /* sectors the job may touch */
  u64 seed;
  u32 kicks;                       /* notifications the run wrote (set by bench_run) */
};

static u64 seq_sector(struct job *j, u64 i) { return (i * (j->bytes / SECTOR)) % j->span; }

/* xorshift64: a reproducible "random" 4 KiB-aligned sector. */
static u64 rand_sector(struct job *j, u64 i) {
  (void)i;
  j->seed ^= j->seed << 13, j->seed ^= j->seed >> 7, j->seed ^= j->seed << 17;
  u64 blocks = j->span / (j->bytes / SECTOR);
  return (j->seed % blocks) * (j->bytes / SECTOR);
}

static int bench_submit(struct disk *k, struct job *j, u32 slot, u64 i) {
  struct slot *s = &bench_slot[slot];
  s->hdr = (struct blk_hdr){j->type, 0, j->sector(j, i)};
  s->status = 0xff;
  int dev_writes = j->type == BLK_T_IN;
  struct vbuf b[3] = {{(u64)&s->hdr, sizeof s->hdr, 0}, {(u64)bench_buf[slot], j->bytes, (u8)dev_writes}, {(u64)&s->status, 1, 1}};
  return vq_add(&k->d.vq[0], b, 3, (void *)(u64)(slot + 1)); /* token: slot + 1, never NULL */
}

/* Keeps up to qd requests in flight until `count` have completed; returns the TSC ticks taken. */
static int bench_run(struct disk *k, struct job *j, u64 *ticks) {
  struct virtq *q = &k->d.vq[0];
  u32 free_slots[BENCH_MAX_QD], nfree = 0;
  for (u32 i = 0; i < j->qd; i++) free_slots[nfree++] = i;
  u64 submitted = 0, done = 0, t0 = rdtsc();
  u32 kicks0 = q->kicks;
  while (done < j->count) {
    int added = 0;
    while (submitted < j->count && nfree > 0) {
      if (bench_submit(k, j, free_slots[--nfree], submitted) < 0) return VIRTIO_EFULL;
      submitted++, added++;
    }
    if (added) vq_kick(q);
    void *tok;
    int r = vq_wait(&k->d, q, REQUEST_MS, NULL, &tok);
    while (!r) { /* this completion and any others already there */
      u32 slot = (u32)(u64)tok - 1;
      if (bench_slot[slot].status != BLK_S_OK) return VIRTIO_EDEVICE;
      free_slots[nfree++] = slot;
      done++;
      int g = vq_get(q, NULL, &tok);
      r = g == 1 ? 0 : g < 0 ? g : 1; /* 1: none left for now */
    }
    if (r < 0) return r;
  }
  *ticks = rdtsc() - t0;
  j->kicks = q->kicks - kicks0;
  return 0;
}

static void bench_report(const char *name, const char *suffix, struct job *j, u64 ticks) {
  u64 bytes = j->count * j->bytes;
  printf("bench: %s%s bytes=%lu ios=%lu qd=%u kicks=%u ticks=%lu us=%lu ", name, suffix, bytes, j->count, j->qd, j->kicks, ticks, tsc_to_us(ticks));
  print_rate("MBps", bytes, ticks, 1000000);
  putchar(' ');
  print_rate("IOPS", j->count, ticks, 1);
  putchar('\n');
}

/*
 * ramp=P: first P% of the pass's requests on their own, reported as NAME-ramp, then the pass itself
 * (fio's ramp_time, iperf's --omit): the pass then measures the device in its steady state, and the
 * ramp shows the first moments (a JIT's warm-up, first touches of guest RAM). Random reads go on
 * from the ramp's last "random" sector; a sequential pass starts over at sector 0.
 */
static int bench_timed(struct disk *k, struct job *j, u64 ramp, const char *name) {
  u64 ticks;
  int r;
  if (ramp && j->count * ramp / 100) {
    struct job warm = *j;
    warm.count = j->count * ramp / 100;
    if ((r = bench_run(k, &warm, &ticks))) return r;
    bench_report(name, "-ramp", &warm, ticks);
    j->seed = warm.seed;
  }
  if ((r = bench_run(k, j, &ticks))) return r;
  bench_report(name, "", j, ticks);
  return 0;
}

int scenario_blk_bench(void) {
  struct disk *k = &disks[0];
  int r = disk_open(k, 0);
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 40, "blk-bench", "%s", virtio_strerror(r));
  print_tsc();
  vq_interrupts(&k->d.vq[0], 0); /* polled: completions need no interrupt */
  u64 qd = cmdline_u64("qd", 8), rqd = cmdline_u64("rqd", 32);
  if (qd < 1 || qd > BENCH_MAX_QD || rqd < 1 || rqd > BENCH_MAX_QD) return fail(41, "blk-bench", "qd must be 1..%d", BENCH_MAX_QD);
  u64 bytes = cmdline_u64("mb", 64) << 20, ramp = cmdline_u64("ramp", 0);
  u64 span = k->capacity / (SEQ_BYTES / SECTOR) * (SEQ_BYTES / SECTOR); /* whole requests only */
  if (bytes / SECTOR > span) bytes = span * SECTOR;
  if (bytes < SEQ_BYTES) return fail(42, "blk-bench", "%s is too small (%lu sectors)", k->name, k->capacity);
  printf("bench: disk %s %lu sectors, %lu bytes per pass\n", k->name, k->capacity, bytes);
  struct job seq = {BLK_T_OUT, SEQ_BYTES, (u32)qd, bytes / SEQ_BYTES, seq_sector, span, 0, 0};
  if (!k->ro) {
    for (u32 s = 0; s < qd; s++) memset(bench_buf[s], 0xa5 + s, SEQ_BYTES);
    if ((r = bench_timed(k, &seq, ramp, "seq-write"))) return fail(43, "blk-bench", "seq-write: %s", virtio_strerror(r));
    if (blk_flush(k)) return fail(44, "blk-bench", "flush failed");
  }
  seq.type = BLK_T_IN;
  if ((r = bench_timed(k, &seq, ramp, "seq-read"))) return fail(45, "blk-bench", "seq-read: %s", virtio_strerror(r));
  struct job rnd = {BLK_T_IN, RAND_BYTES, (u32)rqd, cmdline_u64("ios", 20000), rand_sector, k->capacity, 0x9e3779b97f4a7c15ul, 0};
  if ((r = bench_timed(k, &rnd, ramp, "rand-read-4k"))) return fail(46, "blk-bench", "rand-read: %s", virtio_strerror(r));
  return 0;
}
