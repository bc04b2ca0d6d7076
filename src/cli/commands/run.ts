/** `nodevisor run`: boot a kernel or guest image with COM1 on stdout; the exit status says how it ended. */
import os from 'node:os';
import type { Argv, CommandModule } from 'yargs';
import { Machine } from '../../vmm/machine.js';
import { Kvm } from '../../kvm/kvm.js';
import { describeStop, exitStatus, type StopReason } from '../../vmm/stop.js';
import { hostFlavour, PVM_WARNING } from '../../kvm/host.js';
import { defaultGuest } from '../../vmm/default-guest.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../log.js';
import { VmmError } from '../../errors.js';
import { MIN_MEM } from '../../arch/x86_64/layout.js';
import { formatSize, parseSize } from '../size.js';
import { checkDeviceSet, parseDisk, parseNet, parseShare } from '../device-flags.js';
import { nowMs } from '../../clock.js';
import { stdinUnlessNull } from '../stdin.js';
import { outputFdsLikeNode } from '../output-fds.js';
import { noteGuestRan } from '../guest-ran.js';
import { writeOut } from '../stdout.js';

interface RunArgs {
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  mem: string;
  cpus: number;
  timeout?: number;
  testdev: boolean;
  rng: boolean;
  console: 'serial' | 'virtio';
  disk: string[];
  net: string[];
  share: string[];
  'on-reboot'?: 'exit' | 'restart';
  expect?: string;
  json: boolean;
  'log-level': LogLevel;
  'share-cwd'?: 'ro' | 'rw' | 'off';
  '--'?: (string | number)[];
}

/** vCPUs: the IOAPIC takes APIC ids 0..254 for the CPUs and the next one for itself. */
const MAX_CPUS = 254;
/** Node's timers hold at most 2^31-1 ms; a longer one fires at once. */
export const MAX_TIMEOUT_SEC = Math.floor((2 ** 31 - 1) / 1000);

/** A numeric flag as the user typed it ("abc", not NaN), for messages. */
function rawFlag(name: string, parsed: number): string {
  const args = process.argv;
  for (let i = args.length - 1; i >= 0; i--) {
    if (args[i] === `--${name}` && i + 1 < args.length) return JSON.stringify(args[i + 1]);
    if (args[i]!.startsWith(`--${name}=`)) return JSON.stringify(args[i]!.slice(name.length + 3));
  }
  return String(parsed);
}

/** Validates --mem: a size, at least MIN_MEM, at most the host's RAM. */
export function memFromFlag(text: string): number {
  const bytes = parseSize(text);
  if (bytes === undefined) throw new VmmError('BAD_CONFIG', `--mem ${text}: not a size (examples: 256M, 2G)`);
  if (bytes < MIN_MEM) throw new VmmError('BAD_CONFIG', `--mem ${text}: guest RAM must be at least ${formatSize(MIN_MEM)}`);
  if (bytes > os.totalmem()) throw new VmmError('BAD_CONFIG', `--mem ${text}: more than this host's ${formatSize(os.totalmem())} of RAM`);
  if (bytes % 4096 !== 0) throw new VmmError('BAD_CONFIG', `--mem ${text}: must be a multiple of 4 KiB`);
  return bytes;
}

/** Reads the console here: passes it on (raw or as JSON events) and ends the VM when --expect matches. */
function watchConsole(machine: Machine, o: { expect: RegExp | undefined; json: boolean; emit: (e: object) => void }): void {
  let partial = '';
  machine.console!.on('data', (chunk: Buffer) => {
    if (o.json) o.emit({ event: 'output', data: chunk.toString('utf8') });
    else writeOut(chunk);
    if (!o.expect) return;
    const lines = (partial + chunk.toString('utf8')).split('\n');
    partial = lines.pop()!;
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      if (o.expect.test(line)) {
        if (o.json) o.emit({ event: 'matched', line });
        machine.end({ kind: 'expect-matched', line });
        return;
      }
    }
  });
}

