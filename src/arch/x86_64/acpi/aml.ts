/**
 * A small AML encoder (ACPI 6.x §20, "ACPI Machine Language"): just what nodevisor's DSDT needs —
 * names, integers, strings, packages, scopes, devices, resource templates. Each function returns the
 * encoded bytes of one term, so a table is built as nested calls.
 */

const ZERO_OP = 0x00, ONE_OP = 0x01, NAME_OP = 0x08, BYTE_PREFIX = 0x0a, WORD_PREFIX = 0x0b, DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d, QWORD_PREFIX = 0x0e, SCOPE_OP = 0x10, BUFFER_OP = 0x11, PACKAGE_OP = 0x12;
const EXT_OP_PREFIX = 0x5b, DEVICE_OP = 0x82, ROOT_CHAR = 0x5c, DUAL_NAME_PREFIX = 0x2e, MULTI_NAME_PREFIX = 0x2f;

export type Aml = Uint8Array;

const concat = (parts: readonly Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** PkgLength (§20.2.4): the length of itself plus `len` bytes, in 1 to 4 bytes. */
export function pkgLength(len: number): Uint8Array {
  if (len + 1 < 0x40) return Uint8Array.of(len + 1);
  for (let n = 2; n <= 4; n++) {
    const total = len + n;
    if (total < 1 << (4 + 8 * (n - 1))) {
      const out = new Uint8Array(n);
      out[0] = ((n - 1) << 6) | (total & 0x0f);
      for (let i = 1; i < n; i++) out[i] = (total >> (4 + 8 * (i - 1))) & 0xff;
      return out;
    }
  }
  throw new Error(`AML package too large: ${len} bytes`);
}

/** A NameSeg is exactly four characters [A-Z_][A-Z0-9_]*, padded with '_'. */
function nameSeg(seg: string): Uint8Array {
  if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(seg)) throw new Error(`AML name segment "${seg}"`);
  return Uint8Array.from(seg.padEnd(4, '_'), (c) => c.charCodeAt(0));
}

/** NameString: "\\_SB_.PCI0", "_HID", "\\_S5". */
export function nameString(name: string): Uint8Array {
  const root = name.startsWith('\\');
  const segs = (root ? name.slice(1) : name).split('.').filter((s) => s.length > 0);
  const prefix = root ? [Uint8Array.of(ROOT_CHAR)] : [];
  if (segs.length === 0) return Uint8Array.of(...(root ? [ROOT_CHAR] : []), 0x00);
  if (segs.length === 1) return concat([...prefix, nameSeg(segs[0]!)]);
  if (segs.length === 2) return concat([...prefix, Uint8Array.of(DUAL_NAME_PREFIX), ...segs.map(nameSeg)]);
  return concat([...prefix, Uint8Array.of(MULTI_NAME_PREFIX, segs.length), ...segs.map(nameSeg)]);
}

