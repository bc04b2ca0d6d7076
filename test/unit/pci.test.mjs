import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PciBus, PciConfigIo } from '../../dist/devices/pci/config-io.js';
import { PciConfigSpace } from '../../dist/devices/pci/config-space.js';
import { hostBridge } from '../../dist/devices/pci/host-bridge.js';

const addr = (dev, reg, fn = 0, bus = 0) => (0x8000_0000 | (bus << 16) | (dev << 11) | (fn << 8) | reg) >>> 0;

function setup() {
  const bus = new PciBus();
  bus.add(0, hostBridge());
  const nic = PciConfigSpace.create({ vendorId: 0x1af4, deviceId: 0x1041, classCode: 0x020000, interruptPin: 1, bars: [{ kind: 'mem32', size: 0x1000 }, { kind: 'io', size: 0x20 }, { kind: 'mem64', size: 0x4000 }] });
  bus.add(3, nic);
  const io = new PciConfigIo(bus, new SharedArrayBuffer(4));
  const cfg = (dev, reg, size = 4, fn = 0) => {
    io.write(0, 4, addr(dev, reg & 0xfc, fn));
    return io.read(4 + (reg & 3), size);
  };
  const setCfg = (dev, reg, size, value) => {
    io.write(0, 4, addr(dev, reg & 0xfc));
    io.write(4 + (reg & 3), size, value);
  };
  return { io, cfg, setCfg, nic };
}

describe('PCI configuration mechanism 1', () => {
  it('the address register reads back only as a full dword (Linux probes it this way)', () => {
    const { io } = setup();
    io.write(0, 4, 0x8000_0000);
    assert.equal(io.read(0, 4), 0x8000_0000);
    io.write(3, 1, 0x01); // 0xcfb byte write: not the address register
    assert.equal(io.read(0, 4), 0x8000_0000);
    assert.equal(io.read(1, 1), 0xff);
  });

  it('enumerates the host bridge at 00:00.0 and a device; empty slots and functions read all ones', () => {
    const { cfg } = setup();
    assert.equal(cfg(0, 0), 0x0d57_8086);
    assert.equal(cfg(0, 8) >>> 8, 0x060000);
    assert.equal(cfg(3, 0), 0x1041_1af4);
    assert.equal(cfg(1, 0), 0xffff_ffff);
    assert.equal(cfg(3, 0, 4, 1), 0xffff_ffff); // function 1 of slot 3
    assert.equal(cfg(3, 2, 2), 0x1041); // word at offset 2 through 0xcfe
    assert.equal(cfg(3, 3, 1), 0x10); // byte at 0xcff
  });

  it('the enable bit gates config cycles', () => {
    const { io } = setup();
    io.write(0, 4, 0x0000_0000);
    assert.equal(io.read(4, 4), 0xffff_ffff);
  });

  it('read-only fields stay put; command bits and the interrupt line are writable', () => {
    const { cfg, setCfg } = setup();
    setCfg(3, 0, 4, 0x1234_5678);
    assert.equal(cfg(3, 0), 0x1041_1af4);
    setCfg(3, 4, 2, 0xffff);
    assert.equal(cfg(3, 4, 2), 0x0407);
    setCfg(3, 0x3c, 1, 11);
    assert.equal(cfg(3, 0x3c, 1), 11);
    assert.equal(cfg(3, 0x3d, 1), 1); // interrupt pin is read-only
  });

  it('BARs report their size when written all ones, and keep a programmed address', () => {
    const { cfg, setCfg, nic } = setup();
    setCfg(3, 0x10, 4, 0xffff_ffff);
    assert.equal(cfg(3, 0x10), 0xffff_f000);
    setCfg(3, 0x14, 4, 0xffff_ffff);
    assert.equal(cfg(3, 0x14), (0xffff_ffe0 | 1) >>> 0);
    setCfg(3, 0x18, 4, 0xffff_ffff);
    setCfg(3, 0x1c, 4, 0xffff_ffff);
    assert.equal(cfg(3, 0x18), (0xffff_c000 | 4) >>> 0);
    assert.equal(cfg(3, 0x1c), 0xffff_ffff);
    setCfg(3, 0x10, 4, 0xc000_1234);
    assert.equal(nic.barAddress(0), 0xc000_1000);
    setCfg(3, 0x18, 4, 0x8000_0000);
    setCfg(3, 0x1c, 4, 0x10);
    assert.equal(nic.barAddress(2), 0x10_8000_0000);
  });

  it('rejects bad slots and BAR sizes at build time, and out-of-range offsets at run time', () => {
    const bus = new PciBus();
    assert.throws(() => bus.add(32, hostBridge()), /out of range/);
    bus.add(0, hostBridge());
    assert.throws(() => bus.add(0, hostBridge()), /already in use/);
    assert.throws(() => PciConfigSpace.create({ vendorId: 1, deviceId: 1, classCode: 0, bars: [{ kind: 'mem32', size: 24 }] }), /power of two/);
    const c = hostBridge();
    assert.equal(c.read(254, 4), 0xffff_ffff);
    c.write(-1, 1, 0);
  });
});