export const runCommand: CommandModule<object, RunArgs> = {
  command: 'run',
  describe: 'Boot a kernel or flat guest image, with the serial console on stdout; with -- COMMAND, run COMMAND in the guest and exit with its status',
  builder: (y: Argv) =>
    y
      .option('kernel', { requiresArg: true, type: 'string', describe: 'kernel (bzImage, PVH ELF) or flat real-mode image (default: the guest kit\'s kernel for this host)' })
      .option('initrd', { requiresArg: true, type: 'string', describe: 'initrd / initramfs image (bzImage and PVH kernels)' })
      .option('cmdline', { requiresArg: true, type: 'string', describe: 'kernel command line (default: console=ttyS0 reboot=k panic=1)' })
      .option('mem', { requiresArg: true, type: 'string', default: '128M', describe: 'guest RAM (e.g. 256M, 2G; a bare number is MiB)' })
      .option('cpus', { requiresArg: true, type: 'number', default: 1, describe: 'number of vCPUs' })
      .option('timeout', { requiresArg: true, type: 'number', describe: 'stop the guest after this many seconds (exit status 124)' })
      // No yargs defaults for these two: each applies in one mode only, and is refused in the other
      // when given (as --expect is with -- COMMAND), rather than silently doing nothing.
      .option('on-reboot', { requiresArg: true, choices: ['exit', 'restart'] as const, describe: 'without -- COMMAND, when the guest reboots: end with status 4 (exit, the default), or boot it again' })
      .option('expect', { requiresArg: true, type: 'string', describe: 'succeed (status 0) as soon as a console line matches this regular expression' })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON event per line on stdout (started, output, matched, exited) instead of the raw console' })
      .option('rng', { type: 'boolean', default: false, describe: 'add a virtio-rng PCI device fed from the host\'s CSPRNG' })
      .option('console', { requiresArg: true, choices: ['serial', 'virtio'] as const, default: 'serial' as const, describe: 'guest console: COM1 (ttyS0) or virtio-console (hvc0)' })
      .option('disk', { requiresArg: true, type: 'string', array: true, default: [] as string[], describe: 'add a virtio-blk disk: PATH[,ro][,id=NAME] (repeatable)' })
      .option('net', { requiresArg: true, type: 'string', array: true, default: [] as string[], describe: 'add a virtio-net NIC on a tap device: tap=NAME[,mac=MAC] (repeatable)' })
      .option('share', { requiresArg: true, type: 'string', array: true, default: [] as string[], describe: 'share a host folder over virtio-9p: HOSTDIR:TAG[,ro] (repeatable)' })
      .option('share-cwd', { requiresArg: true, choices: ['ro', 'rw', 'off'] as const, describe: 'with -- COMMAND: share the current directory as the command\'s working directory (read-only by default)' })
      .option('testdev', { type: 'boolean', default: false, describe: 'add the scratch test device used by the test guests' })
      .option('log-level', { requiresArg: true, choices: LOG_LEVELS, default: 'warn' as LogLevel, describe: 'log level (JSON logs on stderr)' }) as Argv<RunArgs>,
  handler: async (argv) => {
    outputFdsLikeNode();
    const memBytes = memFromFlag(argv.mem);
    if (!Number.isInteger(argv.cpus) || argv.cpus < 1 || argv.cpus > MAX_CPUS) throw new VmmError('BAD_CONFIG', `--cpus ${rawFlag('cpus', argv.cpus)}: must be a whole number from 1 to ${MAX_CPUS}`);
    if (argv.timeout !== undefined && !(argv.timeout > 0 && argv.timeout <= MAX_TIMEOUT_SEC)) {
      throw new VmmError('BAD_CONFIG', `--timeout ${rawFlag('timeout', argv.timeout)}: must be a positive number of seconds, at most ${MAX_TIMEOUT_SEC} (24 days)`);
    }
    const log = createLogger(argv['log-level']);
    let { kernel, initrd, cmdline } = argv;
    const command = (argv['--'] ?? []).map(String);
    if (command.length && command[0] === '') throw new VmmError('BAD_CONFIG', '-- COMMAND: the command name is empty');
    if (kernel === undefined) {
      // Which guest to boot depends on the kind of KVM: first make sure there is one at all.
      Kvm.shared();
      const flavour = hostFlavour();
      if (command.length && flavour === 'pvm' && !process.env.NODEVISOR_KERNEL) {
        throw new VmmError('BAD_CONFIG', `running a command needs Linux, and this host's /dev/kvm is PVM: set NODEVISOR_KERNEL to a PVM-enabled kernel, or give --kernel`);
      }
      const d = defaultGuest(flavour);
      if (d.note) process.stderr.write(`nodevisor: ${d.note}\n`);
      ({ kernel } = d);
      initrd ??= d.initrd;
      cmdline ??= d.cmdline;
    }
    let expect: RegExp | undefined;
    if (argv.expect !== undefined) {
      try {
        expect = new RegExp(argv.expect);
      } catch (e) {
        throw new VmmError('BAD_CONFIG', `--expect ${argv.expect}: not a regular expression (${(e as Error).message})`);
      }
    }
    // The console goes straight from the vCPU threads to stdout unless we have to read it here.
    const watch = expect !== undefined || argv.json;
    const emit = (event: object) => writeOut(`${JSON.stringify(event)}\n`);
    const [disks, nets, shares] = [argv.disk.map(parseDisk), argv.net.map(parseNet), argv.share.map(parseShare)];
    checkDeviceSet(disks, nets, shares);
    const config = { kernel, initrd, cmdline, memBytes, cpus: argv.cpus, testdev: argv.testdev, rng: argv.rng, timeoutSec: argv.timeout, logLevel: argv['log-level'], consoleInput: stdinUnlessNull(), consoleFd: watch ? undefined : 1,
      // The guest starts at once, and moves to a vCPU thread only if it keeps running (main-thread-vcpu.ts).
      startOnMainThread: true,
      console: argv.console, disks, nets, shares };
    if (command.length) {
      if (expect) throw new VmmError('BAD_CONFIG', '--expect and -- COMMAND: choose one (the command\'s exit status is the result)');
      if (argv['on-reboot'] !== undefined) throw new VmmError('BAD_CONFIG', '--on-reboot applies without -- COMMAND only (a guest that reboots ends the command\'s run)');
      // runCommandInGuest takes the console and stdin over itself (stdin belongs to the command).
      // Loaded here: the command runner and its streams are not needed to boot a guest.
      const { runCommandInGuest } = await import('./run-command.js');
      const run = await runCommandInGuest({ argv: command, config, shareCwd: argv['share-cwd'] ?? 'ro', json: argv.json, timeoutSec: argv.timeout, log });
      noteGuestRan();
      // A pool thread may still be blocked writing to a reader that stopped reading: do not wait for it.
      if (run.outputAbandoned) process.exit(run.status);
      process.exitCode = run.status;
      return;
    }
    if (argv['share-cwd'] !== undefined) throw new VmmError('BAD_CONFIG', `--share-cwd ${argv['share-cwd']} applies with -- COMMAND only (to share a folder with a guest, use --share HOSTDIR:TAG)`);
    let reason: StopReason;
    const started = nowMs();
    for (let boot = 0; ; boot++) {
      // A reboot in place is a fresh VM from the same config: nothing of the old one survives.
      // --timeout bounds the whole run, every boot included.
      const left = argv.timeout === undefined ? undefined : Math.max(0.001, argv.timeout - (nowMs() - started) / 1000);
      const machine = Machine.create({ ...config, timeoutSec: left }, log);
      if (boot === 0 && machine.flavour === 'pvm' && argv.kernel !== undefined) log.warn(PVM_WARNING); // once, and only once a VM is about to run
      if (watch) watchConsole(machine, { expect, json: argv.json, emit });
      if (argv.json) emit({ event: 'started', boot, ms: Math.round(nowMs() - started) });
      reason = await machine.start();
      noteGuestRan();
      // With --expect, a guest that ends without the line has failed, whatever way it ended.
      if (expect && reason.kind !== 'expect-matched' && reason.kind !== 'timeout' && reason.kind !== 'reboot') reason = { kind: 'expect-failed', pattern: argv.expect! };
      if (reason.kind === 'timeout') reason = { ...reason, seconds: argv.timeout! };
      if (reason.kind !== 'reboot' || argv['on-reboot'] !== 'restart') break;
      log.info({ boot: boot + 1 }, 'guest rebooted: starting it again');
    }
    const status = exitStatus(reason);
    if (argv.json) emit({ event: 'exited', status, reason, ms: Math.round(nowMs() - started) });
    if (status !== 0 && reason.kind !== 'debug-exit') process.stderr.write(`nodevisor: ${describeStop(reason)}\n`);
    log.info({ reason, status }, describeStop(reason));
    process.exitCode = status;
  },
};
