/**
 * virtio-9p (host directory sharing): the transport-independent model. One request queue; each chain
 * carries one 9P2000.L request in its device-readable buffers and room for the reply in its
 * device-writable ones. The configuration space holds the mount tag the guest mounts by
 * (`mount -t 9p -o trans=virtio <tag> /mnt`).
 *
 * Bad requests get a 9P error reply rather than a VirtqError: one malformed or oversized request is
 * the guest's problem to see as an error, and resetting the device would take the whole mount down.
 *  - A request whose size field is larger than the negotiated msize (or the server's cap before
 *    Tversion) is not copied: it gets Rlerror(EMSGSIZE) with its tag. Bytes the driver supplies
 *    beyond the size field are ignored; fewer than it claims is a malformed request (EPROTO).
 *  - A reply that does not fit the writable buffers: reads and directory listings are cut to fit
 *    (the server is told the room); any other reply that would not fit becomes Rlerror(EMSGSIZE).
 *  - A chain without room for even an Rlerror (11 bytes) is returned unserved (0 bytes written), so
 *    a request is never carried out without its reply being deliverable.
 * Nothing is ever written beyond the writable buffers. Each kind of problem is logged once per
 * activation (a guest must not be able to flood the log), and requests are served for at most
 * P9_TURN_BUDGET_MS (or P9_NOTIFY_BUDGET requests) at a time, the rest on the next event-loop turn: a
 * guest that keeps its queue full must not keep the main thread (console, API, timers, other
 * devices) from running.
 */
import { VmmError } from '../../../errors.js';
import { VIRTIO_ID, bit } from '../constants.js';
import { onNextTurn, type VirtioDevice, type VirtioDeviceContext } from '../device.js';
import type { DescriptorChain } from '../queue.js';
import { chainLength, gatherBytes, scatterBytes } from '../chain-bytes.js';
import { ERRNO, HEADER_SIZE, encodeRlerror, peekTag } from './protocol.js';
import { P9Server } from './server.js';
import { nowMs } from '../../../clock.js';

/** Feature bit: the configuration space carries a mount tag. */
export const VIRTIO_9P_MOUNT_TAG = 0;
export const P9_QUEUE_SIZE = 128;
/** Requests served per event-loop turn (each is synchronous file-system work on the main thread)... */
export const P9_NOTIFY_BUDGET = 32;
/** ...and the time they may take, checked after each (one request can list a large directory). */
export const P9_TURN_BUDGET_MS = 10;
/** The longest tag accepted (bytes of UTF-8). */
export const P9_MAX_TAG_LEN = 36;
/** size[4] type[1] tag[2] ecode[4]: the smallest reply there is. */
const RLERROR_SIZE = HEADER_SIZE + 4;

export interface VirtioNinepOptions {
  /** Host directory to share. */
  readonly root: string;
  /** Mount tag the guest uses to name this share. */
  readonly tag: string;
  readonly readOnly?: boolean;
  /** How long one turn may serve requests (P9_TURN_BUDGET_MS; tests that count batches raise it). */
  readonly turnBudgetMs?: number;
}

/** The tag as config-space bytes, or a BAD_CONFIG error saying what is wrong with it. */
export function encodeMountTag(tag: string): Uint8Array {
  const bytes = new TextEncoder().encode(tag);
  const problem =
    tag.length === 0 ? 'is empty'
    : new TextDecoder().decode(bytes) !== tag ? 'is not valid Unicode (lone surrogate)'
    : bytes.byteLength > P9_MAX_TAG_LEN ? `is ${bytes.byteLength} bytes of UTF-8, more than ${P9_MAX_TAG_LEN}`
    : /[\u0000-\u001f\u007f]/.test(tag) ? 'contains a control character'
    : undefined;
  if (problem) throw new VmmError('BAD_CONFIG', `virtio-9p: mount tag ${JSON.stringify(tag)} ${problem}`);
  return bytes;
}

export class VirtioNinep implements VirtioDevice {
  readonly kind = '9p';
  readonly deviceId = VIRTIO_ID.NINEP;
  readonly features = bit(VIRTIO_9P_MOUNT_TAG);
  readonly queueMaxSizes = [P9_QUEUE_SIZE] as const;
  readonly configSize: number;
  readonly server: P9Server;
  readonly tag: string;
  readonly #tagBytes: Uint8Array;
  #ctx: VirtioDeviceContext | undefined;
  #continuation: NodeJS.Immediate | undefined;
  readonly #warned = new Set<string>();
  readonly #turnBudgetMs: number;

