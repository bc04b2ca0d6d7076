/**
 * `nodevisor run [...] -- COMMAND ARGS...`: the CI smoke-boot mode. Boots the guest with the
 * command runner's agent on a virtio-console port (the guest kit's init starts nv-agent when it
 * finds nodevisor.agent= on its command line), runs COMMAND there, streams its stdout and stderr to
 * ours and exits with its status. The guest's serial console is kept (its tail is printed if the
 * guest ends before the command does); the current directory is shared read-only by default and is
 * the command's working directory.
 *
 * Our stdout and stderr are written asynchronously (async-output.ts): a reader that stalls holds
 * one pool thread, not the main thread; the guest's output waits in its virtio buffers
 * (backpressure), and --timeout still ends the run: after a time-out, output the reader has not
 * taken within a short grace is abandoned.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { isatty } from 'node:tty';
import { finished, Writable } from 'node:stream';
import type { Logger } from 'pino';
import { DEFAULT_CMDLINE, Machine, type MachineConfig } from '../../vmm/machine.js';
import { describeStop, exitStatus, type StopReason } from '../../vmm/stop.js';
import { CommandRunner } from '../../runner/command-runner.js';
import { AGENT_PORT_NAME } from '../../runner/protocol.js';
import { VmmError } from '../../errors.js';
import { Progress } from '../progress.js';
import { asyncOutput } from '../async-output.js';
import { nowMs } from '../../clock.js';
import { stdinUnlessNull } from '../stdin.js';

/** The tag and guest path of the shared current directory (the kit's init mounts it there). */
export const CWD_TAG = 'nvcwd';
export const CWD_GUEST_PATH = '/mnt/cwd';
/** Statuses of our own, when the command never reported one. */
export const RUN_STATUS = { guestEndedEarly: 125 } as const;
const SERIAL_TAIL_BYTES = 16 * 1024;
/** After a time-out, how long output may take to reach a reader before it is abandoned. */
const FLUSH_GRACE_MS = 2000;

export interface RunCommandOptions {
  readonly argv: readonly string[];
  readonly config: MachineConfig;
  readonly shareCwd: 'ro' | 'rw' | 'off';
  readonly json: boolean;
  readonly timeoutSec?: number;
  readonly log: Logger;
}

/** The kernel command line additions that tell the kit's init what to do. */
export function agentCmdline(base: string, o: { agentPort: string; cwd: boolean; shares: readonly string[] }): string {
  const words = [base, 'quiet', `nodevisor.agent=${o.agentPort}`];
  if (o.cwd) words.push(`nodevisor.cwd=${CWD_TAG}`);
  if (o.shares.length) words.push(`nodevisor.shares=${o.shares.join(',')}`);
  return words.filter(Boolean).join(' ');
}

/** How the run ended: the status to exit with, and whether output was left unwritten (exit at once). */
export interface RunCommandResult {
  readonly status: number;
  readonly outputAbandoned: boolean;
}

