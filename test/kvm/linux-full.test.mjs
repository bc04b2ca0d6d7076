// Full Linux boots, run only where NODEVISOR_TEST_KERNEL names a kernel this host can run to
// userspace (any kernel on VMX/SVM; a PVM-enabled one on a PVM host), with the kit's initramfs (or
// NODEVISOR_TEST_INITRD): boot to the init's marker, then drive the shell over the serial console.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cli } from '../helpers/kvm.mjs';
import { fullLinux } from '../helpers/kit.mjs';

/** Boots and returns helpers to wait for console output and type into it. */
function boot(cpus) {
  const child = spawn(process.execPath, [cli, 'run', '--kernel', fullLinux.kernel, '--initrd', fullLinux.initrd, '--cpus', String(cpus), '--mem', '512M', '--cmdline', 'console=ttyS0 reboot=k panic=-1', '--timeout', '300', '--log-level', 'error'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = async (re, ms = 240_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const m = re.exec(out);
      if (m) return m;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${re}; console:\n${out.slice(-2000)}`);
  };
  return { child, exited, waitFor, type: (s) => child.stdin.write(s), output: () => out };
}

describe('full Linux boot (NODEVISOR_TEST_KERNEL)', fullLinux, () => {
  it('boots to the init marker, runs shell commands over the console, powers off with status 0', async () => {
    const vm = boot(2);
    try {
      await vm.waitFor(/NODEVISOR-BOOT-OK/);
      vm.type('echo "nproc=$(nproc)"\n');
      await vm.waitFor(/nproc=2\r?\n/);
      vm.type('echo "epoch=$(date +%s)"\n');
      const m = await vm.waitFor(/epoch=(\d+)\r?\n/); // the whole number: the console may deliver the line in pieces
      const hostNow = Date.now() / 1000;
      assert.ok(Math.abs(Number(m[1]) - hostNow) < 120, `the guest clock is the host clock: guest ${m[1]}, host ${Math.round(hostNow)}`);
      vm.type('echo "sum=$((20 + 22))"\n');
      await vm.waitFor(/sum=42\r?\n/);
      vm.type('poweroff -f\n');
      assert.equal(await vm.exited, 0);
    } finally {
      vm.child.kill('SIGKILL');
    }
  });
});
