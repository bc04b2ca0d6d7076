/*
 * virtio-console (virtio 1.2 §5.3), single port: receiveq 0 carries host → guest bytes, transmitq 1
 * guest → host bytes. MULTIPORT (bit 1) is never accepted, so port 0 is the only port and there is
 * no control queue. The byte-stream helpers here (port_*) serve the console and agent scenarios.
 */
#include "scenarios.h"

#define CONSOLE_F_SIZE (1ul << 0)
#define RXQ 0
#define TXQ 1
#define QSIZE 64
#define RX_BUFS 32
#define RX_BUF_SIZE 4096
#define TX_BUFS 32
#define TX_BUF_SIZE 16384
/* Host input may take its time (a person typing, a test harness starting up). */
#define READ_MS 120000

static struct vdev cd;
static u8 rx_buf[RX_BUFS][RX_BUF_SIZE] __attribute__((aligned(4096)));
static u8 tx_buf[TX_BUFS][TX_BUF_SIZE] __attribute__((aligned(4096)));
static u16 tx_free[TX_BUFS], tx_nfree;
static int rx_held = -1; /* the receive buffer handed out by port_read, until port_release */

static int rx_post(u16 i) {
  struct vbuf b = {(u64)rx_buf[i], RX_BUF_SIZE, 1};
  return vq_add(&cd.vq[RXQ], &b, 1, (void *)(u64)(i + 1));
}

int port_open(const char *who, int last) {
  int n = virtio_count(VIRTIO_ID_CONSOLE);
  if (!n) return VIRTIO_ENODEV;
  int r = device_up(&cd, who, VIRTIO_ID_CONSOLE, last ? n - 1 : 0, CONSOLE_F_SIZE, 2, QSIZE);
  if (r) return r;
  u16 nrx = cd.vq[RXQ].size < RX_BUFS ? cd.vq[RXQ].size : RX_BUFS;
  for (u16 i = 0; i < nrx; i++)
    if ((r = rx_post(i)) < 0) return r;
  vq_kick(&cd.vq[RXQ]);
  u16 ntx = cd.vq[TXQ].size < TX_BUFS ? cd.vq[TXQ].size : TX_BUFS;
  for (tx_nfree = 0; tx_nfree < ntx; tx_nfree++) tx_free[tx_nfree] = tx_nfree;
  return 0;
}

struct vdev *port_device(void) { return &cd; }

/* A free transmit buffer: reclaims finished ones, waits (bounded) when all are in flight. */
static int tx_take(void) {
  void *tok;
  int r;
  while ((r = vq_get(&cd.vq[TXQ], NULL, &tok)) == 1) tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  if (r < 0) return r;
  if (!tx_nfree) {
    /* The host holds our buffers while its reader is slow (backpressure): wait as long as a read. */
    if ((r = vq_wait(&cd, &cd.vq[TXQ], READ_MS, NULL, &tok))) return r;
    tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  }
  return tx_free[--tx_nfree];
}

/* Queues `len` bytes for the host, in chunks of at most one transmit buffer. */
int port_write(const void *data, u32 len) {
  const u8 *p = data;
  while (len) {
    int i = tx_take();
    if (i < 0) return i;
    u32 n = len < TX_BUF_SIZE ? len : TX_BUF_SIZE;
    memcpy(tx_buf[i], p, n);
    struct vbuf b = {(u64)tx_buf[i], n, 0};
    int r = vq_add(&cd.vq[TXQ], &b, 1, (void *)(u64)(i + 1));
    if (r < 0) return r;
    vq_kick(&cd.vq[TXQ]);
    p += n, len -= n;
  }
  return 0;
}

/* Waits until the device has taken everything written (its used entries are back). */
int port_flush(void) {
  while (vq_in_flight(&cd.vq[TXQ])) {
    void *tok;
    int r = vq_wait(&cd, &cd.vq[TXQ], READ_MS, NULL, &tok);
    if (r) return r;
    tx_free[tx_nfree++] = (u16)((u64)tok - 1);
  }
  return 0;
}

/* The next chunk of host input (a view into a receive buffer, valid until port_release). */
int port_read(u8 **data, u32 *len) {
  if (rx_held >= 0) return VIRTIO_EINVAL;
  for (;;) {
    void *tok;
    int r = vq_wait(&cd, &cd.vq[RXQ], READ_MS, len, &tok);
    if (r) return r;
    rx_held = (int)((u64)tok - 1);
    if (*len) break;
    port_release(); /* an empty buffer carries nothing */
  }
  *data = rx_buf[rx_held];
  return 0;
}

/* Hands the buffer of the last port_read back to the device. */
void port_release(void) {
  if (rx_held < 0) return;
  rx_post((u16)rx_held);
  vq_kick(&cd.vq[RXQ]);
  rx_held = -1;
}

/* ---------------- console ---------------- */

/* Echoes host input uppercased until a newline (included); returns the bytes echoed or <0. */
static int echo_line(void) {
  static u8 out[RX_BUF_SIZE];
  int total = 0;
  for (int done = 0; !done;) {
    u8 *in;
    u32 len;
    int r = port_read(&in, &len);
    if (r) return r;
    u32 n = 0;
    while (n < len && !done) {
      u8 c = in[n];
      out[n++] = c >= 'a' && c <= 'z' ? c - 32 : c;
      done = c == '\n';
    }
    port_release();
    if ((r = port_write(out, n))) return r;
    total += n;
  }
  return total;
}

int scenario_console(void) {
  int r = port_open("console", 0);
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 70, "console", "%s", virtio_strerror(r));
  if (cd.features & CONSOLE_F_SIZE) printf("console: cols %u rows %u\n", virtio_cfg16(&cd, 0), virtio_cfg16(&cd, 2));
  else puts("console: size not offered");
  if (cd.offered & (1ul << 1)) puts("console: MULTIPORT offered and declined");
  static const char hello[] = "console: hello over virtio\n";
  if ((r = port_write(hello, sizeof hello - 1)) || (r = port_flush())) return fail(71, "console", "transmit: %s", virtio_strerror(r));
  puts("console: greeting sent on the transmit queue; echoing input uppercased up to a newline");
  int n = echo_line();
  if (n < 0) return fail(72, "console", "echo: %s", virtio_strerror(n));
  if ((r = port_flush())) return fail(73, "console", "transmit: %s", virtio_strerror(r));
  printf("console: echoed %d bytes\n", n);
  return 0;
}
