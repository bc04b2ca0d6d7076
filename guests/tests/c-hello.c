/* c-hello: the C runtime works: prints "hello from C" and a few printf formats, exits 0. */
#include "nv.h"

int main(void) {
  puts("hello from C");
  printf("dec %d %u neg %d hex %x %08x %lx str %s char %c\n", 42, 7u, -5, 0xbeef, 0x1234, 0x123456789abcdefUL, "ok", 'Z');
  struct hvm_start_info *si = nv_start_info();
  printf("booted %s\n", si ? "via PVH" : "flat");
  if (si) printf("start info at %p: magic %x version %u cmdline %lx memmap %u entries\n", (void *)si, si->magic, si->version, si->cmdline_paddr, si->memmap_entries);
  if (si && si->magic != 0x336ec578) return 3;
  return 0;
}
