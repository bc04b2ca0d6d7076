// `run -- COMMAND`'s protocol: the host-side CommandRunner against the real nv-agent, connected by
// a socket pair (in a VM the same bytes travel over a virtio-console port).
import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { CommandRunner } from '../../dist/runner/command-runner.js';
import { FrameDecoder, encodeFrame, encodeRun, FRAME } from '../../dist/runner/protocol.js';
import { buildAgent } from '../helpers/agent.mjs';

let agent;
before(() => {
  agent = buildAgent();
});

class Collect extends Writable {
  constructor(opts = {}) {
    super({ highWaterMark: opts.highWaterMark ?? 16384 });
    this.chunks = [];
    this.delayMs = opts.delayMs ?? 0;
  }
  _write(chunk, _enc, cb) {
    this.chunks.push(chunk);
    if (this.delayMs) setTimeout(cb, this.delayMs);
    else cb();
  }
  get text() {
    return Buffer.concat(this.chunks).toString();
  }
  get length() {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }
}

/** Runs argv through the agent; resolves { status, stdout, stderr, runner }. */
async function run(argv, { stdin, cwd, stdout = new Collect(), stderr = new Collect(), onStart } = {}) {
  // Two one-way channels, as a console port behaves: input still in flight when the agent exits
  // must not take the agent's last frames with it (one socket would be reset as a whole).
  const child = spawn(agent, ['--fds', '3', '4'], { stdio: ['ignore', 'inherit', 'inherit', 'pipe', 'pipe'] });
  const toAgent = child.stdio[3];
  const chan = child.stdio[4];
  toAgent.on('error', (e) => {
    if (e.code !== 'EPIPE' && e.code !== 'ECONNRESET') throw e; // the agent has exited
  });
  const runner = new CommandRunner({ argv, cwd, send: (b) => toAgent.write(b), stdout, stderr, stdin });
  toAgent.on('drain', () => runner.resumeInput());
  onStart?.(child, runner);
  chan.on('data', (b) => {
    if (!runner.onGuestBytes(b)) chan.pause();
  });
  runner.on('resume', () => chan.resume());
  const status = await runner.exited;
  toAgent.end();
  await new Promise((r) => child.once('exit', r));
  return { status, stdout, stderr, runner };
}

describe('command runner and nv-agent', () => {
  it('exit status 7 comes back as 7', async () => {
    const r = await run(['sh', '-c', 'exit 7']);
    assert.equal(r.status, 7);
  });

  it('stdout and stderr arrive on their own streams', async () => {
    const r = await run(['sh', '-c', 'echo out; echo err >&2; echo out2']);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.text, 'out\nout2\n');
    assert.equal(r.stderr.text, 'err\n');
  });

  it('10 MB of output arrives complete and in order, through a slow sink (backpressure)', async () => {
    const lines = 1_300_000; // "1\n" .. "1300000\n": about 10 MB
    const stdout = new Collect({ highWaterMark: 1 << 16, delayMs: 0 });
    const r = await run(['seq', '1', String(lines)], { stdout });
    assert.equal(r.status, 0);
    const text = stdout.text;
    assert.ok(text.length > 9_000_000, `${text.length} bytes`);
    let expected = '';
    for (let i = 1; i <= lines; i++) expected += `${i}\n`;
    assert.ok(text === expected, 'output differs from seq 1 ' + lines);
    assert.equal(r.runner.bytes.stdout, expected.length);
  });

  it("the host's stdin reaches the command, and its end closes the command's stdin", async () => {
    const r = await run(['sh', '-c', 'cat; echo done'], { stdin: Readable.from([Buffer.from('hello '), Buffer.from('world\n')]) });
    assert.equal(r.status, 0);
    assert.equal(r.stdout.text, 'hello world\ndone\n');
  });

  it('with no stdin the command reads end of file at once', async () => {
    const r = await run(['sh', '-c', 'cat; echo eof']);
    assert.equal(r.stdout.text, 'eof\n');
  });

  it('a command that does not read its input still streams its output (no deadlock)', async () => {
    const big = Buffer.alloc(4 << 20, 0x61);
    const r = await run(['sh', '-c', 'seq 1 100000 | tail -n 1; exit 3'], { stdin: Readable.from([big]) });
    assert.equal(r.status, 3);
    assert.equal(r.stdout.text, '100000\n');
  });

  it('stdin a command does not read yet is held back: the host stops reading it, the agent buffers at most ~2 MiB', async () => {
    const total = 64 << 20;
    let produced = 0;
    const stdin = new Readable({
      read() {
        const n = Math.min(64 * 1024, total - produced);
        produced += n;
        this.push(n > 0 ? Buffer.alloc(n, 0x62) : null);
      },
    });
    let during;
    const r = await run(['sh', '-c', 'sleep 1; exec wc -c'], {
      stdin,
      onStart: (child) => {
        setTimeout(() => {
          const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
          during = { produced, agentRssKiB: Number(rss?.[1]) };
        }, 800);
      },
    });
    assert.equal(r.status, 0);
    assert.equal(r.stdout.text.trim(), String(total), 'every byte reaches the command once it reads');
    assert.ok(during.produced < 16 << 20, `the host read ${during.produced} bytes of stdin while the command slept`);
    assert.ok(during.agentRssKiB < 16 * 1024, `the agent held ${during.agentRssKiB} KiB while the command slept`);
  });

  it('a signal ends it with 128 + the signal number', async () => {
    const r = await run(['sh', '-c', 'kill -TERM $$']);
    assert.equal(r.status, 128 + 15);
  });

  it('a missing command is 127 with a message; the working directory is honoured', async () => {
    const r = await run(['no-such-command-nv']);
    assert.equal(r.status, 127);
    assert.match(r.stderr.text, /nv-agent: no-such-command-nv: No such file or directory/);
    const p = await run(['pwd'], { cwd: '/tmp' });
    assert.equal(p.stdout.text, '/tmp\n');
    const bad = await run(['pwd'], { cwd: '/no/such/dir' });
    assert.equal(bad.status, 126);
  });

  it('the decoder reassembles frames split anywhere, and refuses nonsense', () => {
    const d = new FrameDecoder();
    const bytes = Buffer.concat([encodeFrame(FRAME.STDOUT, Buffer.from('abc')), encodeFrame(FRAME.EXIT, Buffer.from([7, 0, 0, 0]))]);
    const got = [];
    for (const b of bytes) got.push(...d.push(Buffer.from([b])));
    assert.deepEqual(got.map((f) => [f.type, [...f.payload]]), [[FRAME.STDOUT, [97, 98, 99]], [FRAME.EXIT, [7, 0, 0, 0]]]);
    assert.throws(() => new FrameDecoder().push(Buffer.from([99, 0, 0, 0, 0])), /unknown frame type 99/);
    assert.throws(() => new FrameDecoder().push(Buffer.from([5, 0xff, 0xff, 0xff, 0x7f])), /too long/);
    assert.throws(() => encodeRun([]), /no command/);
  });

  it('a malformed EXIT from the agent side fails the run instead of hanging', async () => {
    const runner = new CommandRunner({ argv: ['x'], send: () => {}, stdout: new Collect(), stderr: new Collect() });
    runner.on('error', () => {});
    runner.onGuestBytes(encodeFrame(FRAME.EXIT, Buffer.from([1])));
    await assert.rejects(runner.exited, /EXIT frame of 1 bytes/);
  });
});
