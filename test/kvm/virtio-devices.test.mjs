// The virtio devices (blk, net, console, 9p) and the command-runner protocol, driven from inside by
// the C test guest c-virtio.elf (guests/tests/c-virtio.c over lib/virtio.c): the guest negotiates
// features, sets up split queues with MSI-X and checks every answer; the host checks what the
// guest left behind (disk contents, files in the shared folder, frames on the tap).
// The same guests are checked against QEMU's devices by guests/tests/qemu-check.sh.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { cli, guest, needsKvm, rerunOnEmulatorShutdown, root, runCli } from '../helpers/kvm.mjs';
import { hostPinger, netnsProblem, runInNetns, tapCounter, withNetns } from '../helpers/netns.mjs';

const ELF = guest('c-virtio.elf');
const run = (cmdline, extra = [], opts = {}) =>
  runCli(['run', '--kernel', ELF, '--cmdline', cmdline, '--log-level', 'error', ...extra], { killAfterMs: 60_000, ...opts });
const PASS = 1; // isa-debug-exit 0: (0 << 1) | 1

let dir;
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'nv-virtio-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** A raw disk image of `bytes` bytes: zeros, or random when `random`. */
function disk(name, bytes, { random = false } = {}) {
  const file = path.join(dir, name);
  if (random) writeFileSync(file, randomBytes(bytes));
  else {
    closeSync(openSync(file, 'w'));
    truncateSync(file, bytes);
  }
  return file;
}
const sha = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');
/** The pattern the guest writes over the first 64 KiB (virtio/blk.c: pattern()). */
const pattern = (o) => (o * 7 + (o >> 9)) & 0xff;
const MARKER = 'nodevisor-blk-ok\n';
/** The bytes `seq 1 N` prints, cut at n bytes (the agent's `emit n`). */
function seqBytes(n) {
  const parts = [];
  let len = 0;
  for (let i = 1; len < n; i++) {
    const s = `${i}\n`;
    parts.push(s);
    len += s.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

describe('virtio-blk, seen from the C guest', needsKvm, () => {
  it('capacity and GET_ID; a 64 KiB write, flush and read-back; IOERR past the end; the marker at sector 100 is on disk after the VM is gone', async () => {
    const img = disk('rw.img', 1 << 20);
    const r = await run('blk', ['--disk', `${img},id=disk-one`]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /blk: vda 2048 sectors id=disk-one rw/);
    assert.match(r.stdout, /blk: flush ok/);
    assert.match(r.stdout, /blk: wrote and read back 65536 bytes/);
    assert.match(r.stdout, /blk: read past the end: IOERR/);
    assert.match(r.stdout, /blk: marker written at sector 100/);
    const bytes = readFileSync(img);
    assert.equal(bytes.subarray(100 * 512, 100 * 512 + MARKER.length).toString(), MARKER);
    for (let o = 0; o < 65536; o++) {
      if (o >= 100 * 512 && o < 101 * 512) continue;
      if (bytes[o] !== pattern(o)) assert.fail(`byte ${o} is ${bytes[o]}, the guest wrote ${pattern(o)}`);
    }
  });

  it('two disks at once: the writable one is tested, the read-only one refuses a write and is unchanged', async () => {
    const rw = disk('two-rw.img', 1 << 20);
    const ro = disk('two-ro.img', 512 * 1024, { random: true });
    const before = sha(ro);
    const r = await run('blk', ['--disk', `${rw},id=one`, '--disk', `${ro},ro,id=two`]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /blk: 2 disk\(s\)/);
    assert.match(r.stdout, /blk: vda 2048 sectors id=one rw/);
    assert.match(r.stdout, /blk: vdb 1024 sectors id=two ro/);
    assert.match(r.stdout, /blk: testing vda/);
    assert.match(r.stdout, /blk: read-only disk refused a write/);
    assert.equal(sha(ro), before, 'the read-only image changed');
    assert.equal(readFileSync(rw).subarray(51200, 51200 + MARKER.length).toString(), MARKER);
  });

  it('a read-only disk alone: reads work, a write comes back IOERR, the image is unchanged', async () => {
    const ro = disk('alone-ro.img', 512 * 1024, { random: true });
    const before = sha(ro);
    const r = await run('blk', ['--disk', `${ro},ro`]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /blk: vda 1024 sectors id=\(none\) ro/);
    assert.match(r.stdout, /blk: no writable disk/);
    assert.match(r.stdout, /blk: read-only disk refused a write/);
    assert.equal(sha(ro), before);
  });

  it('broken requests (no status byte; a 4-byte header) set DEVICE_NEEDS_RESET; after a reset the disk serves again', async () => {
    const r = await run('blk-broken', ['--disk', disk('broken.img', 1 << 20)]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /blk-broken: request without a status byte: device needs reset \(config interrupts 1\)/);
    assert.match(r.stdout, /blk-broken: 4-byte header: device needs reset \(config interrupts 1\)/);
    assert.equal((r.stdout.match(/blk-broken: serving again after reset/g) ?? []).length, 2, r.stdout);
  });

  it('blk-bench: sequential write/read and 4 KiB random reads report machine-readable numbers, each after its ramp', async () => {
    const r = await run('blk-bench mb=16 ios=4000 ramp=25', ['--disk', disk('bench.img', 32 << 20)]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /bench: tsc-hz=\d+ source=(cpuid-40000010|cpuid-15|pit)\b/);
    for (const kind of ['seq-write', 'seq-read']) {
      assert.match(r.stdout, new RegExp(`bench: ${kind}-ramp bytes=4194304 ios=32 qd=8 kicks=\\d+ ticks=\\d+ us=\\d+ MBps=\\d+\\.\\d\\d IOPS=`));
      assert.match(r.stdout, new RegExp(`bench: ${kind} bytes=16777216 ios=128 qd=8 kicks=\\d+ ticks=\\d+ us=\\d+ MBps=\\d+\\.\\d\\d IOPS=`));
    }
    assert.match(r.stdout, /bench: rand-read-4k-ramp bytes=4096000 ios=1000 qd=32 kicks=\d+ ticks=\d+ us=\d+ MBps=[\d.]+ IOPS=[\d.]+/);
    assert.match(r.stdout, /bench: rand-read-4k bytes=16384000 ios=4000 qd=32 kicks=\d+ ticks=\d+ us=\d+ MBps=[\d.]+ IOPS=[\d.]+/);
    assert.ok(r.stdout.indexOf('seq-write-ramp') < r.stdout.indexOf('seq-write '), 'the ramp comes first');
  });
});

describe('virtio-console, seen from the C guest', needsKvm, () => {
  it('cols/rows from the config space; a line out on transmitq; stdin echoed back uppercased', async () => {
    const r = await run('console', ['--console', 'virtio'], { input: 'abc\n' });
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /console: cols 80 rows 25/);
    assert.doesNotMatch(r.stdout, /MULTIPORT/);
    // Both consoles write to stdout (COM1 from the vCPU thread, virtio from the main thread): the
    // guest prints on COM1 only once the device has taken its virtio output, but do not insist on
    // whole lines.
    assert.match(r.stdout, /console: hello over virtio/); // through the virtio console: COM1 says "greeting sent"
    assert.match(r.stdout, /ABC/);
    assert.match(r.stdout, /console: echoed 4 bytes/);
  });
});

// ---- the agent: the command-runner protocol, through the library API ----------------------------

class Collect extends Writable {
  chunks = [];
  _write(chunk, _enc, cb) {
    this.chunks.push(chunk);
    cb();
  }
  get buffer() {
    return Buffer.concat(this.chunks);
  }
}

/**
 * Boots c-virtio.elf as the agent on the machine's agent channel (config `agent: true`) and runs
 * argv through nodevisor's CommandRunner. Resolves { status, stdout, stderr, reason }.
 */
async function agentRun(argv, { stdin, cmdline = 'agent', stdout: out } = {}) {
  const { Machine } = await import('../../dist/index.js');
  const { CommandRunner } = await import('../../dist/runner/command-runner.js');
  const stdout = out ?? new Collect();
  const stderr = new Collect();
  const machine = Machine.create({ kernel: ELF, memBytes: 128 << 20, timeoutSec: 60, cmdline, agent: true });
  const runner = new CommandRunner({ argv, send: (b) => machine.agent.write(b), stdout, stderr, stdin: stdin === undefined ? undefined : Readable.from(Array.isArray(stdin) ? stdin : [Buffer.from(stdin)]) });
  machine.onAgentOutput((b) => runner.onGuestBytes(b));
  runner.on('resume', () => machine.agent.resume());
  machine.onAgentInputRoom(() => runner.resumeInput());
  const stopped = machine.start();
  let status;
  try {
    status = await Promise.race([runner.exited, stopped.then((reason) => Promise.reject(new Error(`the VM stopped before EXIT: ${JSON.stringify(reason)}`)))]);
  } catch (e) {
    machine.kill(); // a protocol error: do not leave the VM running
    await stopped;
    throw e;
  }
  const reason = await stopped; // the guest powers off after EXIT
  return { status, stdout: stdout.buffer, stderr: stderr.buffer, reason };
}

describe('the command-runner protocol, spoken by the C guest on a virtio-console port', needsKvm, () => {
  it('echo: arguments joined on stdout, exit 0, then the guest powers off', async () => {
    const r = await agentRun(['echo', 'hello', 'world']);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.toString(), 'hello world\n');
    assert.equal(r.stderr.length, 0);
    assert.equal(r.reason.kind, 'poweroff');
  });

  it('exit 7 comes back as 7', async () => {
    const r = await agentRun(['exit', '7']);
    assert.equal(r.status, 7);
  });

  it('stderr goes to its own stream', async () => {
    const r = await agentRun(['stderr', 'to', 'the', 'error', 'stream']);
    assert.equal(r.status, 0);
    assert.equal(r.stderr.toString(), 'to the error stream\n');
    assert.equal(r.stdout.length, 0);
  });

  it('cat: 4 MB of stdin (frames larger than the guest\'s receive buffers, more than the device queues) comes back unchanged', async () => {
    const input = Buffer.from(Array.from({ length: 4_000_000 }, (_, i) => (i * 31 + (i >> 8)) & 0xff));
    // In 64 KiB pieces, as a pipe delivers it: the runner pauses between them while the guest catches up.
    const pieces = Array.from({ length: Math.ceil(input.length / 65536) }, (_, k) => input.subarray(k * 65536, (k + 1) * 65536));
    const r = await agentRun(['cat'], { stdin: pieces });
    assert.equal(r.status, 0);
    assert.ok(r.stdout.equals(input), `${r.stdout.length} bytes came back`);
  });

  it('emit: 10 MB of output in frames of at most 64 KiB arrives complete and in order', async () => {
    const n = 10_000_000;
    const r = await agentRun(['emit', String(n)]);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.length, n);
    assert.ok(r.stdout.equals(seqBytes(n)), 'output differs from seq');
  });

  it('a guest that powers off as soon as EXIT is queued, while the reader is behind, loses no output', async () => {
    // As Linux's nv-agent and init do ("noflush"). The reader takes nothing until the VM has
    // stopped, so the device holds the guest's transmit buffers: they are taken when it stops.
    class Stalled extends Collect {
      waiting = [];
      _write(chunk, enc, cb) {
        this.chunks.push(chunk);
        this.waiting.push(cb);
      }
      release() {
        this._write = (chunk, enc, cb) => (this.chunks.push(chunk), cb());
        for (const cb of this.waiting.splice(0)) cb();
      }
    }
    const stdout = new Stalled({ highWaterMark: 1 });
    const n = 200_000; // fits in the guest's transmit buffers (32 x 16 KiB): it reaches EXIT without the host
    const r = await agentRun(['emit', String(n)], { cmdline: 'agent noflush', stdout });
    stdout.release();
    await new Promise((resolve) => stdout.end(resolve));
    assert.equal(r.status, 0);
    assert.equal(r.reason.kind, 'poweroff');
    assert.ok(stdout.buffer.equals(seqBytes(n)), `${stdout.buffer.length} of ${n} bytes`);
  });

  it('an unknown command: a message on stderr and status 127', async () => {
    const r = await agentRun(['frobnicate']);
    assert.equal(r.status, 127);
    assert.match(r.stderr.toString(), /nv-agent: frobnicate: command not found/);
  });

  it('`run -- COMMAND` passes the arguments as typed: number-like ones are not turned into numbers', async () => {
    const r = await runCli(['run', '--kernel', ELF, '--mem', '128M', '--cmdline', 'agent', '--share-cwd', 'off', '--log-level', 'error', '--', 'echo', '007', '1e3', '0x10', '1.50', '-0'], { killAfterMs: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '007 1e3 0x10 1.50 -0\n');
  });

  /**
   * `run --timeout 5 -- COMMAND` with the C guest as the agent, stdout given to `stdout` ('pipe':
   * one this test never reads) and stderr collected; SIGKILL after killAfterMs, which a hung run meets.
   */
  async function runAgentWithTimeout(command, stdout, killAfterMs) {
    const child = spawn(process.execPath, [cli, 'run', '--kernel', ELF, '--mem', '128M', '--cmdline', 'agent', '--share-cwd', 'off', '--timeout', '5', '--log-level', 'error', '--', ...command], { stdio: ['ignore', stdout, 'pipe'] });
    child.stdout?.pause();
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const t0 = performance.now();
    const killer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    const [status, signal] = await new Promise((resolve) => child.on('exit', (c, sig) => resolve([c, sig])));
    clearTimeout(killer);
    child.stdout?.destroy();
    return { status, signal, stderr, ms: Math.round(performance.now() - t0) };
  }

  it('`run -- COMMAND` whose stdout nobody reads still ends at --timeout with 124 (output waits, the main thread does not)', async () => {
    // The C guest as the kit's agent, through the CLI; the test never reads the child's stdout, so
    // the pipe fills after 64 KiB and stays full, as behind a CI step that stopped reading.
    const { status, signal, stderr, ms } = await rerunOnEmulatorShutdown('emit 1000000000 to an unread stdout', () => runAgentWithTimeout(['emit', '1000000000'], 'pipe', 90_000));
    assert.equal(signal, null, `killed after ${ms} ms: nodevisor hung on its stdout\n${stderr}`);
    assert.equal(status, 124, stderr);
    assert.match(stderr, /timed out|time-out|timeout/i);
  });

  it('`run --timeout` ends at the time-out even when the command ended with output nobody has read', async () => {
    // stdout is a FIFO that nobody reads (a plain pipe: 64 KiB, where Node's own stdio pipes are
    // socket pairs that hold far more). The command emits 70000 bytes and exits 0 at once; the
    // last ~4 KiB can never be written. The run must still end by --timeout, with the command's status.
    const fifo = path.join(mkdtempSync(path.join(tmpdir(), 'nv-fifo-')), 'stdout');
    execFileSync('mkfifo', [fifo]);
    const held = openSync(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK); // a reader that never reads
    const out = openSync(fifo, 'w');
    const run = runAgentWithTimeout(['emit', '70000'], out, 60_000);
    closeSync(out);
    const { status, signal, stderr, ms } = await run;
    closeSync(held);
    rmSync(path.dirname(fifo), { recursive: true, force: true });
    assert.equal(signal, null, `killed after ${ms} ms: nodevisor waited for its stdout past --timeout\n${stderr}`);
    assert.equal(status, 0, stderr);
  });
});

