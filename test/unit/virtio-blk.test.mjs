// virtio-blk device model against fake guest memory and real image files (no KVM).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { fork, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdtempSync, mkdirSync, openSync, readFileSync, readvSync, rmSync, statSync, statfsSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir, constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  VirtioBlk, VIRTIO_BLK_F, VIRTIO_BLK_T as T, VIRTIO_BLK_S as S, BLK_CFG, BLK_SEG_MAX, BLK_MAX_IN_FLIGHT,
  BLK_MAX_WRITE_ZEROES_SECTORS, BLK_MAX_DISCARD_SEG, BLK_PUMP_BUDGET,
} from '../../dist/devices/virtio/blk.js';
import { VIRTIO_ID } from '../../dist/devices/virtio/constants.js';
import { SplitQueue, VirtqError } from '../../dist/devices/virtio/queue.js';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { native } from '../../dist/native/binding.js';
import { DriverQueue } from '../helpers/driver-queue.mjs';

const SECTOR = 512;
const bit = (n) => 1n << BigInt(n);
const VERSION_1 = bit(32);

const scratch = mkdtempSync(path.join(tmpdir(), 'nodevisor-blk-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
let files = 0;

/** Recognisable bytes: every sector differs, and so does every byte within one. */
function pattern(len, seed = 1) {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + (i >> 9) * 7 + seed) & 0xff;
  return b;
}

function imageFile(bytes) {
  const p = path.join(scratch, `disk${files++}.img`);
  writeFileSync(p, bytes);
  return p;
}

/** A device over a fresh image, activated on a driver queue in fake guest memory. */
// cachedRead false: every read goes through libuv's pool, so the asynchronous paths are exercised
// whatever the test file system; the page-cache fast path has its own tests.
function rig({ sectors = 64, readOnly = false, id, qsize = 64, negotiated = VERSION_1 | bit(VIRTIO_BLK_F.FLUSH), image, cachedRead = false } = {}) {
  const original = image ?? pattern(sectors * SECTOR);
  const file = imageFile(original);
  const blk = new VirtioBlk({ path: file, readOnly, id, cachedRead });
  const mem = fakeMemory(8 << 20);
  const r = { blk, mem, file, original, irqs: [], failures: [], heap: 0x100000 };
  r.activate = (size = qsize) => {
    r.d = new DriverQueue(mem, 0x1000, size);
    r.q = new SplitQueue(mem, r.d.config, { indirect: false, eventIdx: false });
    const q = r.q;
    r.ctx = {
      mem, negotiated, live: true,
      queue: (i) => (i === 0 ? q : undefined),
      usedAdded: (i, before) => r.irqs.push([i, before]),
      configChanged() {},
      fail: (e) => r.failures.push(e),
      log: { warn() {}, info() {}, debug() {} },
    };
    blk.activate(r.ctx);
  };
  r.activate();
  /** Guest buffer space, page-aligned so requests never overlap. */
  r.alloc = (n) => {
    const a = r.heap;
    r.heap += (Math.max(n, 1) + 0xfff) & ~0xfff;
    return a;
  };
  r.disk = () => new Uint8Array(readFileSync(file));
  r.run = async () => {
    blk.notify(0);
    await blk.idle();
  };
  return r;
}

/**
 * Publishes a request: header (optionally split 8+8, or sharing one descriptor with the data),
 * device-readable data, `inLen` device-writable bytes (in `inSplit` descriptors), then the status.
 */
function request(r, { type, sector = 0n, data, inLen = 0, splitHeader = false, headerWithData = false, status = true, header = 16 }) {
  const hdr = r.alloc(16 + (data?.length ?? 0));
  const v = r.mem.view(hdr, 16);
  v.setUint32(0, type, true);
  v.setUint32(4, 0, true);
  v.setBigUint64(8, BigInt(sector), true);
  const bufs = [];
  if (headerWithData) {
    r.mem.write(hdr + 16, data);
    bufs.push({ addr: hdr, len: 16 + data.length });
  } else {
    if (splitHeader) bufs.push({ addr: hdr, len: 8 }, { addr: hdr + 8, len: 8 });
    else bufs.push({ addr: hdr, len: header });
    if (data) {
      const a = r.alloc(data.length);
      r.mem.write(a, data);
      bufs.push({ addr: a, len: data.length });
    }
  }
  const inAddr = inLen ? r.alloc(inLen) : 0;
  if (inLen) {
    r.mem.slice(inAddr, inLen).fill(0xee);
    bufs.push({ addr: inAddr, len: inLen, write: true });
  }
  const st = r.alloc(1);
  r.mem.writeU8(st, 0xff);
  if (status) bufs.push({ addr: st, len: 1, write: true });
  const head = r.d.addChain(bufs);
  return { head, inAddr, st, status: () => r.mem.readU8(st), data: () => r.mem.read(inAddr, inLen) };
}

/** DISCARD / WRITE_ZEROES segments. */
function segments(list) {
  const b = new Uint8Array(16 * list.length);
  const v = new DataView(b.buffer);
  list.forEach(([sector, n, flags = 0], i) => {
    v.setBigUint64(16 * i, BigInt(sector), true);
    v.setUint32(16 * i + 8, n, true);
    v.setUint32(16 * i + 12, flags, true);
  });
  return b;
}

/** Used length per head (completions may come out of order: synchronous refusals overtake file I/O). */
function usedLengths(r) {
  const m = new Map();
  for (let k = 0; k < r.d.usedIdx(); k++) {
    const e = r.d.usedElem(k);
    assert.ok(!m.has(e.id), `head ${e.id} used twice`);
    m.set(e.id, e.len);
  }
  return m;
}

const sectorsOf = (bytes, from, n) => bytes.subarray(from * SECTOR, (from + n) * SECTOR);

describe('virtio-blk: device identity and configuration', () => {
  it('is device 2 with one 256-entry queue, and offers the advertised features (RO only when read-only)', () => {
    const rw = rig();
    assert.equal(rw.blk.kind, 'blk');
    assert.equal(rw.blk.deviceId, VIRTIO_ID.BLOCK);
    assert.deepEqual([...rw.blk.queueMaxSizes], [256]);
    const want = [VIRTIO_BLK_F.SEG_MAX, VIRTIO_BLK_F.BLK_SIZE, VIRTIO_BLK_F.FLUSH, VIRTIO_BLK_F.DISCARD, VIRTIO_BLK_F.WRITE_ZEROES].reduce((f, b) => f | bit(b), 0n);
    assert.equal(rw.blk.features, want);
    const ro = rig({ readOnly: true });
    assert.equal(ro.blk.features, want | bit(VIRTIO_BLK_F.RO));
    assert.equal(rw.blk.features & bit(VIRTIO_BLK_F.MQ), 0n, 'num_queues is not offered');
  });

  it('fills struct virtio_blk_config: capacity, limits, zeroed padding', () => {
    const r = rig({ sectors: 100 });
    assert.equal(r.blk.configSize, BLK_CFG.SIZE);
    const cfg = new DataView(new ArrayBuffer(BLK_CFG.SIZE));
    new Uint8Array(cfg.buffer).fill(0xaa);
    r.blk.bindConfig(cfg);
    assert.equal(cfg.getBigUint64(BLK_CFG.capacity, true), 100n);
    assert.equal(cfg.getUint32(BLK_CFG.seg_max, true), BLK_SEG_MAX);
    assert.equal(cfg.getUint32(BLK_CFG.blk_size, true), 512);
    assert.equal(cfg.getUint32(BLK_CFG.max_write_zeroes_sectors, true), BLK_MAX_WRITE_ZEROES_SECTORS);
    assert.equal(cfg.getUint32(BLK_CFG.max_write_zeroes_seg, true), 1);
    assert.equal(cfg.getUint32(BLK_CFG.max_discard_seg, true), BLK_MAX_DISCARD_SEG);
    assert.ok(cfg.getUint32(BLK_CFG.max_discard_sectors, true) > 0);
    assert.equal(cfg.getUint8(BLK_CFG.unused0), 0);
    assert.equal(cfg.getUint8(BLK_CFG.write_zeroes_may_unmap), 0);
    assert.equal(cfg.getUint8(BLK_CFG.SIZE - 1), 0);
  });
});

describe('virtio-blk: opening the image', () => {
  const refuses = (p, re, opts = {}) => assert.throws(() => new VirtioBlk({ path: p, ...opts }), (e) => e.code === 'BAD_CONFIG' && re.test(e.message) && e.message.includes(p) && !e.message.includes('\n'));

  it('refuses a missing file, a directory, an empty file and one smaller than a sector, naming the file', () => {
    refuses(path.join(scratch, 'nope.img'), /no such file/);
    const dir = path.join(scratch, 'a-directory');
    mkdirSync(dir);
    refuses(dir, /is a directory/);
    refuses(dir, /is a directory/, { readOnly: true });
    refuses(imageFile(new Uint8Array(0)), /is empty/);
    refuses(imageFile(new Uint8Array(100)), /smaller than one 512-byte sector/);
  });

  it('refuses an id that is not printable ASCII of at most 20 bytes', () => {
    const p = imageFile(new Uint8Array(SECTOR));
    refuses(p, /longer than 20/, { id: 'x'.repeat(21) });
    refuses(p, /printable ASCII/, { id: 'disk\u00e9' });
  });

  it('exposes whole sectors of an image with a partial tail, and says so', () => {
    const p = imageFile(new Uint8Array(3 * SECTOR + 100));
    const warnings = [];
    const blk = new VirtioBlk({ path: p, log: { warn: (o, m) => warnings.push(m) } });
    assert.equal(blk.capacity, 3);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /last 100 bytes are not visible/);
    return blk.close();
  });

  it('permission denied names the file and suggests read-only', () => {
    const p = imageFile(new Uint8Array(SECTOR));
    chmodSync(p, 0o444);
    if (process.getuid?.() !== 0) {
      refuses(p, /permission denied/);
      return new VirtioBlk({ path: p, readOnly: true }).close();
    }
    // Root ignores file permissions: try as nobody, in a child process.
    chmodSync(path.dirname(p), 0o755);
    const blkUrl = new URL('../../dist/devices/virtio/blk.js', import.meta.url).href;
    const probe = (readOnly) =>
      spawnSync(process.execPath, ['--input-type=module', '-e', `import { VirtioBlk } from ${JSON.stringify(blkUrl)};
        try { await new VirtioBlk({ path: ${JSON.stringify(p)}, readOnly: ${readOnly} }).close(); console.log('opened'); } catch (e) { console.log(e.code + ': ' + e.message); }`], { uid: 65534, gid: 65534, encoding: 'utf8' });
    const rw = probe(false);
    assert.match(rw.stdout, /^BAD_CONFIG: .*permission denied/m, rw.stderr);
    assert.ok(rw.stdout.includes(p) && rw.stdout.trim().split('\n').length === 1, rw.stdout);
    assert.equal(probe(true).stdout.trim(), 'opened', 'read-only works where the file is readable');
  });
});

