// The host's end of a TCP transfer with a guest, run inside the test's network namespace (started
// with `ip netns exec NS node tcp-peer.mjs --in-namespace BYTES -- COMMAND ARGS...`): listens on
// 10.0.2.1:7000 for the guest's upload (BYTES bytes, then it closes so the guest's nc ends) and on
// 7001 serves BYTES bytes of a pattern, then runs COMMAND (the VMM with the guest) and prints one
// JSON line: the upload's length and MD5, and COMMAND's status and output.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { downloadPattern } from './patterns.mjs';

if (!process.argv.includes('--in-namespace')) process.exit(0); // `node --test test/` runs helpers too

const sep = process.argv.indexOf('--');
const bytes = Number(process.argv[process.argv.indexOf('--in-namespace') + 1]);
const [cmd, ...args] = process.argv.slice(sep + 1);

const download = downloadPattern(bytes);

const upload = { bytes: 0, md5: '' };
const md5 = createHash('md5');
const up = net.createServer((sock) => {
  sock.on('data', (d) => {
    md5.update(d);
    upload.bytes += d.length;
    if (upload.bytes >= bytes) sock.end();
  });
  sock.on('end', () => (upload.md5 = md5.copy().digest('hex')));
  sock.on('close', () => (upload.md5 = md5.copy().digest('hex')));
  sock.on('error', () => {});
});
const down = net.createServer((sock) => {
  sock.on('error', () => {});
  sock.end(download);
});
await Promise.all([new Promise((r) => up.listen(7000, '10.0.2.1', r)), new Promise((r) => down.listen(7001, '10.0.2.1', r))]);

const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
let stdout = '';
let stderr = '';
child.stdout.on('data', (d) => (stdout += d));
child.stderr.on('data', (d) => (stderr += d));
const status = await new Promise((r) => child.on('close', r));
up.close();
down.close();
process.stdout.write(`${JSON.stringify({ upload, status, stdout, stderr: stderr.slice(-4000) })}\n`);
