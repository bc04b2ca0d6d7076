/**
 * The Intel MultiProcessor Specification 1.4 table, for guests booted without ACPI (acpi=off): a
 * floating pointer ("_MP_") and a configuration table ("PCMP") listing the processors, an ISA bus,
 * the IOAPIC, the ISA interrupt routing and the local interrupts (ExtINT on LINT0, NMI on LINT1).
 * Linux scans 0xF0000-0xFFFFF for the floating pointer.
 */
import { VmmError } from '../../errors.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { builtOnce } from './built-once.js';

export const MPTABLE_ADDR = 0xf0000;
const APIC_VERSION = 0x14;
const IOAPIC_VERSION = 0x11;
const IOAPIC_ADDR = 0xfec0_0000;
const LAPIC_ADDR = 0xfee0_0000;

export interface MpConfig {
  readonly cpus: number;
  readonly ioapicId: number;
  /** CPUID.1 EAX and EDX, reported in each processor entry. */
  readonly cpuSignature?: number;
  readonly featureFlags?: number;
}

function sumTo0(bytes: Uint8Array, at: number): void {
  bytes[at] = 0;
  const s = bytes.reduce((a, b) => a + b, 0);
  bytes[at] = (256 - (s & 0xff)) & 0xff;
}

/** Tables built, by configuration and address (built-once.ts). */
const tableOf = builtOnce<{ fp: Uint8Array; cfg: Uint8Array }>(16);

export function writeMpTable(mem: GuestMemory, c: MpConfig, addr = MPTABLE_ADDR): { start: number; end: number } {
  if (c.cpus < 1 || c.cpus > 254) throw new VmmError('BAD_CONFIG', `MP table: ${c.cpus} CPUs (1 to 254 supported)`);
  const key = `${c.cpus}:${c.ioapicId}:${c.cpuSignature}:${c.featureFlags}:${addr}`;
  const t = tableOf(key, () => buildMpTable(c, addr));
  mem.write(addr, t.fp);
  mem.write(addr + 16, t.cfg);
  return { start: addr, end: addr + 16 + t.cfg.length };
}

function buildMpTable(c: MpConfig, addr: number): { fp: Uint8Array; cfg: Uint8Array } {
  const entries: number[] = [];
  const u16 = (x: number) => [x & 0xff, (x >> 8) & 0xff];
  const u32 = (x: number) => [x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, (x >>> 24) & 0xff];
  let count = 0;
  for (let i = 0; i < c.cpus; i++, count++) {
    entries.push(0, i, APIC_VERSION, 0x01 | (i === 0 ? 0x02 : 0), ...u32(c.cpuSignature ?? 0x600), ...u32(c.featureFlags ?? 0x201), 0, 0, 0, 0, 0, 0, 0, 0);
  }
  entries.push(1, 0, ...Array.from('ISA   ', (ch) => ch.charCodeAt(0)));
  count++;
  entries.push(2, c.ioapicId, IOAPIC_VERSION, 0x01, ...u32(IOAPIC_ADDR));
  count++;
  for (let irq = 0; irq < 16; irq++) {
    if (irq === 2) continue; // the cascade
    entries.push(3, 0, ...u16(0), 0, irq, c.ioapicId, irq === 0 ? 2 : irq); // INT, conforming, ISA bus
    count++;
  }
  entries.push(4, 3, ...u16(0), 0, 0, 0xff, 0); // ExtINT → LINT0 of every processor
  entries.push(4, 1, ...u16(0), 0, 0, 0xff, 1); // NMI → LINT1
  count += 2;

  const cfg = new Uint8Array(44 + entries.length);
  const v = new DataView(cfg.buffer);
  cfg.set(Array.from('PCMP', (ch) => ch.charCodeAt(0)), 0);
  v.setUint16(4, cfg.length, true);
  v.setUint8(6, 4); // spec revision 1.4
  cfg.set(Array.from('NODEVI  ', (ch) => ch.charCodeAt(0)), 8);
  cfg.set(Array.from('NODEVISOR   ', (ch) => ch.charCodeAt(0)), 16);
  v.setUint16(34, count, true);
  v.setUint32(36, LAPIC_ADDR, true);
  cfg.set(entries, 44);
  sumTo0(cfg, 7);

  const fp = new Uint8Array(16);
  const f = new DataView(fp.buffer);
  fp.set(Array.from('_MP_', (ch) => ch.charCodeAt(0)), 0);
  f.setUint32(4, addr + 16, true);
  fp[8] = 1; // length in 16-byte units
  fp[9] = 4; // spec revision 1.4
  sumTo0(fp, 10);
  return { fp, cfg };
}
