// The Linux guest kit (guests/kit/build.sh). Under CI=true a missing kit is a failure, not a skip.
import { existsSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';

export const kitDir = process.env.NODEVISOR_KIT_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'nodevisor', 'kit');
export const smallVmlinux = path.join(kitDir, 'small', 'vmlinux');
export const smallBzImage = path.join(kitDir, 'small', 'bzImage');
export const initramfs = path.join(kitDir, 'initramfs.cpio.gz');

const missing = [smallVmlinux, smallBzImage].find((f) => !existsSync(f));
if (missing && process.env.CI) throw new Error(`guest kit missing (${missing}): run guests/kit/build.sh; required under CI=true`);

/** node:test options that skip with the reason when the small kernel has not been built. */
export const needsKit = { skip: missing ? `guest kit not built (${missing}); run bash guests/kit/build.sh` : false };

/** Full-Linux tests: only where NODEVISOR_TEST_KERNEL names a kernel this host can run to userspace. */
export const fullLinux = process.env.NODEVISOR_TEST_KERNEL
  ? { skip: false, kernel: process.env.NODEVISOR_TEST_KERNEL, initrd: process.env.NODEVISOR_TEST_INITRD ?? initramfs }
  : { skip: 'NODEVISOR_TEST_KERNEL is not set: no kernel this host can boot to userspace (on a PVM host only a PVM-enabled guest kernel can)' };
