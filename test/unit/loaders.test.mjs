import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { loadBzImage, parseSetupHeader } from '../../dist/loader/bzimage.js';
import { loadPvh, parseElf, HVM_START_INFO } from '../../dist/loader/pvh.js';
import { loadFlat } from '../../dist/loader/flat.js';
import { e820Map } from '../../dist/arch/x86_64/e820.js';
import { writeIdentityPageTables, writeBootGdt, GDT_CODE64 } from '../../dist/arch/x86_64/boot-tables.js';

const MiB = 1 << 20;

/** A synthetic bzImage: setup sectors, a valid 2.15 header, `payload` bytes of protected-mode code. */
function bzImage({ version = 0x020f, xloadflags = 1, loadflags = 1, setupSects = 4, payload = 4096, initSize = 2 * MiB, truncate = 0 } = {}) {
  const size = (setupSects + 1) * 512 + payload;
  const b = Buffer.alloc(size);
  b[0x1f1] = setupSects;
  b.writeUInt32LE(payload / 16, 0x1f4); // syssize
  b.writeUInt16LE(0xaa55, 0x1fe);
  b[0x201] = 0x6a; // header length - 0x202 (ends at 0x26c)
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(version, 0x206);
  b[0x211] = loadflags;
  b.writeUInt32LE(0x37ffffff, 0x22c); // initrd_addr_max
  b.writeUInt16LE(xloadflags, 0x236);
  b.writeUInt32LE(2047, 0x238); // cmdline_size
  b.writeUInt32LE(initSize, 0x260);
  b.fill(0xab, (setupSects + 1) * 512);
  return truncate ? b.subarray(0, size - truncate) : b;
}

const bootInput = (mem, image, extra = {}) => ({ mem, memBytes: mem.size, image, path: 'k', cmdline: 'console=ttyS0', e820: e820Map(mem.size), ...extra });

describe('bzImage loader', () => {
  it('fills boot_params: header copy, loader type, cmdline, e820, initrd, RSDP; enters long mode at +0x200', () => {
    const mem = fakeMemory(64 * MiB);
    const entry = loadBzImage(bootInput(mem, bzImage(), { initrd: { bytes: Buffer.alloc(10000, 7), path: 'i' }, rsdpAddr: 0xe0000 }));
    assert.deepEqual(entry, { mode: 'long64', entry: 0x100200, rsi: 0x7000 });
    const zp = 0x7000;
    assert.equal(mem.readU32(zp + 0x202), 0x53726448); // HdrS copied
    assert.equal(mem.readU8(zp + 0x210), 0xff); // type_of_loader
    assert.equal(mem.readU32(zp + 0x228), 0x20000); // cmd_line_ptr
    assert.equal(Buffer.from(mem.read(0x20000, 14)).toString('latin1'), 'console=ttyS0\0');
    assert.equal(mem.readU8(zp + 0x1e8), 4); // e820 entries for 64 MiB
    assert.equal(mem.readU64(zp + 0x2d0 + 20 * 3), 0x100000n);
    assert.equal(mem.readU64(zp + 0x2d0 + 20 * 3 + 8), BigInt(63 * MiB));
    assert.equal(mem.readU32(zp + 0x2d0 + 20 * 3 + 16), 1);
    const initrd = mem.readU32(zp + 0x218);
    assert.equal(initrd % 4096, 0);
    assert.ok(initrd + 10000 <= 64 * MiB && initrd >= 0x100000 + 2 * MiB);
    assert.equal(mem.readU32(zp + 0x21c), 10000);
    assert.equal(mem.readU8(initrd), 7);
    assert.equal(mem.readU64(zp + 0x70), 0xe0000n);
    assert.equal(mem.readU8(0x100000), 0xab); // protected-mode code at 1 MiB
  });

  it('refuses what is not a usable bzImage, naming the file and the reason', () => {
    const mem = fakeMemory(64 * MiB);
    const cases = [
      [bzImage({ version: 0x0205 }), /boot protocol 2\.05 is too old/],
      [bzImage({ xloadflags: 0 }), /no 64-bit entry point/],
      [bzImage({ loadflags: 0 }), /LOADED_HIGH/],
      [bzImage({ truncate: 100 }), /truncated bzImage/],
      [Buffer.alloc(0x100), /truncated bzImage/],
    ];
    for (const [img, re] of cases) assert.throws(() => loadBzImage(bootInput(mem, img)), (e) => e.code === 'BAD_KERNEL' && /^--kernel k: /.test(e.message) && re.test(e.message), String(re));
    const noMagic = bzImage();
    noMagic.write('XXXX', 0x202);
    assert.throws(() => parseSetupHeader(noMagic, 'k'), /not a bzImage/);
  });

  it('refuses a kernel that does not fit in guest RAM, and an oversized command line', () => {
    assert.throws(() => loadBzImage(bootInput(fakeMemory(2 * MiB), bzImage())), /raise --mem/);
    assert.throws(() => loadBzImage(bootInput(fakeMemory(64 * MiB), bzImage(), { cmdline: 'x'.repeat(3000) })), /--cmdline: 3000 bytes, longer than the kernel accepts \(2047\)/);
    assert.throws(() => loadBzImage(bootInput(fakeMemory(8 * MiB), bzImage(), { initrd: { bytes: Buffer.alloc(7 * MiB), path: 'big.img' } })), /--initrd big\.img: .* do not fit/);
  });
});

