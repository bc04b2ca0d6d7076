/*
 * virtio-net scenarios (virtio 1.2 §5.1): net and net-bench.
 * Negotiates MAC and STATUS only (no MRG_RXBUF, no offloads): every frame, both ways, is one
 * buffer holding the 12-byte virtio_net_hdr_v1 and a whole Ethernet frame. The guest is 10.0.2.15
 * and talks to the host's end of the tap, 10.0.2.1: ARP, then ICMP echo; it answers ARP requests
 * and pings for its own address.
 */
#include "scenarios.h"

#define NET_F_MAC (1ul << 5)
#define NET_F_STATUS (1ul << 16)
#define NET_S_LINK_UP 1
#define HDR_LEN 12
#define RXQ 0
#define TXQ 1
#define QSIZE 256
#define BUF_SIZE 2048   /* header + a 1514-byte frame, with room to spare */
#define RX_BUFS 128
#define TX_BUFS 128
#define ETH_LEN 14
#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define ETH_BENCH 0x88b5 /* IEEE local experimental: the host's stack ignores it */
#define FRAME_MAX 1514

static struct vdev nd;
static u8 rx_buf[RX_BUFS][BUF_SIZE] __attribute__((aligned(4096)));
static u8 tx_buf[TX_BUFS][BUF_SIZE] __attribute__((aligned(4096)));
static u16 tx_free[TX_BUFS], tx_nfree;
static u32 rx_posted;

static u8 mac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
static u8 host_mac[6];
static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const u8 my_ip[4] = {10, 0, 2, 15};
static const u8 host_ip[4] = {10, 0, 2, 1};

/* What the receive path has seen. */
static struct {
  int arp_reply;
  u16 ping_id, ping_seq;
  int ping_reply, payload_ok;
  u32 arps_answered, pings_answered, frames, ignored;
} seen;

static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static void put16(u8 *p, u16 v) { p[0] = v >> 8, p[1] = (u8)v; }

/* The Internet checksum (RFC 1071) of `len` bytes. */
static u16 inet_csum(const u8 *p, u32 len) {
  u32 sum = 0;
  for (u32 i = 0; i + 1 < len; i += 2) sum += be16(p + i);
  if (len & 1) sum += (u32)p[len - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (u16)~sum;
}

/* ---------------- the device ---------------- */

static int rx_post(u16 i) {
  struct vbuf b = {(u64)rx_buf[i], BUF_SIZE, 1};
  return vq_add(&nd.vq[RXQ], &b, 1, (void *)(u64)(i + 1));
}

/* Brings the NIC up, reads its MAC and link state, and posts every receive buffer. */
static int net_up(const char *who) {
  int r = device_up(&nd, who, VIRTIO_ID_NET, 0, NET_F_MAC | NET_F_STATUS, 2, QSIZE);
  if (r) return r;
  if (nd.features & NET_F_MAC)
    for (int i = 0; i < 6; i++) mac[i] = virtio_cfg8(&nd, i);
  printf("%s: mac %02x:%02x:%02x:%02x:%02x:%02x%s\n", who, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], nd.features & NET_F_MAC ? "" : " (MAC not offered: our own)");
  if (nd.features & NET_F_STATUS) printf("%s: link %s\n", who, virtio_cfg16(&nd, 6) & NET_S_LINK_UP ? "up" : "down");
  u16 n = nd.vq[RXQ].size < RX_BUFS ? nd.vq[RXQ].size : RX_BUFS;
  for (u16 i = 0; i < n; i++)
    if ((r = rx_post(i)) < 0) return r;
  rx_posted = n;
  vq_kick(&nd.vq[RXQ]);
  tx_nfree = 0;
  u16 t = nd.vq[TXQ].size < TX_BUFS ? nd.vq[TXQ].size : TX_BUFS;
  for (u16 i = 0; i < t; i++) tx_free[tx_nfree++] = i;
  return 0;
}

/* Takes back transmit buffers the device is done with. */
static int tx_reclaim(void) {
  void *tok;
  int r;
  while ((r = vq_get(&nd.vq[TXQ], NULL, &tok)) == 1) tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  return r;
}

/* A free transmit buffer, waiting (bounded) for one when all are in flight; -1 on failure. */
static int tx_take(void) {
  if (tx_reclaim() < 0) return -1;
  if (!tx_nfree) {
    void *tok;
    if (vq_wait(&nd, &nd.vq[TXQ], REQUEST_MS, NULL, &tok)) return -1;
    tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  }
  return tx_free[--tx_nfree];
}

