/**
 * The files Firecracker's logger and metrics write to: a regular file or a named pipe that the
 * caller created beforehand (Firecracker creates neither, and scripts `touch` or `mkfifo` them).
 * Writes never wait: a pipe whose reader is behind, or that nobody reads, must not stall the VMM or
 * keep it alive, so what does not fit is dropped and counted.
 */
import { closeSync, constants, openSync, statSync, writeSync } from 'node:fs';
import { VmmError, describeError } from '../errors.js';

export class OutputFile {
  #fd: number;
  /** The last write was cut short (a full pipe took part of it): the next one ends that line first. */
  #cut = false;
  /** Writes dropped, whole or in part, for want of room in a pipe. */
  dropped = 0;

  /** Opens `path`, named by API field `field` in errors, for appending. */
  constructor(readonly path: string, field: string) {
    let fifo: boolean;
    try {
      const st = statSync(path);
      if (!st.isFile() && !st.isFIFO()) throw new VmmError('BAD_CONFIG', `${field} ${path}: not a regular file or a named pipe`);
      fifo = st.isFIFO();
    } catch (e) {
      if (e instanceof VmmError) throw e;
      throw new VmmError('BAD_CONFIG', `${field} ${path}: no such file (create it first: a regular file or a named pipe)`);
    }
    try {
      // A FIFO is opened read-write: opening one write-only without blocking fails (ENXIO) while
      // it has no reader yet, and a reader may come later.
      this.#fd = openSync(path, (fifo ? constants.O_RDWR : constants.O_WRONLY) | constants.O_APPEND | constants.O_NONBLOCK);
    } catch (e) {
      throw new VmmError('BAD_CONFIG', `${field} ${path}: ${describeError(e)}`);
    }
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Appends `text` (whole lines) now, or drops it if a pipe has no room; true if all of it went in.
   * Text up to PIPE_BUF (4 KiB) goes into a pipe whole or not at all. Throws on a file error.
   */
  write(text: string): boolean {
    if (this.#fd < 0) return false;
    const bytes = Buffer.from(this.#cut ? `\n${text}` : text);
    let n = 0;
    try {
      n = writeSync(this.#fd, bytes);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
    if (n === bytes.length) {
      this.#cut = false;
      return true;
    }
    this.dropped++;
    if (n > 0) this.#cut = true;
    return false;
  }

  close(): void {
    if (this.#fd < 0) return;
    closeSync(this.#fd);
    this.#fd = -1;
  }
}