describe('virtio-blk: reads and writes', () => {
  it('IN reads the file into the guest buffers; used length counts data and status', async () => {
    const r = rig();
    const req = request(r, { type: T.IN, sector: 5, inLen: 3 * SECTOR });
    await r.run();
    assert.equal(req.status(), S.OK);
    assert.deepEqual(req.data(), sectorsOf(r.original, 5, 3));
    assert.deepEqual(r.d.usedElem(0), { id: req.head, len: 3 * SECTOR + 1 });
    assert.equal(r.d.usedIdx(), 1);
    assert.deepEqual(r.irqs, [[0, 0]]);
    assert.equal(r.blk.reads, 1);
    assert.equal(r.blk.bytesRead, 3 * SECTOR);
  });

  it('IN scatters over several descriptors, the status being the last byte of the last one', async () => {
    const r = rig();
    const a = r.alloc(SECTOR + 100);
    const b = r.alloc(SECTOR);
    r.mem.view(0x80000, 16).setUint32(0, T.IN, true);
    r.mem.view(0x80000, 16).setBigUint64(8, 2n, true);
    // 300 + 724 bytes of data, and the status shares the last descriptor with the data's end.
    const head = r.d.addChain([{ addr: 0x80000, len: 16 }, { addr: a, len: 300, write: true }, { addr: b, len: 2 * SECTOR - 300 + 1, write: true }]);
    await r.run();
    const got = new Uint8Array(2 * SECTOR);
    got.set(r.mem.read(a, 300), 0);
    got.set(r.mem.read(b, 2 * SECTOR - 300), 300);
    assert.deepEqual(got, sectorsOf(r.original, 2, 2));
    assert.equal(r.mem.readU8(b + 2 * SECTOR - 300), S.OK);
    assert.deepEqual(r.d.usedElem(0), { id: head, len: 2 * SECTOR + 1 });
  });

  it('OUT writes the guest data into the file', async () => {
    const r = rig();
    const data = pattern(4 * SECTOR, 99);
    const req = request(r, { type: T.OUT, sector: 10, data });
    await r.run();
    assert.equal(req.status(), S.OK);
    assert.deepEqual(r.d.usedElem(0), { id: req.head, len: 1 });
    const disk = r.disk();
    assert.deepEqual(sectorsOf(disk, 10, 4), data);
    assert.deepEqual(sectorsOf(disk, 0, 10), sectorsOf(r.original, 0, 10), 'nothing else changed');
    assert.deepEqual(sectorsOf(disk, 14, 50), sectorsOf(r.original, 14, 50));
    assert.equal(r.blk.writes, 1);
    assert.equal(r.blk.bytesWritten, 4 * SECTOR);
  });

  it('takes the header split across two descriptors, or sharing one with the data', async () => {
    const r = rig();
    const read = request(r, { type: T.IN, sector: 7, inLen: SECTOR, splitHeader: true });
    const data = pattern(SECTOR, 5);
    const write = request(r, { type: T.OUT, sector: 20, data, headerWithData: true });
    await r.run();
    assert.equal(read.status(), S.OK);
    assert.deepEqual(read.data(), sectorsOf(r.original, 7, 1));
    assert.equal(write.status(), S.OK);
    assert.deepEqual(sectorsOf(r.disk(), 20, 1), data);
  });

  it('a read of the last sector works; one sector further, or a huge sector number, is IOERR', async () => {
    const r = rig({ sectors: 16 });
    const last = request(r, { type: T.IN, sector: 15, inLen: SECTOR });
    const past = request(r, { type: T.IN, sector: 15, inLen: 2 * SECTOR });
    const huge = request(r, { type: T.OUT, sector: 0xffff_ffff_ffff_ffffn, data: pattern(SECTOR) });
    const far = request(r, { type: T.OUT, sector: 16, data: pattern(SECTOR) });
    await r.run();
    assert.equal(last.status(), S.OK);
    assert.equal(past.status(), S.IOERR);
    assert.equal(huge.status(), S.IOERR);
    assert.equal(far.status(), S.IOERR);
    assert.equal(usedLengths(r).get(past.head), 1);
    assert.deepEqual(past.data(), new Uint8Array(2 * SECTOR).fill(0xee), 'nothing read into the buffer');
    assert.deepEqual(r.disk(), r.original);
    assert.equal(r.d.usedIdx(), 4);
  });

  it('a data length that is not whole sectors is IOERR, and the file is untouched', async () => {
    const r = rig();
    const w = request(r, { type: T.OUT, sector: 1, data: pattern(SECTOR + 1) });
    const rd = request(r, { type: T.IN, sector: 1, inLen: 100 });
    await r.run();
    assert.equal(w.status(), S.IOERR);
    assert.equal(rd.status(), S.IOERR);
    assert.deepEqual(r.disk(), r.original);
    assert.equal(r.blk.writes + r.blk.reads, 0);
  });

  it('a read-only disk serves reads and refuses writes with IOERR, leaving the file alone', async () => {
    const r = rig({ readOnly: true });
    const mtime = statSync(r.file).mtimeMs;
    const w = request(r, { type: T.OUT, sector: 0, data: pattern(SECTOR, 3) });
    const z = request(r, { type: T.WRITE_ZEROES, data: segments([[0, 1]]) });
    const dsc = request(r, { type: T.DISCARD, data: segments([[0, 1]]) });
    const rd = request(r, { type: T.IN, sector: 0, inLen: SECTOR });
    const f = request(r, { type: T.FLUSH });
    await r.run();
    assert.deepEqual([w.status(), z.status(), dsc.status(), rd.status(), f.status()], [S.IOERR, S.IOERR, S.IOERR, S.OK, S.OK]);
    assert.deepEqual(rd.data(), sectorsOf(r.original, 0, 1));
    assert.deepEqual(r.disk(), r.original);
    assert.equal(statSync(r.file).mtimeMs, mtime);
  });

  it('an image that shrinks under the device turns the read into IOERR', async () => {
    const r = rig({ sectors: 8 });
    truncateSync(r.file, 4 * SECTOR);
    const req = request(r, { type: T.IN, sector: 6, inLen: SECTOR });
    await r.run();
    assert.equal(req.status(), S.IOERR);
    assert.deepEqual(r.d.usedElem(0), { id: req.head, len: 1 });
  });
});

