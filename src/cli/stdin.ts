/**
 * The host's stdin as the guest's input, unless it is /dev/null (CI jobs and programs that start us
 * with stdin ignored): there is nothing to read then, and not reading it saves more than it seems.
 * Node reads a character device that is not a terminal through libuv's thread pool, whose first use
 * starts its four threads, all to read end-of-file: 250 ms of a `nodevisor run` of a guest that
 * exits at once, under nested emulation (strace timestamps). Undefined means no input, which every
 * taker treats as an input that has ended.
 */
import { fstatSync, statSync } from 'node:fs';
import type { Readable } from 'node:stream';

export function stdinUnlessNull(): Readable | undefined {
  try {
    const st = fstatSync(0);
    if (st.isCharacterDevice() && st.rdev === statSync('/dev/null').rdev) return undefined;
  } catch {
    // fd 0 unreadable (closed): Node's own stdin copes with that as well as it can
  }
  return process.stdin;
}
