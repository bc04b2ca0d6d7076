import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CommonConfig, NEEDS_RESET_LOGGED } from '../../dist/devices/virtio/common-config.js';
import { COMMON_CFG as C, VIRTIO_STATUS as S, VIRTIO_F } from '../../dist/devices/virtio/constants.js';
import { SplitQueue, VirtqError } from '../../dist/devices/virtio/queue.js';
import { VirtioRng, RNG_MAX_REQUEST, RNG_TURN_BUDGET } from '../../dist/devices/virtio/rng.js';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { DriverQueue } from '../helpers/driver-queue.mjs';
import { fakeContext } from '../helpers/fake-context.mjs';

function common(over = {}) {
  const events = [];
  const cfg = new CommonConfig({
    features: (1n << BigInt(VIRTIO_F.RING_EVENT_IDX)) | 0x1n,
    queueMaxSizes: [256, 64],
    onQueueEnable: (i, q) => (events.push(['enable', i, q.size]), over.refuse ? 'bad ring' : undefined),
    onReset: () => events.push(['reset']),
    onDriverOk: (f) => events.push(['driver-ok', f]),
    ...over,
  });
  return { cfg, events };
}
const features = (cfg, sel) => (cfg.write(C.device_feature_select, 4, sel), cfg.read(C.device_feature, 4));
const accept = (cfg, lo, hi) => {
  cfg.write(C.driver_feature_select, 4, 0);
  cfg.write(C.driver_feature, 4, lo);
  cfg.write(C.driver_feature_select, 4, 1);
  cfg.write(C.driver_feature, 4, hi);
};