describe('virtio-blk: flush, GET_ID, discard, write zeroes, unknown requests', () => {
  it('FLUSH completes after the data is on disk (another fd sees it)', async () => {
    const r = rig();
    const data = pattern(2 * SECTOR, 42);
    request(r, { type: T.OUT, sector: 3, data });
    await r.run();
    const f = request(r, { type: T.FLUSH });
    await r.run();
    assert.equal(f.status(), S.OK);
    assert.deepEqual(r.d.usedElem(1), { id: f.head, len: 1 });
    assert.equal(r.blk.flushes, 1);
    assert.deepEqual(sectorsOf(r.disk(), 3, 2), data);
  });

  it('without FLUSH negotiated, writes are write-through and still land', async () => {
    const r = rig({ negotiated: VERSION_1 });
    const data = pattern(SECTOR, 8);
    const w = request(r, { type: T.OUT, sector: 1, data });
    await r.run();
    assert.equal(w.status(), S.OK);
    assert.deepEqual(sectorsOf(r.disk(), 1, 1), data);
  });

  it('GET_ID returns the id NUL-padded to 20 bytes, or as much as fits', async () => {
    const r = rig({ id: 'nv-disk-0' });
    const full = request(r, { type: T.GET_ID, inLen: 20 });
    const short = request(r, { type: T.GET_ID, inLen: 4 });
    await r.run();
    const want = new Uint8Array(20);
    want.set(new TextEncoder().encode('nv-disk-0'));
    assert.equal(full.status(), S.OK);
    assert.deepEqual(full.data(), want);
    assert.deepEqual(r.d.usedElem(0), { id: full.head, len: 21 });
    assert.deepEqual(short.data(), new TextEncoder().encode('nv-d'));
    assert.deepEqual(r.d.usedElem(1), { id: short.head, len: 5 });

    const r20 = rig({ id: 'ABCDEFGHIJKLMNOPQRST' });
    const exact = request(r20, { type: T.GET_ID, inLen: 20 });
    await r20.run();
    assert.equal(new TextDecoder().decode(exact.data()), 'ABCDEFGHIJKLMNOPQRST', 'no terminator at 20 bytes');
  });

  it('WRITE_ZEROES zeroes the range, and only the range', async () => {
    const r = rig();
    const req = request(r, { type: T.WRITE_ZEROES, data: segments([[10, 6, 1 /* unmap allowed */]]) });
    await r.run();
    assert.equal(req.status(), S.OK);
    const disk = r.disk();
    assert.deepEqual(sectorsOf(disk, 10, 6), new Uint8Array(6 * SECTOR));
    assert.deepEqual(sectorsOf(disk, 9, 1), sectorsOf(r.original, 9, 1));
    assert.deepEqual(sectorsOf(disk, 16, 1), sectorsOf(r.original, 16, 1));
    assert.equal(r.blk.bytesWritten, 6 * SECTOR);
  });

  it('WRITE_ZEROES of the most sectors advertised works on a large image', async () => {
    const sectors = BLK_MAX_WRITE_ZEROES_SECTORS + 8;
    const r = rig({ sectors, image: new Uint8Array(sectors * SECTOR).fill(0x5a) });
    const req = request(r, { type: T.WRITE_ZEROES, data: segments([[4, BLK_MAX_WRITE_ZEROES_SECTORS]]) });
    const tooMany = request(r, { type: T.WRITE_ZEROES, data: segments([[0, BLK_MAX_WRITE_ZEROES_SECTORS + 1]]) });
    await r.run();
    assert.equal(req.status(), S.OK);
    assert.equal(tooMany.status(), S.IOERR);
    const disk = r.disk();
    assert.ok(sectorsOf(disk, 4, BLK_MAX_WRITE_ZEROES_SECTORS).every((b) => b === 0));
    assert.ok(sectorsOf(disk, 0, 4).every((b) => b === 0x5a));
    assert.ok(sectorsOf(disk, sectors - 4, 4).every((b) => b === 0x5a));
  });

  it('DISCARD is accepted without touching the image (no hole punching from Node)', async () => {
    const r = rig();
    const req = request(r, { type: T.DISCARD, data: segments([[0, 8], [20, 4]]) });
    await r.run();
    assert.equal(req.status(), S.OK);
    assert.equal(r.blk.discards, 1);
    assert.deepEqual(r.disk(), r.original);
  });

  it('refuses bad DISCARD / WRITE_ZEROES requests with the status the spec asks for', async () => {
    const r = rig({ sectors: 32 });
    const cases = [
      [T.DISCARD, segments([[0, 1, 1]]), S.UNSUPP], // unmap on a discard
      [T.DISCARD, segments([[0, 1, 2]]), S.UNSUPP], // unknown flag
      [T.WRITE_ZEROES, segments([[0, 1, 0x80000000]]), S.UNSUPP],
      [T.WRITE_ZEROES, segments([[30, 3]]), S.IOERR], // beyond the disk
      [T.DISCARD, segments([[0xffff_ffff_ffff_fff0n, 0x20]]), S.IOERR], // wraps around 2^64
      [T.WRITE_ZEROES, segments([[0, 1], [4, 1]]), S.IOERR], // more segments than max_write_zeroes_seg
      [T.DISCARD, segments(Array.from({ length: BLK_MAX_DISCARD_SEG + 1 }, (_, i) => [i, 1])), S.IOERR],
      [T.DISCARD, new Uint8Array(20), S.IOERR], // not whole segments
      [T.WRITE_ZEROES, undefined, S.IOERR], // no segment at all
    ];
    const reqs = cases.map(([type, data]) => request(r, { type, data }));
    await r.run();
    assert.deepEqual(reqs.map((q) => q.status()), cases.map((c) => c[2]));
    assert.deepEqual(r.disk(), r.original);
  });

  it('unknown request types complete with UNSUPP', async () => {
    const r = rig();
    const reqs = [2, 3, 5, 10, 14, 16, 0xffffffff].map((type) => request(r, { type, inLen: 8 }));
    await r.run();
    assert.deepEqual(reqs.map((q) => q.status()), reqs.map(() => S.UNSUPP));
    assert.equal(usedLengths(r).get(reqs[6].head), 1);
  });
});

