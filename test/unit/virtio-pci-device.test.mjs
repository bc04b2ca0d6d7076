// The virtio PCI transport end to end on the host side, without KVM: a fake driver writes BAR 0 and
// config space the way a guest would (through the same register code the vCPU threads run), the
// notifications travel over real eventfds to the main thread's event loop, the model runs, and
// interrupts come out through the MSI router (a fake VM records the routes and irqfd bindings).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { VirtioPciDevice } from '../../dist/devices/virtio/pci-device.js';
import { virtioPciBar, BAR0 } from '../../dist/devices/virtio/pci-transport.js';
import { VirtioRng } from '../../dist/devices/virtio/rng.js';
import { MsiRouter } from '../../dist/kvm/msi-routes.js';
import { COMMON_CFG as C, VIRTIO_STATUS as S } from '../../dist/devices/virtio/constants.js';
import { native } from '../../dist/native/binding.js';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { DriverQueue } from '../helpers/driver-queue.mjs';

const silent = { warn() {}, info() {}, debug() {} };

function fakeVm({ irqfdFails = false } = {}) {
  const vm = {
    routes: [],
    irqfds: [],
    msis: [],
    ioeventfd() {
      throw Object.assign(new Error('KVM_IOEVENTFD: not here'), { code: 'ENOSYS' });
    },
    checkExtension: () => 0,
    setGsiRouting(buf) {
      vm.routes.push(buf.slice());
    },
    irqfd(fd, gsi) {
      if (irqfdFails) throw Object.assign(new Error('KVM_IRQFD: no'), { code: 'EINVAL' });
      vm.irqfds.push({ fd, gsi });
    },
    signalMsi(lo, hi, data) {
      vm.msis.push({ lo, hi, data });
      return 1;
    },
  };
  return vm;
}

const until = async (cond, what) => {
  const deadline = Date.now() + 3000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
};

/** Brings up the device the way the C guest's driver does: features, queue 0, MSI-X, DRIVER_OK. */
function driverSetup(dev, bar, d) {
  const cfg = dev.config;
  cfg.write(4, 2, cfg.read(4, 2) | 0x6); // memory space, bus master
  const msixCap = findCap(cfg, 0x11);
  bar.write(C.device_status, 1, 0);
  bar.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER);
  bar.write(C.driver_feature_select, 4, 1);
  bar.write(C.driver_feature, 4, 1); // VERSION_1
  bar.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  bar.write(C.queue_select, 2, 0);
  bar.write(C.queue_size, 2, d.size);
  for (const [off, addr] of [[C.queue_desc, d.desc], [C.queue_driver, d.avail], [C.queue_device, d.used]]) {
    bar.write(off, 4, addr);
    bar.write(off + 4, 4, 0);
  }
  for (const [vector, data] of [[0, 0x40], [1, 0x41]]) {
    bar.write(BAR0.MSIX_TABLE + 16 * vector, 4, 0xfee00000);
    bar.write(BAR0.MSIX_TABLE + 16 * vector + 4, 4, 0);
    bar.write(BAR0.MSIX_TABLE + 16 * vector + 8, 4, data);
    bar.write(BAR0.MSIX_TABLE + 16 * vector + 12, 4, 0); // unmask
  }
  cfg.write(msixCap + 2, 2, 0x8000); // MSI-X enable
  bar.write(C.queue_msix_vector, 2, 0);
  bar.write(C.config_msix_vector, 2, 1);
  bar.write(C.queue_enable, 2, 1);
  bar.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
}

function findCap(cfg, id) {
  for (let p = cfg.read(0x34, 1); p; p = cfg.read(p + 1, 1)) if (cfg.read(p, 1) === id) return p;
  throw new Error(`capability ${id} missing`);
}

function setup(vmOpts, makeModel) {
  const mem = fakeMemory(1 << 20);
  const vm = fakeVm(vmOpts);
  const msi = new MsiRouter(vm);
  let n = 0;
  const model = makeModel?.() ?? new VirtioRng((b) => b.fill(0x10 + (n++ % 8)));
  const dev = new VirtioPciDevice(model, { mem, vm, msi, bar0: 0xe0010000, log: silent });
  const bar = virtioPciBar(dev.spec, mem, () => {});
  const d = new DriverQueue(mem, 0x1000, 16);
  dev.start();
  return { mem, vm, msi, model, dev, bar, d };
}

