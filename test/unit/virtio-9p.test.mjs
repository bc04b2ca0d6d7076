import { describe, it, beforeEach, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VirtioNinep, P9_MAX_TAG_LEN, P9_NOTIFY_BUDGET } from '../../dist/devices/virtio/p9/device.js';
import { SplitQueue } from '../../dist/devices/virtio/queue.js';
import { VIRTIO_ID } from '../../dist/devices/virtio/constants.js';
import { fakeMemory } from '../helpers/fake-memory.mjs';
import { DriverQueue } from '../helpers/driver-queue.mjs';
import { P9Client, Msg, T, E, O, NOTAG, ecodeOf, header } from '../helpers/p9-client.mjs';

const REQ = 0x10000; // request buffers
const REPLY = 0x40000; // reply buffers
const GUARD = 0xa5;

let share;
const made = [];
beforeEach(() => {
  share = fs.mkdtempSync(path.join(os.tmpdir(), 'virtio-9p-test-'));
  made.push(share);
  fs.writeFileSync(path.join(share, 'file.txt'), 'contents of the shared file');
  fs.writeFileSync(path.join(share, 'big.bin'), Buffer.alloc(10000, 0x42));
});
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

/** A device activated on a fake-memory queue, with a context that records what the model does. */
function rig(opts = {}) {
  const mem = fakeMemory(1 << 20);
  const d = new DriverQueue(mem, 0x1000, 16);
  const q = new SplitQueue(mem, d.config, { indirect: false, eventIdx: false });
  const events = { usedAdded: [], warn: [] };
  const ctx = {
    mem,
    negotiated: (1n << 32n) | 1n,
    queue: (i) => (i === 0 ? q : undefined),
    usedAdded: (i, before) => events.usedAdded.push([i, before]),
    configChanged() {},
    fail(e) { throw e; },
    live: true,
    log: { warn: (obj, msg) => events.warn.push([obj, msg]), info() {}, debug() {} },
  };
  // No time limit per turn here: these tests count batches, which a slow (emulated) host must not change.
  const dev = new VirtioNinep({ root: share, tag: 'hostshare', turnBudgetMs: Infinity, ...opts });
  dev.activate(ctx);
  return { mem, d, q, dev, events };
}

/**
 * Sends one request as a chain: the request split into `reqSplit` readable buffers and the reply room
 * into writable buffers of the sizes given, each followed by guard bytes. Returns the reply bytes and
 * the used length, and checks that no guard byte changed.
 */
function exchange({ mem, d, dev }, request, replySizes = [8192], reqSplit = 1) {
  const bufs = [];
  const step = Math.ceil(request.length / reqSplit) || 0;
  for (let i = 0, at = REQ; i < reqSplit; i++, at += step + 64) {
    const part = request.subarray(i * step, (i + 1) * step);
    mem.write(at, part);
    bufs.push({ addr: at, len: part.length });
  }
  let at = REPLY;
  const writable = [];
  for (const len of replySizes) {
    mem.slice(at, len + 64).fill(GUARD);
    writable.push({ addr: at, len, write: true });
    at += len + 64;
  }
  const before = d.usedIdx();
  const head = d.addChain([...bufs, ...writable]);
  dev.notify(0);
  assert.equal(d.usedIdx(), (before + 1) & 0xffff, 'one used entry');
  const used = d.usedElem(before % d.size);
  assert.equal(used.id, head);
  const reply = new Uint8Array(used.len);
  let got = 0;
  for (const w of writable) {
    const n = Math.min(w.len, used.len - got);
    reply.set(mem.read(w.addr, n), got);
    got += n;
    assert.ok(mem.read(w.addr + w.len, 64).every((b) => b === GUARD), 'nothing written past a writable buffer');
    if (n < w.len) assert.ok(mem.read(w.addr + n, w.len - n).every((b) => b === GUARD), 'nothing written past the reply');
  }
  return { reply, used: used.len };
}

/** A 9P client whose transport is the virtio queue. */
const clientOver = (r, replySizes, reqSplit) => new P9Client((req) => exchange(r, req, replySizes, reqSplit).reply);