/* Publishes buffer i (header already zero) holding a frame of `len` bytes. */
static int tx_queue(int i, u32 len) {
  memset(tx_buf[i], 0, HDR_LEN); /* no checksum offload, no GSO */
  struct vbuf b = {(u64)tx_buf[i], HDR_LEN + len, 0};
  return vq_add(&nd.vq[TXQ], &b, 1, (void *)(u64)(i + 1));
}

static int tx_send(const u8 *frame, u32 len) {
  int i = tx_take();
  if (i < 0) return -1;
  memcpy(tx_buf[i] + HDR_LEN, frame, len);
  if (tx_queue(i, len) < 0) return -1;
  vq_kick(&nd.vq[TXQ]);
  return 0;
}

/* ---------------- frames ---------------- */

static void eth(u8 *f, const u8 *dst, u16 type) {
  memcpy(f, dst, 6);
  memcpy(f + 6, mac, 6);
  put16(f + 12, type);
}

static int send_arp(u16 op, const u8 *dst_mac, const u8 *target_mac, const u8 *target_ip) {
  u8 f[60]; /* padded to the Ethernet minimum */
  memset(f, 0, sizeof f);
  eth(f, dst_mac, ETH_ARP);
  u8 *a = f + ETH_LEN;
  put16(a, 1), put16(a + 2, ETH_IP), a[4] = 6, a[5] = 4, put16(a + 6, op);
  memcpy(a + 8, mac, 6), memcpy(a + 14, my_ip, 4), memcpy(a + 18, target_mac, 6), memcpy(a + 24, target_ip, 4);
  return tx_send(f, sizeof f);
}

static void ip_header(u8 *ip, u16 total, u8 proto, const u8 *dst) {
  static u16 ident = 1;
  memset(ip, 0, 20);
  ip[0] = 0x45, put16(ip + 2, total), put16(ip + 4, ident++), put16(ip + 6, 0x4000), ip[8] = 64, ip[9] = proto;
  memcpy(ip + 12, my_ip, 4), memcpy(ip + 16, dst, 4);
  put16(ip + 10, inet_csum(ip, 20));
}

#define PING_PAYLOAD 56
static u8 ping_payload(u32 i) { return (u8)('a' + i % 26); }

static int send_ping(u16 id, u16 seq) {
  u8 f[ETH_LEN + 20 + 8 + PING_PAYLOAD];
  eth(f, host_mac, ETH_IP);
  u8 *ip = f + ETH_LEN, *ic = ip + 20;
  ip_header(ip, 20 + 8 + PING_PAYLOAD, 1, host_ip);
  memset(ic, 0, 8);
  ic[0] = 8, put16(ic + 4, id), put16(ic + 6, seq);
  for (u32 i = 0; i < PING_PAYLOAD; i++) ic[8 + i] = ping_payload(i);
  put16(ic + 2, inet_csum(ic, 8 + PING_PAYLOAD));
  return tx_send(f, sizeof f);
}

/* ---------------- receive ---------------- */

static void on_arp(const u8 *a, u32 len) {
  if (len < 28 || be16(a) != 1 || be16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4) return;
  u16 op = be16(a + 6);
  const u8 *sha = a + 8, *spa = a + 14, *tpa = a + 24;
  if (memcmp(tpa, my_ip, 4)) return;
  if (!memcmp(spa, host_ip, 4)) memcpy(host_mac, sha, 6), seen.arp_reply |= op == 2;
  if (op == 1 && !send_arp(2, sha, sha, spa)) seen.arps_answered++;
}

/* An echo request for us: the same frame back with addresses swapped and type 0. */
static void answer_ping(const u8 *f, u32 len, u32 ihl) {
  static u8 r[FRAME_MAX];
  if (len > sizeof r) return;
  memcpy(r, f, len);
  memcpy(r, f + 6, 6), memcpy(r + 6, mac, 6);
  u8 *ip = r + ETH_LEN, *ic = ip + ihl;
  memcpy(ip + 12, my_ip, 4), memcpy(ip + 16, f + ETH_LEN + 12, 4);
  put16(ip + 10, 0), put16(ip + 10, inet_csum(ip, ihl));
  ic[0] = 0, put16(ic + 2, 0), put16(ic + 2, inet_csum(ic, be16(ip + 2) - ihl));
  if (!tx_send(r, len)) seen.pings_answered++;
}