describe('virtio-blk: broken chains', () => {
  it('a chain without a device-writable byte throws VirtqError (the transport then needs a reset)', async () => {
    const r = rig();
    request(r, { type: T.OUT, sector: 0, data: pattern(SECTOR), status: false });
    const later = request(r, { type: T.IN, sector: 0, inLen: SECTOR });
    assert.throws(() => r.blk.notify(0), (e) => e instanceof VirtqError && /status byte/.test(e.message));
    r.blk.notify(0); // a failed device serves nothing more until it is reset
    await r.blk.idle();
    assert.equal(later.status(), 0xff);
    assert.deepEqual(r.disk(), r.original);
  });

  it('empty descriptors (which may point anywhere) are skipped, with the header and status alone in theirs or not', async () => {
    const r = rig();
    const nowhere = 0xfff_0000_0000; // far outside guest RAM
    const hdr = (type, sector) => {
      const a = r.alloc(16);
      r.mem.view(a, 16).setUint32(0, type, true);
      r.mem.view(a, 16).setBigUint64(8, BigInt(sector), true);
      return a;
    };
    const data = pattern(SECTOR, 42);
    const src = r.alloc(SECTOR);
    r.mem.write(src, data);
    const dst = r.alloc(SECTOR);
    const st = [r.alloc(1), r.alloc(1)];
    // The usual layout with empty descriptors between the parts; the write lands before the reads
    // start (requests in flight together may complete in any order).
    const write = r.d.addChain([{ addr: hdr(T.OUT, 3), len: 16 }, { addr: nowhere, len: 0 }, { addr: src, len: SECTOR }, { addr: nowhere, len: 0 }, { addr: st[0], len: 1, write: true }]);
    await r.run();
    assert.equal(r.mem.readU8(st[0]), S.OK);
    assert.deepEqual(sectorsOf(r.disk(), 3, 1), data);
    // Then the same for a read, and one whose status shares its descriptor with the data's end and
    // whose header follows an empty descriptor (the general path).
    const read = r.d.addChain([{ addr: hdr(T.IN, 3), len: 16 }, { addr: dst, len: SECTOR, write: true }, { addr: nowhere, len: 0, write: true }, { addr: st[1], len: 1, write: true }]);
    const shared = r.alloc(SECTOR + 1);
    const general = r.d.addChain([{ addr: nowhere, len: 0 }, { addr: hdr(T.IN, 3), len: 16 }, { addr: shared, len: SECTOR + 1, write: true }]);
    await r.run();
    assert.equal(r.mem.readU8(st[1]), S.OK);
    assert.deepEqual(r.mem.read(dst, SECTOR), data);
    assert.deepEqual(r.mem.read(shared, SECTOR), data);
    assert.equal(r.mem.readU8(shared + SECTOR), S.OK);
    const used = usedLengths(r);
    assert.deepEqual([used.get(write), used.get(read), used.get(general)], [1, SECTOR + 1, SECTOR + 1]);
  });

  it('a header shorter than 16 bytes throws VirtqError', () => {
    const r = rig();
    request(r, { type: T.IN, inLen: SECTOR, header: 12 });
    assert.throws(() => r.blk.notify(0), (e) => e instanceof VirtqError && /12-byte header/.test(e.message));
  });

  it('requests completed before the broken one are still announced', async () => {
    const r = rig();
    const ok = request(r, { type: T.GET_ID, inLen: 20 });
    request(r, { type: T.IN, inLen: SECTOR, header: 8 });
    assert.throws(() => r.blk.notify(0), VirtqError);
    assert.equal(ok.status(), S.OK);
    assert.deepEqual(r.irqs, [[0, 0]]);
  });
});

