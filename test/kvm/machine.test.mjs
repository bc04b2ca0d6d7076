// The library API on real KVM: the main thread's event loop stays free while a guest spins, and
// stop/timeout end a running guest promptly.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Machine } from '../../dist/index.js';
import { execFileSync, spawn } from 'node:child_process';
import { cli, guest, needsKvm, runCli } from '../helpers/kvm.mjs';
import { waitFor } from '../helpers/wait.mjs';
import { openSync, closeSync } from 'node:fs';

const devNull = () => openSync('/dev/null', 'w');

/** RIP in spin.bin's loop: its address less the flat image's code segment base (1000:0000). */
const spinLoopRip = () => {
  const sym = execFileSync('nm', [guest('spin.flat.elf')], { encoding: 'utf8' }).match(/^([0-9a-f]+) T spin_loop$/m);
  assert.ok(sym, 'spin.flat.elf has a spin_loop symbol');
  return `0x${(parseInt(sym[1], 16) - 0x10000).toString(16)}`;
};

describe('Machine', needsKvm, () => {
  it('timers on the main thread fire on time while the guest spins in a tight loop', async () => {
    const fd = devNull();
    const m = Machine.create({ kernel: guest('spin.bin'), memBytes: 64 << 20, testdev: true, consoleFd: fd });
    const done = m.start();
    const lateness = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 20));
      lateness.push(performance.now() - t0 - 20);
    }
    m.end({ kind: 'stopped' });
    const t0 = performance.now();
    assert.deepEqual(await done, { kind: 'stopped' });
    const stopMs = performance.now() - t0;
    closeSync(fd);
    // A blocked event loop would delay these by the guest's whole run (it never ends); allow
    // scheduling noise, and a slow first timer while the vCPU thread starts on a busy host.
    const sorted = [...lateness].sort((a, b) => a - b);
    assert.ok(sorted[5] < 25 && sorted[9] < 500, `timer lateness ${lateness.map((x) => x.toFixed(1)).join(', ')} ms`);
    assert.ok(stopMs < 1000, `stop took ${stopMs} ms`);
  });

  it('two machines run at once in one process, each with its own outcome', async () => {
    const fd = devNull();
    const a = Machine.create({ kernel: guest('spin.bin'), memBytes: 32 << 20, testdev: true, consoleFd: fd });
    const b = Machine.create({ kernel: guest('hello.bin'), memBytes: 32 << 20, consoleFd: fd });
    const [ra, rb] = [a.start(), b.start()];
    assert.deepEqual(await rb, { kind: 'debug-exit', value: 0, status: 1 });
    a.end({ kind: 'stopped' });
    assert.deepEqual(await ra, { kind: 'stopped' });
    closeSync(fd);
  });

  it('a guest runs in RAM with transparent huge pages asked for (then aligned to 2 MiB), of a size that is no multiple of 2 MiB', async () => {
    const fd = devNull();
    const m = Machine.create({ kernel: guest('hello.bin'), memBytes: 35 << 20, hugepages: 1, consoleFd: fd });
    assert.deepEqual(await m.start(), { kind: 'debug-exit', value: 0, status: 1 });
    closeSync(fd);
  });

  it('Ctrl-A x on the console input stops the VM (status 0); Ctrl-A Ctrl-A sends one Ctrl-A', async () => {
    const r = await runCli(['run', '--kernel', guest('spin.bin'), '--log-level', 'error'], { input: 'typed\x01x', killAfterMs: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.ms < 5000, `took ${r.ms} ms`);
    const echo = await runCli(['run', '--kernel', guest('c-machine.elf'), '--cmdline', 'echo', '--log-level', 'error'], { input: 'a\x01\x01b\x01zc\nq', killAfterMs: 20_000 });
    assert.equal(echo.stdout, 'echo: ready\na\x01bc\necho: bye\n');
  });

  it('a terminal on stdin is put in raw mode: keys reach the guest at once, unechoed, and the mode is restored', async () => {
    // script(1) gives nodevisor a pseudo-terminal; in canonical mode "xyz" would wait for a newline.
    const cmd = `${process.execPath} ${cli} run --kernel ${guest('c-machine.elf')} --cmdline echo --log-level error; stty -a | grep -o -- '-icanon\\|icanon' | head -1`;
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const printed = (s) => waitFor(() => out.includes(s), 60_000); // a deadline, not a timing
    try {
      assert.ok(await printed('echo: ready'), out);
      child.stdin.write('xyz');
      assert.ok(await printed('xyz'), `raw mode delivers keys without a newline: ${JSON.stringify(out)}`);
      assert.equal(out.split('xyz').length - 1, 1, 'the terminal does not echo them itself');
      child.stdin.write('q');
      assert.ok(await printed('echo: bye'));
      assert.ok(await printed('icanon'), out);
      assert.match(out, /(^|\n)icanon/m, 'canonical mode is back after nodevisor exits');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('--timeout ends a spinning guest with status 124', async () => {
    const r = await runCli(['run', '--kernel', guest('spin.bin'), '--timeout', '1', '--json', '--log-level', 'error'], { killAfterMs: 60_000 });
    assert.equal(r.status, 124, r.stderr);
    // Where the guest was: on its loop, having answered exits for the message it printed first.
    const at = r.stderr.match(/nodevisor: timed out after 1 s \(vcpu0 running at RIP (0x[0-9a-f]+) after (\d+) exits\)\n/);
    assert.ok(at, r.stderr);
    assert.equal(at[1], spinLoopRip());
    assert.ok(Number(at[2]) >= 'spinning\n'.length, `${at[2]} exits: fewer than the bytes printed`);
    // Timed from the run's start (the --json events), so a slow Node start-up does not count.
    const exited = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.event === 'exited');
    assert.ok(exited.ms < 3000, `the run took ${exited.ms} ms for a 1 s timeout`);
    // --json's reason carries the same, as data.
    assert.deepEqual(exited.reason.vcpus.map((v) => [v.vcpu, v.state, v.rip, v.exits]), [[0, 'running', at[1], Number(at[2])]]);
  });

  it('a console byte queued in the coalesced ring with no exit after it still comes out at once', async () => {
    // spin.bin reads LSR before each byte of "spinning\n" (an exit, which takes the byte before it)
    // and then loops without a single exit: the newline stays queued until the machine's watch
    // kicks the vCPU out of the guest (a look every 10 ms while a guest writes), not when the run ends.
    const r = await runCli(['run', '--kernel', guest('spin.bin'), '--expect', '^spinning$', '--timeout', '20', '--json', '--log-level', 'error'], { killAfterMs: 60_000 });
    assert.equal(r.status, 0, `the whole line never came: status ${r.status}, ${r.stderr}`);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const exited = events.find((e) => e.event === 'exited');
    assert.equal(exited.reason.kind, 'expect-matched');
    assert.ok(exited.ms < 10_000, `took ${exited.ms} ms`);
  });

  it('a timed-out run says where every vCPU was: an AP the guest never started, too', async () => {
    // 3 s: both vCPU threads must start and vcpu0 reach its loop first; under CI's emulation two
    // threads once took all of a 1 s limit to start (vcpu0 still at RIP 0 after 0 exits).
    const r = await runCli(['run', '--kernel', guest('spin.bin'), '--cpus', '2', '--timeout', '3', '--log-level', 'error'], { killAfterMs: 60_000 });
    assert.equal(r.status, 124, r.stderr);
    // An AP waits for INIT and SIPI at the reset vector's offset (F000:FFF0).
    assert.match(r.stderr, new RegExp(`^nodevisor: timed out after 3 s \\(vcpu0 running at RIP ${spinLoopRip()} after \\d+ exits; vcpu1 not started at RIP 0xfff0 after 0 exits\\)$`, 'm'));
  });
});
