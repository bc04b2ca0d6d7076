// Host side of the agent scenario under QEMU (qemu-check.sh): drives the guest with nodevisor's own
// CommandRunner, as `nodevisor run -- COMMAND` would. The command's stdout and stderr go to ours;
// we exit with its status (125 when the channel breaks, 124 after the time limit).
//
//   node qemu-agent.mjs BASE [--stdin TEXT | --stdin-file PATH] [--timeout SECONDS] -- COMMAND ARGS...
//
// The channel is QEMU's pipe chardev (-chardev pipe,id=c0,path=BASE): QEMU reads BASE.in, which
// we create as a FIFO, and writes BASE.out, which we create as a plain file and follow. Not a
// socket: QEMU's virtconsole (the only port a guest without MULTIPORT can use) drops guest output
// whenever its chardev would block, where nodevisor holds the guest's buffers instead; a regular
// file never blocks, so nothing is lost. BASE.out exists once we are ready for QEMU to start.
import { closeSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { CommandRunner } = await import(path.join(root, 'dist', 'runner', 'command-runner.js'));

const args = process.argv.slice(2);
const dash = args.indexOf('--');
if (dash < 1 || dash === args.length - 1) {
  process.stderr.write('usage: node qemu-agent.mjs BASE [--stdin TEXT | --stdin-file PATH] [--timeout SECONDS] -- COMMAND ARGS...\n');
  process.exit(2);
}
const [base, ...opts] = args.slice(0, dash);
const argv = args.slice(dash + 1);
const opt = (name) => {
  const i = opts.indexOf(name);
  return i >= 0 ? opts[i + 1] : undefined;
};
const stdinFile = opt('--stdin-file');
const stdinText = stdinFile !== undefined ? readFileSync(stdinFile) : opt('--stdin');
const timeoutSec = Number(opt('--timeout') ?? 120);

rmSync(`${base}.in`, { force: true });
rmSync(`${base}.out`, { force: true });
execFileSync('mkfifo', [`${base}.in`]);
const toGuest = openSync(`${base}.in`, 'r+'); // read-write: opening a FIFO this way never blocks
const fromGuest = openSync(`${base}.out`, 'w+'); // created last: the signal that QEMU may start

const finish = (status) => {
  closeSync(toGuest);
  closeSync(fromGuest);
  rmSync(`${base}.in`, { force: true });
  rmSync(`${base}.out`, { force: true });
  process.exit(status);
};

const runner = new CommandRunner({
  argv,
  send: (b) => writeSync(toGuest, b),
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: stdinText === undefined ? undefined : Readable.from([Buffer.from(stdinText)]),
});
runner.exited.then(
  (status) => process.stdout.write('', () => finish(status)),
  (e) => {
    process.stderr.write(`qemu-agent: ${e.message}\n`);
    finish(125);
  },
);

// Follow BASE.out as QEMU appends to it.
const buf = Buffer.alloc(1 << 20);
let at = 0;
const poll = () => {
  for (;;) {
    const n = readSync(fromGuest, buf, 0, buf.length, at);
    if (n === 0) break;
    at += n;
    runner.onGuestBytes(buf.subarray(0, n));
  }
  if (runner.status === undefined) setTimeout(poll, 5);
};
poll();
setTimeout(() => {
  process.stderr.write(`qemu-agent: no EXIT within ${timeoutSec} s\n`);
  finish(124);
}, timeoutSec * 1000).unref();
