/**
 * ELF kernels with a PVH entry point (Linux vmlinux built with CONFIG_PVH, and our C test guests):
 * PT_LOAD segments are copied to their physical addresses, the XEN_ELFNOTE_PHYS32_ENTRY note gives
 * the 32-bit entry, and an hvm_start_info structure (xen/include/public/arch-x86/hvm/start_info.h)
 * describes the command line, memory map, initrd module and RSDP. The boot vCPU starts in 32-bit
 * protected mode without paging, EBX pointing at hvm_start_info.
 */
import { VmmError, hex } from '../errors.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { CMDLINE_ADDR, CMDLINE_MAX, KERNEL_LOAD_ADDR, PVH_INFO_ADDR } from '../arch/x86_64/layout.js';
import type { E820Entry } from '../arch/x86_64/e820.js';
import { writeCmdline } from './cmdline.js';
import { placeInitrd } from './initrd.js';
import type { EntryState } from './entry.js';
import type { LinuxBootInput } from './bzimage.js';

const PT_LOAD = 1;
const PT_NOTE = 4;
const EM_386 = 3;
const EM_X86_64 = 62;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** hvm_start_info, version 1. */
export const HVM_START_INFO = {
  SIZE: 56, MAGIC: 0x336ec578,
  magic: 0, version: 4, flags: 8, nr_modules: 12, modlist_paddr: 16, cmdline_paddr: 24, rsdp_paddr: 32, memmap_paddr: 40, memmap_entries: 48,
} as const;
export const HVM_MEMMAP_ENTRY = { SIZE: 24, addr: 0, size: 8, type: 16 } as const;
export const HVM_MODLIST_ENTRY = { SIZE: 32, paddr: 0, size: 8, cmdline_paddr: 16 } as const;

interface Segment {
  readonly type: number;
  readonly offset: number;
  readonly paddr: number;
  readonly filesz: number;
  readonly memsz: number;
}

export interface ElfImage {
  readonly segments: Segment[];
  readonly pvhEntry: number | undefined;
}

/** Parses the ELF headers and notes of `image`, checking every offset against the file size. */
export function parseElf(image: Uint8Array, path: string): ElfImage {
  const bad = (why: string) => new VmmError('BAD_KERNEL', `--kernel ${path}: ${why}`);
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image.length < 52) throw bad('truncated ELF header');
  const is64 = image[4] === 2;
  if (image[4] !== 1 && !is64) throw bad('unknown ELF class');
  if (image[5] !== 1) throw bad('not a little-endian ELF');
  const machine = v.getUint16(18, true);
  if (machine !== EM_X86_64 && machine !== EM_386) throw bad(`ELF for machine ${machine}, not x86`);
  if (is64 && image.length < 64) throw bad('truncated ELF header');
  const phoff = is64 ? Number(v.getBigUint64(32, true)) : v.getUint32(28, true);
  const phentsize = v.getUint16(is64 ? 54 : 42, true);
  const phnum = v.getUint16(is64 ? 56 : 44, true);
  if (phentsize < (is64 ? 56 : 32) || phoff + phentsize * phnum > image.length) throw bad('truncated ELF program headers');

  const segments: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    const seg: Segment = is64
      ? { type: v.getUint32(o, true), offset: Number(v.getBigUint64(o + 8, true)), paddr: Number(v.getBigUint64(o + 24, true)), filesz: Number(v.getBigUint64(o + 32, true)), memsz: Number(v.getBigUint64(o + 40, true)) }
      : { type: v.getUint32(o, true), offset: v.getUint32(o + 4, true), paddr: v.getUint32(o + 12, true), filesz: v.getUint32(o + 16, true), memsz: v.getUint32(o + 20, true) };
    if (seg.type === PT_LOAD || seg.type === PT_NOTE) {
      if (!Number.isSafeInteger(seg.offset + seg.filesz) || seg.offset + seg.filesz > image.length) throw bad(`truncated ELF: segment ${i} extends past the end of the file`);
      if (seg.filesz > seg.memsz && seg.type === PT_LOAD) throw bad(`ELF segment ${i} has filesz > memsz`);
      segments.push(seg);
    }
  }

  let pvhEntry: number | undefined;
  for (const seg of segments.filter((s) => s.type === PT_NOTE)) {
    let o = seg.offset;
    const end = seg.offset + seg.filesz;
    while (o + 12 <= end) {
      const namesz = v.getUint32(o, true);
      const descsz = v.getUint32(o + 4, true);
      const type = v.getUint32(o + 8, true);
      const name = o + 12;
      const desc = name + ((namesz + 3) & ~3);
      const next = desc + ((descsz + 3) & ~3);
      if (next > end || namesz > end || descsz > end) break; // malformed note: stop reading this segment
      const isXen = namesz === 4 && image[name] === 0x58 && image[name + 1] === 0x65 && image[name + 2] === 0x6e && image[name + 3] === 0;
      if (isXen && type === XEN_ELFNOTE_PHYS32_ENTRY && (descsz === 4 || descsz === 8)) pvhEntry = v.getUint32(desc, true);
      o = next;
    }
  }
  return { segments, pvhEntry };
}

