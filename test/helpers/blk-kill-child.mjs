// Child process for the virtio-blk kill test: writes a pattern to the disk image given as argv[2]
// through the device model, flushes it, tells the parent, then keeps writing elsewhere until the
// parent SIGKILLs it. The parent checks the flushed pattern is in the file.
import { VirtioBlk, VIRTIO_BLK_T, VIRTIO_BLK_F } from '../../dist/devices/virtio/blk.js';
import { SplitQueue } from '../../dist/devices/virtio/queue.js';
import { fakeMemory } from './fake-memory.mjs';
import { DriverQueue } from './driver-queue.mjs';

const [path, sectorsArg] = process.argv.slice(2);
// `node --test test/` also runs every file under test/ on its own: without arguments, do nothing.
if (!path) process.exit(0);
const sectors = Number(sectorsArg);
const mem = fakeMemory(1 << 22);
const d = new DriverQueue(mem, 0x1000, 256);
const q = new SplitQueue(mem, d.config, { indirect: false, eventIdx: false });
const blk = new VirtioBlk({ path });
blk.activate({
  mem,
  negotiated: (1n << 32n) | (1n << BigInt(VIRTIO_BLK_F.FLUSH)),
  queue: (i) => (i === 0 ? q : undefined),
  usedAdded() {},
  configChanged() {},
  fail(e) {
    throw e;
  },
  live: true,
  log: { warn() {}, info() {}, debug() {} },
});

const HDR = 0x10000;
const DATA = 0x20000;
const STATUS = 0x3f0000;
let slot = 0;

/** Publishes one request using a private header/status slot (requests may overlap in flight). */
function submit(type, sector, dataLen) {
  const s = slot++ % 64;
  const hdr = HDR + s * 16;
  mem.writeU32(hdr, type);
  mem.writeU32(hdr + 4, 0);
  mem.writeU64(hdr + 8, BigInt(sector));
  mem.writeU8(STATUS + s, 0xff);
  const bufs = [{ addr: hdr, len: 16 }];
  if (dataLen) bufs.push({ addr: DATA, len: dataLen });
  bufs.push({ addr: STATUS + s, len: 1, write: true });
  d.addChain(bufs);
  return STATUS + s;
}

const pattern = mem.slice(DATA, sectors * 512);
for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 13 + 7) & 0xff;
const w = submit(VIRTIO_BLK_T.OUT, 0, sectors * 512);
blk.notify(0);
await blk.idle();
const f = submit(VIRTIO_BLK_T.FLUSH, 0, 0);
blk.notify(0);
await blk.idle();
if (mem.readU8(w) !== 0 || mem.readU8(f) !== 0 || blk.flushes !== 1) {
  process.send({ ok: false, why: `statuses ${mem.readU8(w)} ${mem.readU8(f)}, flushes ${blk.flushes}` });
} else {
  process.send({ ok: true });
}

// Keep the device busy beyond the flushed range until the parent kills us mid-I/O.
setInterval(() => {
  submit(VIRTIO_BLK_T.OUT, sectors + (slot % 8), 512);
  blk.notify(0);
}, 1);
