import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { writeAcpiTables, OEM_ID } from '../../dist/arch/x86_64/acpi/tables.js';
import * as aml from '../../dist/arch/x86_64/acpi/aml.js';
import { writeMpTable } from '../../dist/arch/x86_64/mptable.js';

const config = (cpus) => ({
  cpus, ioapicId: cpus, sleepControlPort: 0x600, sleepStatusPort: 0x601, resetPort: 0x602, resetValue: 1, s5SlpTyp: 5,
  pciMmio32: [0xc0000000, 0xfebfffff], pciMmio64: [1n << 36n, (1n << 37n) - 1n],
});
const sum = (bytes) => bytes.reduce((a, b) => a + b, 0) & 0xff;

/** Finds the RSDP the way Linux does without a boot-protocol hint: "RSD PTR " on 16-byte boundaries. */
function scanRsdp(mem) {
  for (let a = 0xe0000; a < 0x100000; a += 16) {
    if (Buffer.from(mem.read(a, 8)).toString('latin1') === 'RSD PTR ' && sum(mem.read(a, 20)) === 0) return a;
  }
  return undefined;
}

function tablesOf(mem, rsdp) {
  const xsdt = Number(mem.readU64(rsdp + 24));
  const len = mem.readU32(xsdt + 4);
  const out = { XSDT: mem.read(xsdt, len) };
  for (let o = 36; o < len; o += 8) {
    const a = Number(mem.readU64(xsdt + o));
    const t = mem.read(a, mem.readU32(a + 4));
    out[Buffer.from(t.subarray(0, 4)).toString('latin1')] = t;
  }
  const fadt = out.FACP;
  const dsdt = Number(new DataView(fadt.buffer, fadt.byteOffset).getBigUint64(140, true));
  out.DSDT = mem.read(dsdt, mem.readU32(dsdt + 4));
  return out;
}

