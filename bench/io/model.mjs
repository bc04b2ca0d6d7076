#!/usr/bin/env node
// bench/io/model.mjs: nodevisor's virtio device models alone, no guest and no KVM, against a C
// reference (reference.c) that makes only the system calls no VMM can avoid. A driver in fake guest
// memory keeps requests in flight and the model serves them as it does for a guest (pop, parse,
// host I/O, used ring, interrupt decision), so `ratio nodevisor/C` is what our code adds per request.
//   blk: random 4 KiB reads at QD 32 of a raw image in the page cache. Two read paths: the page
//        cache first (preadv2 RWF_NOWAIT, the default) and every read through libuv's thread pool.
//        C: the same preadv2 calls in a loop.
//   net: 1514-byte frames transmitted to a tap (in a network namespace of our own), 128 in flight.
//        C: the same write(2)s in a loop.
// Runs on any Linux host (root for the namespace). Lower µs is better; target ratio close to 1.
//
// Usage: node bench/io/model.mjs [--only blk|net] [--requests 50000] [--frames 100000] [--runs 5]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { VirtioBlk } from '../../dist/devices/virtio/blk.js';
import { VirtioNet } from '../../dist/devices/virtio/net.js';
import { SplitQueue } from '../../dist/devices/virtio/queue.js';
import { GuestMemory } from '../../dist/memory/guest-memory.js';
import { median } from '../lib/stats.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values: opt } = parseArgs({
  options: {
    only: { type: 'string' }, requests: { type: 'string', default: '50000' }, frames: { type: 'string', default: '100000' },
    runs: { type: 'string', default: '5' }, inside: { type: 'string' }, reference: { type: 'string' },
  },
});
const RUNS = Number(opt.runs);
const QUEUE = 256;

/** Fake guest RAM with one queue's rings at the bottom; returns the pieces a driver needs. */
function driverRings(qd) {
  const bytes = new Uint8Array(8 << 20);
  const mem = new GuestMemory([{ gpa: 0, size: bytes.length, bytes }]);
  const desc = 0x1000;
  const avail = desc + 16 * QUEUE;
  const used = (avail + 6 + 2 * QUEUE + 3) & ~3;
  const q = new SplitQueue(mem, { size: QUEUE, descAddr: desc, availAddr: avail, usedAddr: used }, { indirect: false, eventIdx: false });
  let availIdx = 0;
  let usedSeen = 0;
  return {
    mem, q, qd,
    putDesc(i, addr, len, flags, next) {
      mem.writeU64(desc + 16 * i, BigInt(addr));
      mem.writeU32(desc + 16 * i + 8, len);
      mem.writeU16(desc + 16 * i + 12, flags);
      mem.writeU16(desc + 16 * i + 14, next);
    },
    publish(head) {
      mem.writeU16(avail + 4 + 2 * (availIdx % QUEUE), head);
      availIdx = (availIdx + 1) & 0xffff;
      mem.writeU16(avail + 2, availIdx);
    },
    /** Calls fn(head) for each chain the device returned since the last call. */
    reap(fn) {
      while (usedSeen !== mem.readU16(used + 2)) {
        fn(mem.readU32(used + 4 + 8 * (usedSeen % QUEUE)));
        usedSeen = (usedSeen + 1) & 0xffff;
      }
    },
  };
}

/**
 * Runs `total` requests through `device`: request `slot` is posted by post(slot) with head
 * slot * stride; the driver reaps in its interrupt handler, reposts, and kicks once per batch.
 * Resolves requests per second.
 */
function drive(device, queueIndex, rings, total, stride, post) {
  return new Promise((resolve) => {
    let issued = 0;
    let done = 0;
    let t0;
    const issue = (slot) => {
      post(slot);
      issued++;
    };
    const ctx = {
      mem: rings.mem, negotiated: 1n << 32n, live: true,
      queue: (i) => (i === queueIndex ? rings.q : undefined),
      usedAdded: () => {
        let reposted = false;
        rings.reap((head) => {
          done++;
          if (issued < total) {
            issue(head / stride);
            reposted = true;
          }
        });
        if (done === total) resolve(total / (Number(process.hrtime.bigint() - t0) / 1e9));
        else if (reposted) setImmediate(() => device.notify(queueIndex)); // the guest's kick
      },
      configChanged() {}, fail: (e) => { throw e; }, log: { warn: (_o, m) => { throw new Error(m); }, info() {}, debug() {} },
    };
    device.activate(ctx);
    t0 = process.hrtime.bigint();
    for (let s = 0; s < rings.qd; s++) issue(s);
    device.notify(queueIndex);
  });
}

