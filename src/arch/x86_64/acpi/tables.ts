/**
 * ACPI tables for a hardware-reduced machine (ACPI 6.x): RSDP → XSDT → FADT (→ DSDT) and MADT,
 * laid out in the BIOS area (0xE0000-0xFFFFF, reserved in the e820 map) where Linux also finds the
 * RSDP by scanning when no boot protocol field names it. The OEM id "NODEVI" shows in Linux's log.
 */
import { VmmError } from '../../../errors.js';
import type { GuestMemory } from '../../../memory/guest-memory.js';
import * as aml from './aml.js';
import { builtOnce } from '../built-once.js';

export const OEM_ID = 'NODEVI';
export const OEM_TABLE_ID = 'NODEVISR';
export const CREATOR_ID = 'NVSR';
export const ACPI_AREA_START = 0xe0000;
export const ACPI_AREA_END = 0xf0000; // the MP table takes 0xF0000 onwards
export const IOAPIC_ADDR = 0xfec0_0000;
export const LAPIC_ADDR = 0xfee0_0000;

const HEADER_SIZE = 36;

export interface AcpiConfig {
  readonly cpus: number;
  /** Power-control I/O ports and values (devices/acpi/power.ts). */
  readonly sleepControlPort: number;
  readonly sleepStatusPort: number;
  readonly resetPort: number;
  readonly resetValue: number;
  readonly s5SlpTyp: number;
  /** PCI windows for the DSDT's root bridge: 32-bit MMIO [start, end] and optional 64-bit window. */
  readonly pciMmio32: readonly [number, number];
  readonly pciMmio64?: readonly [bigint, bigint];
  /** IOAPIC id in the MADT (must differ from every LAPIC id). */
  readonly ioapicId: number;
}

export interface AcpiLayout {
  readonly rsdpAddr: number;
  readonly tables: { signature: string; addr: number; length: number }[];
}

const ascii = (s: string, len: number) => Uint8Array.from(s.padEnd(len, ' ').slice(0, len), (c) => c.charCodeAt(0));

/** Sets the byte at `at` so that bytes [start, start+len) sum to zero mod 256. */
function checksum(bytes: Uint8Array, start: number, len: number, at: number): void {
  bytes[at] = 0;
  let sum = 0;
  for (let i = start; i < start + len; i++) sum += bytes[i]!;
  bytes[at] = (256 - (sum & 0xff)) & 0xff;
}

/** A table: standard header + body, with length and checksum filled in. */
function table(signature: string, revision: number, body: Uint8Array): Uint8Array {
  const t = new Uint8Array(HEADER_SIZE + body.length);
  const v = new DataView(t.buffer);
  t.set(ascii(signature, 4), 0);
  v.setUint32(4, t.length, true);
  v.setUint8(8, revision);
  t.set(ascii(OEM_ID, 6), 10);
  t.set(ascii(OEM_TABLE_ID, 8), 16);
  v.setUint32(24, 1, true); // OEM revision
  t.set(ascii(CREATOR_ID, 4), 28);
  v.setUint32(32, 1, true); // creator revision
  t.set(body, HEADER_SIZE);
  checksum(t, 0, t.length, 9);
  return t;
}

/** Generic Address Structure for a byte-wide System I/O register. */
function gasIo(port: number): Uint8Array {
  const g = new Uint8Array(12);
  const v = new DataView(g.buffer);
  g.set([1, 8, 0, 1]); // SystemIO, 8 bits, offset 0, byte access
  v.setBigUint64(4, BigInt(port), true);
  return g;
}

export function buildDsdt(c: AcpiConfig): Uint8Array {
  const pciCrs = [
    aml.wordBusNumber(0, 0xff),
    aml.wordIo(0x0000, 0x0cf7),
    aml.wordIo(0x0d00, 0xffff),
    aml.dwordMemory(c.pciMmio32[0], c.pciMmio32[1]),
    ...(c.pciMmio64 ? [aml.qwordMemory(c.pciMmio64[0], c.pciMmio64[1])] : []),
  ];
  const body = aml.amlConcat([
    aml.name('\\_S5', aml.pkg([aml.integer(c.s5SlpTyp), aml.integer(c.s5SlpTyp), aml.integer(0), aml.integer(0)])),
    aml.scope('\\_SB', [
      aml.device('PCI0', [
        aml.name('_HID', aml.eisaId('PNP0A08')),
        aml.name('_CID', aml.eisaId('PNP0A03')),
        aml.name('_ADR', aml.integer(0)),
        aml.name('_SEG', aml.integer(0)),
        aml.name('_BBN', aml.integer(0)),
        aml.name('_UID', aml.integer(0)),
        aml.name('_CRS', aml.resourceTemplate(pciCrs)),
      ]),
      aml.device('COM1', [
        aml.name('_HID', aml.eisaId('PNP0501')),
        aml.name('_UID', aml.integer(1)),
        aml.name('_CRS', aml.resourceTemplate([aml.ioPort(0x3f8, 8), aml.irq(4)])),
      ]),
      aml.device('RTC', [
        aml.name('_HID', aml.eisaId('PNP0B00')),
        aml.name('_CRS', aml.resourceTemplate([aml.ioPort(0x70, 2)])),
      ]),
      aml.device('KBC', [
        aml.name('_HID', aml.eisaId('PNP0303')),
        aml.name('_CRS', aml.resourceTemplate([aml.ioPort(0x60, 1), aml.ioPort(0x64, 1), aml.irq(1)])),
      ]),
    ]),
  ]);
  return table('DSDT', 2, body);
}