static void on_icmp(const u8 *f, u32 len, const u8 *ip, u32 ihl, u32 total) {
  const u8 *ic = ip + ihl;
  u32 n = total - ihl;
  if (n < 8 || inet_csum(ic, n) != 0) return;
  if (ic[0] == 8) answer_ping(f, len, ihl);
  if (ic[0] != 0 || be16(ic + 4) != seen.ping_id || be16(ic + 6) != seen.ping_seq || memcmp(ip + 12, host_ip, 4)) return;
  seen.ping_reply = 1;
  seen.payload_ok = n == 8 + PING_PAYLOAD;
  for (u32 i = 0; seen.payload_ok && i < PING_PAYLOAD; i++) seen.payload_ok = ic[8 + i] == ping_payload(i);
}

static void on_ipv4(const u8 *f, u32 len) {
  const u8 *ip = f + ETH_LEN;
  u32 avail = len - ETH_LEN, ihl = (ip[0] & 15) * 4u, total = be16(ip + 2);
  if (avail < 20 || ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > avail) return;
  if (memcmp(ip + 16, my_ip, 4) || inet_csum(ip, ihl) != 0) return;
  if (ip[9] == 1) on_icmp(f, ETH_LEN + total, ip, ihl, total);
}

static void on_frame(const u8 *f, u32 len) {
  seen.frames++;
  u16 type = be16(f + 12);
  if (memcmp(f, mac, 6) && memcmp(f, bcast, 6)) type = 0; /* not for us (multicast, another MAC) */
  if (type == ETH_ARP) on_arp(f + ETH_LEN, len - ETH_LEN);
  else if (type == ETH_IP) on_ipv4(f, len);
  else seen.ignored++;
}

/* Handles every frame received so far and hands the buffers back. */
static int rx_poll(void) {
  u32 len;
  void *tok;
  int r, reposted = 0;
  while ((r = vq_get(&nd.vq[RXQ], &len, &tok)) == 1) {
    u16 i = (u16)((u64)tok - 1);
    if (len >= HDR_LEN + ETH_LEN) on_frame(rx_buf[i] + HDR_LEN, len - HDR_LEN);
    if (rx_post(i) < 0) return VIRTIO_EFULL;
    reposted++;
  }
  if (reposted) vq_kick(&nd.vq[RXQ]);
  return r < 0 ? r : tx_reclaim();
}

/* Polls until *flag is set or `ms` pass, calling resend() first and then every second. */
static int wait_flag(int *flag, u32 ms, int (*resend)(void)) {
  u64 end = rdtsc() + tsc_ms(ms), next = 0, next_status = 0;
  while (!*flag) {
    u64 now = rdtsc();
    if (now > end) return VIRTIO_ETIMEDOUT;
    if (resend && now >= next) {
      if (resend()) return VIRTIO_EFULL;
      next = now + tsc_ms(1000);
    }
    int r = rx_poll();
    if (r < 0) return r;
    if (now >= next_status) { /* a register read may exit to the VMM: once a millisecond */
      if (virtio_status(&nd) & VIRTIO_S_NEEDS_RESET) return VIRTIO_ENEEDSRESET;
      next_status = now + tsc_ms(1);
    }
    cpu_relax();
  }
  return 0;
}

static int arp_host(void) { return send_arp(1, bcast, (const u8[6]){0}, host_ip); }
static int ping_host(void) { return send_ping(seen.ping_id, ++seen.ping_seq); }

static int resolve_host(const char *who, int code) {
  int r = wait_flag(&seen.arp_reply, 10000, arp_host);
  if (r) return fail(code, who, "no ARP reply from 10.0.2.1: %s", virtio_strerror(r));
  printf("%s: arp reply from 10.0.2.1 at %02x:%02x:%02x:%02x:%02x:%02x\n", who, host_mac[0], host_mac[1], host_mac[2], host_mac[3], host_mac[4], host_mac[5]);
  return 0;
}

/* Answers ARP and pings for `seconds` (the host may ping us meanwhile). */
/* Answers ARP and pings for up to `seconds`, or until `pings` pings were answered (0: the whole time). */
static int serve(u64 seconds, u64 pings) {
  printf("net: serving ARP and ping for %lu s\n", seconds);
  u64 end = rdtsc() + tsc_ms(seconds * 1000);
  while (rdtsc() < end && (!pings || seen.pings_answered < pings)) {
    int never = 0;
    int r = wait_flag(&never, 10, NULL);
    if (r != VIRTIO_ETIMEDOUT) return fail(57, "net", "while serving: %s", virtio_strerror(r));
  }
  printf("net: answered %u ARP requests and %u pings\n", seen.arps_answered, seen.pings_answered);
  return 0;
}

