import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { defaultGuest, demoGuest, kitDir } from '../../dist/vmm/default-guest.js';

describe('default guest of `nodevisor run`', () => {
  it('on a PVM host: NODEVISOR_KERNEL when set, otherwise the demo guest with a note saying why', () => {
    const saved = process.env.NODEVISOR_KERNEL;
    try {
      delete process.env.NODEVISOR_KERNEL;
      const demo = defaultGuest('pvm');
      assert.equal(demo.kernel, demoGuest());
      assert.equal(demo.cmdline, 'demo');
      assert.match(demo.note, /Linux needs a PVM-enabled kernel here \(set NODEVISOR_KERNEL\)/);
      process.env.NODEVISOR_KERNEL = demoGuest(); // any existing image stands for a PVM-enabled kernel
      assert.equal(defaultGuest('pvm').kernel, demoGuest());
      assert.equal(defaultGuest('pvm').note, undefined);
      // A wrong path is named as the environment variable it came from, not as a flag.
      process.env.NODEVISOR_KERNEL = '/some/pvm-kernel';
      assert.throws(() => defaultGuest('pvm'), (e) => e.code === 'BAD_KERNEL' && e.message === 'NODEVISOR_KERNEL=/some/pvm-kernel: no such file');
    } finally {
      if (saved === undefined) delete process.env.NODEVISOR_KERNEL;
      else process.env.NODEVISOR_KERNEL = saved;
    }
  });

  it('on VMX/SVM: the stock kernel and initramfs from the guest kit', { skip: !process.env.CI && !existsSync(`${kitDir()}/initramfs.cpio.gz`) && 'guest kit not built (guests/kit/build.sh)' }, () => {
    const g = defaultGuest('vmx');
    assert.match(g.kernel, /kit\/stock\/vmlinuz$/);
    assert.match(g.initrd, /kit\/initramfs\.cpio\.gz$/);
    assert.match(g.cmdline, /console=ttyS0/);
  });
});