describe('virtio PCI transport (host side, no KVM)', () => {
  it('a notification reaches the model through the eventfd, and the answer leaves as an MSI through an irqfd', async (t) => {
    const { vm, dev, bar, d } = setup();
    t.after(() => dev.close());
    driverSetup(dev, bar, d);
    d.addChain([{ addr: 0x10000, len: 32, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0); // no ioeventfd here: the register code signals the queue's eventfd
    await until(() => d.usedIdx() === 1, 'the used entry');
    assert.deepEqual(d.usedElem(0), { id: 0, len: 32 });
    await until(() => vm.irqfds.length === 1, 'the irqfd');
    const route = new DataView(vm.routes.at(-1).buffer);
    const entries = vm.routes.at(-1).length / 48;
    assert.equal(entries, 16 + 24 + 1, 'PIC and IOAPIC defaults plus one MSI route');
    const last = (entries - 1) * 48;
    assert.equal(route.getUint32(last + 0, true), vm.irqfds[0].gsi);
    assert.equal(route.getUint32(last + 4, true), 2, 'KVM_IRQ_ROUTING_MSI');
    assert.equal(route.getUint32(last + 16, true), 0xfee00000);
    assert.equal(route.getUint32(last + 24, true), 0x40, 'the queue vector’s message');
    assert.equal(native().eventfdRead(vm.irqfds[0].fd), 1, 'one interrupt raised');
    assert.equal(dev.interrupts, 1);
  });

  it('the same message again is one eventfd write; a new message rewrites the route', async (t) => {
    const { vm, dev, bar, d } = setup();
    t.after(() => dev.close());
    driverSetup(dev, bar, d);
    d.addChain([{ addr: 0x10000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => d.usedIdx() === 1, 'first');
    d.addChain([{ addr: 0x11000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => d.usedIdx() === 2, 'second');
    assert.equal(vm.routes.length, 1, 'no routing change for an unchanged message');
    bar.write(BAR0.MSIX_TABLE + 8, 4, 0x45);
    d.addChain([{ addr: 0x12000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => d.usedIdx() === 3, 'third');
    assert.equal(vm.routes.length, 2);
    assert.equal(vm.irqfds.length, 1, 'the irqfd stays bound');
    assert.equal(native().eventfdRead(vm.irqfds[0].fd), 3);
  });

  it('falls back to KVM_SIGNAL_MSI when irqfds are refused', async (t) => {
    const { vm, dev, bar, d } = setup({ irqfdFails: true });
    t.after(() => dev.close());
    driverSetup(dev, bar, d);
    d.addChain([{ addr: 0x10000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => vm.msis.length === 1, 'the MSI');
    assert.deepEqual(vm.msis[0], { lo: 0xfee00000, hi: 0, data: 0x40 });
  });

  it('no interrupt while MSI-X is off or the vector is masked (the work is still done)', async (t) => {
    const { vm, dev, bar, d } = setup();
    t.after(() => dev.close());
    driverSetup(dev, bar, d);
    bar.write(BAR0.MSIX_TABLE + 12, 4, 1); // mask vector 0
    d.addChain([{ addr: 0x10000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => d.usedIdx() === 1, 'the used entry');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(vm.irqfds.length, 0);
    assert.equal(dev.interrupts, 0);
  });

  it('a broken request sets DEVICE_NEEDS_RESET and raises the config vector; after a reset the device serves again', async (t) => {
    const { vm, dev, bar, d, mem } = setup();
    t.after(() => dev.close());
    driverSetup(dev, bar, d);
    d.addChain([{ addr: 0x10000, len: 8 }]); // device-readable: not allowed for virtio-rng
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => bar.read(C.device_status, 1) & S.DEVICE_NEEDS_RESET, 'NEEDS_RESET');
    await until(() => vm.irqfds.length === 1, 'the config interrupt');
    const route = new DataView(vm.routes.at(-1).buffer);
    assert.equal(route.getUint32(vm.routes.at(-1).length - 48 + 24, true), 0x41, 'config vector');
    // Requests keep coming: the device ignores them until reset.
    d.addChain([{ addr: 0x11000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(d.usedIdx(), 0);
    // Reset, and set the queue up again from scratch.
    mem.slice(0x1000, 0x1000).fill(0);
    const d2 = new DriverQueue(mem, 0x1000, 16);
    driverSetup(dev, bar, d2);
    d2.addChain([{ addr: 0x12000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => d2.usedIdx() === 1, 'service after reset');
    assert.equal(bar.read(C.device_status, 1) & S.DEVICE_NEEDS_RESET, 0);
  });

  it('a guest breaking the device again after every reset gets a few log lines, not one per cycle', async (t) => {
    const warnings = [];
    const mem = fakeMemory(1 << 20);
    const vm = fakeVm();
    const dev = new VirtioPciDevice(new VirtioRng(), { mem, vm, msi: new MsiRouter(vm), bar0: 0xe0010000, log: { ...silent, warn: (_o, m) => warnings.push(m) } });
    const bar = virtioPciBar(dev.spec, mem, () => {});
    dev.start();
    t.after(() => dev.close());
    for (let cycle = 0; cycle < 20; cycle++) {
      mem.slice(0x1000, 0x1000).fill(0);
      const d = new DriverQueue(mem, 0x1000, 16);
      driverSetup(dev, bar, d);
      d.addChain([{ addr: 0x10000, len: 8 }]); // device-readable: broken
      bar.write(BAR0.NOTIFY, 2, 0);
      await until(() => bar.read(C.device_status, 1) & S.DEVICE_NEEDS_RESET, `NEEDS_RESET in cycle ${cycle}`);
    }
    assert.equal(warnings.length, 8);
    assert.match(warnings.at(-1), /further failures of this device are not logged/);
  });

  it('a reset completes (status reads 0) only once the model is idle: no late host write lands in buffers the driver took back', async (t) => {
    const { dev, bar, d, model } = setup();
    t.after(() => dev.close());
    let finishIo;
    let resets = 0;
    model.idle = () => new Promise((r) => (finishIo = r));
    const reset = model.reset.bind(model);
    model.reset = () => {
      resets++;
      reset();
    };
    driverSetup(dev, bar, d);
    d.addChain([{ addr: 0x10000, len: 8, write: true }]);
    bar.write(BAR0.NOTIFY, 2, 0);
    await until(() => d.usedIdx() === 1, 'the device to be live');
    const live = bar.read(C.device_status, 1);
    bar.write(C.device_status, 1, 0);
    await until(() => resets === 1, 'the main thread to stop the model');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(bar.read(C.device_status, 1), live, 'still resetting: the driver keeps waiting');
    assert.equal(bar.read(C.queue_enable, 2), 0, 'the registers themselves are already reset');
    finishIo();
    await until(() => bar.read(C.device_status, 1) === 0, 'the reset to complete');
    // A reset of a device that never went live completes at once (nothing can be in flight).
    bar.write(C.device_status, 1, S.ACKNOWLEDGE);
    bar.write(C.device_status, 1, 0);
    assert.equal(bar.read(C.device_status, 1), 0);
  });

  it('close() lets an active model finish() before its reset, so output queued just before the stop is taken', async () => {
    // A model that, like a console behind a full sink, takes nothing while running.
    const calls = [];
    let queue;
    const holding = {
      kind: 'test', deviceId: 4, features: 0n, queueMaxSizes: [16], configSize: 0,
      activate: (ctx) => (calls.push('activate'), (queue = ctx.queue(0))),
      notify: () => calls.push('notify'),
      reset: () => calls.push('reset'),
      finish: () => {
        calls.push('finish');
        for (let c = queue.pop(); c; c = queue.pop()) queue.pushUsed(c.head, 0);
      },
    };
    const { dev, bar, d } = setup(undefined, () => holding);
    driverSetup(dev, bar, d);
    d.addChain([{ addr: 0x10000, len: 8 }]);
    await until(() => calls.includes('activate'), 'activation');
    await dev.close();
    assert.deepEqual(calls.filter((c) => c !== 'notify'), ['activate', 'finish', 'reset']);
    assert.equal(d.usedIdx(), 1, 'the chain the driver queued was taken at close');
  });

  it('close() of a device the driver never set up calls no finish()', async () => {
    let finished = false;
    const idle = { kind: 'test', deviceId: 4, features: 0n, queueMaxSizes: [16], configSize: 0, activate() {}, notify() {}, reset() {}, finish: () => (finished = true) };
    const { dev } = setup(undefined, () => idle);
    await dev.close();
    assert.equal(finished, false);
  });

  it('a ring outside guest RAM is refused when the driver enables the queue', (t) => {
    const { dev, bar, d } = setup();
    t.after(() => dev.close());
    bar.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER);
    bar.write(C.driver_feature_select, 4, 1);
    bar.write(C.driver_feature, 4, 1);
    bar.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    bar.write(C.queue_desc, 4, 0xfff000);
    bar.write(C.queue_driver, 4, d.avail);
    bar.write(C.queue_device, 4, d.used);
    bar.write(C.queue_enable, 2, 1);
    assert.equal(bar.read(C.queue_enable, 2), 0);
    assert.ok(bar.read(C.device_status, 1) & S.DEVICE_NEEDS_RESET);
  });
});
