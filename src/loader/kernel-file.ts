/** Reading a kernel or guest image from disk, with one-line errors that name the file. */
import { readFileSync, statSync } from 'node:fs';
import { VmmError } from '../errors.js';

export type ImageKind = 'bzimage' | 'elf' | 'flat';

/** Reads `path` whole; `flag` names the option in messages ("--kernel"). */
export function readImage(path: string, flag = '--kernel'): Uint8Array {
  checkImageFile(path, flag);
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EACCES') throw new VmmError('BAD_KERNEL', `${flag} ${path}: permission denied`);
    throw new VmmError('BAD_KERNEL', `${flag} ${path}: cannot read: ${(e as Error).message}`);
  }
}

/**
 * Checks that `path` is a regular file with something in it, before anything reads it: a FIFO or a
 * device (/dev/zero) has no size to check against guest RAM, and reading it may never end.
 */
export function checkImageFile(path: string, flag: string): void {
  // "--kernel PATH", or "NODEVISOR_KERNEL=PATH" for a path from the environment.
  const what = flag.endsWith('=') ? `${flag}${path}` : `${flag} ${path}`;
  let size: number;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new VmmError('BAD_KERNEL', `${what}: is a directory, not an image`);
    if (!st.isFile()) throw new VmmError('BAD_KERNEL', `${what}: not a regular file`);
    size = st.size;
  } catch (e) {
    if (e instanceof VmmError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new VmmError('BAD_KERNEL', `${what}: no such file`);
    if (code === 'EACCES') throw new VmmError('BAD_KERNEL', `${what}: permission denied`);
    throw new VmmError('BAD_KERNEL', `${what}: ${(e as Error).message}`);
  }
  if (size === 0) throw new VmmError('BAD_KERNEL', `${what}: file is empty`);
}

/** bzImage has "HdrS" at 0x202 (Linux boot protocol); ELF starts with \x7fELF; anything else is flat. */
export function detectImageKind(image: Uint8Array): ImageKind {
  if (image.length >= 0x206 && image[0x202] === 0x48 && image[0x203] === 0x64 && image[0x204] === 0x72 && image[0x205] === 0x53) return 'bzimage';
  if (image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46) return 'elf';
  return 'flat';
}
