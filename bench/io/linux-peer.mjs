// The host's end of bench/io's Linux TCP figures, run inside the bench's network namespace:
//   node linux-peer.mjs BYTES -- VMM ARGS...
// Listens on 10.0.2.1:7000 (the guest uploads BYTES bytes) and 7001 (the guest downloads BYTES
// bytes), starts the VMM with the kit's Linux on its serial console, and once the guest's init prints
// its boot marker types the transfer script into the console. Each figure is timed here, on the host,
// from the connection's first byte to its last: the VMM's boot does not count. Prints one JSON line.
import { spawn } from 'node:child_process';
import net from 'node:net';

const sep = process.argv.indexOf('--');
const bytes = Number(process.argv[2]);
const [cmd, ...args] = process.argv.slice(sep + 1);
const LIMIT_MS = 600_000;

const result = {};
const up = net.createServer((sock) => {
  let t0;
  let n = 0;
  sock.on('data', (d) => {
    t0 ??= process.hrtime.bigint();
    n += d.length;
    if (n >= bytes) {
      result.uploadMBps = n / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9);
      sock.end();
    }
  });
  sock.on('error', () => {});
});
const payload = Buffer.alloc(bytes, 0x5a);
const down = net.createServer((sock) => {
  const t0 = process.hrtime.bigint();
  // Done when the guest has read it all and its nc has exited (its FIN, or the socket closing).
  const done = () => (result.downloadMBps ??= bytes / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9));
  sock.on('end', done);
  sock.on('close', done);
  sock.on('error', () => {});
  sock.end(payload);
});
await Promise.all([new Promise((r) => up.listen(7000, '10.0.2.1', r)), new Promise((r) => down.listen(7001, '10.0.2.1', r))]);

// One line: ash asks the terminal where its cursor is (ESC [6n) before each prompt, and would take
// lines typed ahead for the answer.
const script = [
  'ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0',
  `dd if=/dev/zero bs=64k count=${bytes >> 16} 2>/dev/null | nc 10.0.2.1 7000 >/dev/null`,
  'echo BENCH-UP-DONE',
  'nc 10.0.2.1 7001 >/dev/null',
  'echo BENCH-DOWN-DONE',
  'poweroff -f',
].join('; ') + '\n';

const vmm = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
let out = '';
let typed = false;
vmm.stdout.on('data', (d) => {
  out += d;
  if (!typed && out.includes('NODEVISOR-BOOT-OK')) {
    typed = true;
    // The shell starts right after the marker: give it a moment, as a person at the console would.
    setTimeout(() => vmm.stdin.write(script), 1000);
  }
});
let err = '';
vmm.stderr.on('data', (d) => (err += d));
vmm.stdin.on('error', () => {});
const timer = setTimeout(() => vmm.kill('SIGKILL'), LIMIT_MS);
const status = await new Promise((r) => vmm.on('close', (code, signal) => r(code ?? signal)));
clearTimeout(timer);
up.close();
down.close();
process.stdout.write(`${JSON.stringify({ ...result, status, done: out.includes('BENCH-DOWN-DONE'), tail: result.downloadMBps ? undefined : `${out.slice(-1500)}\n${err.slice(-1500)}` })}\n`);