// ---- virtio-9p -------------------------------------------------------------------------------------

describe('virtio-9p, seen from the C guest', needsKvm, () => {
  const share = (name) => {
    const d = path.join(dir, name);
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(d, 'hello.txt'), 'hello from the host\n');
    symlinkSync('/etc/passwd', path.join(d, 'escape'));
    return d;
  };

  it('tag; Tversion/Tattach; reads hello.txt; creates from-guest.txt; .. stays at the root; the escape symlink is refused', async () => {
    const d = share('share-rw');
    const r = await run('9p', ['--share', `${d}:share`]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /9p: tag share/);
    assert.match(r.stdout, /9p: 9P2000\.L, msize \d+/);
    assert.match(r.stdout, /9p: hello\.txt: hello from the host/);
    assert.match(r.stdout, /9p: created from-guest\.txt \(21 bytes written\)/);
    assert.match(r.stdout, /9p: walk \.\. from the root stays at the root/);
    assert.match(r.stdout, /9p: escape refused (at the walk )?\(errno 40\)/);
    assert.equal(readFileSync(path.join(d, 'from-guest.txt'), 'utf8'), 'written by the guest\n');
  });

  it('a read-only share: reads work, Tlcreate fails with EROFS and nothing appears on the host', async () => {
    const d = share('share-ro');
    const r = await run('9p-ro', ['--share', `${d}:share,ro`]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /9p: hello\.txt: hello from the host/);
    assert.match(r.stdout, /9p: read-only share refused a create \(errno 30\)/);
    assert.equal(existsSync(path.join(d, 'from-guest.txt')), false);
  });

  it('9p-escape alone: opening a host symlink that points outside the share fails with ELOOP', async () => {
    const r = await run('9p-escape', ['--share', `${share('share-escape')}:share`]);
    assert.equal(r.status, PASS, r.stdout + r.stderr);
    assert.match(r.stdout, /9p: escape refused (at the walk )?\(errno 40\)/);
  });
});

