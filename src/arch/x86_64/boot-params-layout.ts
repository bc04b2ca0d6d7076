/**
 * struct boot_params ("zero page") and its setup header, from the Linux x86 boot protocol
 * (Documentation/arch/x86/boot.rst, zero-page.rst; arch/x86/include/uapi/asm/bootparam.h).
 * Offsets are from the start of boot_params, which is also the start of a bzImage file.
 */
export const BOOT_PARAMS = {
  SIZE: 4096,
  acpi_rsdp_addr: 0x070,
  e820_entries: 0x1e8,
  hdr: 0x1f1,
  e820_table: 0x2d0,
  E820_MAX_ENTRIES: 128,
  E820_ENTRY_SIZE: 20,
} as const;

/** Setup header fields (offsets from the start of boot_params / the bzImage). */
export const SETUP_HEADER = {
  setup_sects: 0x1f1,
  syssize: 0x1f4,
  boot_flag: 0x1fe, // 0xAA55
  jump: 0x200, // the header's length is 0x202 + the byte at 0x201
  header: 0x202, // "HdrS"
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

export const HDRS_MAGIC = 0x53726448; // "HdrS"
export const LOADED_HIGH = 0x01;
export const CAN_USE_HEAP = 0x80;
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;
/** Boot loader type 0xff: "undefined" (no registered id), as other VMMs without one use. */
export const LOADER_TYPE_UNDEFINED = 0xff;