describe('ACPI tables', () => {
  for (const cpus of [1, 2, 4, 64]) {
    it(`${cpus} CPU(s): RSDP found by scan, every checksum zero, MADT lists each CPU`, () => {
      const mem = fakeMemory(2 << 20);
      const layout = writeAcpiTables(mem, config(cpus));
      assert.equal(scanRsdp(mem), layout.rsdpAddr);
      assert.equal(sum(mem.read(layout.rsdpAddr, 36)), 0);
      const t = tablesOf(mem, layout.rsdpAddr);
      for (const [sig, bytes] of Object.entries(t)) {
        assert.equal(sum(bytes), 0, `${sig} checksum`);
        assert.equal(Buffer.from(bytes.subarray(10, 16)).toString('latin1'), OEM_ID, `${sig} OEM id`);
      }
      const madt = t.APIC;
      let lapics = 0;
      for (let o = 44; o < madt.length; o += madt[o + 1]) if (madt[o] === 0) lapics++;
      assert.equal(lapics, cpus);
      const fadt = new DataView(t.FACP.buffer, t.FACP.byteOffset);
      assert.equal(fadt.getUint32(112, true) & (1 << 20), 1 << 20, 'HW_REDUCED_ACPI');
      assert.equal(Number(fadt.getBigUint64(244 + 4, true)), 0x600, 'sleep control register');
      assert.equal(t.FACP[8], 6, 'FADT revision 6');
    });
  }

  it('built once per configuration: a second machine of the same one gets the same bytes, another configuration its own', () => {
    const area = (mem) => Buffer.from(mem.read(0xe0000, 0x10000));
    const a = fakeMemory(2 << 20);
    const b = fakeMemory(2 << 20);
    const la = writeAcpiTables(a, config(2));
    la.tables[0].addr = 0; // a caller changing its layout changes nobody else's
    const lb = writeAcpiTables(b, config(2));
    assert.ok(area(a).equals(area(b)));
    assert.notEqual(lb.tables[0].addr, 0);
    const c = fakeMemory(2 << 20);
    writeAcpiTables(c, { ...config(2), pciMmio64: [1n << 36n, (1n << 38n) - 1n] });
    assert.ok(!area(a).equals(area(c)), 'a different 64-bit window, a different DSDT');
    assert.equal(tablesOf(c, 0xe0000).APIC.length, tablesOf(a, 0xe0000).APIC.length);
  });

  it('refuses more CPUs than the MADT can describe, and an IOAPIC id that collides', () => {
    assert.throws(() => writeAcpiTables(fakeMemory(2 << 20), config(255)), /1 to 254/);
    assert.throws(() => writeAcpiTables(fakeMemory(2 << 20), { ...config(4), ioapicId: 2 }), /collides/);
  });

  it('AML encodings match the specification', () => {
    assert.deepEqual([...aml.pkgLength(0x3e)], [0x3f]);
    assert.deepEqual([...aml.pkgLength(0x3f)], [0x41, 0x04]); // 0x41 = 2 bytes, low nibble 1; total 0x41
    assert.deepEqual([...aml.pkgLength(0x1000)], [0x83, 0x00, 0x01]); // 3 bytes, total 0x1003
    assert.deepEqual([...aml.eisaId('PNP0A08')], [0x0c, 0x41, 0xd0, 0x0a, 0x08]);
    assert.deepEqual([...aml.integer(0)], [0x00]);
    assert.deepEqual([...aml.integer(1)], [0x01]);
    assert.deepEqual([...aml.integer(0x12)], [0x0a, 0x12]);
    assert.deepEqual([...aml.integer(0x1234)], [0x0b, 0x34, 0x12]);
    assert.deepEqual([...aml.integer(0x12345678)], [0x0c, 0x78, 0x56, 0x34, 0x12]);
    assert.equal(aml.integer(2n ** 40n)[0], 0x0e);
    assert.deepEqual([...aml.nameString('\\_SB.PCI0')], [0x5c, 0x2e, ...Buffer.from('_SB_PCI0')]);
    assert.throws(() => aml.nameString('toolong'), /name segment/);
  });

  it('iasl disassembles the DSDT, FADT and MADT without errors and finds our devices', { skip: !hasIasl() && !process.env.CI && 'iasl not installed (apt-get install acpica-tools)' }, () => {
    const mem = fakeMemory(2 << 20);
    const t = tablesOf(mem, writeAcpiTables(mem, config(2)).rsdpAddr);
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-acpi-'));
    try {
      for (const sig of ['DSDT', 'FACP', 'APIC']) {
        const file = path.join(dir, `${sig.toLowerCase()}.dat`);
        writeFileSync(file, t[sig]);
        const r = spawnSync('iasl', ['-d', file], { encoding: 'utf8' });
        assert.equal(r.status, 0, `${sig}: ${r.stdout}${r.stderr}`);
      }
      const dsl = readFileSync(path.join(dir, 'dsdt.dsl'), 'utf8');
      for (const want of ['Device (PCI0)', 'EisaId ("PNP0A08")', 'Device (COM1)', 'EisaId ("PNP0501")', 'Name (\\_S5, Package', 'Device (KBC)', 'WordBusNumber', 'DWordMemory', 'QWordMemory', 'IRQNoFlags']) {
        assert.ok(dsl.includes(want), `DSDT lacks ${want}`);
      }
      const madt = readFileSync(path.join(dir, 'apic.dsl'), 'utf8');
      assert.equal((madt.match(/Subtable Type : 00 \[Processor Local APIC\]/g) ?? []).length, 2);
      assert.match(madt, /Subtable Type : 01 \[I\/O APIC\]/);
      const fadt = readFileSync(path.join(dir, 'facp.dsl'), 'utf8');
      assert.match(fadt, /Hardware Reduced \(V5\) : 1/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function hasIasl() {
  try {
    execFileSync('iasl', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('MP table', () => {
  it('floating pointer and configuration table with checksums, CPUs, IOAPIC and ISA routing', () => {
    const mem = fakeMemory(2 << 20);
    const { start } = writeMpTable(mem, { cpus: 4, ioapicId: 4 });
    assert.equal(Buffer.from(mem.read(start, 4)).toString('latin1'), '_MP_');
    assert.equal(sum(mem.read(start, 16)), 0);
    const cfg = mem.readU32(start + 4);
    const len = mem.readU16(cfg + 4);
    assert.equal(Buffer.from(mem.read(cfg, 4)).toString('latin1'), 'PCMP');
    assert.equal(sum(mem.read(cfg, len)), 0);
    const entries = mem.read(cfg + 44, len - 44);
    const counts = {};
    for (let o = 0; o < entries.length; o += entries[o] === 0 ? 20 : 8) counts[entries[o]] = (counts[entries[o]] ?? 0) + 1;
    assert.deepEqual(counts, { 0: 4, 1: 1, 2: 1, 3: 15, 4: 2 });
    assert.equal(entries[3] & 0x02, 0x02); // CPU 0 is the BSP
    assert.equal(mem.readU16(cfg + 34), 23);
    assert.throws(() => writeMpTable(mem, { cpus: 0, ioapicId: 1 }), /1 to 254/);
  });

  it('each shape of machine gets its own table, however many were written before', () => {
    const table = (cpus, addr) => {
      const mem = fakeMemory(2 << 20);
      const { start, end } = writeMpTable(mem, { cpus, ioapicId: cpus }, addr);
      return { bytes: Buffer.from(mem.read(start, end - start)), cfg: mem.readU32(start + 4) };
    };
    const one = table(1);
    assert.equal(table(2).bytes.length, one.bytes.length + 20, 'one processor entry more');
    assert.deepEqual(table(1).bytes, one.bytes, 'the same shape, the same bytes');
    assert.equal(table(1, 0xf1000).cfg, 0xf1010, 'the pointer follows the address');
  });
});
