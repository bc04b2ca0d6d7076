/** Reading a kernel or guest image from disk, with one-line errors that name the file. */
import { readFileSync, statSync, type BigIntStats } from 'node:fs';
import { VmmError } from '../errors.js';

export type ImageKind = 'bzimage' | 'elf' | 'flat';

/**
 * Reads `path` whole; `flag` names the option in messages ("--kernel"). The bytes are shared with
 * other machines started from the same unchanged file (see `recent`): read them, never write them.
 */
export function readImage(path: string, flag = '--kernel'): Uint8Array {
  const st = checkImageFile(path, flag);
  const identity = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  const hit = recent.get(path);
  if (hit?.identity === identity) return hit.bytes;
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES') throw new VmmError('BAD_KERNEL', `${flag} ${path}: permission denied`);
    throw new VmmError('BAD_KERNEL', `${flag} ${path}: cannot read: ${(e as Error).message}`);
  }
  remember(path, identity, bytes);
  return bytes;
}

/**
 * Images read lately, by path, each with the identity of the file it was read from (device, inode,
 * size, and modification and change times to the nanosecond): a program that starts many machines
 * from one kernel reads it once, and a file changed in any way is read again. That saves each
 * machine an open, a read and a close (through 9p under nested emulation, ~1 ms each). At most
 * RECENT_MAX_BYTES are kept, the newest first.
 */
const recent = new Map<string, { identity: string; bytes: Uint8Array }>();
export const RECENT_MAX_BYTES = 64 << 20;

function remember(path: string, identity: string, bytes: Uint8Array): void {
  recent.delete(path);
  if (bytes.length > RECENT_MAX_BYTES) return;
  recent.set(path, { identity, bytes });
  let total = 0;
  for (const [p, e] of [...recent].reverse()) {
    total += e.bytes.length;
    if (total > RECENT_MAX_BYTES) recent.delete(p);
  }
}

/**
 * Checks that `path` is a regular file with something in it, before anything reads it: a FIFO or a
 * device (/dev/zero) has no size to check against guest RAM, and reading it may never end.
 */
export function checkImageFile(path: string, flag: string): BigIntStats {
  // "--kernel PATH", or "NODEVISOR_KERNEL=PATH" for a path from the environment.
  const what = flag.endsWith('=') ? `${flag}${path}` : `${flag} ${path}`;
  let st: BigIntStats;
  try {
    st = statSync(path, { bigint: true });
    if (st.isDirectory()) throw new VmmError('BAD_KERNEL', `${what}: is a directory, not an image`);
    if (!st.isFile()) throw new VmmError('BAD_KERNEL', `${what}: not a regular file`);
  } catch (e) {
    if (e instanceof VmmError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new VmmError('BAD_KERNEL', `${what}: no such file`);
    if (code === 'EACCES') throw new VmmError('BAD_KERNEL', `${what}: permission denied`);
    throw new VmmError('BAD_KERNEL', `${what}: ${(e as Error).message}`);
  }
  if (st.size === 0n) throw new VmmError('BAD_KERNEL', `${what}: file is empty`);
  return st;
}

/** bzImage has "HdrS" at 0x202 (Linux boot protocol); ELF starts with \x7fELF; anything else is flat. */
export function detectImageKind(image: Uint8Array): ImageKind {
  if (image.length >= 0x206 && image[0x202] === 0x48 && image[0x203] === 0x64 && image[0x204] === 0x72 && image[0x205] === 0x53) return 'bzimage';
  if (image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46) return 'elf';
  return 'flat';
}