export function loadPvh(input: LinuxBootInput): EntryState {
  const { mem, image, path } = input;
  const elf = parseElf(image, path);
  if (elf.pvhEntry === undefined) {
    throw new VmmError('BAD_KERNEL', `--kernel ${path}: ELF without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build the kernel with CONFIG_PVH=y or use its bzImage`);
  }
  let end = 0;
  for (const seg of elf.segments.filter((s) => s.type === PT_LOAD)) {
    if (seg.paddr < KERNEL_LOAD_ADDR) throw new VmmError('BAD_KERNEL', `--kernel ${path}: ELF segment at ${hex(seg.paddr)} overlaps the boot data below 1 MiB`);
    if (!mem.contains(seg.paddr, seg.memsz)) {
      throw new VmmError('BAD_KERNEL', `--kernel ${path}: ELF segment [${hex(seg.paddr)}, +${hex(seg.memsz)}) does not fit in guest RAM (raise --mem)`);
    }
    mem.write(seg.paddr, image.subarray(seg.offset, seg.offset + seg.filesz));
    mem.slice(seg.paddr + seg.filesz, seg.memsz - seg.filesz).fill(0);
    end = Math.max(end, seg.paddr + seg.memsz);
  }

  const info = new DataView(new ArrayBuffer(HVM_START_INFO.SIZE));
  info.setUint32(HVM_START_INFO.magic, HVM_START_INFO.MAGIC, true);
  info.setUint32(HVM_START_INFO.version, 1, true);

  writeCmdline(mem, CMDLINE_ADDR, input.cmdline, CMDLINE_MAX);
  info.setBigUint64(HVM_START_INFO.cmdline_paddr, BigInt(CMDLINE_ADDR), true);

  // Memory map and module list follow the start info in the same page.
  const memmapAddr = PVH_INFO_ADDR + 64;
  writeMemmap(mem, memmapAddr, input.e820);
  info.setBigUint64(HVM_START_INFO.memmap_paddr, BigInt(memmapAddr), true);
  info.setUint32(HVM_START_INFO.memmap_entries, input.e820.length, true);

  if (input.initrd) {
    const placed = placeInitrd(mem, input.initrd.bytes, input.memBytes, (end + 0xfff) & ~0xfff, 0xffff_ffff, input.initrd.path);
    const modAddr = memmapAddr + input.e820.length * HVM_MEMMAP_ENTRY.SIZE;
    const mod = mem.view(modAddr, HVM_MODLIST_ENTRY.SIZE);
    mod.setBigUint64(HVM_MODLIST_ENTRY.paddr, BigInt(placed.addr), true);
    mod.setBigUint64(HVM_MODLIST_ENTRY.size, BigInt(placed.size), true);
    mod.setBigUint64(HVM_MODLIST_ENTRY.cmdline_paddr, 0n, true);
    info.setUint32(HVM_START_INFO.nr_modules, 1, true);
    info.setBigUint64(HVM_START_INFO.modlist_paddr, BigInt(modAddr), true);
  }
  if (input.rsdpAddr !== undefined) info.setBigUint64(HVM_START_INFO.rsdp_paddr, BigInt(input.rsdpAddr), true);
  mem.write(PVH_INFO_ADDR, new Uint8Array(info.buffer));
  return { mode: 'protected32', entry: elf.pvhEntry, ebx: PVH_INFO_ADDR };
}

function writeMemmap(mem: GuestMemory, addr: number, e820: readonly E820Entry[]): void {
  if (64 + e820.length * HVM_MEMMAP_ENTRY.SIZE + HVM_MODLIST_ENTRY.SIZE > 4096) throw new VmmError('INTERNAL', `memory map of ${e820.length} entries does not fit the PVH info page`);
  e820.forEach((e, i) => {
    const v = mem.view(addr + i * HVM_MEMMAP_ENTRY.SIZE, HVM_MEMMAP_ENTRY.SIZE);
    v.setBigUint64(HVM_MEMMAP_ENTRY.addr, BigInt(e.addr), true);
    v.setBigUint64(HVM_MEMMAP_ENTRY.size, BigInt(e.size), true);
    v.setUint32(HVM_MEMMAP_ENTRY.type, e.type, true);
  });
}