/** The shortest integer encoding (§20.2.3). */
export function integer(v: number | bigint): Uint8Array {
  const n = BigInt(v);
  if (n < 0n || n > 0xffff_ffff_ffff_ffffn) throw new Error(`AML integer ${n} out of range`);
  if (n === 0n) return Uint8Array.of(ZERO_OP);
  if (n === 1n) return Uint8Array.of(ONE_OP);
  const le = (bytes: number) => Uint8Array.from({ length: bytes }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
  if (n <= 0xffn) return concat([Uint8Array.of(BYTE_PREFIX), le(1)]);
  if (n <= 0xffffn) return concat([Uint8Array.of(WORD_PREFIX), le(2)]);
  if (n <= 0xffff_ffffn) return concat([Uint8Array.of(DWORD_PREFIX), le(4)]);
  return concat([Uint8Array.of(QWORD_PREFIX), le(8)]);
}

export function string(s: string): Uint8Array {
  if (!/^[\x01-\x7f]*$/.test(s)) throw new Error('AML strings are ASCII without NUL');
  return concat([Uint8Array.of(STRING_PREFIX), Uint8Array.from(s, (c) => c.charCodeAt(0)), Uint8Array.of(0)]);
}

/** EISAID("PNP0A08") → the 32-bit compressed id, as an integer term. */
export function eisaId(id: string): Uint8Array {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new Error(`EISA id "${id}"`);
  const c = (i: number) => id.charCodeAt(i) - 0x40;
  const hi = (c(0) << 10) | (c(1) << 5) | c(2);
  const prod = parseInt(id.slice(3), 16);
  const v = ((hi >> 8) & 0xff) | ((hi & 0xff) << 8) | (((prod >> 8) & 0xff) << 16) | ((prod & 0xff) << 24);
  return integer(v >>> 0);
}

export function name(n: string, value: Uint8Array): Uint8Array {
  return concat([Uint8Array.of(NAME_OP), nameString(n), value]);
}

export function pkg(elements: readonly Uint8Array[]): Uint8Array {
  const body = concat([Uint8Array.of(elements.length), ...elements]);
  return concat([Uint8Array.of(PACKAGE_OP), pkgLength(body.length), body]);
}

export function scope(n: string, terms: readonly Uint8Array[]): Uint8Array {
  const body = concat([nameString(n), ...terms]);
  return concat([Uint8Array.of(SCOPE_OP), pkgLength(body.length), body]);
}

export function device(n: string, terms: readonly Uint8Array[]): Uint8Array {
  const body = concat([nameString(n), ...terms]);
  return concat([Uint8Array.of(EXT_OP_PREFIX, DEVICE_OP), pkgLength(body.length), body]);
}

export function buffer(bytes: Uint8Array): Uint8Array {
  const body = concat([integer(bytes.length), bytes]);
  return concat([Uint8Array.of(BUFFER_OP), pkgLength(body.length), body]);
}

/** ResourceTemplate(): the descriptors followed by an End Tag whose checksum byte is 0 ("sums to zero" is optional). */
export function resourceTemplate(descriptors: readonly Uint8Array[]): Uint8Array {
  return buffer(concat([...descriptors, Uint8Array.of(0x79, 0x00)]));
}

/** IO descriptor (§6.4.2.5): 16-bit decode, fixed base. */
export function ioPort(base: number, length: number): Uint8Array {
  return Uint8Array.of(0x47, 0x01, base & 0xff, base >> 8, base & 0xff, base >> 8, 0x01, length);
}

/** IRQ descriptor without flags (§6.4.2.1): edge-triggered, active-high. */
export function irq(n: number): Uint8Array {
  const mask = 1 << n;
  return Uint8Array.of(0x22, mask & 0xff, mask >> 8);
}

/** Word Bus Number descriptor (§6.4.3.5.3). */
export function wordBusNumber(min: number, max: number): Uint8Array {
  const len = max - min + 1;
  return Uint8Array.of(0x88, 13, 0, 0x02, 0x0c, 0x00, 0, 0, min & 0xff, min >> 8, max & 0xff, max >> 8, 0, 0, len & 0xff, len >> 8);
}

/** Word I/O descriptor (§6.4.3.5.3): a decoded I/O range of a bridge. */
export function wordIo(min: number, max: number): Uint8Array {
  const len = max - min + 1;
  return Uint8Array.of(0x88, 13, 0, 0x01, 0x0c, 0x03, 0, 0, min & 0xff, min >> 8, max & 0xff, max >> 8, 0, 0, len & 0xff, len >> 8);
}

/** DWord Memory descriptor (§6.4.3.5.2): a 32-bit MMIO window, non-cacheable, read/write. */
export function dwordMemory(min: number, max: number): Uint8Array {
  const out = new Uint8Array(26);
  const v = new DataView(out.buffer);
  out.set([0x87, 23, 0, 0x00, 0x0c, 0x01]);
  v.setUint32(10, min, true);
  v.setUint32(14, max, true);
  v.setUint32(22, max - min + 1, true);
  return out;
}

/** QWord Memory descriptor (§6.4.3.5.1): a 64-bit MMIO window. */
export function qwordMemory(min: bigint, max: bigint): Uint8Array {
  const out = new Uint8Array(46);
  const v = new DataView(out.buffer);
  out.set([0x8a, 43, 0, 0x00, 0x0c, 0x01]);
  v.setBigUint64(14, min, true);
  v.setBigUint64(22, max, true);
  v.setBigUint64(38, max - min + 1n, true);
  return out;
}

export { concat as amlConcat };
