/**
 * A host tap interface as a frame pipe: each read() returns one Ethernet frame, writeEach() sends
 * frames, one write(2) each. The fd is non-blocking and carries a 12-byte virtio_net_hdr_v1 in front
 * of every frame (IFF_VNET_HDR), so the virtio-net model can pass frames through without translating
 * headers.
 *
 * Nothing here ever blocks the main thread: an empty tap reads as `undefined`, and a frame the
 * kernel cannot take right now is dropped and counted, as a real NIC would under load. Reads and
 * writes go through the addon's readFd/writeEach, which return -errno rather than throw: per frame,
 * fs.readSync/writeSync cost more than the system call (and an Error for every empty read), and
 * writeEach sends a batch of frames with one call from JavaScript.
 */
import { closeSync } from 'node:fs';
import { constants as OS } from 'node:os';
import { VmmError, errnoError, isErrno } from '../errors.js';
import { native } from '../native/binding.js';

/** Bytes of virtio_net_hdr_v1 in front of every frame on the tap (TUNSETVNETHDRSZ). */
export const TAP_VNET_HDR_LEN = 12;

/**
 * TUNSETOFFLOAD flags (linux/if_tun.h): what the kernel may leave undone on frames it hands us. Each
 * one matches a virtio-net guest feature, so a frame read under them can go to the guest as it is.
 */
export const TUN_F = { CSUM: 0x01, TSO4: 0x02, TSO6: 0x04, TSO_ECN: 0x08 } as const;

/** Linux's IFNAMSIZ, terminating NUL included. */
const IFNAMSIZ = 16;

/** What the virtio-net model needs from a tap; tests substitute a fake. */
export interface TapDevice {
  /** The interface name as the kernel reports it. */
  readonly name: string;
  /** Reads one frame (vnet header included) into `into`; undefined when none is queued. */
  read(into: Uint8Array): number | undefined;
  /**
   * Sends `count` frames (vnet header included), each a range of `bytes` ((offset, length) pairs in
   * `spans`), in order, and sets sent[i] to whether frame i went out. A frame is dropped when the
   * kernel's queue is full or the interface is down (ordinary loss), or when the kernel refuses it
   * (malformed): the first such refusal is returned; the frames after it are still sent.
   */
  writeEach(bytes: Uint8Array, spans: Uint32Array, count: number, sent: Uint8Array): Error | undefined;
  /** Calls `cb` on the main thread while frames are waiting (level-triggered); returns stop(). */
  onReadable(cb: (error?: string) => void): () => void;
  /** Which offloads (TUN_F bits) frames read from now on may carry; 0: whole, checksummed frames only. */
  setOffload(flags: number): void;
  close(): void;
}

export type TapOpener = (name: string, vnetHdr: boolean) => { fd: number; name: string };

export class Tap implements TapDevice {
  #fd: number;
  readonly #stops = new Set<() => void>();
  /** Frames dropped because the kernel's queue was full (EAGAIN) or the interface was down (EIO). */
  writeDrops = 0;
  /** writeEach's per-frame results, kept between calls. */
  #results = new Int32Array(0);

  private constructor(fd: number, readonly name: string) {
    this.#fd = fd;
  }

  /**
   * Attaches to tap `name`, creating it if it does not exist (which needs CAP_NET_ADMIN; a persistent
   * tap made with `ip tuntap add ... user U` can be opened by U without it).
   */
  static open(name: string, opener: TapOpener = (n, v) => native().openTap(n, v)): Tap {
    checkName(name);
    try {
      const { fd, name: actual } = opener(name, true);
      return new Tap(fd, actual);
    } catch (e) {
      throw openError(name, e);
    }
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  read(into: Uint8Array): number | undefined {
    const n = native().readFd(this.#live(), into);
    if (n >= 0) return n;
    if (n === -OS.errno.EAGAIN) return undefined;
    throw ioError(this.name, 'read', errnoError(-n, 'read'));
  }

  writeEach(bytes: Uint8Array, spans: Uint32Array, count: number, sent: Uint8Array): Error | undefined {
    const results = (this.#results.length >= count ? this.#results : (this.#results = new Int32Array(count)));
    native().writeEach(this.#live(), bytes, spans, count, results);
    let refused: Error | undefined;
    for (let i = 0; i < count; i++) {
      const n = results[i]!;
      sent[i] = n >= 0 ? 1 : 0;
      if (n >= 0) continue;
      // A tap takes a frame whole or not at all: one write(2) is one frame. EAGAIN: the queue is
      // full; EIO: the interface is down, a cable pulled out. The frame is lost, nothing is wrong with it.
      if (n === -OS.errno.EAGAIN || n === -OS.errno.EIO) this.writeDrops++;
      else refused ??= ioError(this.name, 'write', errnoError(-n, 'write'));
    }
    return refused;
  }

  onReadable(cb: (error?: string) => void): () => void {
    const stopWatch = native().watchFd(this.#live(), (error) => {
      if (error !== undefined) stop(); // the watch ended: release it
      cb(error);
    });
    const stop = (): void => {
      if (this.#stops.delete(stop)) stopWatch();
    };
    this.#stops.add(stop);
    return stop;
  }

  setOffload(flags: number): void {
    try {
      native().setTapOffload(this.#live(), flags);
    } catch (e) {
      throw ioError(this.name, 'TUNSETOFFLOAD', e);
    }
  }

  /** Stops every watch and closes the fd; the interface goes away with it unless it is persistent. */
  close(): void {
    if (this.#fd < 0) return;
    for (const stop of [...this.#stops]) stop();
    const fd = this.#fd;
    this.#fd = -1;
    closeSync(fd);
  }

  #live(): number {
    if (this.#fd < 0) throw new VmmError('INTERNAL', `tap ${this.name}: used after close()`);
    return this.#fd;
  }
}

/** The kernel's rule for interface names (dev_valid_name), checked here for a clearer message. */
function checkName(name: string): void {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0 || bytes >= IFNAMSIZ || name === '.' || name === '..' || /[/:\s]/.test(name)) {
    throw new VmmError('BAD_CONFIG', `tap ${JSON.stringify(name)}: not a valid interface name (1 to ${IFNAMSIZ - 1} bytes, no '/', ':' or spaces)`);
  }
}

function openError(name: string, e: unknown): Error {
  if (!isErrno(e)) return e instanceof Error ? e : new Error(String(e));
  const at = `tap ${name}`;
  const opening = e.syscall === 'open';
  switch (e.code) {
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      if (opening) return new VmmError('BAD_CONFIG', `${at}: /dev/net/tun is missing (load the tun module: modprobe tun)`, { cause: e });
      break;
    case 'EPERM':
    case 'EACCES':
      return new VmmError('BAD_CONFIG', `${at}: permission denied (creating a tap needs CAP_NET_ADMIN; or create it once with \`ip tuntap add dev ${name} mode tap user $USER\`)`, { cause: e });
    case 'EBUSY':
      return new VmmError('BAD_CONFIG', `${at}: already attached by another process`, { cause: e });
    case 'EINVAL':
      if (!opening) return new VmmError('BAD_CONFIG', `${at}: an interface of that name exists and is not a single-queue tap (or the kernel refused the name)`, { cause: e });
      break;
  }
  return new VmmError('BAD_CONFIG', `${at}: ${e.message}`, { cause: e });
}

function ioError(name: string, op: 'read' | 'write' | 'TUNSETOFFLOAD', e: unknown): Error {
  if (!isErrno(e)) return e instanceof Error ? e : new Error(String(e));
  return new VmmError('INTERNAL', `tap ${name}: ${op} failed: ${e.message}`, { cause: e });
}
