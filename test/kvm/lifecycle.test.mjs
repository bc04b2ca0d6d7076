// Pause and resume on real KVM: a guest that counts in memory stops counting while paused.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, closeSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Machine } from '../../dist/index.js';
import { guest, needsKvm } from '../helpers/kvm.mjs';
import { waitFor } from '../helpers/wait.mjs';
import { native } from '../../dist/native/binding.js';
import { KVM_CAP } from '../../dist/kvm/constants.js';
import { Kvm, BURST_MS } from '../../dist/kvm/kvm.js';
import { VM_SETUP } from '../../dist/vmm/machine.js';
import { HANDOFF_SLICELESS_MS, HANDOFF_AT_LATEST_MS, STALL_MS } from '../../dist/vmm/main-thread-vcpu.js';
import { SIZEOF } from '../../dist/kvm/layout.js';

const COUNTER = 0x10008; // counter.bin keeps its count at image offset 8
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** This process's fds that are `target` (a path, or an anon inode such as 'anon_inode:kvm-vm'). */
const fdsOf = (target) => readdirSync('/proc/self/fd').filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`) === target; } catch { return false; } });
const vmFds = () => fdsOf('anon_inode:kvm-vm');

/** A debug logger whose records land in `lines`. */
function debugLog() {
  const lines = [];
  const sink = new Writable({ write(chunk, _enc, cb) { lines.push(...chunk.toString().trim().split('\n').map((l) => JSON.parse(l))); cb(); } });
  return { lines, log: pino({ level: 'debug' }, sink) };
}

/** The counter guest with startOnMainThread, and whether its debug log says its vCPU has moved to its thread. */
function counterOnMainThread() {
  const { lines, log } = debugLog();
  const fd = openSync('/dev/null', 'w');
  const m = Machine.create({ kernel: guest('counter.bin'), memBytes: 32 << 20, consoleFd: fd, startOnMainThread: true, logLevel: 'debug' }, log);
  const moved = () => lines.some((l) => l.msg === 'vcpu moved from the main thread to its own thread');
  return { m, fd, moved, lines };
}

describe('Machine lifecycle', needsKvm, () => {
  it('pause() parks the guest (its counter stops), resume() lets it run on; states are emitted', async () => {
    const fd = openSync('/dev/null', 'w');
    const m = Machine.create({ kernel: guest('counter.bin'), memBytes: 32 << 20, consoleFd: fd });
    const states = [];
    m.on('state', (s) => states.push(s));
    const done = m.start();
    const count = () => m.mem.readU32(COUNTER);
    await waitFor(() => count() > 0, 2_000);
    const c0 = count();
    await sleep(100);
    assert.ok(count() > c0, 'counting while running');

    await m.pause();
    assert.equal(m.state, 'paused');
    const p0 = count();
    await sleep(300);
    assert.equal(count(), p0, 'no progress while paused');

    m.resume();
    await sleep(200);
    assert.ok(count() > p0, 'counting again after resume');

    await assert.rejects(() => m.pause().then(() => m.pause()), /pause\(\) in state paused/);
    assert.throws(() => m.start(), /start\(\) in state/);
    m.kill();
    assert.deepEqual(await done, { kind: 'killed' });
    assert.deepEqual(states, ['running', 'paused', 'running', 'paused', 'stopping', 'stopped']);
    closeSync(fd);
  });

  it('startOnMainThread: the guest starts on the main thread, pauses there, then moves to its own thread and pauses there too', async () => {
    const { m, fd, moved } = counterOnMainThread();
    const count = () => m.mem.readU32(COUNTER);
    const done = m.start();
    try {
      // Paused at once, before the guest has run HANDOFF_AFTER_MS: it is still on the main thread,
      // and stays there while paused.
      await m.pause();
      const p0 = count();
      await sleep(300);
      assert.equal(count(), p0, 'no progress while paused on the main thread');
      assert.equal(moved(), false, 'a paused guest does not move');
      m.resume();
      // Running, it keeps the main thread's event loop turning (these timers fire), and moves.
      await waitFor(() => moved(), 10_000);
      assert.ok(moved(), 'moved to its own thread');
      assert.ok(count() > p0, 'counting after resume');

      await m.pause();
      const p1 = count();
      await sleep(300);
      assert.equal(count(), p1, 'no progress while paused on its own thread');
      m.resume();
      await sleep(200);
      assert.ok(count() > p1, 'counting again');
    } finally {
      m.kill(); // also when an assertion failed: the guest would otherwise keep this process alive
    }
    assert.deepEqual(await done, { kind: 'killed' });
    closeSync(fd);
  });

  it('startOnMainThread: a main thread whose event loop never sleeps does not starve the guest: it moves to its thread', async () => {
    const { m, fd, moved } = counterOnMainThread();
    const done = m.start();
    try {
      // An immediate always pending: the loop never waits, so the guest gets no slice on this thread.
      const t0 = performance.now();
      while (!moved() && performance.now() - t0 < 30_000) await new Promise((r) => setImmediate(r));
      assert.ok(moved(), 'moved to its own thread while this thread was busy');
      await waitFor(() => m.mem.readU32(COUNTER) > 0, 5_000);
      assert.ok(m.mem.readU32(COUNTER) > 0, 'the guest runs');
    } finally {
      m.kill(); // also when an assertion failed: a starved guest would otherwise keep this process alive
    }
    assert.deepEqual(await done, { kind: 'killed' });
    closeSync(fd);
  });

  it('startOnMainThread: a guest whose first slice comes after the first check still starts its thread once it has had its time, not a second later', async () => {
    const { m, fd, lines } = counterOnMainThread();
    const done = m.start();
    try {
      // Synchronous work right after start(), longer than HANDOFF_AFTER_MS: the first check of the
      // guest's clock comes before its first slice (as it does for `nodevisor run` under emulation).
      const t0 = performance.now();
      while (performance.now() - t0 < 100);
      const starting = () => lines.find((l) => /starting its vCPU thread/.test(l.msg));
      await waitFor(() => starting(), 5_000);
      assert.ok(starting(), 'its thread was started');
      // The clock runs from the first slice: ~HANDOFF_AFTER_MS of guest time after the 100 ms above,
      // not HANDOFF_SLICELESS_MS after the first check (then it started at >= 1100 ms).
      assert.ok(starting().ms < HANDOFF_SLICELESS_MS, `started ${starting().ms} ms after start(): not before a second look HANDOFF_SLICELESS_MS (${HANDOFF_SLICELESS_MS} ms) after the first`);
      assert.equal(starting().msg, 'guest still running: starting its vCPU thread', 'it had its time: not starved');
    } finally {
      m.kill();
    }
    assert.deepEqual(await done, { kind: 'killed' });
    closeSync(fd);
  });

  it('startOnMainThread: a stretch in which the event loop could not run at all (a long synchronous call, or no CPU for the process) is not counted as the loop being too busy for the guest', async () => {
    const { m, fd, lines } = counterOnMainThread();
    const count = () => m.mem.readU32(COUNTER);
    const done = m.start();
    try {
      // A few short waits of the loop: slices of a millisecond or so each, which start the guest's
      // clock and leave it far from its HANDOFF_AFTER_MS (under nested KVM the counter guest needs
      // ~50 ms in the guest before it first counts, so waiting for that could see it move first).
      for (let i = 0; i < 3; i++) await sleep(1);
      // Blocks the loop for longer than HANDOFF_AT_LATEST_MS, as a stalled host does.
      const t0 = performance.now();
      while (performance.now() - t0 < HANDOFF_AT_LATEST_MS + 150);
      const starting = () => lines.find((l) => /starting its vCPU thread/.test(l.msg));
      await waitFor(() => starting(), 5_000);
      assert.ok(starting(), 'its thread was started');
      // The loop turns again at once and gives the guest its time: it moves for having had it.
      assert.equal(starting().msg, 'guest still running: starting its vCPU thread', JSON.stringify(starting()));
      assert.ok(starting().notCountedMs >= 150, `the blocked stretch was left out of its clock: ${JSON.stringify(starting())}`);
      const stall = lines.find((l) => /could not run for a while/.test(l.msg));
      assert.ok(stall && stall.lateMs >= STALL_MS, 'the late check is logged');
      await waitFor(() => count() > 0, 5_000);
      assert.ok(count() > 0, 'the guest runs');
    } finally {
      m.kill();
    }
    assert.deepEqual(await done, { kind: 'killed' });
    closeSync(fd);
  });

  it('startOnMainThread: guests that exit at once, started together, take turns on the main thread and end as on threads, with no thread started', async () => {
    const { lines, log } = debugLog();
    // c-exit.elf makes one exit, its debug-exit, and runs 2-5 ms in the guest under nested emulation
    // (hello.bin's 21 port writes can add up to far more), well short of HANDOFF_AFTER_MS.
    const ms = Array.from({ length: 5 }, () => Machine.create({ kernel: guest('c-exit.elf'), memBytes: 32 << 20, startOnMainThread: true, logLevel: 'debug' }, log));
    const reasons = await Promise.all(ms.map((m) => m.start()));
    for (const r of reasons) assert.deepEqual(r, { kind: 'debug-exit', value: 0, status: 1 });
    const threads = lines.filter((l) => /starting its vCPU thread/.test(l.msg));
    assert.deepEqual(threads, [], 'no vCPU thread was started');
  });

  it('machines share the process\'s /dev/kvm: one fd, however many machines there are, kept once they end', async () => {
    const kvmFds = () => fdsOf('/dev/kvm').length;
    // A VM being made ahead on the addon's thread (a burst, such as these three) holds a duplicate
    // of the fd until it is made: wait for those, briefly as a rule, longer on a loaded host.
    const settled = async () => {
      await waitFor(() => kvmFds() <= 1, 10_000);
      return kvmFds();
    };
    const ms = Array.from({ length: 3 }, () => Machine.create({ kernel: guest('c-exit.elf'), memBytes: 32 << 20, startOnMainThread: true }));
    assert.equal(await settled(), 1, 'three machines, one /dev/kvm');
    for (const r of await Promise.all(ms.map((m) => m.start()))) assert.deepEqual(r, { kind: 'debug-exit', value: 0, status: 1 });
    assert.equal(await settled(), 1, 'still open for the next machine');
  });

  it('a VM made ahead on the addon\'s thread (machines created in a burst) works like one made at once, set up as asked', async () => {
    const n = native();
    const kvm = n.open('/dev/kvm');
    const plain = n.startVmCreation(kvm);
    const setUp = n.startVmCreation(kvm, 0, VM_SETUP.tssAddr, VM_SETUP.identityMapAddr, VM_SETUP.pit2Flags);
    n.close(kvm);
    const [vm, vm2] = [n.finishVmCreation(plain), n.finishVmCreation(setUp)];
    try {
      assert.ok(n.checkExtension(vm, KVM_CAP.USER_MEMORY) > 0, 'the fd is a VM that answers ioctls');
      const vcpu = n.createVcpu(vm, 0);
      n.close(vcpu);
      // Without the set-up, no irqchip or PIT to read; with it, both are there, and made once only.
      assert.throws(() => n.getIrqchip(vm, new Uint8Array(SIZEOF.kvm_irqchip)), (e) => e.ioctl === 'KVM_GET_IRQCHIP');
      n.getIrqchip(vm2, new Uint8Array(SIZEOF.kvm_irqchip));
      n.getPit2(vm2, new Uint8Array(SIZEOF.kvm_pit_state2));
      assert.throws(() => n.createIrqchip(vm2), (e) => e.code === 'EEXIST');
      assert.throws(() => n.createPit2(vm2, VM_SETUP.pit2Flags), (e) => e.code === 'EEXIST');
    } finally {
      n.close(vm);
      n.close(vm2);
    }
  });

  it('a VM made ahead with another set-up is not used: it is closed, and the machine gets a VM set up as it needs', async () => {
    await sleep(BURST_MS); // no burst: creating the machine makes no spare of its own
    await waitFor(() => vmFds().length === 0, 10_000);
    assert.deepEqual(vmFds(), [], 'no VM before the test');
    Kvm.shared().prepareVm({ ...VM_SETUP, pit2Flags: 0 });
    await waitFor(() => vmFds().length > 0, 5_000);
    const [spare] = vmFds();
    assert.ok(spare, 'the spare VM is made');
    const m = Machine.create({ kernel: guest('c-exit.elf'), memBytes: 32 << 20, startOnMainThread: true });
    // The machine's VM was made while the spare was still open, so it has another number; the spare goes.
    await waitFor(() => vmFds().length <= 1, 10_000);
    const left = vmFds();
    assert.equal(left.length, 1);
    assert.notEqual(left[0], spare, 'the machine did not take the spare set up otherwise');
    assert.deepEqual(await m.start(), { kind: 'debug-exit', value: 0, status: 1 });
  });

  it('a VM made ahead that nobody takes is closed after BURST_MS', async () => {
    const settled = async (what) => {
      await waitFor(() => vmFds().length === 0, 10_000);
      assert.equal(vmFds().length, 0, what);
    };
    await sleep(BURST_MS); // a spare of the tests before has expired
    await settled('no VM before the test');
    Kvm.shared().prepareVm(VM_SETUP);
    await waitFor(() => vmFds().length > 0, 5_000);
    assert.equal(vmFds().length, 1, 'the spare VM is made');
    await sleep(BURST_MS);
    await settled('and closed once nobody took it');
  });

  it('a released kvm_run mapping lets its VM go at once, though views of it are still alive (they read zeros)', async () => {
    // The kernel keeps a VM while any of its vCPUs' kvm_run mappings exists; left to the garbage
    // collector, the teardown happened whenever (and on whichever thread) the last view was freed.
    const vcpuMappings = () => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes('kvm-vcpu')).length;
    const gone = async (count, what) => {
      await waitFor(() => vcpuMappings() <= count, 10_000);
      assert.equal(vcpuMappings(), count, what);
    };
    await gone(0, 'no vCPU mapped before the test');
    const n = native();
    const kvm = n.open('/dev/kvm');
    const vm = n.createVm(kvm);
    const vcpu = n.createVcpu(vm, 0);
    const id = n.mapVcpuRun(vcpu, n.vcpuMmapSize(kvm));
    const view = new Uint8Array(n.mappingBuffer(id));
    for (const fd of [vcpu, vm, kvm]) n.close(fd);
    assert.equal(vcpuMappings(), 1, 'the mapping alone keeps the vCPU');
    n.releaseMapping(id);
    await gone(0, 'released: the vCPU mapping is gone while a view remains');
    assert.equal(view.reduce((a, b) => a + b, 0), 0, 'the view reads the zeros swapped in');
    view[0] = 1; // and writing to it is harmless
    // The same through a machine that has ended, while the Machine object (and its views) lives on.
    const m = Machine.create({ kernel: guest('c-exit.elf'), memBytes: 32 << 20, startOnMainThread: true });
    assert.equal(vcpuMappings(), 1);
    assert.deepEqual(await m.start(), { kind: 'debug-exit', value: 0, status: 1 });
    await gone(0, 'an ended machine leaves no vCPU (and so no VM) behind');
    assert.equal(m.state, 'stopped');
  });

  it('startOnMainThread: a machine waiting for its turn on the main thread pauses, resumes and is killed like any other', async () => {
    const fd = openSync('/dev/null', 'w');
    const [first, second] = [0, 1].map(() => Machine.create({ kernel: guest('counter.bin'), memBytes: 32 << 20, consoleFd: fd, startOnMainThread: true }));
    const count = (m) => m.mem.readU32(COUNTER);
    const done = [first.start(), second.start()];
    try {
      // The first holds the main thread; the second waits for it, and pauses there.
      await second.pause();
      assert.equal(second.state, 'paused');
      await waitFor(() => count(first) > 0, 5_000);
      assert.ok(count(first) > 0, 'the first guest runs');
      // The first has had its HANDOFF_AFTER_MS and moved to its thread by now, handing the main
      // thread on to the paused second one, which must not run there.
      await sleep(500);
      assert.equal(count(second), 0, 'no progress while paused in line');
      second.resume();
      await waitFor(() => count(second) > 0, 5_000);
      assert.ok(count(second) > 0, 'counting after resume');
      await second.pause();
      const p = count(second);
      await sleep(300);
      assert.equal(count(second), p, 'no progress while paused again');
    } finally {
      first.kill();
      second.kill();
    }
    assert.deepEqual(await Promise.all(done), [{ kind: 'killed' }, { kind: 'killed' }]);

    // Killed while still in line.
    const [a, b] = [0, 1].map(() => Machine.create({ kernel: guest('counter.bin'), memBytes: 32 << 20, consoleFd: fd, startOnMainThread: true }));
    const ends = [a.start(), b.start()];
    b.kill();
    assert.deepEqual(await ends[1], { kind: 'killed' });
    a.kill();
    assert.deepEqual(await ends[0], { kind: 'killed' });
    closeSync(fd);
  });

  it('the console is a stream of the guest output when no fd is given; it has all of it, and has ended, when start() resolves', async () => {
    const m = Machine.create({ kernel: guest('hello.bin'), memBytes: 32 << 20 });
    let out = '';
    m.console.on('data', (d) => (out += d));
    const reason = await m.start();
    assert.deepEqual(reason, { kind: 'debug-exit', value: 0, status: 1 });
    assert.equal(out, 'Hello from real mode\n');
    assert.equal(m.console.readableEnded, true);
  });

  it('shutdown() asks the guest with Ctrl-Alt-Del, and kills it after the grace period if it does not stop', async () => {
    const kbd = Machine.create({ kernel: guest('c-machine.elf'), memBytes: 32 << 20, cmdline: 'kbd' });
    let out = '';
    kbd.console.on('data', (d) => (out += d));
    void kbd.start();
    await waitFor(() => out.includes('kbd: ready'), 5_000);
    assert.deepEqual(await kbd.shutdown(10_000), { kind: 'debug-exit', value: 0, status: 1 });
    assert.match(out, /kbd: ctrl-alt-del received/);

    const fd = openSync('/dev/null', 'w');
    const spin = Machine.create({ kernel: guest('spin.bin'), memBytes: 32 << 20, consoleFd: fd });
    void spin.start();
    const t0 = performance.now();
    assert.deepEqual(await spin.shutdown(300), { kind: 'killed' });
    assert.ok(performance.now() - t0 >= 290);
    closeSync(fd);
  });

  it('kill() before start() releases the VM and resolves wait()', async () => {
    const m = Machine.create({ kernel: guest('hello.bin'), memBytes: 32 << 20 });
    m.kill();
    assert.deepEqual(await m.wait(), { kind: 'killed' });
    assert.equal(m.state, 'stopped');
  });
});