  constructor(opts: VirtioNinepOptions) {
    this.#tagBytes = encodeMountTag(opts.tag);
    this.#turnBudgetMs = opts.turnBudgetMs ?? P9_TURN_BUDGET_MS;
    this.tag = opts.tag;
    try {
      this.server = new P9Server({
        root: opts.root,
        readOnly: opts.readOnly ?? false,
        onUnexpected: (e) => this.#warnOnce('unexpected', { err: e }, 'virtio-9p: unexpected error, answered EIO'),
      });
    } catch (e) {
      throw new VmmError('BAD_CONFIG', `virtio-9p: ${(e as Error).message}`, { cause: e });
    }
    this.configSize = 2 + this.#tagBytes.byteLength;
  }

  /** struct virtio_9p_config: tag_len (le16), then the tag, not NUL-terminated. */
  bindConfig(config: DataView): void {
    config.setUint16(0, this.#tagBytes.byteLength, true);
    for (let i = 0; i < this.#tagBytes.byteLength; i++) config.setUint8(2 + i, this.#tagBytes[i]!);
  }

  activate(ctx: VirtioDeviceContext): void {
    this.#ctx = ctx;
    // #warned is kept across activations: one line per kind of problem per device, resets included.
  }

  notify(index: number): void {
    const ctx = this.#ctx;
    if (index !== 0 || !ctx) return;
    const q = ctx.queue(0);
    if (!q) return;
    const before = q.nextUsed;
    const deadline = nowMs() + this.#turnBudgetMs;
    let served = 0;
    let more = false;
    try {
      for (let chain = q.pop(); chain; ) {
        q.pushUsed(chain.head, this.#serve(ctx, chain));
        more = ++served >= P9_NOTIFY_BUDGET || nowMs() > deadline;
        chain = more ? undefined : q.pop();
      }
    } finally {
      // Chains completed before a broken one still reach the driver.
      if (q.nextUsed !== before) ctx.usedAdded(0, before);
    }
    // More may be waiting: serve them on the next turn, without waiting for a notification the
    // driver will not send for chains it has already made available.
    if (more) {
      this.#continuation ??= onNextTurn(ctx, () => {
        this.#continuation = undefined;
        this.notify(0);
      });
    }
  }

  reset(): void {
    this.#stop();
    this.server.reset(); // a reset guest starts over with Tversion; open host files are closed
  }

  close(): void {
    this.#stop();
    this.server.reset();
  }

  #stop(): void {
    this.#ctx = undefined;
    if (this.#continuation) clearImmediate(this.#continuation);
    this.#continuation = undefined;
  }

  #warnOnce(key: string, obj: object, msg: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#ctx?.log.warn(obj, `${msg} (further ones are not logged)`);
  }

  /** Serves one chain; returns the bytes written to its writable buffers. */
  #serve(ctx: VirtioDeviceContext, chain: DescriptorChain): number {
    const room = chainLength(chain.writable);
    if (room < RLERROR_SIZE) {
      this.#warnOnce('no-room', { head: chain.head, room }, 'virtio-9p: request without room for a reply, returned unserved');
      return 0;
    }
    // Copy only what the message's own size field claims (within what the driver supplied), and
    // refuse before copying anything large when that claim is beyond the negotiated msize.
    const supplied = chainLength(chain.readable);
    const head = gatherBytes(ctx.mem, chain.readable, new Uint8Array(Math.min(supplied, HEADER_SIZE)), 'virtio-9p request');
    const declared = head.byteLength >= 4 ? new DataView(head.buffer).getUint32(0, true) : supplied;
    let reply: Uint8Array;
    if (declared > this.server.maxRequest) {
      reply = encodeRlerror(peekTag(head), ERRNO.EMSGSIZE);
    } else {
      reply = this.server.handle(gatherBytes(ctx.mem, chain.readable, new Uint8Array(Math.min(supplied, Math.max(declared, HEADER_SIZE))), 'virtio-9p request'), room);
    }
    if (reply.byteLength > room) reply = encodeRlerror(peekTag(reply), ERRNO.EMSGSIZE); // cannot happen: the server was told the room
    return scatterBytes(ctx.mem, chain.writable, reply, 'virtio-9p reply');
  }
}

