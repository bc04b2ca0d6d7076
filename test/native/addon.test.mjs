// The addon alone: layout self-test, error shape, mappings. Needs the addon, not /dev/kvm.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir, constants as osConstants } from 'node:os';
import path from 'node:path';
import { native, addonPath } from '../../dist/native/binding.js';
import { flatLayout } from '../../dist/kvm/layout.js';
import { GuestRam, MADV_NOHUGEPAGE } from '../../dist/kvm/kvm.js';

const n = native();

describe('native addon', () => {
  it('every struct offset and size TypeScript uses equals the C offsetof()/sizeof()', () => {
    const ts = flatLayout();
    const mismatches = Object.entries(ts).filter(([k, v]) => n.layout[k] !== v).map(([k, v]) => `${k}: ts ${v}, C ${n.layout[k]}`);
    assert.deepEqual(mismatches, []);
    assert.ok(Object.keys(ts).length > 100);
  });

  it('every vCPU and VM ioctl on a bad fd throws EBADF naming the ioctl', () => {
    const bad = 1_000_000;
    const calls = {
      KVM_RUN: () => n.run(bad),
      KVM_GET_REGS: () => n.getRegs(bad, new Uint8Array(n.layout['sizeof.kvm_regs'])),
      KVM_SET_SREGS: () => n.setSregs(bad, new Uint8Array(n.layout['sizeof.kvm_sregs'])),
      KVM_SET_CPUID2: () => n.setCpuid2(bad, new Uint8Array(40)),
      KVM_GET_MSRS: () => n.getMsrs(bad, new Uint8Array(16)),
      KVM_GET_XSAVE: () => n.getXsave(bad, new Uint8Array(4096)),
      KVM_CREATE_VCPU: () => n.createVcpu(bad, 0),
      KVM_IRQ_LINE: () => n.irqLine(bad, 4, 1),
      KVM_SET_GSI_ROUTING: () => n.setGsiRouting(bad, new Uint8Array(48)),
      KVM_CREATE_IRQCHIP: () => n.createIrqchip(bad),
    };
    for (const [ioctl, call] of Object.entries(calls)) {
      assert.throws(call, (e) => e.code === 'EBADF' && e.errno === -9 && e.syscall === 'ioctl' && e.ioctl === ioctl && e.message.startsWith(`${ioctl}:`), ioctl);
    }
  });

  it('refuses struct buffers of the wrong size before calling the kernel', () => {
    assert.throws(() => n.getRegs(0, new Uint8Array(10)), /KVM_GET_REGS: expected 144 bytes, got 10/);
    assert.throws(() => n.setCpuid2(0, new Uint8Array(41)), /multiple of 40/);
  });

  it('open() of a missing device throws ENOENT with syscall open', () => {
    assert.throws(() => n.open('/nonexistent/kvm'), (e) => e.code === 'ENOENT' && e.syscall === 'open');
  });

  it('startVmCreation runs KVM_CREATE_VM on a duplicate of the fd (the caller may close its own at once); finishVmCreation reports its errno once', () => {
    const fd = openSync('/dev/null', 'r');
    const job = n.startVmCreation(fd);
    closeSync(fd); // the job's thread has a duplicate: /dev/null answers, not whatever reuses the number
    assert.throws(() => n.finishVmCreation(job), (e) => e.code === 'ENOTTY' && e.ioctl === 'KVM_CREATE_VM');
    assert.throws(() => n.finishVmCreation(job), (e) => e.code === 'ENOENT', 'a job is finished once');
    assert.throws(() => n.startVmCreation(1_000_000), (e) => e.code === 'EBADF');
  });

  it('closeLater closes the fd soon, on the addon\'s release thread (the pipe\'s reader then sees EOF); a bad fd throws at once', async () => {
    const [r, w] = n.pipe(true, true);
    const buf = new Uint8Array(1);
    assert.equal(n.readFd(r, buf), -osConstants.errno.EAGAIN, 'the write end is open');
    n.closeLater(w);
    for (let i = 0; i < 400 && n.readFd(r, buf) !== 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(n.readFd(r, buf), 0, 'EOF: the write end was closed');
    n.close(r);
    assert.throws(() => n.closeLater(-1), (e) => e.code === 'EBADF');
    assert.throws(() => n.closeLater('3'), TypeError);
  });

  it('eventfds count writes and read back non-blocking', () => {
    const fd = n.eventfd(0, true);
    assert.equal(n.eventfdRead(fd), 0);
    n.eventfdWrite(fd, 2);
    n.eventfdWrite(fd, 3);
    assert.equal(n.eventfdRead(fd), 5);
    n.close(fd);
  });

  it('readFd moves bytes and returns -errno instead of throwing (EAGAIN on an empty non-blocking pipe, EBADF)', () => {
    const [r, w] = n.pipe(true, true);
    const buf = new Uint8Array(8);
    assert.equal(n.readFd(r, buf), -osConstants.errno.EAGAIN);
    writeSync(w, Uint8Array.of(1, 2, 3));
    assert.equal(n.readFd(r, buf), 3);
    assert.deepEqual([...buf.subarray(0, 3)], [1, 2, 3]);
    assert.equal(n.readFd(1_000_000, buf), -osConstants.errno.EBADF);
    assert.throws(() => n.readFd(r, [1, 2]), /readFd: expected \(fd, Uint8Array\)/);
    n.close(r);
    n.close(w);
  });

  it('writeEach writes each (offset, length) range with its own write(2), in order, and gives each result: bytes, -errno, -ERANGE outside the view', () => {
    const [r, w] = n.pipe(true, true);
    const bytes = Uint8Array.from({ length: 32 }, (_, i) => i);
    const spans = Uint32Array.of(4, 3, 30, 4, 0, 2, 10, 0, 0xffffffff, 1);
    const results = new Int32Array(5).fill(99);
    assert.equal(n.writeEach(w, bytes, spans, 5, results), undefined);
    assert.deepEqual([...results], [3, -osConstants.errno.ERANGE, 2, 0, -osConstants.errno.ERANGE]);
    const got = new Uint8Array(16);
    assert.equal(n.readFd(r, got), 5);
    assert.deepEqual([...got.subarray(0, 5)], [4, 5, 6, 0, 1], 'the ranges in order, nothing of the refused ones');
    // Only `count` ranges are written, and a count beyond the arrays is refused before any write.
    assert.equal(n.writeEach(w, bytes, spans, 1, results), undefined);
    assert.equal(n.readFd(r, got), 3);
    assert.throws(() => n.writeEach(w, bytes, spans, 6, new Int32Array(6)), /writeEach: expected/);
    assert.throws(() => n.writeEach(w, bytes, spans, 5, new Int32Array(4)), /writeEach: expected/);
    assert.throws(() => n.writeEach(w, bytes, new Float64Array(10), 5, results), /writeEach: expected/);
    assert.equal(n.readFd(r, got), -osConstants.errno.EAGAIN, 'nothing written by the refused calls');
    // A full pipe: -EAGAIN for the frames it cannot take.
    const big = new Uint8Array(1 << 20);
    const res = new Int32Array(2);
    n.writeEach(w, big, Uint32Array.of(0, 1 << 20, 0, 1 << 20), 2, res);
    assert.equal(res[1], -osConstants.errno.EAGAIN);
    n.writeEach(1_000_000, bytes, spans, 1, results);
    assert.equal(results[0], -osConstants.errno.EBADF);
    n.close(r);
    n.close(w);
  });

  it('preadvNoWait scatters a file read over several views, or says why not as -errno', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-addon-'));
    try {
      const file = path.join(dir, 'f');
      writeFileSync(file, Uint8Array.from({ length: 64 }, (_, i) => i));
      const fd = openSync(file, 'r');
      const a = new Uint8Array(3);
      const b = new Uint8Array(5);
      const got = n.preadvNoWait(fd, [a, b], 10);
      // Where the file system cannot promise not to wait (tmpfs), the caller reads another way.
      if (got !== -osConstants.errno.EOPNOTSUPP) {
        assert.equal(got, 8);
        assert.deepEqual([...a, ...b], [10, 11, 12, 13, 14, 15, 16, 17]);
      }
      closeSync(fd);
      assert.equal(n.preadvNoWait(1_000_000, [a], 0), -osConstants.errno.EBADF);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a mapping is one set of pages, viewed from any thread', async () => {
    const id = n.mapAnonymous(1 << 20, 0);
    const a = new Uint8Array(n.mappingBuffer(id));
    a[100] = 42;
    const seen = await new Promise((resolve, reject) => {
      const w = new Worker(
        `const { workerData, parentPort } = require('node:worker_threads');
         const n = require(workerData.addon);
         const b = new Uint8Array(n.mappingBuffer(workerData.id));
         const v = b[100]; b[101] = 7; parentPort.postMessage(v);`,
        { eval: true, workerData: { id, addon: addonPath() } },
      );
      w.on('message', resolve);
      w.on('error', reject);
    });
    assert.equal(seen, 42);
    assert.equal(a[101], 7);
    n.releaseMapping(id);
    assert.throws(() => n.mappingBuffer(id), (e) => e.code === 'EBADF');
  });

  it('advises a range of a mapping (madvise), and refuses a range outside it', () => {
    // Anonymous 2 MiB regions flagged nh (no huge pages) in this process.
    const nhRegions = () => readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)
      .filter((r) => /^VmFlags:.* nh/m.test(r) && /^Size:\s+2048 kB$/m.test(r) && /^[0-9a-f]+-[0-9a-f]+ rw-p 00000000 00:00 0 /.test(r)).length;
    const ram = GuestRam.allocate(64 << 20);
    const before = nhRegions();
    ram.noHugePages(0, 2 << 20);
    assert.equal(nhRegions(), before + 1, 'the first 2 MiB became a region of their own, in small pages');
    assert.throws(() => n.adviseMapping(ram.mappingId, 64 << 20, 4096, MADV_NOHUGEPAGE), (e) => e.code === 'EINVAL' && /adviseMapping/.test(e.message));
    assert.throws(() => n.adviseMapping(999_999, 0, 4096, MADV_NOHUGEPAGE), (e) => e.code === 'EBADF');
    ram.release();
  });

  it('guest RAM with transparent huge pages asked for starts on a 2 MiB boundary, and is the size asked for in whole pages', () => {
    // Flagged hg (MADV_HUGEPAGE), each mapping is a region of its own in smaps (not merged with
    // neighbours), so its start and size can be read there. A size that is not a multiple of 2 MiB
    // is where kernels leave a mapping unaligned (all of them before 6.7).
    const hgRegions = () => new Set(readFileSync('/proc/self/smaps', 'utf8').split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)
      .filter((r) => /^VmFlags:.* hg/m.test(r)).map((r) => r.slice(0, r.indexOf(' '))));
    for (const bytes of [4096, (6 << 20) + 4096, 64 << 20, (130 << 20) + (1 << 20), (2 << 20) + 100]) {
      const before = hgRegions();
      const id = n.mapAnonymous(bytes, 1);
      try {
        const added = [...hgRegions()].filter((r) => !before.has(r));
        assert.equal(added.length, 1, `one new region for ${bytes} bytes: ${added}`);
        const [start, end] = added[0].split('-').map((x) => BigInt(`0x${x}`));
        const pages = BigInt(Math.ceil(bytes / 4096) * 4096);
        assert.equal(end - start, pages, `${added[0]} is the ${bytes} bytes asked for, in whole pages`);
        assert.equal(start % (2n << 20n), 0n, `${added[0]} starts on a 2 MiB boundary`);
      } finally {
        n.releaseMapping(id);
      }
    }
  });

  it('views a mapping in parts, and refuses views past its end or larger than 2 GiB (ERANGE)', () => {
    const id = n.mapAnonymous(3 * 2 ** 30); // MAP_NORESERVE: costs nothing until touched
    const part = new Uint8Array(n.mappingBuffer(id, 2 ** 30, 4096));
    part[0] = 9;
    assert.equal(new Uint8Array(n.mappingBuffer(id, 2 ** 30, 1))[0], 9);
    assert.throws(() => n.mappingBuffer(id), (e) => e.code === 'ERANGE');
    assert.throws(() => n.mappingBuffer(id, 3 * 2 ** 30 - 10, 20), (e) => e.code === 'ERANGE');
    n.releaseMapping(id);
  });

  it('a released mapping is unmapped, all of it, once its last view is collected (on the release thread, in chunks)', () => {
    // In a child with --expose-gc. 100 MiB + 12 KiB: not a multiple of the unmap chunk, and a size
    // no other mapping of the child has, to find it in /proc/self/maps.
    const script = `
      const { readFileSync } = require('node:fs');
      const n = require(${JSON.stringify(addonPath())});
      const SIZE = (100 << 20) + 12288;
      const ranges = () => readFileSync('/proc/self/maps', 'utf8').trim().split('\\n').map((l) => l.split(' ')[0].split('-').map((x) => parseInt(x, 16)));
      const before = new Set(ranges().map(([a]) => a));
      const id = n.mapAnonymous(SIZE, 0);
      let view = new Uint8Array(n.mappingBuffer(id));
      for (let i = 0; i < SIZE; i += 4096) view[i] = 1; // touched: real pages to free
      const found = ranges().find(([a, b]) => b - a === SIZE && !before.has(a));
      if (!found) throw new Error('the mapping is not in /proc/self/maps');
      const [start, end] = found;
      const left = () => ranges().filter(([a, b]) => a < end && b > start).length;
      n.releaseMapping(id);
      global.gc();
      console.log('after release, view alive: ' + left());
      view = null;
      global.gc();
      const t0 = Date.now();
      (function check() {
        if (left() === 0) return console.log('unmapped');
        if (Date.now() - t0 > 10000) return console.log('still mapped: ' + left());
        setTimeout(check, 10);
      })();
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    assert.match(out, /after release, view alive: 1\n/, 'a view keeps its pages mapped');
    assert.match(out, /unmapped/);
  });

  it('guest RAM views cost no garbage collection, however large (SharedArrayBuffers, outside V8\'s external-memory count)', () => {
    // A child with --trace-gc and a live heap: 40 views of 128 MiB, as 40 machines' RAM. As external
    // ArrayBuffers they started several full collections of that heap; now none.
    const script = `
      const n = require(${JSON.stringify(addonPath())});
      const live = Array.from({ length: 200000 }, (_, i) => ({ i, s: 'item ' + i }));
      console.log('views-start');
      const views = [];
      for (let i = 0; i < 40; i++) views.push(new Uint8Array(n.mappingBuffer(n.mapAnonymous(128 << 20, 0))));
      console.log('views-end ' + (views[0].buffer instanceof SharedArrayBuffer) + ' ' + live.length); // one string: FORCE_COLOR (a test run on a terminal) colours booleans
    `;
    const out = execFileSync(process.execPath, ['--trace-gc', '-e', script], { encoding: 'utf8' });
    const during = out.slice(out.indexOf('views-start'), out.indexOf('views-end'));
    assert.match(out, /views-end true/);
    assert.equal((during.match(/Mark-Compact/g) ?? []).length, 0, during);
  });

  it('file and fd I/O work on views of guest RAM (SharedArrayBuffer-backed): preadv, pwritev, readFd, writeEach', () => {
    const id = n.mapAnonymous(1 << 20, 0);
    const ram = new Uint8Array(n.mappingBuffer(id));
    const dir = mkdtempSync(path.join(tmpdir(), 'nv-addon-'));
    try {
      const file = path.join(dir, 'f');
      writeFileSync(file, Uint8Array.from({ length: 64 }, (_, i) => i));
      const fd = openSync(file, 'r+');
      assert.equal(n.preadvNoWait(fd, [ram.subarray(100, 104), ram.subarray(200, 204)], 8, true), 8);
      assert.deepEqual([...ram.subarray(100, 104), ...ram.subarray(200, 204)], [8, 9, 10, 11, 12, 13, 14, 15]);
      ram.set([0xaa, 0xbb], 300);
      assert.equal(n.pwritevAt(fd, [ram.subarray(300, 302)], 0), 2);
      closeSync(fd);
      const [r, w] = n.pipe(true, true);
      const results = new Int32Array(1);
      n.writeEach(w, ram, Uint32Array.of(300, 2), 1, results);
      assert.equal(results[0], 2);
      assert.equal(n.readFd(r, ram.subarray(400, 408)), 2);
      assert.deepEqual([...ram.subarray(400, 402)], [0xaa, 0xbb]);
      n.close(r);
      n.close(w);
      const file2 = Uint8Array.from(readFileSync(file).subarray(0, 2));
      assert.deepEqual([...file2], [0xaa, 0xbb]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      n.releaseMapping(id);
    }
  });

  it('rejects a zero-sized mapping', () => {
    assert.throws(() => n.mapAnonymous(0), (e) => e.code === 'EINVAL');
  });
});