// ---- virtio-net, on a tap in a network namespace of our own ----------------------------------------

const netProblem = netnsProblem();
const TAP = 'nvvtap0';
const GUEST_MAC = '52:54:00:12:34:56';
const PING_SCRIPT = path.join(root, 'guests', 'tests', 'qemu-ping.py');
/** Spawns a command; `seen(re)` resolves true when its stdout matches re (false if it ends first). */
function spawnWatching(cmd, args, ms) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const watchers = [];
  p.stdout.on('data', (d) => {
    stdout += d;
    for (const w of watchers) if (w.re.test(stdout)) w.resolve(true);
  });
  p.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => p.kill('SIGKILL'), ms);
  const done = new Promise((resolve) =>
    p.on('close', (status) => {
      clearTimeout(timer);
      for (const w of watchers) w.resolve(false);
      resolve({ status, stdout, stderr });
    }),
  );
  return { done, seen: (re) => (re.test(stdout) ? Promise.resolve(true) : new Promise((resolve) => watchers.push({ re, resolve }))) };
}

const nodevisorIn = (ns, cmdline, ms = 60_000) =>
  runInNetns(ns, process.execPath, [cli, 'run', '--kernel', ELF, '--cmdline', cmdline, '--log-level', 'error', '--net', `tap=${TAP},mac=${GUEST_MAC}`], ms);