int scenario_net(void) {
  int r = net_up("net");
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 50, "net", "%s", virtio_strerror(r));
  if ((r = resolve_host("net", 51))) return r;
  seen.ping_id = 0x4e56;
  if ((r = wait_flag(&seen.ping_reply, 10000, ping_host))) return fail(52, "net", "no echo reply from 10.0.2.1: %s", virtio_strerror(r));
  if (!seen.payload_ok) return fail(53, "net", "the echo reply's payload differs from the request's");
  printf("net: ping reply from 10.0.2.1 (seq %u, %d-byte payload intact)\n", seen.ping_seq, PING_PAYLOAD);
  u64 secs = cmdline_u64("serve", 0);
  if (secs && (r = serve(secs, cmdline_u64("pings", 0)))) return r;
  printf("net: %u frames received, %u ignored, %u rx interrupts\n", seen.frames, seen.ignored, vq_irqs(&nd.vq[RXQ]));
  return 0;
}

/* ---------------- net-bench ---------------- */

/* Fills every transmit buffer with a full-size frame to the host (sequence number at byte 0 of
 * the payload), then keeps the ring full until `count` frames have gone. */
static int blast(u64 count, u64 *ticks) {
  const u8 *dst = seen.arp_reply ? host_mac : bcast;
  for (int i = 0; i < TX_BUFS; i++) {
    eth(tx_buf[i] + HDR_LEN, dst, ETH_BENCH);
    for (u32 k = ETH_LEN; k < FRAME_MAX; k++) tx_buf[i][HDR_LEN + k] = (u8)k;
  }
  struct virtq *q = &nd.vq[TXQ];
  vq_interrupts(q, 0);
  u64 sent = 0, t0 = rdtsc();
  while (sent < count) {
    if (tx_reclaim() < 0) return VIRTIO_EDEVICE;
    int added = 0;
    while (tx_nfree && sent < count) {
      u16 i = tx_free[--tx_nfree];
      *(u32 *)(tx_buf[i] + HDR_LEN + ETH_LEN) = (u32)sent;
      if (tx_queue(i, FRAME_MAX) < 0) return VIRTIO_EFULL;
      sent++, added++;
    }
    if (added) {
      vq_kick(q);
      continue;
    }
    void *tok; /* the ring is full: wait for the device to finish one */
    int r = vq_wait(&nd, q, REQUEST_MS, NULL, &tok);
    if (r) return r;
    tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  }
  while (vq_in_flight(q)) { /* the last ones out too */
    void *tok;
    int r = vq_wait(&nd, q, REQUEST_MS, NULL, &tok);
    if (r) return r;
    tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  }
  *ticks = rdtsc() - t0;
  return 0;
}

/* Sends `count` frames and reports them, with the notifications they took, as `name`. */
static int blast_report(const char *name, u64 count) {
  u32 kicks0 = nd.vq[TXQ].kicks;
  u64 ticks;
  int r = blast(count, &ticks);
  if (r) return r;
  printf("bench: %s frames=%lu bytes=%lu frame-bytes=%d kicks=%u ticks=%lu us=%lu ", name, count, count * FRAME_MAX, FRAME_MAX, nd.vq[TXQ].kicks - kicks0, ticks, tsc_to_us(ticks));
  print_rate("fps", count, ticks, 1);
  putchar(' ');
  print_rate("MBps", count * FRAME_MAX, ticks, 1000000);
  putchar('\n');
  return 0;
}

int scenario_net_bench(void) {
  int r = net_up("net-bench");
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 65, "net-bench", "%s", virtio_strerror(r));
  print_tsc();
  if (cmdline_has("noarp")) puts("net-bench: frames go to the broadcast address");
  else if ((r = resolve_host("net-bench", 66))) return r;
  u64 count = cmdline_u64("frames", 100000), ramp = cmdline_u64("ramp", 0) * count / 100;
  /* ramp=P: first P% as many frames on their own, reported as net-tx-ramp (see blk-bench). */
  if (ramp && (r = blast_report("net-tx-ramp", ramp))) return fail(67, "net-bench", "transmit (ramp): %s", virtio_strerror(r));
  if ((r = blast_report("net-tx", count))) return fail(67, "net-bench", "transmit: %s", virtio_strerror(r));
  return 0;
}