describe('virtio PCI common configuration', () => {
  it('offers its features plus VERSION_1, in two 32-bit halves', () => {
    const { cfg } = common();
    assert.equal(features(cfg, 0), ((1 << VIRTIO_F.RING_EVENT_IDX) | 1) >>> 0);
    assert.equal(features(cfg, 1), 1); // bit 32: VERSION_1
    assert.equal(features(cfg, 2), 0);
    assert.equal(cfg.read(C.num_queues, 2), 2);
  });

  it('FEATURES_OK sticks only for a subset of the offer that includes VERSION_1', () => {
    const { cfg } = common();
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER);
    accept(cfg, 0x1, 0); // no VERSION_1
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    assert.equal(cfg.read(C.device_status, 1) & S.FEATURES_OK, 0);
    accept(cfg, 0x2, 1); // bit 1 was never offered
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    assert.equal(cfg.read(C.device_status, 1) & S.FEATURES_OK, 0);
    accept(cfg, 0x1, 1);
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    assert.equal(cfg.read(C.device_status, 1) & S.FEATURES_OK, S.FEATURES_OK);
    assert.equal(cfg.negotiated, (1n << 32n) | 1n);
    accept(cfg, 0xffffffff, 0xffffffff); // after FEATURES_OK the driver's features are frozen
    assert.equal(cfg.negotiated, (1n << 32n) | 1n);
  });

  it('configures queues before DRIVER_OK only, validates sizes, and reports queue 0 sizes for unknown queues', () => {
    const { cfg, events } = common();
    cfg.write(C.queue_select, 2, 1);
    assert.equal(cfg.read(C.queue_size, 2), 64);
    cfg.write(C.queue_size, 2, 48); // not a power of two
    cfg.write(C.queue_size, 2, 128); // above the maximum
    assert.equal(cfg.read(C.queue_size, 2), 64);
    cfg.write(C.queue_size, 2, 16);
    cfg.write(C.queue_desc, 4, 0x1000);
    cfg.write(C.queue_desc + 4, 4, 0x1);
    assert.equal(cfg.read(C.queue_desc + 4, 4), 1);
    assert.equal(cfg.queue(1).desc, 0x1_0000_1000n);
    cfg.write(C.queue_enable, 2, 1);
    assert.deepEqual(events, [['enable', 1, 16]]);
    cfg.write(C.queue_desc, 4, 0x2000); // enabled: frozen
    assert.equal(cfg.queue(1).desc, 0x1_0000_1000n);
    cfg.write(C.queue_select, 2, 7);
    assert.equal(cfg.read(C.queue_size, 2), 0);
    cfg.write(C.queue_enable, 2, 1); // no such queue: ignored
    assert.equal(events.length, 1);
  });

  it('a queue the device refuses sets DEVICE_NEEDS_RESET; writing 0 resets everything', () => {
    const { cfg, events } = common({ refuse: true });
    cfg.write(C.queue_enable, 2, 1);
    assert.equal(cfg.read(C.device_status, 1) & S.DEVICE_NEEDS_RESET, S.DEVICE_NEEDS_RESET);
    assert.equal(cfg.read(C.queue_enable, 2), 0);
    cfg.write(C.device_status, 1, 0);
    assert.equal(cfg.read(C.device_status, 1), 0);
    assert.deepEqual(events.at(-1), ['reset']);
    assert.equal(cfg.read(C.config_generation, 1), 1);
  });

  it('an MSI-X vector beyond the table reads back as NO_VECTOR, so the driver knows it was not mapped', () => {
    const { cfg } = common({ msixVectors: 3 });
    cfg.write(C.queue_select, 2, 0);
    cfg.write(C.queue_msix_vector, 2, 2);
    assert.equal(cfg.read(C.queue_msix_vector, 2), 2);
    cfg.write(C.queue_msix_vector, 2, 3);
    assert.equal(cfg.read(C.queue_msix_vector, 2), 0xffff);
    cfg.write(C.config_msix_vector, 2, 0x1234);
    assert.equal(cfg.read(C.config_msix_vector, 2), 0xffff);
    cfg.write(C.config_msix_vector, 2, 0);
    assert.equal(cfg.read(C.config_msix_vector, 2), 0);
  });

  it('a guest repeating a refused queue_enable logs one line until it resets the device', () => {
    const lines = [];
    const { cfg } = common({ refuse: true, log: (m) => lines.push(m) });
    for (let i = 0; i < 100; i++) cfg.write(C.queue_enable, 2, 1);
    assert.equal(lines.length, 1);
    cfg.write(C.device_status, 1, 0);
    cfg.write(C.queue_enable, 2, 1);
    assert.equal(lines.length, 2, 'logged again after a reset');
  });

  it(`a guest that resets and breaks the device in a loop gets ${NEEDS_RESET_LOGGED} lines in all, not one a cycle`, () => {
    const lines = [];
    const { cfg } = common({ refuse: true, log: (m) => lines.push(m) });
    for (let i = 0; i < 100; i++) {
      cfg.write(C.device_status, 1, 0);
      cfg.write(C.queue_enable, 2, 1);
    }
    assert.equal(lines.length, NEEDS_RESET_LOGGED);
    assert.match(lines.at(-1), /further ones of this device are not logged/);
    assert.ok(cfg.read(C.device_status, 1) & S.DEVICE_NEEDS_RESET, 'the device is still marked, only the log is quiet');
  });

  it('DRIVER_OK needs FEATURES_OK, then tells the device once', () => {
    const { cfg, events } = common();
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.DRIVER_OK);
    assert.equal(cfg.read(C.device_status, 1) & S.DRIVER_OK, 0);
    accept(cfg, 0, 1);
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    cfg.write(C.device_status, 1, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    assert.deepEqual(events, [['driver-ok', 1n << 32n]]);
  });

  it('two views over one shared buffer (two vCPU threads) see the same registers', () => {
    const { cfg } = common();
    const other = new CommonConfig({ features: 1n, queueMaxSizes: [256, 64], onQueueEnable: () => undefined, onReset() {}, onDriverOk() {} }, cfg.buffer);
    cfg.write(C.queue_select, 2, 1);
    cfg.write(C.queue_desc, 4, 0x5000);
    assert.equal(other.read(C.queue_select, 2), 1);
    assert.equal(other.read(C.queue_desc, 4), 0x5000);
    other.write(C.device_status, 1, S.ACKNOWLEDGE);
    assert.equal(cfg.status, S.ACKNOWLEDGE);
  });

  it('ignores accesses of the wrong width and reads them as all ones', () => {
    const { cfg } = common();
    assert.equal(cfg.read(C.device_feature, 2), 0xffff);
    cfg.write(C.device_status, 4, S.ACKNOWLEDGE);
    assert.equal(cfg.read(C.device_status, 1), 0);
    assert.equal(cfg.read(200, 4), 0xffffffff);
  });
});