describe('virtio-9p device model', () => {
  it('describes itself: id 9, MOUNT_TAG feature, one queue of 128, tag in the config space', () => {
    const dev = new VirtioNinep({ root: share, tag: 'hostshare' });
    assert.equal(dev.kind, '9p');
    assert.equal(dev.deviceId, VIRTIO_ID.NINEP);
    assert.equal(dev.deviceId, 9);
    assert.equal(dev.features, 1n);
    assert.deepEqual([...dev.queueMaxSizes], [128]);
    assert.equal(dev.configSize, 2 + 9);
    const config = new DataView(new ArrayBuffer(dev.configSize));
    dev.bindConfig(config);
    assert.equal(config.getUint16(0, true), 9);
    assert.equal(new TextDecoder().decode(new Uint8Array(config.buffer, 2)), 'hostshare');
  });

  it('validates the tag (1..36 bytes of UTF-8, no control characters) and the root', () => {
    const bad = (tag, re) => assert.throws(() => new VirtioNinep({ root: share, tag }), (e) => e.code === 'BAD_CONFIG' && re.test(e.message));
    bad('', /empty/);
    bad('x'.repeat(P9_MAX_TAG_LEN + 1), /37 bytes/);
    bad('é'.repeat(19), /38 bytes/); // 19 characters, 38 bytes
    bad('a\nb', /control/);
    bad('a\0b', /control/);
    bad('\ud800', /Unicode/);
    assert.equal(new VirtioNinep({ root: share, tag: 'x'.repeat(P9_MAX_TAG_LEN) }).configSize, 2 + 36);
    const dev = new VirtioNinep({ root: share, tag: 'données' });
    assert.equal(dev.configSize, 2 + 8);
    assert.throws(() => new VirtioNinep({ root: path.join(share, 'file.txt'), tag: 't' }), (e) => e.code === 'BAD_CONFIG' && /not a directory/.test(e.message));
    assert.throws(() => new VirtioNinep({ root: path.join(share, 'missing'), tag: 't' }), (e) => e.code === 'BAD_CONFIG' && /missing/.test(e.message));
  });

  it('Tversion, Tattach, Twalk, Tlopen, Tread through the queue return the file contents', () => {
    const r = rig();
    const c = clientOver(r);
    assert.deepEqual(c.version(65536), { msize: 65536, version: '9P2000.L' });
    assert.equal(c.attach(1).qid.type, 0x80);
    assert.equal(c.walk(1, 2, ['file.txt']).qids.length, 1);
    assert.equal(c.lopen(2, O.RDONLY).ecode, undefined);
    assert.equal(new TextDecoder().decode(c.read(2, 0, 1000).data), 'contents of the shared file');
    assert.equal(r.events.usedAdded.length, 5, 'one usedAdded per notification');
    assert.deepEqual(r.events.usedAdded.at(-1), [0, 4], 'with the used index from before the batch');
  });

  it('gathers a request split over several buffers and scatters the reply over several', () => {
    const r = rig();
    const c = clientOver(r, [5, 3, 100, 4096], 3);
    c.version(8192);
    c.attach(1);
    c.walk(1, 2, ['big.bin']);
    c.lopen(2, O.RDONLY);
    const data = c.read(2, 100, 4000).data;
    assert.equal(data.length, 4000);
    assert.ok(data.every((b) => b === 0x42));
    const w = c.walk(1, 3, ['file.txt']);
    assert.equal(w.qids.length, 1);
  });

  it('serves every chain available at a notification and reports them in one batch', () => {
    const r = rig();
    const msgs = [new Msg(T.version, NOTAG).u32(8192).str('9P2000.L').done(), new Msg(T.attach, 1).u32(1).u32(0xffffffff).str('').str('').u32(0).done()];
    msgs.forEach((m, i) => {
      r.mem.write(REQ + i * 256, m);
      r.d.addChain([{ addr: REQ + i * 256, len: m.length }, { addr: REPLY + i * 256, len: 256, write: true }]);
    });
    r.dev.notify(0);
    assert.equal(r.d.usedIdx(), 2);
    assert.deepEqual(r.events.usedAdded, [[0, 0]]);
    assert.equal(header(r.mem.read(REPLY + 256, 20)).type, T.attach + 1);
    r.dev.notify(1); // no such queue: ignored
    assert.equal(r.events.usedAdded.length, 1);
  });

  it('a reply larger than the writable buffers: reads are cut to fit, other replies become EMSGSIZE', () => {
    const r = rig();
    const c = clientOver(r);
    c.version(65536);
    c.attach(1);
    c.walk(1, 2, ['big.bin']);
    c.lopen(2, O.RDONLY);
    // Tread for 5000 bytes with 100 bytes of room: 89 bytes of data, nothing past the buffer.
    const read = exchange(r, new Msg(T.read, 7).u32(2).u64(0).u32(5000).done(), [60, 40]);
    assert.equal(read.used, 100);
    assert.equal(header(read.reply).type, T.read + 1);
    assert.equal(new DataView(read.reply.buffer).getUint32(7, true), 89);
    // Rgetattr is 160 bytes: in 50 it cannot be cut, so the guest gets an error it can read.
    const attr = exchange(r, new Msg(T.getattr, 8).u32(2).u64(0x7ff).done(), [50]);
    assert.equal(attr.used, 11);
    assert.equal(ecodeOf(attr.reply), E.EMSGSIZE);
    assert.equal(header(attr.reply).tag, 8);
  });

  it('a chain without room for any reply is returned unserved, and the request is not carried out', () => {
    const r = rig();
    const c = clientOver(r);
    c.version(65536);
    c.attach(1);
    c.walk(1, 2, ['file.txt']);
    assert.equal(r.dev.server.fidCount, 2);
    const res = exchange(r, new Msg(T.clunk, 9).u32(2).done(), [10]);
    assert.equal(res.used, 0);
    assert.equal(r.dev.server.fidCount, 2, 'the clunk was not done');
    assert.equal(r.events.warn.length, 1);
    const none = exchange(r, new Msg(T.clunk, 9).u32(2).done(), []);
    assert.equal(none.used, 0);
  });

  it('a request larger than msize is answered EMSGSIZE without being copied or served', () => {
    const r = rig();
    const c = clientOver(r);
    c.version(8192);
    c.attach(1);
    c.walk(1, 2, ['file.txt']);
    c.lopen(2, O.RDWR);
    const data = new Uint8Array(9000).fill(0x61);
    const big = new Msg(T.write, 12).u32(2).u64(0).u32(data.length).raw(data).done();
    const res = exchange(r, big, [4096], 3);
    assert.equal(ecodeOf(res.reply), E.EMSGSIZE);
    assert.equal(header(res.reply).tag, 12);
    assert.equal(fs.readFileSync(path.join(share, 'file.txt'), 'utf8'), 'contents of the shared file');
    // A request claiming more bytes than the chain holds is malformed.
    const short = new Msg(T.clunk, 13).u32(2).done();
    new DataView(short.buffer).setUint32(0, 100, true);
    assert.equal(ecodeOf(exchange(r, short).reply), E.EPROTO);
    // No readable buffer at all.
    const empty = exchange(r, new Uint8Array(0), [64], 0);
    assert.equal(ecodeOf(empty.reply), E.EPROTO);
    assert.equal(header(empty.reply).tag, NOTAG);
    assert.equal(c.write(2, 0, 'C').count, 1, 'still serving');
  });

  it('a read-only share refuses writes through the queue too', () => {
    const r = rig({ readOnly: true });
    const c = clientOver(r);
    c.version(8192);
    c.attach(1);
    c.walk(1, 2, ['file.txt']);
    assert.equal(c.lopen(2, O.WRONLY).ecode, E.EROFS);
    assert.equal(c.mkdir(1, 'd').ecode, E.EROFS);
    assert.ok(!fs.existsSync(path.join(share, 'd')));
  });

  it('reset forgets the queue and the session; notify before activation does nothing', () => {
    const r = rig();
    const c = clientOver(r);
    c.version(8192);
    c.attach(1);
    r.dev.reset();
    assert.equal(r.dev.server.fidCount, 0);
    assert.equal(r.dev.server.msize, 0);
    r.d.addChain([{ addr: REQ, len: 7 }, { addr: REPLY, len: 64, write: true }]);
    r.dev.notify(0);
    assert.equal(r.d.usedIdx(), 2, 'nothing served after reset');
    const fresh = new VirtioNinep({ root: share, tag: 't' });
    fresh.notify(0);
    fresh.close();
  });
});