export async function runCommandInGuest(o: RunCommandOptions): Promise<RunCommandResult> {
  const started = nowMs();
  const ms = () => Math.round(nowMs() - started);
  const out = asyncOutput(1);
  const err = asyncOutput(2);
  const emit = (event: object) => out.write(`${JSON.stringify(event)}\n`);
  const progress = new Progress(process.stderr, !o.json);
  const shares = [...(o.config.shares ?? [])];
  if (o.shareCwd !== 'off') shares.push({ hostDir: process.cwd(), tag: CWD_TAG, readOnly: o.shareCwd === 'ro' });
  if (shares.filter((s) => s.tag === CWD_TAG).length > 1) throw new VmmError('BAD_CONFIG', `--share: the tag ${CWD_TAG} is reserved for the current directory`);
  // The tags travel on the kernel command line and name folders under /mnt: a space would add a
  // kernel parameter, a '/' or '..' would mount somewhere else.
  for (const s of o.config.shares ?? []) {
    if (!/^[A-Za-z0-9_.-]+$/.test(s.tag) || s.tag === '.' || s.tag === '..') throw new VmmError('BAD_CONFIG', `--share ${s.hostDir}:${s.tag}: with -- COMMAND a tag is letters, digits, _ . - (it becomes /mnt/TAG)`);
  }
  // The kit's init finds the agent's virtio-serial port by its name.
  const cmdline = agentCmdline(o.config.cmdline ?? DEFAULT_CMDLINE, { agentPort: AGENT_PORT_NAME, cwd: o.shareCwd !== 'off', shares: (o.config.shares ?? []).map((s) => s.tag) });
  const config: MachineConfig = { ...o.config, cmdline, shares, agent: true, consoleFd: undefined, consoleInput: undefined, timeoutSec: o.timeoutSec };

  progress.update(`booting ${o.config.kernel}`);
  const machine = Machine.create(config, o.log);
  let serialTail = Buffer.alloc(0);
  machine.on('console', (chunk: Buffer) => {
    serialTail = Buffer.concat([serialTail, chunk]);
    if (serialTail.length > 2 * SERIAL_TAIL_BYTES) serialTail = serialTail.subarray(serialTail.length - SERIAL_TAIL_BYTES);
  });
  const sink = (stream: 'stdout' | 'stderr') =>
    o.json
      ? new Writable({
          write(chunk: Buffer, _enc, cb) {
            // Done once stdout has room again: a stalled reader holds the guest back here too.
            if (emit({ event: 'output', stream, data: chunk.toString('utf8') })) cb();
            else out.once('drain', () => cb());
          },
        })
      : stream === 'stdout' ? out : err;
  let bootedAt: number | undefined;
  // The command reads a piped or redirected stdin (a terminal is not passed on), and /dev/null as none.
  const commandStdin = isatty(0) ? undefined : stdinUnlessNull();
  const runner = new CommandRunner({
    argv: o.argv,
    cwd: o.shareCwd !== 'off' ? CWD_GUEST_PATH : '',
    send: (bytes) => machine.agent!.write(bytes),
    stdout: sink('stdout'),
    stderr: sink('stderr'),
    ...(commandStdin ? { stdin: commandStdin } : {}),
  });
  machine.onAgentOutput((bytes) => runner.onGuestBytes(bytes));
  runner.on('resume', () => machine.agent!.resume());
  machine.onAgentInputRoom(() => runner.resumeInput());
  runner.on('ready', () => {
    bootedAt = ms();
    progress.update(`running ${o.argv.join(' ')}`);
    progress.done();
    if (o.json) emit({ event: 'booted', ms: bootedAt });
  });
  runner.on('exit', () => machine.kill()); // the guest has nothing left to do: no need to wait for its power-off
  runner.on('error', (e: Error) => {
    o.log.error({ err: e }, e.message);
    machine.kill();
  });
  if (o.json) emit({ event: 'started', ms: ms() });
  const reason: StopReason = await machine.start();
  progress.done();
  const status = runner.status ?? failedStatus(reason);
  if (runner.status === undefined) {
    const why = reason.kind === 'timeout' ? describeStop(reason) : `the guest ended before the command finished (${describeStop(reason)})`;
    err.write(`nodevisor: ${why}\n`);
    if (serialTail.length && !o.json) err.write(`nodevisor: last console output:\n${serialTail.subarray(-SERIAL_TAIL_BYTES).toString('utf8')}\n`);
  }
  if (o.json) {
    emit({ event: 'exited', status, ...(runner.status === undefined ? { reason } : {}), timings: { bootMs: bootedAt ?? null, commandMs: bootedAt === undefined ? null : ms() - bootedAt, totalMs: ms() } });
  }
  // Whether it ended well or not, a stream is done with once finished; node:stream/promises would cost ~3 ms of start-up.
  const flushed = Promise.all([out, err].map((w) => new Promise<true>((resolve) => finished(w.end(), () => resolve(true)))));
  // A run must end by --timeout even if nobody reads what it printed: a grace after a time-out,
  // and when the guest ended first with output still unread, whatever is left of --timeout.
  const flushLimitMs = reason.kind === 'timeout' ? FLUSH_GRACE_MS : o.timeoutSec === undefined ? undefined : Math.max(FLUSH_GRACE_MS, o.timeoutSec * 1000 - ms());
  const outputAbandoned = !(await (flushLimitMs === undefined ? flushed : Promise.race([flushed, delay(flushLimitMs, false, { ref: false })])));
  if (outputAbandoned) o.log.warn('output not yet read by the reader of stdout/stderr was abandoned at the time-out');
  return { status, outputAbandoned };
}

function failedStatus(reason: StopReason): number {
  const s = exitStatus(reason);
  return s === 0 ? RUN_STATUS.guestEndedEarly : s;
}

