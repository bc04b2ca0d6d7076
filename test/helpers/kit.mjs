// The Linux guest kit (guests/kit/build.sh). Under CI=true a missing kit is a failure, not a skip.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
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

/**
 * `text` with the function each kernel RIP (0xffffffff........) falls in, from `elf`'s symbol table,
 * for failure messages: where a guest that timed out was.
 */
export function withKernelSymbols(text, elf) {
  let syms;
  try {
    syms = execFileSync('nm', ['-n', elf], { encoding: 'utf8', maxBuffer: 256 << 20 }).split('\n')
      .map((l) => l.split(' ')).filter((f) => f.length === 3 && /^[tTwW]$/.test(f[1])).map(([a, , name]) => [BigInt(`0x${a}`), name]);
  } catch {
    return text;
  }
  return text.replace(/RIP (0xffffffff[0-9a-f]{8})/g, (m, rip) => {
    const r = BigInt(rip);
    let [lo, hi] = [0, syms.length - 1];
    if (hi < 0 || syms[0][0] > r) return m;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (syms[mid][0] <= r) lo = mid;
      else hi = mid - 1;
    }
    return `${m} (${syms[lo][1]}+0x${(r - syms[lo][0]).toString(16)})`;
  });
}