/** A synthetic ELF64 with one PT_LOAD at `paddr` and a PT_NOTE carrying the Xen PVH entry. */
function pvhElf({ paddr = 0x100000, entry = 0x100040, note = true, memsz = 0x2000, truncate = 0 } = {}) {
  const code = Buffer.alloc(0x100, 0xcc);
  const noteBuf = Buffer.alloc(20);
  noteBuf.writeUInt32LE(4, 0);
  noteBuf.writeUInt32LE(4, 4);
  noteBuf.writeUInt32LE(18, 8);
  noteBuf.write('Xen\0', 12, 'latin1');
  noteBuf.writeUInt32LE(entry, 16);
  const phoff = 64;
  const phnum = note ? 2 : 1;
  const dataOff = phoff + 56 * phnum;
  const b = Buffer.alloc(dataOff + code.length + noteBuf.length);
  b.write('\x7fELF', 0, 'latin1');
  b[4] = 2; b[5] = 1; b[6] = 1;
  b.writeUInt16LE(2, 16); b.writeUInt16LE(62, 18);
  b.writeBigUInt64LE(BigInt(phoff), 32);
  b.writeUInt16LE(56, 54); b.writeUInt16LE(phnum, 56);
  const ph = (i, type, off, pa, filesz, msz) => {
    const o = phoff + i * 56;
    b.writeUInt32LE(type, o);
    b.writeBigUInt64LE(BigInt(off), o + 8);
    b.writeBigUInt64LE(BigInt(pa), o + 16);
    b.writeBigUInt64LE(BigInt(pa), o + 24);
    b.writeBigUInt64LE(BigInt(filesz), o + 32);
    b.writeBigUInt64LE(BigInt(msz), o + 40);
  };
  ph(0, 1, dataOff, paddr, code.length, memsz);
  code.copy(b, dataOff);
  if (note) {
    ph(1, 4, dataOff + code.length, 0, noteBuf.length, noteBuf.length);
    noteBuf.copy(b, dataOff + code.length);
  }
  return truncate ? b.subarray(0, b.length - truncate) : b;
}

