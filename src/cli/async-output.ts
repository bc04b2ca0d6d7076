/**
 * Our stdout or stderr as a Writable that never blocks the event loop. Node writes process.stdout
 * synchronously to pipes and files on Linux, so a reader that stops reading stops the main thread
 * (timers, devices) with it. Here each chunk is written by libuv's pool: a stalled reader holds one
 * pool thread, and the stream's buffer fills and asks the producer to wait (write() returns false),
 * as any Node stream does. When the reader goes away (EPIPE) the rest is dropped: nobody can read it.
 */
import { write } from 'node:fs';
import { Writable } from 'node:stream';

export function asyncOutput(fd: number): Writable {
  let gone = false;
  const writeAll = (bytes: Uint8Array, cb: () => void): void => {
    write(fd, bytes, 0, bytes.length, null, (e, n) => {
      if (e?.code === 'EAGAIN') {
        // A non-blocking fd (someone else set O_NONBLOCK on a shared pipe): try again shortly.
        setTimeout(() => writeAll(bytes, cb), 1);
        return;
      }
      if (e) {
        gone = true;
        return cb();
      }
      if (n < bytes.length) return writeAll(bytes.subarray(n), cb);
      cb();
    });
  };
  return new Writable({
    write(chunk: Buffer, _encoding, cb) {
      if (gone) return cb();
      writeAll(chunk, () => cb());
    },
    // Chunks that queued up while a write was in the pool go out together: one hop, not one each.
    writev(chunks, cb) {
      if (gone) return cb();
      writeAll(Buffer.concat(chunks.map((c) => c.chunk as Buffer)), () => cb());
    },
  });
}