describe('virtio-blk: reads served from the page cache', () => {
  const EAGAIN = osConstants.errno.EAGAIN;
  const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;
  /** A stand-in for preadv2(RWF_NOWAIT): reads with readvSync, at most `limit` bytes, or answers `fail`. */
  const fakeCachedRead = (calls, { limit = Infinity, fail } = {}) => (fd, views, position) => {
    calls.push(position);
    if (fail) return -fail;
    let left = limit;
    const cut = views.map((v) => {
      const n = Math.min(v.length, Math.max(0, left));
      left -= n;
      return v.subarray(0, n);
    }).filter((v) => v.length > 0);
    return cut.length ? readvSync(fd, cut, position) : 0;
  };

  it('a read the page cache holds is answered within the notification, with nothing in flight', () => {
    const calls = [];
    const r = rig({ cachedRead: fakeCachedRead(calls) });
    const req = request(r, { type: T.IN, sector: 3, inLen: 4 * SECTOR });
    r.blk.notify(0);
    assert.equal(r.blk.inFlight, 0);
    assert.equal(r.d.usedIdx(), 1);
    assert.equal(req.status(), S.OK);
    assert.deepEqual(req.data(), sectorsOf(r.original, 3, 4));
    assert.deepEqual(calls, [3 * SECTOR]);
    assert.deepEqual(r.irqs, [[0, 0]]);
    assert.equal(r.blk.reads, 1);
  });

  it('asks the driver not to notify while it takes requests, and takes the ones added meanwhile', () => {
    const seen = [];
    let late;
    const r = rig({
      cachedRead: (fd, views, position) => {
        seen.push(r.mem.readU16(r.d.used)); // used.flags
        // A driver adding a request now sees NO_NOTIFY and does not notify: it must still be served.
        if (seen.length === 1) late = request(r, { type: T.IN, sector: 5, inLen: SECTOR });
        return readvSync(fd, views, position);
      },
    });
    const first = request(r, { type: T.IN, sector: 3, inLen: SECTOR });
    r.blk.notify(0);
    assert.deepEqual(seen, [1, 1]);
    assert.equal(first.status(), S.OK);
    assert.equal(late.status(), S.OK);
    assert.deepEqual(late.data(), sectorsOf(r.original, 5, 1));
    assert.equal(r.mem.readU16(r.d.used), 0, 'notifications back on once the device is idle');
  });

  it('notifications are on while requests are in flight: one published behind a slow read starts at once', async () => {
    const r = rig(); // every read through the pool
    const first = request(r, { type: T.IN, sector: 1, inLen: SECTOR });
    r.blk.notify(0);
    assert.equal(r.blk.inFlight, 1);
    assert.equal(r.mem.readU16(r.d.used), 0, 'the driver is asked to notify');
    const second = request(r, { type: T.IN, sector: 2, inLen: SECTOR });
    r.blk.notify(0); // its notification
    assert.equal(r.blk.inFlight, 2, 'started without waiting for the first');
    await r.blk.idle();
    assert.equal(first.status(), S.OK);
    assert.equal(second.status(), S.OK);
  });

  it('a read the cache holds only part of finishes the rest asynchronously, from where it stopped', async () => {
    const calls = [];
    const r = rig({ cachedRead: fakeCachedRead(calls, { limit: SECTOR + 100 }) });
    const req = request(r, { type: T.IN, sector: 5, inLen: 8 * SECTOR });
    r.blk.notify(0);
    assert.equal(r.blk.inFlight, 1);
    await r.blk.idle();
    assert.equal(req.status(), S.OK);
    assert.deepEqual(req.data(), sectorsOf(r.original, 5, 8));
  });

  it('EAGAIN sends one read to the pool and the next still tries the cache; EOPNOTSUPP stops trying', async () => {
    for (const [fail, tries] of [[EAGAIN, 2], [EOPNOTSUPP, 1]]) {
      const calls = [];
      const r = rig({ cachedRead: fakeCachedRead(calls, { fail }) });
      const a = request(r, { type: T.IN, sector: 1, inLen: SECTOR });
      r.blk.notify(0);
      await r.blk.idle();
      const b = request(r, { type: T.IN, sector: 2, inLen: SECTOR });
      r.blk.notify(0);
      await r.blk.idle();
      assert.equal(calls.length, tries, `errno ${fail}`);
      assert.deepEqual([a.status(), b.status()], [S.OK, S.OK]);
      assert.deepEqual(b.data(), sectorsOf(r.original, 2, 1));
    }
  });

  it('an image on tmpfs (memory, but no RWF_NOWAIT) is read and written at once all the same', (t) => {
    const dirs = ['/dev/shm', tmpdir()].filter((d) => existsSync(d) && statfsSync(d).type === 0x01021994);
    if (dirs.length === 0) {
      if (process.env.CI) assert.fail('no tmpfs at /dev/shm or the temporary directory');
      return t.skip('no tmpfs at /dev/shm or the temporary directory');
    }
    const dir = mkdtempSync(path.join(dirs[0], 'nodevisor-blk-'));
    try {
      const bytes = pattern(16 * SECTOR, 4);
      const file = path.join(dir, 'disk.img');
      writeFileSync(file, bytes);
      const blk = new VirtioBlk({ path: file });
      const mem = fakeMemory(8 << 20);
      const r = { blk, mem, irqs: [], heap: 0x100000, original: bytes };
      r.alloc = (n) => {
        const at = r.heap;
        r.heap += (n + 15) & ~15;
        return at;
      };
      r.d = new DriverQueue(mem, 0x1000, 16);
      const q = new SplitQueue(mem, r.d.config, { indirect: false, eventIdx: false });
      blk.activate({ mem, negotiated: VERSION_1 | bit(VIRTIO_BLK_F.FLUSH), live: true, queue: () => q, usedAdded: (i, b) => r.irqs.push([i, b]), configChanged() {}, fail: (e) => { throw e; }, log: { warn() {}, info() {}, debug() {} } });
      const req = request(r, { type: T.IN, sector: 2, inLen: 3 * SECTOR });
      blk.notify(0);
      assert.equal(blk.inFlight, 0);
      assert.equal(req.status(), S.OK);
      assert.deepEqual(req.data(), sectorsOf(bytes, 2, 3));
      const written = pattern(2 * SECTOR, 77);
      const w = request(r, { type: T.OUT, sector: 9, data: written });
      blk.notify(0);
      assert.equal(blk.inFlight, 0);
      assert.equal(w.status(), S.OK);
      assert.deepEqual(sectorsOf(new Uint8Array(readFileSync(file)), 9, 2), written);
      assert.deepEqual(r.irqs, [[0, 0], [0, 1]]);
      blk.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the addon\'s preadv2(RWF_NOWAIT) reads the file where the file system supports it, and says EOPNOTSUPP where not', () => {
    const bytes = pattern(8 * SECTOR, 9);
    const file = imageFile(bytes);
    const fd = openSync(file, 'r');
    try {
      const a = new Uint8Array(100);
      const b = new Uint8Array(1000);
      const n = native().preadvNoWait(fd, [a, b], 7);
      if (n === -EOPNOTSUPP) return; // tmpfs (the nested CI VM's /tmp): the pool serves every read
      // Just written, so cached; a page not yet read back may still say EAGAIN on some file systems.
      if (n === -EAGAIN) return;
      assert.equal(n, 1100);
      assert.deepEqual(a, bytes.subarray(7, 107));
      assert.deepEqual(b, bytes.subarray(107, 1107));
      assert.equal(native().preadvNoWait(fd, [new Uint8Array(10)], 8 * SECTOR), 0); // end of file
    } finally {
      closeSync(fd);
    }
  });
});

describe('virtio-blk: asynchronous I/O', () => {
  it('many requests are in flight at once and each completes once, with the right used entry', async () => {
    const r = rig({ qsize: 128 });
    const reqs = [];
    for (let i = 0; i < 32; i++) {
      if (i % 2) reqs.push({ ...request(r, { type: T.OUT, sector: 32 + i, data: pattern(SECTOR, i) }), i, kind: 'w', written: pattern(SECTOR, i) });
      else reqs.push({ i, kind: 'r', ...request(r, { type: T.IN, sector: i, inLen: SECTOR }) });
    }
    r.blk.notify(0);
    assert.equal(r.blk.inFlight, 32, 'all taken before any completes');
    assert.equal(r.d.usedIdx(), 0);
    await r.blk.idle();
    assert.equal(r.blk.inFlight, 0);
    assert.equal(r.d.usedIdx(), 32);
    const used = usedLengths(r);
    assert.equal(used.size, 32, 'every head exactly once');
    const disk = r.disk();
    for (const q of reqs) {
      assert.equal(q.status(), S.OK);
      assert.equal(used.get(q.head), q.kind === 'r' ? SECTOR + 1 : 1);
      if (q.kind === 'r') assert.deepEqual(q.data(), sectorsOf(r.original, q.i, 1));
      else assert.deepEqual(sectorsOf(disk, 32 + q.i, 1), q.written);
    }
    assert.ok(r.irqs.length >= 1 && r.irqs.length <= 32);
    assert.equal(r.irqs[0][1], 0, 'the first announcement covers entries from 0');
  });

  it(`takes at most ${BLK_MAX_IN_FLIGHT} requests at a time and picks up the rest as they complete`, async () => {
    const r = rig({ qsize: 1024 });
    const n = BLK_MAX_IN_FLIGHT + 44;
    const reqs = Array.from({ length: n }, (_, i) => request(r, { type: T.IN, sector: i % 64, inLen: SECTOR }));
    r.blk.notify(0);
    assert.equal(r.blk.inFlight, BLK_MAX_IN_FLIGHT);
    await r.blk.idle();
    assert.equal(r.d.usedIdx(), n);
    assert.ok(reqs.every((q) => q.status() === S.OK));
    assert.deepEqual(reqs[n - 1].data(), sectorsOf(r.original, (n - 1) % 64, 1));
  });

  it(`answers at most ${BLK_PUMP_BUDGET} requests per notification at once, the rest on the next turn`, async () => {
    const r = rig({ qsize: 1024 });
    const n = BLK_PUMP_BUDGET + 100;
    const reqs = Array.from({ length: n }, () => request(r, { type: 99 }));
    r.blk.notify(0);
    assert.equal(r.d.usedIdx(), BLK_PUMP_BUDGET);
    await r.blk.idle();
    assert.equal(r.d.usedIdx(), n);
    assert.ok(reqs.every((q) => q.status() === S.UNSUPP));
    assert.deepEqual(r.irqs, [[0, 0], [0, BLK_PUMP_BUDGET]]);
  });

  it('a reset while I/O is in flight drops the completion: used ring and status untouched', async () => {
    const r = rig();
    const req = request(r, { type: T.IN, sector: 1, inLen: 2 * SECTOR });
    r.blk.notify(0);
    assert.equal(r.blk.inFlight, 1);
    r.blk.reset();
    r.ctx.live = false;
    await r.blk.idle();
    assert.equal(r.d.usedIdx(), 0);
    assert.equal(req.status(), 0xff);
    assert.deepEqual(r.irqs, []);
    // A new activation starts afresh and is served.
    r.activate();
    const again = request(r, { type: T.IN, sector: 1, inLen: SECTOR });
    await r.run();
    assert.equal(again.status(), S.OK);
    assert.equal(r.d.usedIdx(), 1);
  });

  it('close() lets in-flight writes land, then closes the image; later notifications are ignored', async () => {
    const r = rig();
    const data = pattern(8 * SECTOR, 77);
    const w = request(r, { type: T.OUT, sector: 8, data });
    r.blk.notify(0);
    await r.blk.close();
    assert.equal(w.status(), S.OK);
    assert.deepEqual(sectorsOf(r.disk(), 8, 8), data);
    const late = request(r, { type: T.IN, sector: 0, inLen: SECTOR });
    r.blk.notify(0);
    await r.blk.idle();
    assert.equal(late.status(), 0xff);
    await r.blk.close(); // idempotent
  });
});

describe('virtio-blk: durability', () => {
  it('data written and flushed survives a SIGKILL of the process', async () => {
    const sectors = 64;
    const file = imageFile(new Uint8Array((sectors + 16) * SECTOR));
    const child = fork(fileURLToPath(new URL('../helpers/blk-kill-child.mjs', import.meta.url)), [file, String(sectors)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const msg = await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`child exited (${code}) before reporting`)));
    });
    assert.deepEqual(msg, { ok: true });
    await new Promise((resolve) => setTimeout(resolve, 20)); // let it get busy with more writes
    child.kill('SIGKILL');
    assert.equal((await exited).signal, 'SIGKILL');
    const disk = new Uint8Array(readFileSync(file));
    const want = new Uint8Array(sectors * SECTOR);
    for (let i = 0; i < want.length; i++) want[i] = (i * 13 + 7) & 0xff;
    assert.deepEqual(disk.subarray(0, sectors * SECTOR), want);
  });
});