describe('virtio-net, seen from the C guest, over a tap in a private network namespace', { ...needsKvm, skip: needsKvm.skip || netProblem || false }, () => {
  it('MAC from the config space; ARP for 10.0.2.1; ICMP echo with the payload intact; answers a ping from the host', async () => {
    await withNetns('nvv', TAP, '10.0.2.1/24', async (ns) => {
      const pinger = hostPinger(PING_SCRIPT);
      // Ping the guest once it says it has pinged the host (it then serves for 5 s): no fixed delay,
      // so a slow start (a loaded or nested host) cannot make the ping miss the window.
      const vm = spawnWatching('ip', ['netns', 'exec', ns, process.execPath, cli, 'run', '--kernel', ELF, '--cmdline', 'net serve=60 pings=1', '--log-level', 'error', '--net', `tap=${TAP},mac=${GUEST_MAC}`], 120_000);
      let ping;
      if (pinger && (await vm.seen(/net: ping reply from 10\.0\.2\.1/))) {
        const [cmd, args] = pinger('10.0.2.15');
        ping = await runInNetns(ns, cmd, args, 45_000);
      }
      const r = await vm.done;
      assert.equal(r.status, PASS, r.stdout + r.stderr);
      assert.match(r.stdout, new RegExp(`net: mac ${GUEST_MAC}`));
      assert.match(r.stdout, /net: link up/);
      assert.match(r.stdout, /net: arp reply from 10\.0\.2\.1 at ([0-9a-f]{2}:){5}[0-9a-f]{2}/);
      assert.match(r.stdout, /net: ping reply from 10\.0\.2\.1 \(seq \d+, 56-byte payload intact\)/);
      if (ping) {
        assert.equal(ping.status, 0, `host ping of the guest: ${ping.stdout}${ping.stderr}`);
        assert.match(r.stdout, /net: answered \d+ ARP requests and [1-9]\d* pings/);
      }
    });
  });

  it('net-bench: 100000 full-size frames reach the tap after a ramp of 10000, with few notifications from the guest', async () => {
    await withNetns('nvv', TAP, '10.0.2.1/24', async (ns) => {
      const before = tapCounter(ns, TAP, 'rx_packets') + tapCounter(ns, TAP, 'rx_dropped');
      const r = await nodevisorIn(ns, 'net-bench frames=100000 ramp=10', 120_000);
      const after = tapCounter(ns, TAP, 'rx_packets') + tapCounter(ns, TAP, 'rx_dropped');
      assert.equal(r.status, PASS, r.stdout + r.stderr);
      const kicks = Number(/bench: net-tx frames=100000 bytes=151400000 frame-bytes=1514 kicks=(\d+) ticks=\d+ us=\d+ fps=[\d.]+ MBps=[\d.]+/.exec(r.stdout)?.[1]);
      assert.match(r.stdout, /bench: net-tx-ramp frames=10000 bytes=15140000 frame-bytes=1514 kicks=\d+ ticks=\d+ us=\d+ fps=[\d.]+ MBps=[\d.]+/);
      assert.ok(after - before >= 110_000, `the tap saw ${after - before} frames`);
      // The device tells the driver not to notify while it drains the queue: a guest keeping the
      // ring full kicks only when the device has caught up (~30 times here; ~25000 without).
      assert.ok(kicks < 10_000, `the guest notified ${kicks} times for 100000 frames\n${r.stdout}`);
    });
  });
});
