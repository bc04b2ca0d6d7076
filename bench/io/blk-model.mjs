#!/usr/bin/env node
// bench/io/blk-model.mjs: the virtio-blk device model alone, no guest and no KVM: a driver in fake
// guest memory keeps QD 4 KiB random reads in flight on a raw image in the page cache, and the model
// serves them as it does for a guest (pop, parse, file I/O, used ring). Compares the two read paths:
// preadv2(RWF_NOWAIT) from the page cache first (the default) against every read through libuv's
// thread pool. Prints requests/s and µs per request for each, and their ratio. Runs on any host.
//
// Usage: node bench/io/blk-model.mjs [--requests 50000] [--qd 32] [--runs 5]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { VirtioBlk } from '../../dist/devices/virtio/blk.js';
import { SplitQueue } from '../../dist/devices/virtio/queue.js';
import { GuestMemory } from '../../dist/memory/guest-memory.js';
import { median } from '../lib/stats.mjs';

const { values: opt } = parseArgs({ options: { requests: { type: 'string', default: '50000' }, qd: { type: 'string', default: '32' }, runs: { type: 'string', default: '5' } } });
const REQUESTS = Number(opt.requests);
const QD = Number(opt.qd);
const SECTORS = (64 << 20) / 512;
const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-blk-model-'));
const image = path.join(dir, 'disk.img');
writeFileSync(image, Buffer.alloc(64 << 20, 0x5a)); // just written: in the page cache

/** One pass: requests/s with QD requests always in flight. */
async function pass(cachedRead) {
  const bytes = new Uint8Array(4 << 20);
  const mem = new GuestMemory([{ gpa: 0, size: bytes.length, bytes }]);
  const size = 256;
  const desc = 0x1000, avail = desc + 16 * size, used = (avail + 6 + 2 * size + 3) & ~3;
  const q = new SplitQueue(mem, { size, descAddr: desc, availAddr: avail, usedAddr: used }, { indirect: false, eventIdx: false });
  const blk = new VirtioBlk({ path: image, ...(cachedRead ? {} : { cachedRead: false }) });
  let availIdx = 0;
  let usedSeen = 0;
  let done = 0;
  let issued = 0;
  let seed = 12345;
  // Request slot i: header at 0x10000 + 32 i, data at 0x100000 + 4 KiB i, status after the header.
  const post = (slot) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const hdr = 0x10000 + 32 * slot;
    mem.writeU32(hdr, 0); // VIRTIO_BLK_T_IN
    mem.writeU64(hdr + 8, BigInt((seed % (SECTORS / 8)) * 8));
    const d = 3 * slot;
    const put = (i, addr, len, flags, next) => {
      mem.writeU64(desc + 16 * i, BigInt(addr));
      mem.writeU32(desc + 16 * i + 8, len);
      mem.writeU16(desc + 16 * i + 12, flags);
      mem.writeU16(desc + 16 * i + 14, next);
    };
    put(d, hdr, 16, 1, d + 1);
    put(d + 1, 0x100000 + 4096 * slot, 4096, 3, d + 2);
    put(d + 2, hdr + 16, 1, 2, 0);
    mem.writeU16(avail + 4 + 2 * (availIdx % size), d);
    availIdx = (availIdx + 1) & 0xffff;
    mem.writeU16(avail + 2, availIdx);
    issued++;
  };
  return new Promise((resolve) => {
    let t0;
    const ctx = {
      mem, negotiated: 1n << 32n, live: true,
      queue: (i) => (i === 0 ? q : undefined),
      // The driver's interrupt handler: reap, and keep QD in flight (one notification per batch).
      usedAdded: () => {
        let reposted = false;
        while (usedSeen !== mem.readU16(used + 2)) {
          const head = mem.readU32(used + 4 + 8 * (usedSeen % size));
          usedSeen = (usedSeen + 1) & 0xffff;
          done++;
          if (issued < REQUESTS) {
            post(head / 3);
            reposted = true;
          }
        }
        if (done === REQUESTS) {
          const s = Number(process.hrtime.bigint() - t0) / 1e9;
          blk.close();
          resolve(REQUESTS / s);
        } else if (reposted) setImmediate(() => blk.notify(0));
      },
      configChanged() {}, fail: (e) => { throw e; }, log: { warn() {}, info() {}, debug() {} },
    };
    blk.activate(ctx);
    t0 = process.hrtime.bigint();
    for (let s = 0; s < QD; s++) post(s);
    blk.notify(0);
  });
}

const results = { cached: [], pool: [] };
for (let i = 0; i < Number(opt.runs); i++) {
  results.cached.push(await pass(true));
  results.pool.push(await pass(false));
}
rmSync(dir, { recursive: true, force: true });
const c = median(results.cached);
const p = median(results.pool);
console.log(`bench/io blk-model: ${REQUESTS} random 4 KiB reads at QD ${QD} from the page cache (${os.tmpdir()}), medians of ${opt.runs}`);
console.log(`page cache first (RWF_NOWAIT)  ${c.toFixed(0).padStart(8)} req/s  ${(1e6 / c).toFixed(2).padStart(6)} µs/req`);
console.log(`libuv thread pool only         ${p.toFixed(0).padStart(8)} req/s  ${(1e6 / p).toFixed(2).padStart(6)} µs/req`);
console.log(`ratio cached/pool ${(c / p).toFixed(2)}`);
