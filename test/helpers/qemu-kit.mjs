// Boots the guest kit's Debian kernel and initramfs under QEMU (software emulation: no KVM needed)
// with the agent on a virtio-console port and a shared folder, and drives the command through
// nodevisor's own CommandRunner. This checks the guest side of `run -- COMMAND` (the kit's init,
// its modules, nv-agent, the 9p mount) under real Linux drivers, against QEMU as the reference VMM.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { detectFlavour } from '../../dist/kvm/host.js';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { CommandRunner } from '../../dist/runner/command-runner.js';
import { kitDir, initramfs } from './kit.mjs';

const stockKernel = path.join(kitDir, 'stock', 'vmlinuz');
const qemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;
const problem = !qemu ? 'qemu-system-x86_64 not installed' : ![stockKernel, initramfs].every(existsSync) ? `guest kit missing (${stockKernel})` : undefined;
if (problem && process.env.CI) throw new Error(`${problem}: required under CI=true`);
export const needsQemuKit = { skip: problem ?? false };

/**
 * QEMU's accelerator here: KVM where it is hardware-like (VMX/SVM, including nested), so that the
 * reference runs at speed; TCG elsewhere (a PVM host's KVM cannot run QEMU's firmware or a stock
 * kernel, and a host without /dev/kvm has none).
 */
export const qemuAccel = (() => {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return 'tcg';
  }
  return ['vmx', 'svm'].includes(detectFlavour()) ? 'kvm' : 'tcg';
})();
const accelArgs = qemuAccel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg'];

export class Collect extends Writable {
  chunks = [];
  _write(chunk, _enc, cb) {
    this.chunks.push(chunk);
    cb();
  }
  get text() {
    return Buffer.concat(this.chunks).toString();
  }
}

/** QEMU's guest ended before its agent said hello: the reference failed, no command ran. */
class ReferenceBootFailed extends Error {}

/**
 * Runs argv in the kit's Linux under QEMU; resolves { status, stdout, stderr, serial }.
 * A boot in which QEMU's own guest ends before its agent says hello (seen under nested emulation:
 * the guest dies right after "Booting from ROM") is tried once more: no command ran and no stdin
 * was read (the runner reads it only after the hello), so this retries the reference VMM, never a
 * result of the command. Any other failure, and a second failed boot, fails the test.
 */
export async function runInKitGuest(argv, opts = {}) {
  try {
    return await runOnce(argv, opts);
  } catch (e) {
    if (!(e instanceof ReferenceBootFailed)) throw e;
    process.stderr.write(`# QEMU reference: ${e.message.split('; serial:')[0]}; booting it once more\n`);
    return await runOnce(argv, opts);
  }
}

async function runOnce(argv, { share, shareRo = true, stdin, timeoutMs = 240_000 } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nv-qemu-'));
  const sock = path.join(dir, 'agent.sock');
  const args = ['-M', 'q35', ...accelArgs, '-m', '512', '-nographic', '-no-reboot', '-kernel', stockKernel, '-initrd', initramfs,
    '-append', `console=ttyS0 panic=-1 quiet nodevisor.agent=org.nodevisor.agent${share ? ' nodevisor.cwd=nvcwd' : ''}`,
    '-chardev', `socket,id=agent,path=${sock},server=on,wait=off`, '-device', 'virtio-serial-pci,disable-legacy=on', '-device', 'virtserialport,chardev=agent,name=org.nodevisor.agent'];
  if (share) args.push('-fsdev', `local,id=f0,path=${share},security_model=none${shareRo ? ',readonly=on' : ''}`, '-device', 'virtio-9p-pci,fsdev=f0,mount_tag=nvcwd,disable-legacy=on');
  const q = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let serial = '';
  q.stdout.on('data', (d) => (serial += d));
  q.stderr.on('data', (d) => (serial += d));
  const exited = new Promise((r) => q.once('exit', r));
  try {
    const chan = await connectWhenReady(sock, q);
    const stdout = new Collect();
    const stderr = new Collect();
    const runner = new CommandRunner({ argv, cwd: share ? '/mnt/cwd' : '', send: (b) => chan.write(b), stdout, stderr, stdin });
    chan.on('data', (b) => {
      if (!runner.onGuestBytes(b)) chan.pause();
    });
    runner.on('resume', () => chan.resume());
    let timer;
    const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out; serial:\n${serial.slice(-2000)}`)), timeoutMs)));
    let hello = false;
    runner.once('ready', () => (hello = true));
    const ended = exited.then(() => {
      const why = `QEMU ended first${hello ? '' : ', before the agent said hello'}; serial:\n${serial.slice(-2000)}`;
      return Promise.reject(hello ? new Error(why) : new ReferenceBootFailed(why));
    });
    const status = await Promise.race([runner.exited, timeout, ended]);
    clearTimeout(timer);
    chan.destroy();
    return { status, stdout: stdout.text, stderr: stderr.text, serial };
  } finally {
    q.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

async function connectWhenReady(sock, q) {
  for (let i = 0; i < 200; i++) {
    if (q.exitCode !== null) throw new Error('QEMU exited at start');
    try {
      return await new Promise((resolve, reject) => {
        const c = net.connect(sock, () => resolve(c));
        c.once('error', reject);
      });
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`no agent socket at ${sock}`);
}
