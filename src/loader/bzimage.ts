/**
 * bzImage: the Linux x86 boot protocol (Documentation/arch/x86/boot.rst), 64-bit entry. The setup
 * header is validated, the protected-mode kernel copied to 1 MiB, and boot_params (the zero page)
 * filled with the header, the e820 map, the command line, the initrd and the ACPI RSDP address.
 * The boot vCPU then starts in long mode at the 64-bit entry (load address + 0x200) with RSI
 * pointing at boot_params.
 */
import { VmmError, hex } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { BOOT_PARAMS, CAN_USE_HEAP, HDRS_MAGIC, LOADED_HIGH, LOADER_TYPE_UNDEFINED, SETUP_HEADER, XLF_KERNEL_64 } from '../arch/x86_64/boot-params-layout.js';
import { CMDLINE_ADDR, KERNEL_LOAD_ADDR, ZERO_PAGE_ADDR } from '../arch/x86_64/layout.js';
import type { E820Entry } from '../arch/x86_64/e820.js';
import { writeCmdline } from './cmdline.js';
import { placeInitrd } from './initrd.js';
import type { EntryState } from './entry.js';

/** 2.06 added cmdline_size; 64-bit entry needs 2.12 (xloadflags) and XLF_KERNEL_64. */
export const MIN_BOOT_PROTOCOL = 0x0206;

export interface SetupHeaderInfo {
  readonly version: number;
  readonly setupSects: number;
  readonly kernelOffset: number;
  readonly initSize: number;
  readonly initrdAddrMax: number;
  readonly cmdlineSize: number;
  readonly headerEnd: number;
}

/** Validates the setup header of `image`; `path` names the file in errors. */
export function parseSetupHeader(image: Uint8Array, path: string): SetupHeaderInfo {
  const bad = (why: string) => new VmmError('BAD_KERNEL', `--kernel ${path}: ${why}`);
  if (image.length < 0x264) throw bad('truncated bzImage (shorter than its setup header)');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (v.getUint32(SETUP_HEADER.header, true) !== HDRS_MAGIC) throw bad('not a bzImage (no "HdrS" signature)');
  if (v.getUint16(SETUP_HEADER.boot_flag, true) !== 0xaa55) throw bad('not a bzImage (no 0xAA55 boot flag)');
  const version = v.getUint16(SETUP_HEADER.version, true);
  if (version < MIN_BOOT_PROTOCOL) {
    throw bad(`boot protocol ${(version >> 8).toString()}.${(version & 0xff).toString().padStart(2, '0')} is too old (nodevisor needs 2.06 or newer)`);
  }
  if (version < 0x020c || !(v.getUint16(SETUP_HEADER.xloadflags, true) & XLF_KERNEL_64)) {
    throw bad('kernel has no 64-bit entry point (XLF_KERNEL_64); build it for x86-64');
  }
  if (!(v.getUint8(SETUP_HEADER.loadflags) & LOADED_HIGH)) throw bad('kernel is not loadable at 1 MiB (LOADED_HIGH clear)');
  const setupSects = v.getUint8(SETUP_HEADER.setup_sects) || 4;
  const kernelOffset = (setupSects + 1) * 512;
  const syssize = v.getUint32(SETUP_HEADER.syssize, true) * 16;
  if (kernelOffset >= image.length || kernelOffset + syssize > image.length) {
    throw bad(`truncated bzImage: ${image.length} bytes, header promises ${kernelOffset + syssize}`);
  }
  return {
    version,
    setupSects,
    kernelOffset,
    initSize: v.getUint32(SETUP_HEADER.init_size, true),
    initrdAddrMax: v.getUint32(SETUP_HEADER.initrd_addr_max, true),
    cmdlineSize: v.getUint32(SETUP_HEADER.cmdline_size, true),
    headerEnd: 0x202 + v.getUint8(0x201),
  };
}

export interface LinuxBootInput {
  readonly mem: GuestMemory;
  readonly memBytes: number;
  readonly image: Uint8Array;
  readonly path: string;
  readonly cmdline: string;
  readonly initrd?: { bytes: Uint8Array; path: string };
  readonly e820: readonly E820Entry[];
  readonly rsdpAddr?: number;
}

export function loadBzImage(input: LinuxBootInput): EntryState {
  const { mem, image, path } = input;
  const hdr = parseSetupHeader(image, path);
  const kernel = image.subarray(hdr.kernelOffset);
  const kernelEnd = KERNEL_LOAD_ADDR + Math.max(kernel.length, hdr.initSize);
  if (!mem.contains(KERNEL_LOAD_ADDR, kernelEnd - KERNEL_LOAD_ADDR)) {
    throw new VmmError('BAD_KERNEL', `--kernel ${path}: needs ${hex(kernelEnd - KERNEL_LOAD_ADDR)} bytes at ${hex(KERNEL_LOAD_ADDR)} to decompress, more than --mem allows (raise --mem)`);
  }
  mem.write(KERNEL_LOAD_ADDR, kernel);

  const zp = new Uint8Array(BOOT_PARAMS.SIZE);
  const z = new DataView(zp.buffer);
  zp.set(image.subarray(SETUP_HEADER.setup_sects, Math.min(hdr.headerEnd, image.length)), BOOT_PARAMS.hdr);
  z.setUint8(SETUP_HEADER.type_of_loader, LOADER_TYPE_UNDEFINED);
  z.setUint8(SETUP_HEADER.loadflags, z.getUint8(SETUP_HEADER.loadflags) | CAN_USE_HEAP);
  z.setUint16(SETUP_HEADER.heap_end_ptr, 0xfe00, true);
  z.setUint32(SETUP_HEADER.code32_start, KERNEL_LOAD_ADDR, true);

  const cmdlineMax = Math.min(hdr.cmdlineSize > 0 ? hdr.cmdlineSize + 1 : 256, 4096);
  writeCmdline(mem, CMDLINE_ADDR, input.cmdline, cmdlineMax);
  z.setUint32(SETUP_HEADER.cmd_line_ptr, CMDLINE_ADDR, true);

  if (input.initrd) {
    const placed = placeInitrd(mem, input.initrd.bytes, input.memBytes, kernelEnd, hdr.initrdAddrMax || 0x37ff_ffff, input.initrd.path);
    z.setUint32(SETUP_HEADER.ramdisk_image, placed.addr, true);
    z.setUint32(SETUP_HEADER.ramdisk_size, placed.size, true);
  }

  if (input.e820.length > BOOT_PARAMS.E820_MAX_ENTRIES) throw new VmmError('INTERNAL', `e820 map has ${input.e820.length} entries (max ${BOOT_PARAMS.E820_MAX_ENTRIES})`);
  z.setUint8(BOOT_PARAMS.e820_entries, input.e820.length);
  input.e820.forEach((e, i) => {
    const o = BOOT_PARAMS.e820_table + i * BOOT_PARAMS.E820_ENTRY_SIZE;
    z.setBigUint64(o, BigInt(e.addr), true);
    z.setBigUint64(o + 8, BigInt(e.size), true);
    z.setUint32(o + 16, e.type, true);
  });
  if (input.rsdpAddr !== undefined && hdr.version >= 0x020e) z.setBigUint64(BOOT_PARAMS.acpi_rsdp_addr, BigInt(input.rsdpAddr), true);

  mem.write(ZERO_PAGE_ADDR, zp);
  return { mode: 'long64', entry: KERNEL_LOAD_ADDR + 0x200, rsi: ZERO_PAGE_ADDR };
}
