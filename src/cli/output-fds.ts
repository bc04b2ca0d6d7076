/**
 * Puts stdout and stderr in the mode Node gives them when it creates process.stdout and
 * process.stderr, for a pipe or a socket: non-blocking. `run` writes them through FdSink, the serial
 * console writer and asyncOutput, which all wait out EAGAIN; on a blocking pipe whose reader has
 * stopped, a write would instead hold the main thread (FdSink) or a pool thread for good, and exit()
 * would hang on that thread (libuv joins its pool threads at exit). Only those two kinds of fd get
 * Node's stream, because creating one loads Node's stream modules, which `run` otherwise does not
 * need; a file never blocks, and Node keeps a terminal blocking anyway.
 */
import { fstatSync } from 'node:fs';

export function outputFdsLikeNode(): void {
  for (const fd of [1, 2] as const) {
    try {
      const st = fstatSync(fd);
      if (st.isFIFO() || st.isSocket()) void (fd === 1 ? process.stdout : process.stderr);
    } catch {
      // closed: Node's own stdio copes
    }
  }
}