describe('virtio-9p: a guest cannot hold the main thread or flood the log', () => {
  function bigRig(opts = {}) {
    const mem = fakeMemory(1 << 20);
    const d = new DriverQueue(mem, 0x1000, 128);
    const q = new SplitQueue(mem, d.config, { indirect: false, eventIdx: false });
    const warn = [];
    const dev = new VirtioNinep({ root: share, tag: 't', ...opts });
    dev.activate({ mem, negotiated: (1n << 32n) | 1n, queue: () => q, usedAdded() {}, configChanged() {}, fail(e) { throw e; }, live: true, log: { warn: (o, m) => warn.push(m), info() {}, debug() {} } });
    return { mem, d, dev, warn };
  }

  it(`serves at most ${P9_NOTIFY_BUDGET} requests (or 10 ms) per notification and the rest on the next event-loop turns`, async () => {
    const { mem, d, dev } = bigRig();
    const req = new Msg(T.clunk, 1).u32(5).done(); // before Tversion: a quick Rlerror
    mem.write(REQ, req);
    for (let i = 0; i < 100; i++) d.addChain([{ addr: REQ, len: req.length }, { addr: REPLY + 64 * i, len: 64, write: true }]);
    dev.notify(0);
    // At most the budget; fewer if P9_TURN_BUDGET_MS ran out first (a slow, emulated host).
    const first = d.usedIdx();
    assert.ok(first >= 1 && first <= P9_NOTIFY_BUDGET, `${first} served at once`);
    for (let turn = 0; turn < 200 && d.usedIdx() < 100; turn++) await new Promise((r) => setImmediate(r));
    assert.equal(d.usedIdx(), 100, 'the rest were served without another notification');
    dev.reset();
  });

  it('chains without room for a reply are logged once per activation, not once each', () => {
    const { mem, d, dev, warn } = bigRig({ turnBudgetMs: Infinity }); // counts lines, not batches
    mem.write(REQ, new Uint8Array(16));
    for (let i = 0; i < 20; i++) d.addChain([{ addr: REQ, len: 16 }]);
    dev.notify(0);
    assert.equal(d.usedIdx(), 20);
    assert.equal(warn.length, 1);
    assert.match(warn[0], /without room for a reply.*further ones are not logged/);
    dev.reset();
  });
});
