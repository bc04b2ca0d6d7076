// The C reference for bench/exits: the smallest VMM that runs the same flat guest image the same
// way nodevisor does (in-kernel irqchip and PIT, supported CPUID, real mode at 1000:0000) and answers
// the same exits (testdev scratch at port 0xe0 and MMIO 0xd0000000, COM1 output, isa-debug-exit).
// Usage: reference IMAGE [MEM_MIB]. Prints "exits N" on stderr and exits with the guest's status.
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static void die(const char* what) {
  perror(what);
  exit(100);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s IMAGE [MEM_MIB]\n", argv[0]);
    return 100;
  }
  size_t mem = (argc > 2 ? strtoul(argv[2], 0, 10) : 128) << 20;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) die("/dev/kvm");
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) die("KVM_CREATE_VM");
  if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) die("KVM_SET_TSS_ADDR");
  uint64_t idmap = 0xfffbc000;
  if (ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) die("KVM_SET_IDENTITY_MAP_ADDR");
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) die("KVM_CREATE_IRQCHIP");
  struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
  if (ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) die("KVM_CREATE_PIT2");
  uint8_t* ram = mmap(0, mem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram == MAP_FAILED) die("mmap");
  struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = mem, .userspace_addr = (uint64_t)ram};
  if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

  FILE* f = fopen(argv[1], "rb");
  if (!f) die(argv[1]);
  size_t n = fread(ram + 0x10000, 1, mem - 0x10000, f);
  fclose(f);
  if (n == 0) die("empty image");

  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  if (vcpu < 0) die("KVM_CREATE_VCPU");
  int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run* run = mmap(0, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  if (run == MAP_FAILED) die("mmap kvm_run");

  struct kvm_cpuid2* cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(struct kvm_cpuid_entry2));
  cpuid->nent = 256;
  if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
  if (ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0) die("KVM_SET_CPUID2");

  struct kvm_sregs sregs;
  if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
  struct kvm_segment* segs[] = {&sregs.cs, &sregs.ds, &sregs.es, &sregs.fs, &sregs.gs, &sregs.ss};
  for (int i = 0; i < 6; i++) segs[i]->selector = 0x1000, segs[i]->base = 0x10000;
  if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
  struct kvm_regs regs = {.rip = 0, .rsp = 0x8000, .rflags = 2};
  if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

  uint8_t pio_scratch[8] = {0};
  static uint8_t mmio_scratch[4096];
  unsigned long exits = 0;
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      die("KVM_RUN");
    }
    exits++;
    if (run->exit_reason == KVM_EXIT_IO) {
      uint8_t* data = (uint8_t*)run + run->io.data_offset;
      uint16_t port = run->io.port;
      for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (port >= 0xe0 && port + run->io.size <= 0xe8) {
          if (run->io.direction == KVM_EXIT_IO_OUT) memcpy(pio_scratch + (port - 0xe0), data, run->io.size);
          else memcpy(data, pio_scratch + (port - 0xe0), run->io.size);
        } else if (port == 0x3f8 && run->io.direction == KVM_EXIT_IO_OUT) {
          if (write(1, data, 1) < 0) die("write");
        } else if (port == 0x3fd && run->io.direction == KVM_EXIT_IO_IN) {
          *data = 0x60;
        } else if (port >= 0xf4 && port < 0xf8 && run->io.direction == KVM_EXIT_IO_OUT) {
          fprintf(stderr, "exits %lu\n", exits);
          return ((*data << 1) | 1) & 0xff;
        } else if (run->io.direction == KVM_EXIT_IO_IN) {
          memset(data, 0xff, run->io.size);
        }
      }
    } else if (run->exit_reason == KVM_EXIT_MMIO) {
      uint64_t a = run->mmio.phys_addr;
      if (a >= 0xd0000000 && a + run->mmio.len <= 0xd0001000) {
        if (run->mmio.is_write) memcpy(mmio_scratch + (a - 0xd0000000), run->mmio.data, run->mmio.len);
        else memcpy(run->mmio.data, mmio_scratch + (a - 0xd0000000), run->mmio.len);
      } else if (!run->mmio.is_write) {
        memset(run->mmio.data, 0xff, run->mmio.len);
      }
    } else {
      fprintf(stderr, "unexpected exit %u after %lu exits\n", run->exit_reason, exits);
      return 101;
    }
  }
}
