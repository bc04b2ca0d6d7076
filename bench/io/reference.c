// The C reference for bench/io/model.mjs: the system calls a VMM's data path cannot avoid, with
// nothing around them, so that the model bench can print how much nodevisor's device models add.
//   reference blk FILE REQUESTS   random 4 KiB preadv2 reads of FILE (in the page cache; RWF_NOWAIT
//                                 as nodevisor's first try, plain where the file system refuses it)
//   reference tap NAME FRAMES     1514-byte frames (with a 12-byte vnet header) written to tap NAME
// Prints "ns_per_op N" on stdout.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void die(const char* what) {
  perror(what);
  exit(100);
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static int blk(const char* file, long n) {
  int fd = open(file, O_RDONLY);
  if (fd < 0) die(file);
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat");
  long blocks = st.st_size / 4096;
  static char buf[4096];
  struct iovec iov = {buf, sizeof buf};
  unsigned seed = 12345;
  int flags = preadv2(fd, &iov, 1, 0, RWF_NOWAIT) < 0 && errno == EOPNOTSUPP ? 0 : RWF_NOWAIT;
  double t0 = now_ns();
  for (long i = 0; i < n; i++) {
    seed = (seed * 1103515245u + 12345u) & 0x7fffffff;
    if (preadv2(fd, &iov, 1, (off_t)(seed % blocks) * 4096, flags) != 4096) die("preadv2");
  }
  printf("ns_per_op %.1f\n", (now_ns() - t0) / n);
  return 0;
}

static int tap(const char* name, long n) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK); // as nodevisor opens it
  if (fd < 0) die("/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  int hdr = 12;
  if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) die("TUNSETVNETHDRSZ");
  // The model bench's frame: broadcast, IEEE local experimental ethertype (the host stack drops it).
  static unsigned char frame[12 + 1514];
  memset(frame + 12, 0xff, 6);
  frame[12 + 12] = 0x88, frame[12 + 13] = 0xb5;
  double t0 = now_ns();
  for (long i = 0; i < n; i++)
    if (write(fd, frame, sizeof frame) != sizeof frame) die("write");
  printf("ns_per_op %.1f\n", (now_ns() - t0) / n);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s blk FILE REQUESTS | tap NAME FRAMES\n", argv[0]);
    return 100;
  }
  long n = strtol(argv[3], 0, 10);
  if (!strcmp(argv[1], "blk")) return blk(argv[2], n);
  if (!strcmp(argv[1], "tap")) return tap(argv[2], n);
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 100;
}
