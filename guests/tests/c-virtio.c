/*
 * c-virtio: guest-side drivers for nodevisor's virtio PCI devices (lib/virtio.c), one scenario per
 * word on the kernel command line (boot it as a PVH ELF: nodevisor --cmdline WORD, or QEMU
 * -append WORD). Options are key=value words next to it.
 *   blk         every virtio-blk disk: capacity, RO, GET_ID; on the first writable one a 64 KiB
 *               write / flush / read-back, a read past the end (IOERR), the marker line
 *               "nodevisor-blk-ok\n" at sector 100; on read-only ones a refused write
 *   blk-broken  chains that are not requests put the device into NEEDS_RESET; it serves again
 *               after a reset
 *   blk-bench   sequential write and read (mb=64, qd=8, 128 KiB requests), 4 KiB random reads
 *               (ios=20000, qd=32), timed with the TSC; ramp=P: each pass after P% as many
 *               requests of its kind, reported apart (NAME-ramp)
 *   net         virtio-net: ARP for 10.0.2.1, ICMP echo to it; serve=N answers ARP and pings
 *               for N more seconds
 *   net-bench   transmits frames=100000 1514-byte frames to the host as fast as the ring allows
 *               (ramp=P: after P% as many, reported apart as net-tx-ramp)
 *   console     virtio-console: a line out, then echoes input uppercased up to a newline
 *   agent       the command runner's agent (nv-agent's protocol) with built-in commands;
 *               "noflush": power off without waiting for the host to take the output
 *   9p, 9p-ro   9P2000.L over virtio-9p: read, create and write, '..' at the root, the 'escape'
 *               symlink refused; on 9p-ro a create refused with EROFS
 *   9p-escape   only the symlink check
 * The word "quiet" silences COM1 (for the agent when COM1 and the virtio console share one fd).
 * Exit codes: 0 pass; 2 no such device; 3 no scenario word; blk 10-29, blk-broken 30-39,
 * blk-bench 40-49, net 50-64, net-bench 65-69, console 70-79, agent 80-89, 9p 90-119;
 * 125 a CPU exception.
 */
#include "scenarios.h"

int fail(int code, const char *who, const char *fmt, ...) {
  __builtin_va_list ap;
  __builtin_va_start(ap, fmt);
  printf("%s: FAIL (exit code %d): ", who, code);
  vprintf(fmt, ap);
  __builtin_va_end(ap);
  putchar('\n');
  return code;
}

static int bring_up(struct vdev *d, const char *who, u64 wanted, int nq, u16 qsize) {
  int r = virtio_start(d, wanted);
  for (int i = 0; !r && i < nq; i++) r = virtio_queue_setup(d, i, qsize);
  if (!r) r = virtio_driver_ok(d);
  if (r) printf("%s: device at 00:%02x.0: %s\n", who, d->slot, virtio_strerror(r));
  return r;
}

int device_up(struct vdev *d, const char *who, u16 type, int nth, u64 wanted, int nq, u16 qsize) {
  int r = virtio_find(type, nth, d);
  if (r) {
    printf("%s: no usable virtio device of type %u (#%d): %s\n", who, type, nth, virtio_strerror(r));
    return r;
  }
  return bring_up(d, who, wanted, nq, qsize);
}

int device_restart(struct vdev *d, const char *who, u64 wanted, int nq, u16 qsize) { return bring_up(d, who, wanted, nq, qsize); }

void print_rate(const char *label, u64 amount, u64 ticks, u64 unit) {
  if (!ticks) ticks = 1;
  u64 per_sec_x100 = muldiv64(amount, tsc_hz(NULL) * 100 / unit, ticks);
  printf("%s=%lu.%02lu", label, per_sec_x100 / 100, per_sec_x100 % 100);
}

void print_tsc(void) {
  static int done;
  if (done) return;
  done = 1;
  const char *src;
  u64 hz = tsc_hz(&src);
  printf("bench: tsc-hz=%lu source=%s\n", hz, src);
}

int main(void) {
  nv_quiet = cmdline_has("quiet"); /* nothing on COM1: see nv.h */
  if (cmdline_has("blk")) return scenario_blk();
  if (cmdline_has("blk-broken")) return scenario_blk_broken();
  if (cmdline_has("blk-bench")) return scenario_blk_bench();
  if (cmdline_has("net")) return scenario_net();
  if (cmdline_has("net-bench")) return scenario_net_bench();
  if (cmdline_has("console")) return scenario_console();
  if (cmdline_has("agent")) return scenario_agent();
  if (cmdline_has("9p")) return scenario_9p(0);
  if (cmdline_has("9p-ro")) return scenario_9p(1);
  if (cmdline_has("9p-escape")) return scenario_9p_escape();
  printf("c-virtio: no scenario on the command line \"%s\"\n", boot_cmdline());
  return 3;
}
