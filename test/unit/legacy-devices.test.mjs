import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { I8042 } from '../../dist/devices/legacy/i8042.js';
import { CmosRtc } from '../../dist/devices/legacy/cmos-rtc.js';
import { AcpiPower, ACPI_S5_SLP_TYP } from '../../dist/devices/acpi/power.js';

function kbc() {
  const levels = [];
  let resets = 0;
  const dev = new I8042({ irq: { setLevel: (h) => levels.push(h) }, onReset: () => resets++ });
  const data = dev.port('data');
  const cmd = dev.port('command');
  return { dev, levels, resets: () => resets, rdData: () => data.read(0, 1), wrData: (v) => data.write(0, 1, v), status: () => cmd.read(0, 1), command: (v) => cmd.write(0, 1, v) };
}

describe('i8042', () => {
  it('controller self-test and interface tests answer as Linux expects; no AUX port', () => {
    const k = kbc();
    k.command(0xaa);
    assert.equal(k.status() & 1, 1);
    assert.equal(k.rdData(), 0x55);
    k.command(0xab);
    assert.equal(k.rdData(), 0x00);
    k.command(0xa9);
    assert.equal(k.rdData(), 0xff);
    assert.equal(k.status() & 1, 0);
  });

  it('reads and writes the command byte; IRQ 1 follows OBF while enabled', () => {
    const k = kbc();
    k.command(0x20);
    assert.equal(k.rdData() & 0x01, 0x01);
    k.command(0x60);
    k.wrData(0x00); // keyboard interrupt off
    k.command(0x20);
    assert.equal(k.rdData(), 0x00);
    assert.deepEqual(k.levels, [true, false]);
    k.command(0x60);
    k.wrData(0x01);
    k.wrData(0xf2); // keyboard identify
    assert.deepEqual([k.rdData(), k.rdData(), k.rdData()], [0xfa, 0xab, 0x83]);
    assert.equal(k.levels.at(-1), false);
  });

  it('0xFE and an output-port write with bit 0 clear reset the CPU; other bits do not', () => {
    const k = kbc();
    k.command(0xfe);
    assert.equal(k.resets(), 1);
    k.command(0xd1);
    k.wrData(0x03);
    assert.equal(k.resets(), 1);
    k.command(0xd1);
    k.wrData(0x02);
    assert.equal(k.resets(), 2);
    k.command(0xd0);
    assert.equal(k.rdData(), 0x02);
  });

  it('ignores wide accesses, garbage commands and reads of an empty buffer', () => {
    const k = kbc();
    const cmd = k.dev.port('command');
    assert.equal(cmd.read(0, 2), 0xffff);
    cmd.write(0, 4, 0xfe); // not a byte: ignored
    for (const c of [0x00, 0x13, 0xc0, 0xe1]) k.command(c);
    assert.equal(k.resets(), 0);
    assert.equal(k.rdData(), 0);
  });

  it('queues host scancodes (Ctrl-Alt-Del) with an interrupt', () => {
    const k = kbc();
    k.dev.queueScancodes([0x1d, 0x38, 0x53]);
    assert.equal(k.levels.at(-1), true);
    assert.deepEqual([k.rdData(), k.rdData(), k.rdData()], [0x1d, 0x38, 0x53]);
    assert.equal(k.levels.at(-1), false);
  });
});

describe('CMOS RTC', () => {
  const at = Date.UTC(2026, 10, 24, 23, 5, 9); // 2026-11-24 23:05:09 UTC, a Tuesday
  const rtc = (opts = {}) => {
    const d = new CmosRtc({ now: () => at, ...opts });
    return { d, reg: (i) => (d.write(0, 1, i), d.read(1, 1)), set: (i, v) => (d.write(0, 1, i), d.write(1, 1, v)) };
  };

  it('reads the clock in BCD, 24-hour form by default', () => {
    const { reg } = rtc();
    assert.deepEqual([0, 2, 4, 6, 7, 8, 9, 0x32].map(reg), [0x09, 0x05, 0x23, 0x03, 0x24, 0x11, 0x26, 0x20]);
    assert.equal(reg(0x0b), 0x02);
    assert.equal(reg(0x0d), 0x80);
    assert.equal(reg(0x0a) & 0x80, 0); // no update in progress
  });

  it('switches to binary and 12-hour form when register B asks', () => {
    const { reg, set } = rtc();
    set(0x0b, 0x04); // binary, 12-hour
    assert.equal(reg(4), 0x80 | 11); // 11 PM
    assert.equal(reg(9), 26);
  });

  it('masks the NMI bit of the index and keeps NVRAM bytes', () => {
    const { d, reg, set } = rtc();
    set(0x80 | 0x40, 0x5a);
    assert.equal(reg(0x40), 0x5a);
    d.write(0, 1, 0x80 | 0x09);
    assert.equal(d.read(1, 1), 0x26);
    set(0x0d, 0); // read-only
    assert.equal(reg(0x0d), 0x80);
  });

  it('a guest setting the time moves its clock and keeps it running from there', () => {
    let now = at;
    const d = new CmosRtc({ now: () => now });
    const set = (i, v) => (d.write(0, 1, i), d.write(1, 1, v));
    const reg = (i) => (d.write(0, 1, i), d.read(1, 1));
    set(9, 0x30); // year 2030
    assert.equal(reg(9), 0x30);
    now += 61_000;
    assert.equal(reg(2), 0x06);
    assert.equal(reg(9), 0x30);
  });

  it('presets memory-size bytes from the RAM size', () => {
    const { reg } = rtc({ memBytes: 5 * 2 ** 30, lowMemBytes: 3 * 2 ** 30 });
    assert.equal(reg(0x34) | (reg(0x35) << 8), (3 * 2 ** 30 - 16 * 2 ** 20) / 65536);
    assert.equal(reg(0x5b) | (reg(0x5c) << 8) | (reg(0x5d) << 16), 2 ** 31 / 65536);
    assert.equal(reg(0x15) | (reg(0x16) << 8), 640);
  });

  it('ignores wide accesses', () => {
    const { d } = rtc();
    assert.equal(d.read(1, 2), 0xffff);
    d.write(0, 2, 0x0909);
    assert.equal(d.read(0, 1), 0);
  });
});

describe('ACPI power register', () => {
  it('powers off on SLP_EN with SLP_TYP S5, resets on the reset value, ignores the rest', () => {
    const seen = [];
    const p = new AcpiPower({ onPowerOff: () => seen.push('off'), onReset: () => seen.push('reset') });
    p.write(0, 1, ACPI_S5_SLP_TYP << 2); // no SLP_EN
    p.write(0, 1, (3 << 2) | 0x20); // S3: not supported
    p.write(0, 2, (ACPI_S5_SLP_TYP << 2) | 0x20); // wrong width
    p.write(2, 1, 0x7);
    assert.deepEqual(seen, []);
    p.write(0, 1, (ACPI_S5_SLP_TYP << 2) | 0x20);
    p.write(2, 1, 0x1);
    assert.deepEqual(seen, ['off', 'reset']);
    assert.equal(p.read(1, 1) & 0x80, 0x80);
  });
});
