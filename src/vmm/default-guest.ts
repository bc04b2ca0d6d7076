/**
 * What `nodevisor run` boots when no --kernel is given: on VMX/SVM hosts Debian's stock kernel with
 * the busybox initramfs from the guest kit (built on first use); on a PVM host the kernel named by
 * NODEVISOR_KERNEL, or else the built-in demo guest (a freestanding C program that describes the
 * machine and powers off), since only a PVM-enabled Linux kernel runs there.
 */
import { existsSync } from 'node:fs';
import { lazyChildProcess } from '../lazy-builtins.js';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../package-root.js';
import { VmmError } from '../errors.js';
import { checkImageFile } from '../loader/kernel-file.js';
import type { KvmFlavour } from '../kvm/host.js';

export const kitDir = (): string => process.env.NODEVISOR_KIT_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'nodevisor', 'kit');
/** The demo guest's path (found on demand: most runs name their kernel). */
export const demoGuest = (): string => path.join(packageRoot(import.meta.url), 'guests', 'tests', 'build', 'c-machine.elf');

export interface DefaultGuest {
  readonly kernel: string;
  readonly initrd?: string;
  readonly cmdline: string;
  /** A line to show the user before booting it (why this guest). */
  readonly note?: string;
}

export function defaultGuest(flavour: KvmFlavour): DefaultGuest {
  if (flavour === 'pvm') {
    const k = process.env.NODEVISOR_KERNEL;
    if (k) {
      // Named by the environment, not by a flag: say so if they are wrong.
      const initrd = process.env.NODEVISOR_INITRD;
      checkImageFile(k, 'NODEVISOR_KERNEL=');
      if (initrd) checkImageFile(initrd, 'NODEVISOR_INITRD=');
      return { kernel: k, cmdline: 'console=ttyS0 reboot=k panic=-1', ...(initrd ? { initrd } : {}) };
    }
    const demo = demoGuest();
    if (!existsSync(demo)) throw new VmmError('BAD_KERNEL', `the demo guest ${demo} is not built (npm run guests)`);
    return {
      kernel: demo,
      cmdline: 'demo',
      note: 'this host\'s /dev/kvm is PVM: Linux needs a PVM-enabled kernel here (set NODEVISOR_KERNEL); running the built-in demo guest instead',
    };
  }
  const kit = kitDir();
  const kernel = path.join(kit, 'stock', 'vmlinuz');
  const initrd = path.join(kit, 'initramfs.cpio.gz');
  if (!existsSync(kernel) || !existsSync(initrd)) {
    process.stderr.write('nodevisor: building the guest kit (Debian kernel and busybox initramfs, first run only)...\n');
    const r = lazyChildProcess().spawnSync('bash', [path.join(packageRoot(import.meta.url), 'guests', 'kit', 'build.sh'), '--what', 'initramfs'], { stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status !== 0) throw new VmmError('BAD_KERNEL', `could not build the guest kit (guests/kit/build.sh exited ${r.status ?? r.signal})`);
  }
  return { kernel, initrd, cmdline: 'console=ttyS0 reboot=k panic=-1' };
}