describe('PVH loader', () => {
  it('loads PT_LOAD segments (zeroing .bss) and writes hvm_start_info with cmdline, memmap, module and RSDP', () => {
    const mem = fakeMemory(64 * MiB);
    mem.slice(0x100100, 0x100).fill(0x55); // stale bytes where .bss goes
    const entry = loadPvh(bootInput(mem, pvhElf(), { initrd: { bytes: Buffer.alloc(5000, 9), path: 'i' }, rsdpAddr: 0xe0000 }));
    assert.deepEqual(entry, { mode: 'protected32', entry: 0x100040, ebx: 0x6000 });
    assert.equal(mem.readU8(0x100000), 0xcc);
    assert.equal(mem.readU8(0x100100), 0);
    const si = 0x6000;
    assert.equal(mem.readU32(si + HVM_START_INFO.magic), 0x336ec578);
    assert.equal(mem.readU32(si + HVM_START_INFO.version), 1);
    assert.equal(mem.readU64(si + HVM_START_INFO.cmdline_paddr), 0x20000n);
    assert.equal(mem.readU32(si + HVM_START_INFO.memmap_entries), 4);
    const mm = Number(mem.readU64(si + HVM_START_INFO.memmap_paddr));
    assert.equal(mem.readU64(mm + 24 * 3), 0x100000n);
    assert.equal(mem.readU32(mm + 24 * 3 + 16), 1);
    assert.equal(mem.readU32(si + HVM_START_INFO.nr_modules), 1);
    const mod = Number(mem.readU64(si + HVM_START_INFO.modlist_paddr));
    assert.equal(mem.readU64(mod + 8), 5000n);
    assert.equal(mem.readU8(Number(mem.readU64(mod))), 9);
    assert.equal(mem.readU64(si + HVM_START_INFO.rsdp_paddr), 0xe0000n);
  });

  it('refuses ELFs without a PVH note, truncated ones, and segments outside RAM or over the boot data', () => {
    const mem = fakeMemory(16 * MiB);
    assert.throws(() => loadPvh(bootInput(mem, pvhElf({ note: false }))), /without a PVH entry note/);
    assert.throws(() => loadPvh(bootInput(mem, pvhElf({ truncate: 30 }))), /truncated ELF/);
    assert.throws(() => loadPvh(bootInput(mem, pvhElf({ paddr: 0x8000 }))), /overlaps the boot data below 1 MiB/);
    assert.throws(() => loadPvh(bootInput(mem, pvhElf({ paddr: 15 * MiB, memsz: 2 * MiB }))), /does not fit in guest RAM/);
    assert.throws(() => parseElf(Buffer.from('\x7fELF\x03'), 'k'), /truncated ELF header/);
  });

  it('survives garbage note headers without reading outside the file', () => {
    const elf = pvhElf();
    const noteOff = elf.length - 20;
    elf.writeUInt32LE(0xffffffff, noteOff); // namesz
    assert.equal(parseElf(elf, 'k').pvhEntry, undefined);
  });
});

describe('flat loader and boot tables', () => {
  it('loads a flat image at 0x10000 for real mode at 1000:0000', () => {
    const mem = fakeMemory(MiB);
    assert.deepEqual(loadFlat(mem, Buffer.from([0xf4]), 'g'), { mode: 'real', segment: 0x1000, ip: 0, sp: 0x8000 });
    assert.equal(mem.readU8(0x10000), 0xf4);
    assert.throws(() => loadFlat(mem, Buffer.alloc(MiB), 'g'), /does not fit in guest RAM/);
  });

  it('e820 map: EBDA and BIOS area reserved, RAM split around the 3 GiB MMIO hole', () => {
    assert.deepEqual(e820Map(4 * 2 ** 30).map((e) => [e.addr, e.size, e.type]), [
      [0, 0x9fc00, 1], [0x9fc00, 0x400, 2], [0xe0000, 0x20000, 2], [0x100000, 0xc0000000 - 0x100000, 1], [0x100000000, 2 ** 30, 1],
    ]);
  });

  it('identity page tables map the first 4 GiB with 2 MiB pages; GDT has the boot protocol selectors', () => {
    const mem = fakeMemory(MiB);
    assert.equal(writeIdentityPageTables(mem), 0x9000);
    assert.equal(mem.readU64(0x9000), 0xa003n);
    assert.equal(mem.readU64(0xa000 + 3 * 8), 0xe003n);
    assert.equal(mem.readU64(0xb000 + 8 * 5), (5n << 21n) | 0x83n);
    assert.equal(mem.readU64(0xe000 + 511 * 8), ((4n * 512n - 1n) << 21n) | 0x83n);
    writeBootGdt(mem, GDT_CODE64);
    assert.equal(mem.readU64(0x500 + 0x10), 0x00af9b000000ffffn);
    assert.equal(mem.readU64(0x500 + 0x18), 0x00cf93000000ffffn);
  });
});
