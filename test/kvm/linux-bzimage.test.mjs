// The small kernel's bzImage through the 64-bit boot protocol. On a PVM host its decompressor runs
// instruction by instruction in KVM's emulator and takes minutes (QEMU shows the same), so there we
// prove the boot path as far as it runs in a few seconds: the decompressor is executing in long mode
// on page tables of its own (not nodevisor's at 0x9000), far from where we loaded it. Elsewhere the
// kernel boots on and prints its log, as through PVH.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { needsKvm, runCli } from '../helpers/kvm.mjs';
import { needsKit, smallBzImage } from '../helpers/kit.mjs';
import { detectFlavour } from '../../dist/kvm/host.js';

const gate = needsKvm.skip ? needsKvm : needsKit;

describe('small kernel bzImage', gate, () => {
  it('enters the kernel through the 64-bit boot protocol and runs its decompressor (PVM) or boots (VMX/SVM)', async () => {
    if (detectFlavour() === 'pvm') {
      const r = await runCli(['run', '--kernel', smallBzImage, '--mem', '256M', '--cmdline', 'console=ttyS0', '--timeout', '6', '--log-level', 'debug'], { killAfterMs: 60_000 });
      assert.equal(r.status, 124, r.stderr.slice(-300));
      const state = r.stderr.split('\n').filter((l) => l.includes('vcpu state at stop')).map((l) => JSON.parse(l))[0];
      assert.ok(state, 'the vCPU state is logged at stop');
      const cr3 = parseInt(state.cr3, 16);
      const rip = parseInt(state.regs.rip, 16);
      assert.notEqual(cr3, 0x9000, 'the decompressor switched to page tables of its own');
      assert.equal(state.efer, '500', 'still in long mode (LME|LMA)');
      assert.ok(rip > 0x100200 && rip < 256 * 2 ** 20, `RIP ${state.regs.rip} is inside guest RAM, past the entry point`);
    } else {
      const r = await runCli(['run', '--kernel', smallBzImage, '--mem', '256M', '--cmdline', 'console=ttyS0 panic=-1', '--timeout', '60', '--log-level', 'error'], { killAfterMs: 90_000 });
      assert.match(r.stdout, /Command line: console=ttyS0 panic=-1/);
      assert.match(r.stdout, /ACPI: RSDP 0x00000000000E0000 000024 \(v02 NODEVI\)/);
      assert.match(r.stdout, /printk: console \[ttyS0\] enabled/);
      assert.equal(r.status, 4);
    }
  });
});