async function blkPass(image, requests, cachedRead) {
  const rings = driverRings(32);
  const blk = new VirtioBlk({ path: image, ...(cachedRead ? {} : { cachedRead: false }) });
  const blocks = (64 << 20) / 4096;
  let seed = 12345;
  // Request `slot`: header, 4 KiB of data, status, in descriptors 3 slot .. 3 slot + 2.
  const rate = await drive(blk, 0, rings, requests, 3, (slot) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const hdr = 0x10000 + 32 * slot;
    rings.mem.writeU32(hdr, 0); // VIRTIO_BLK_T_IN
    rings.mem.writeU64(hdr + 8, BigInt((seed % blocks) * 8));
    const d = 3 * slot;
    rings.putDesc(d, hdr, 16, 1, d + 1);
    rings.putDesc(d + 1, 0x100000 + 4096 * slot, 4096, 3, d + 2);
    rings.putDesc(d + 2, hdr + 16, 1, 2, 0);
    rings.publish(d);
  });
  await blk.close();
  return rate;
}

async function netPass(tap, frames) {
  const rings = driverRings(128);
  const net = new VirtioNet({ tap, offloads: false });
  net.bindConfig(new DataView(new ArrayBuffer(16), 0, net.configSize));
  // Request `slot`: one buffer, the 12-byte header (all zero) and a broadcast frame of the IEEE
  // local experimental ethertype, which the host's stack drops, as reference.c sends.
  for (let slot = 0; slot < 128; slot++) {
    const at = 0x100000 + 2048 * slot;
    rings.mem.slice(at + 12, 6).fill(0xff);
    rings.mem.writeU8(at + 24, 0x88);
    rings.mem.writeU8(at + 25, 0xb5);
  }
  const rate = await drive(net, 1, rings, frames, 1, (slot) => {
    rings.putDesc(slot, 0x100000 + 2048 * slot, 12 + 1514, 0, 0);
    rings.publish(slot);
  });
  net.close();
  return rate;
}

/** ns per operation from the C reference. */
const reference = (...args) => Number(/ns_per_op ([\d.]+)/.exec(execFileSync(opt.reference, args, { encoding: 'utf8' }))[1]);

if (opt.inside) {
  // Inside the namespace (see below): nodevisor's passes, then the C reference's, alternated.
  const js = [];
  const c = [];
  for (let i = 0; i < RUNS; i++) {
    js.push(await netPass(opt.inside, Number(opt.frames)));
    c.push(1e9 / reference('tap', opt.inside, opt.frames));
  }
  console.log(JSON.stringify({ js: median(js), c: median(c) }));
  process.exit(0);
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-io-model-'));
opt.reference = path.join(dir, 'reference');
execFileSync('cc', ['-O2', '-Wall', '-o', opt.reference, path.join(here, 'reference.c')], { stdio: 'inherit' });
const line = (name, perSec, cPerSec) => console.log(`${name.padEnd(34)} ${(1e6 / perSec).toFixed(2).padStart(7)} µs  C ${(1e6 / cPerSec).toFixed(2).padStart(6)} µs  ratio nodevisor/C ${(cPerSec / perSec).toFixed(2)}`);
try {
  console.log(`bench/io model: device models alone, against reference.c's system calls; medians of ${RUNS}`);
  if (opt.only !== 'net') {
    const image = path.join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(64 << 20, 0x5a)); // just written: in the page cache
    const requests = Number(opt.requests);
    const cached = [];
    const pool = [];
    const c = [];
    for (let i = 0; i < RUNS; i++) {
      cached.push(await blkPass(image, requests, true));
      pool.push(await blkPass(image, requests, false));
      c.push(1e9 / reference('blk', image, String(requests)));
    }
    line('blk 4 KiB read, page cache first', median(cached), median(c));
    line('blk 4 KiB read, thread pool only', median(pool), median(c));
  }
  if (opt.only !== 'blk') {
    const ns = `nvmodel-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const ip = (...a) => execFileSync('ip', ['netns', 'exec', ns, 'ip', ...a]);
      ip('tuntap', 'add', 'nvm0', 'mode', 'tap', 'vnet_hdr');
      ip('link', 'set', 'nvm0', 'up');
      const out = execFileSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--inside', 'nvm0', '--reference', opt.reference, '--frames', opt.frames, '--runs', opt.runs], { encoding: 'utf8' });
      const { js, c } = JSON.parse(out.trim().split('\n').pop());
      line('net 1514-byte frame to a tap', js, c);
    } finally {
      execFileSync('ip', ['netns', 'delete', ns]);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