describe('virtio-rng model', () => {
  const setup = (eventIdx = false) => {
    const mem = fakeMemory(1 << 20);
    const d = new DriverQueue(mem, 0x1000, 16);
    const q = new SplitQueue(mem, d.config, { indirect: true, eventIdx });
    let n = 0;
    const rng = new VirtioRng((b) => b.fill(0xa0 + (n++ % 16)));
    const ctx = fakeContext(mem, [q]);
    rng.activate(ctx);
    return { mem, d, q, rng, irqs: () => ctx.interrupts };
  };

  it('fills every writable buffer of each request and returns the byte count', () => {
    const { mem, d, q, rng, irqs } = setup();
    d.addChain([{ addr: 0x10000, len: 16, write: true }]);
    d.addChain([{ addr: 0x11000, len: 8, write: true }, { addr: 0x12000, len: 4, write: true }]);
    assert.equal(rng.notify(0), 2);
    assert.deepEqual(d.usedElem(0), { id: 0, len: 16 });
    assert.deepEqual(d.usedElem(1), { id: 1, len: 12 });
    assert.ok(mem.read(0x10000, 16).every((b) => b === 0xa0));
    assert.ok(mem.read(0x12000, 4).every((b) => b === 0xa2));
    assert.equal(irqs(), 1, 'one interrupt for the batch');
    assert.equal(rng.served, 28);
  });

  it('caps each request at RNG_MAX_REQUEST bytes', () => {
    const { d, q, rng } = setup();
    d.addChain([{ addr: 0x20000, len: RNG_MAX_REQUEST + 100, write: true }]);
    rng.notify(0);
    assert.equal(d.usedElem(0).len, RNG_MAX_REQUEST);
  });

  it('refuses a request with a device-readable buffer (the transport then sets DEVICE_NEEDS_RESET)', () => {
    const { d, q, rng } = setup();
    d.addChain([{ addr: 0x10000, len: 16 }]);
    assert.throws(() => rng.notify(0), (e) => e instanceof VirtqError);
  });

  it('with EVENT_IDX, interrupts only when the driver asked', () => {
    const { mem, d, q, rng, irqs } = setup(true);
    mem.writeU16(d.avail + 4 + 2 * 16, 5); // used_event: interrupt after the 6th used entry
    d.addChain([{ addr: 0x10000, len: 4, write: true }]);
    rng.notify(0);
    assert.equal(irqs(), 0);
  });

  it('uses the host CSPRNG by default', () => {
    const mem = fakeMemory(1 << 20);
    const d = new DriverQueue(mem, 0x1000, 8);
    const q = new SplitQueue(mem, d.config, { indirect: false, eventIdx: false });
    const rng = new VirtioRng();
    rng.activate(fakeContext(mem, [q]));
    d.addChain([{ addr: 0x10000, len: 64, write: true }]);
    rng.notify(0);
    assert.ok(mem.read(0x10000, 64).some((b) => b !== 0), 'random bytes, not zeros');
  });
});

describe('virtio-rng: per-turn budget', () => {
  it(`serves at most ${RNG_TURN_BUDGET} requests per notification, the rest on the next event-loop turns`, async () => {
    const mem = fakeMemory(1 << 20);
    const d = new DriverQueue(mem, 0x1000, 256);
    const q = new SplitQueue(mem, d.config, { indirect: false, eventIdx: false });
    const rng = new VirtioRng();
    rng.activate(fakeContext(mem, [q]));
    for (let i = 0; i < 200; i++) d.addChain([{ addr: 0x10000 + 16 * i, len: 16, write: true }]);
    rng.notify(0);
    assert.equal(d.usedIdx(), RNG_TURN_BUDGET);
    for (let turn = 0; turn < 10 && d.usedIdx() < 200; turn++) await new Promise((r) => setImmediate(r));
    assert.equal(d.usedIdx(), 200);
    assert.equal(rng.served, 200 * 16);
    rng.reset();
  });
});