export function buildFadt(c: AcpiConfig, dsdtAddr: number): Uint8Array {
  // Body offsets below are FADT offsets minus the 36-byte header.
  const body = new Uint8Array(276 - HEADER_SIZE);
  const v = new DataView(body.buffer);
  const at = (fadtOffset: number) => fadtOffset - HEADER_SIZE;
  v.setUint32(at(40), dsdtAddr, true); // DSDT (32-bit)
  v.setUint8(at(45), 0); // preferred PM profile: unspecified
  // IAPC_BOOT_ARCH: 8042 present (bit 1), VGA not present (bit 2), MSI not supported stays clear.
  v.setUint16(at(109), (1 << 1) | (1 << 2), true);
  // Flags: WBINVD (0), RESET_REG_SUP (10), HW_REDUCED_ACPI (20).
  v.setUint32(at(112), (1 << 0) | (1 << 10) | (1 << 20), true);
  body.set(gasIo(c.resetPort), at(116));
  v.setUint8(at(128), c.resetValue);
  v.setUint16(at(129), 0, true); // ARM boot arch
  v.setUint8(at(131), 0); // FADT minor version (6.0)
  v.setBigUint64(at(140), BigInt(dsdtAddr), true); // X_DSDT
  body.set(gasIo(c.sleepControlPort), at(244));
  body.set(gasIo(c.sleepStatusPort), at(256));
  body.set(ascii('NODEVISR', 8), at(268)); // hypervisor vendor identity
  return table('FACP', 6, body);
}

export function buildMadt(c: AcpiConfig): Uint8Array {
  const entries: number[] = [];
  const u32 = (x: number) => [x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, (x >>> 24) & 0xff];
  for (let i = 0; i < c.cpus; i++) entries.push(0, 8, i, i, ...u32(1)); // Processor Local APIC: uid, APIC id, enabled
  entries.push(1, 12, c.ioapicId, 0, ...u32(IOAPIC_ADDR), ...u32(0)); // I/O APIC at GSI 0
  entries.push(2, 10, 0, 0, ...u32(2), 0, 0); // ISA IRQ 0 → GSI 2 (the PIT), bus-conforming
  entries.push(4, 6, 0xff, 0, 0, 1); // Local APIC NMI: all processors, LINT1
  const body = new Uint8Array(8 + entries.length);
  const v = new DataView(body.buffer);
  v.setUint32(0, LAPIC_ADDR, true);
  v.setUint32(4, 1, true); // PCAT_COMPAT: there are 8259s
  body.set(entries, 8);
  return table('APIC', 5, body);
}

function buildXsdt(addrs: readonly number[]): Uint8Array {
  const body = new Uint8Array(8 * addrs.length);
  const v = new DataView(body.buffer);
  addrs.forEach((a, i) => v.setBigUint64(8 * i, BigInt(a), true));
  return table('XSDT', 1, body);
}

function buildRsdp(xsdtAddr: number): Uint8Array {
  const r = new Uint8Array(36);
  const v = new DataView(r.buffer);
  r.set(ascii('RSD PTR ', 8), 0);
  r.set(ascii(OEM_ID, 6), 9);
  v.setUint8(15, 2); // revision: ACPI 2.0+
  v.setUint32(20, 36, true);
  v.setBigUint64(24, BigInt(xsdtAddr), true);
  checksum(r, 0, 20, 8);
  checksum(r, 0, 36, 32);
  return r;
}

/** The tables of one configuration, laid out: what writeAcpiTables copies into guest RAM. */
interface AcpiImage {
  readonly layout: AcpiLayout;
  readonly pieces: readonly { addr: number; bytes: Uint8Array }[];
}

/**
 * Machines of the same configuration get the same tables; they are built once per configuration
 * (a few, in one process). Building them took ~1 ms per machine on the dev machine, and a quarter of
 * Machine.create under nested emulation, where many machines start at once.
 */
const imageOf = builtOnce<AcpiImage>(16);

/** Writes every table into [ACPI_AREA_START, ACPI_AREA_END); returns where they went. */
export function writeAcpiTables(mem: GuestMemory, c: AcpiConfig): AcpiLayout {
  if (!Number.isInteger(c.cpus) || c.cpus < 1 || c.cpus > 254) throw new VmmError('BAD_CONFIG', `ACPI: ${c.cpus} CPUs (MADT here supports 1 to 254)`);
  if (c.ioapicId < c.cpus || c.ioapicId > 255) throw new VmmError('INTERNAL', `ACPI: IOAPIC id ${c.ioapicId} collides with a LAPIC id`);
  const key = JSON.stringify(c, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
  const image = imageOf(key, () => buildImage(c));
  for (const p of image.pieces) mem.write(p.addr, p.bytes);
  return { rsdpAddr: image.layout.rsdpAddr, tables: image.layout.tables.map((t) => ({ ...t })) };
}

function buildImage(c: AcpiConfig): AcpiImage {
  const tables: AcpiLayout['tables'] = [];
  const pieces: { addr: number; bytes: Uint8Array }[] = [];
  let next = ACPI_AREA_START + 64; // the RSDP sits at the start, on a 16-byte boundary
  const place = (sig: string, bytes: Uint8Array) => {
    const addr = next;
    if (addr + bytes.length > ACPI_AREA_END) throw new VmmError('INTERNAL', `ACPI tables overflow the BIOS area at ${sig}`);
    pieces.push({ addr, bytes });
    tables.push({ signature: sig, addr, length: bytes.length });
    next = (addr + bytes.length + 15) & ~15;
    return addr;
  };
  const dsdt = place('DSDT', buildDsdt(c));
  const fadt = place('FACP', buildFadt(c, dsdt));
  const madt = place('APIC', buildMadt(c));
  const xsdt = place('XSDT', buildXsdt([fadt, madt]));
  pieces.push({ addr: ACPI_AREA_START, bytes: buildRsdp(xsdt) });
  return { layout: { rsdpAddr: ACPI_AREA_START, tables }, pieces };
}
