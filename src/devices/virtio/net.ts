/**
 * virtio-net (virtio 1.2 §5.1) over a host tap: one receive queue (0) and one transmit queue (1).
 *
 * Every frame on both sides carries the 12-byte struct virtio_net_hdr_v1, and the tap is opened with
 * a vnet header of the same size, so frames and their offload requests cross between the rings and
 * the tap without translation: the host kernel does the checksums and the segmentation the guest
 * leaves undone, and hands the guest large, partially checksummed frames when it may.
 *
 * Offloads (unless `offloads: false`), as QEMU and Firecracker offer them on a tap:
 * - transmit: CSUM, HOST_TSO4/6, HOST_ECN: a guest frame may ask for a checksum or be a TCP
 *   super-frame of up to 64 KiB; the tap's kernel side checks the header and does the work.
 * - receive: GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN: at activation the tap is told (TUNSETOFFLOAD) to
 *   leave exactly what the driver accepted undone; a frame whose header asks for more is dropped.
 * - MRG_RXBUF: a frame may fill several receive chains (num_buffers says how many), so the driver
 *   can post page-sized buffers and still receive 64 KiB super-frames.
 *
 * Receive: while queue 0 has buffers the tap is watched; each frame is read into a scratch buffer and
 * scattered into the next chain's (or chains') device-writable buffers. When the driver has posted
 * too few buffers the watch stops, and frames wait in the tap's own queue (the one already read waits
 * in the scratch buffer, with the chains taken for it) until the driver notifies queue 0 again:
 * backpressure instead of a busy loop or an unbounded buffer.
 *
 * Transmit: each chain's device-readable buffers are gathered into one frame and written to the tap.
 * Frames a network would drop (too short, too long, offloads that were never negotiated, a tap that
 * refuses them) are dropped and counted; only chains that break the virtqueue rules (a writable
 * buffer in a transmit chain, a readable one in a receive chain) fail the device with VirtqError.
 */
import { lazyCrypto } from '../../lazy-builtins.js';
import { VmmError, describeError } from '../../errors.js';
import { Tap, TAP_VNET_HDR_LEN, TUN_F, type TapDevice } from '../../net/tap.js';
import { VIRTIO_ID, bit } from './constants.js';
import type { VirtioDevice, VirtioDeviceContext } from './device.js';
import { VirtqError, type DescriptorChain, type SplitQueue } from './queue.js';
import { chainLength, gatherBytes, scatterBytes } from './chain-bytes.js';

/** Device feature bits (§5.1.3) this model knows by name. */
export const VIRTIO_NET_F = {
  CSUM: 0,
  GUEST_CSUM: 1,
  MTU: 3,
  MAC: 5,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  MRG_RXBUF: 15,
  STATUS: 16,
} as const;

/** The offloads offered: checksums and TCP segmentation both ways, and mergeable receive buffers. */
const OFFLOAD_FEATURES = [
  VIRTIO_NET_F.CSUM, VIRTIO_NET_F.HOST_TSO4, VIRTIO_NET_F.HOST_TSO6, VIRTIO_NET_F.HOST_ECN,
  VIRTIO_NET_F.GUEST_CSUM, VIRTIO_NET_F.GUEST_TSO4, VIRTIO_NET_F.GUEST_TSO6, VIRTIO_NET_F.GUEST_ECN,
  VIRTIO_NET_F.MRG_RXBUF,
].reduce((all, f) => all | bit(f), 0n);

/** config.status bits (§5.1.4). */
export const VIRTIO_NET_S_LINK_UP = 1;

/** struct virtio_net_config offsets (§5.1.4); fields past max_virtqueue_pairs need features we do not offer. */
export const NET_CONFIG = { mac: 0, status: 6, max_virtqueue_pairs: 8, SIZE: 10 } as const;

/** struct virtio_net_hdr_v1: always 12 bytes with VERSION_1, whatever MRG_RXBUF says (§5.1.6). */
export const NET_HDR_LEN = 12;
const HDR = { flags: 0, gso_type: 1, num_buffers: 10 } as const;
/** The part of the header the tap reads and writes (struct virtio_net_hdr, without num_buffers). */
const TAP_HDR_FIELDS = 10;
/** virtio_net_hdr flags (§5.1.6). */
export const NET_HDR_F = { NEEDS_CSUM: 1, DATA_VALID: 2 } as const;
/** virtio_net_hdr gso_type values (§5.1.6); ECN is a flag on the TCP ones. */
export const NET_HDR_GSO = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, ECN: 0x80 } as const;

/** An Ethernet header: the smallest frame the tap accepts. */
const ETH_HLEN = 14;
/**
 * The longest frame either path handles, header excluded: a 64 KiB IP packet plus Ethernet and VLAN
 * headers. Without GSO the tap's MTU bounds real frames far below this; the margin covers any MTU
 * the kernel allows on a tap.
 */
export const NET_MAX_FRAME = 65550;
/** The longest transmit chain accepted: header plus the longest frame. */
export const NET_MAX_TX = NET_HDR_LEN + NET_MAX_FRAME;

export const RX_QUEUE = 0;
export const TX_QUEUE = 1;
const QUEUE_SIZE = 256;
/** Chains served per turn of the event loop on either queue, so one busy queue cannot starve the VM. */
const BURST = 256;
/**
 * Frames sent with one writeEach call: still one write(2) each, but one call from JavaScript for
 * many. Small enough that the driver gets buffers back while the device goes on sending.
 */
const TX_BATCH = 32;

export interface VirtioNetOptions {
  /** An interface name (opened, created if needed) or an already open tap. The model owns it: close() closes it. */
  readonly tap: string | TapDevice;
  /** The guest's MAC address, 'xx:xx:xx:xx:xx:xx'; a random locally administered one when absent. */
  readonly mac?: string;
  /** Offer checksum and segmentation offloads and mergeable receive buffers (default true). */
  readonly offloads?: boolean;
}

/** What the negotiated features allow in the headers of one activation. */
interface HeaderRules {
  /** Transmit: NEEDS_CSUM (CSUM). */
  readonly txCsum: boolean;
  /** Transmit: the gso_type values accepted (HOST_TSO4/6, with or without ECN). */
  readonly txGso: ReadonlySet<number>;
  /** Receive: flags may pass through (GUEST_CSUM); without it the header is zeroed. */
  readonly rxCsum: boolean;
  /** Receive: the gso_type values the driver accepts (GUEST_TSO4/6, GUEST_ECN). */
  readonly rxGso: ReadonlySet<number>;
  /** Receive: a frame may fill several chains (MRG_RXBUF). */
  readonly mergeable: boolean;
  /** The TUN_F flags that make the tap send only what the above accepts. */
  readonly tapOffload: number;
}

const NO_OFFLOADS: HeaderRules = { txCsum: false, txGso: new Set([NET_HDR_GSO.NONE]), rxCsum: false, rxGso: new Set([NET_HDR_GSO.NONE]), mergeable: false, tapOffload: 0 };

/** The header rules that follow from the negotiated features (§5.1.3.1's dependencies enforced). */
export function headerRules(negotiated: bigint): HeaderRules {
  const has = (f: number): boolean => (negotiated & bit(f)) !== 0n;
  const txCsum = has(VIRTIO_NET_F.CSUM);
  const rxCsum = has(VIRTIO_NET_F.GUEST_CSUM);
  const gsoSet = (csum: boolean, v4: boolean, v6: boolean, ecn: boolean): Set<number> => {
    const set = new Set<number>([NET_HDR_GSO.NONE]);
    if (!csum) return set; // segmentation needs checksum offload: a driver that takes one without the other gets neither
    for (const [on, type] of [[v4, NET_HDR_GSO.TCPV4], [v6, NET_HDR_GSO.TCPV6]] as const) {
      if (!on) continue;
      set.add(type);
      if (ecn) set.add(type | NET_HDR_GSO.ECN);
    }
    return set;
  };
  const txGso = gsoSet(txCsum, has(VIRTIO_NET_F.HOST_TSO4), has(VIRTIO_NET_F.HOST_TSO6), has(VIRTIO_NET_F.HOST_ECN));
  const rxGso = gsoSet(rxCsum, has(VIRTIO_NET_F.GUEST_TSO4), has(VIRTIO_NET_F.GUEST_TSO6), has(VIRTIO_NET_F.GUEST_ECN));
  let tapOffload = rxCsum ? TUN_F.CSUM : 0;
  if (rxGso.has(NET_HDR_GSO.TCPV4)) tapOffload |= TUN_F.TSO4;
  if (rxGso.has(NET_HDR_GSO.TCPV6)) tapOffload |= TUN_F.TSO6;
  if (rxGso.size > 1 && has(VIRTIO_NET_F.GUEST_ECN)) tapOffload |= TUN_F.TSO_ECN;
  return { txCsum, txGso, rxCsum, rxGso, mergeable: has(VIRTIO_NET_F.MRG_RXBUF), tapOffload };
}

export class VirtioNet implements VirtioDevice {
  readonly kind = 'net';
  readonly deviceId = VIRTIO_ID.NET;
  readonly features: bigint;
  readonly queueMaxSizes: readonly number[] = [QUEUE_SIZE, QUEUE_SIZE];
  readonly configSize = NET_CONFIG.SIZE;
  readonly tap: TapDevice;
  readonly mac: Uint8Array;

  /** Frames delivered to the guest. */
  rxFrames = 0;
  /** Frames from the tap the guest never saw (too big for its buffer, truncated, unusable header). */
  rxDropped = 0;
  /** Frames the guest sent that reached the tap. */
  txFrames = 0;
  /** Frames the guest sent that were dropped (malformed, oversized, tap full or down). */
  txDropped = 0;
  /** Segmentation-offload super-frames read from the tap (rx) and written to it (tx). */
  rxGsoFrames = 0;
  txGsoFrames = 0;

  #config: DataView | undefined;
  #linkUp = true;
  #ctx: VirtioDeviceContext | undefined;
  #stopWatch: (() => void) | undefined;
  /** Receiving stopped on a tap error, until the next reset (a level-triggered watch would spin). */
  #rxHalted = false;
  #txContinuation: NodeJS.Immediate | undefined;
  #rules: HeaderRules = NO_OFFLOADS;
  /** A frame read from the tap (in #rxScratch) that waits for enough receive buffers; 0: none. */
  #rxPendingLen = 0;
  /** Receive chains taken from the ring for the waiting frame (MRG_RXBUF), in ring order. */
  #rxHeld: DescriptorChain[] = [];
  readonly #rxScratch = new Uint8Array(NET_HDR_LEN + NET_MAX_FRAME + 1); // +1: a full read means truncated
  readonly #txScratch = new Uint8Array(NET_MAX_TX);
  /**
   * Frames staged for one writeEach (see #send): their (offset, length) in #txBytes (a RAM region's
   * bytes or #txScratch), their chains' heads and gso types; #txSent gets the outcomes.
   */
  readonly #txSpans = new Uint32Array(2 * TX_BATCH);
  readonly #txHeads = new Uint16Array(TX_BATCH);
  readonly #txGso = new Uint8Array(TX_BATCH);
  readonly #txSent = new Uint8Array(TX_BATCH);
  #txStaged = 0;
  #txBytes: Uint8Array = this.#txScratch;
  readonly #warned = new Set<string>();

  constructor(opts: VirtioNetOptions) {
    this.mac = opts.mac === undefined ? randomMac() : parseMac(opts.mac);
    this.features = bit(VIRTIO_NET_F.MAC) | bit(VIRTIO_NET_F.STATUS) | (opts.offloads === false ? 0n : OFFLOAD_FEATURES);
    if (TAP_VNET_HDR_LEN !== NET_HDR_LEN) throw new VmmError('INTERNAL', 'tap and virtio-net headers differ in size');
    this.tap = typeof opts.tap === 'string' ? Tap.open(opts.tap) : opts.tap;
  }

  get macString(): string {
    return formatMac(this.mac);
  }

  bindConfig(config: DataView): void {
    this.#config = config;
    for (let i = 0; i < 6; i++) config.setUint8(NET_CONFIG.mac + i, this.mac[i]!);
    config.setUint16(NET_CONFIG.status, this.#linkUp ? VIRTIO_NET_S_LINK_UP : 0, true);
    config.setUint16(NET_CONFIG.max_virtqueue_pairs, 1, true);
  }

  /** Plugs or unplugs the virtual cable: the driver sees the change through a configuration interrupt. */
  setLink(up: boolean): void {
    if (up === this.#linkUp) return;
    this.#linkUp = up;
    this.#config?.setUint16(NET_CONFIG.status, up ? VIRTIO_NET_S_LINK_UP : 0, true);
    this.#ctx?.configChanged();
  }

  activate(ctx: VirtioDeviceContext): void {
    this.#ctx = ctx;
    this.#rxHalted = false;
    this.#rules = headerRules(ctx.negotiated);
    try {
      this.tap.setOffload(this.#rules.tapOffload);
    } catch (e) {
      // Harmless: without them the kernel sends whole, checksummed frames, which every driver takes.
      ctx.log.warn({ device: 'net', tap: this.tap.name }, `virtio-net: receive offloads stay off: ${describeError(e)}`);
    }
    // Start listening at once; the first callback finds out whether the driver has posted buffers.
    if (ctx.queue(RX_QUEUE)) this.#watch();
  }

  notify(index: number): void {
    if (!this.#ctx) return;
    if (index === RX_QUEUE) this.#receive(this.#ctx);
    else if (index === TX_QUEUE) this.#transmit(this.#ctx);
  }

  reset(): void {
    this.#unwatch();
    if (this.#txContinuation) clearImmediate(this.#txContinuation);
    this.#txContinuation = undefined;
    this.#ctx = undefined;
    this.#rxHalted = false;
    this.#rxPendingLen = 0;
    this.#rxHeld = [];
    this.#rules = NO_OFFLOADS;
    // #warned is kept: a guest resetting the device after each bad frame must not get a line a cycle.
  }

  close(): void {
    this.reset();
    this.tap.close();
  }

  // ---- receive ---------------------------------------------------------------------------------

  /** Moves frames from the tap into posted buffers; throws VirtqError for a broken receive chain. */
  #receive(ctx: VirtioDeviceContext): void {
    const q = ctx.queue(RX_QUEUE);
    // No receive queue (the driver left it disabled): nothing will ever take frames, so stop the
    // level-triggered watch rather than spin on a readable tap.
    if (!q || this.#rxHalted) return this.#unwatch();
    const before = q.nextUsed;
    // While the device has buffers, the tap drives it and it takes new ones as frames come: the
    // driver need not notify when it adds some (each notification is a VM exit). Only a device out
    // of buffers asks for one (armNotifications).
    q.disableNotifications();
    try {
      for (let turn = 0; turn < BURST; turn++) {
        if (this.#rxPendingLen === 0) {
          // Check for a buffer before reading: a frame taken from the tap with nowhere to go would wait.
          if (this.#rxHeld.length === 0 && q.pending() === 0 && q.armNotifications()) return this.#unwatch();
          const len = this.#readFrame(ctx);
          if (len === undefined) break;
          if (len === 0) continue;
          this.#rxPendingLen = len;
        }
        if (!this.#deliver(ctx, q, this.#rxPendingLen)) {
          // Too few buffers for the frame: it waits, and the driver's next notify brings us back.
          if (q.armNotifications()) return this.#unwatch();
          continue;
        }
        this.#rxPendingLen = 0;
      }
      // The tap is empty, or the burst is spent: the level-triggered watch brings us back either way.
      this.#watch();
    } finally {
      if (q.nextUsed !== before) ctx.usedAdded(RX_QUEUE, before);
    }
  }

  /**
   * Reads one frame into the scratch buffer and makes its header fit for the guest. Returns its
   * length, 0 for a frame dropped, undefined when the tap is empty (or broken).
   */
  #readFrame(ctx: VirtioDeviceContext): number | undefined {
    let len: number | undefined;
    try {
      len = this.tap.read(this.#rxScratch);
    } catch (e) {
      this.#haltRx(ctx, describeError(e));
      return undefined;
    }
    if (len === undefined) return undefined;
    const frame = this.#rxScratch.subarray(0, len);
    const why = len === this.#rxScratch.byteLength ? 'longer than the largest frame' : len < NET_HDR_LEN + ETH_HLEN ? 'shorter than an Ethernet header' : unusableRxHeader(frame, this.#rules);
    if (why) return this.#dropRx(ctx, `frame from tap ${this.tap.name} ${why}`);
    // Without GUEST_CSUM the flags must be 0 (DATA_VALID only said the checksum is right, and it is).
    if (!this.#rules.rxCsum) frame.fill(0, 0, TAP_HDR_FIELDS);
    if (frame[HDR.gso_type] !== NET_HDR_GSO.NONE) this.rxGsoFrames++;
    return len;
  }

  /**
   * Hands the frame in the scratch buffer to the next receive chain, or chains with MRG_RXBUF.
   * Returns false when the driver has not posted enough buffers yet (the frame waits).
   */
  #deliver(ctx: VirtioDeviceContext, q: SplitQueue, len: number): boolean {
    const frame = this.#rxScratch.subarray(0, len);
    if (!this.#rules.mergeable) {
      const chain = q.pop();
      if (!chain) return false;
      const room = receiveRoom(chain);
      if (room < len) {
        // The buffer goes back empty: Linux counts a length error and posts a new one.
        q.pushUsed(chain.head, 0);
        this.#dropRx(ctx, `a ${len - NET_HDR_LEN}-byte frame does not fit a ${room}-byte receive buffer`);
        return true;
      }
      frame[HDR.num_buffers] = 1; // a frame fills exactly one chain (§5.1.6.4)
      frame[HDR.num_buffers + 1] = 0;
      scatterBytes(ctx.mem, chain.writable, frame, 'virtio-net receive buffer');
      q.pushUsed(chain.head, len);
      this.rxFrames++;
      return true;
    }
    // MRG_RXBUF: take chains until the frame fits; they stay held while it waits for more.
    let count = 0;
    for (let room = 0; room < len; room += receiveRoom(this.#rxHeld[count++]!)) {
      if (count < this.#rxHeld.length) continue;
      if (count === q.cfg.size) {
        // Every buffer the ring can hold would not take it together: no notify could make room.
        this.#dropRx(ctx, `a ${len - NET_HDR_LEN}-byte frame does not fit all ${count} receive buffers together`);
        return true;
      }
      let chain: DescriptorChain | undefined;
      let tiny = 0;
      while ((chain = q.pop()) && receiveRoom(chain) < NET_HDR_LEN) {
        // §5.1.6.3.1: every buffer holds at least a header. This one goes back empty (a length error).
        q.pushUsed(chain.head, 0);
        this.#warnOnce(ctx, 'rx:tiny', `virtio-net: returned a ${receiveRoom(chain)}-byte receive buffer unused: smaller than the ${NET_HDR_LEN}-byte header`);
        // A guest refilling the ring with such buffers as fast as they come back must not keep
        // this loop going: after a ring's worth, wait for its next notification.
        if (++tiny === q.cfg.size) return false;
      }
      if (!chain) return false;
      this.#rxHeld.push(chain);
    }
    frame[HDR.num_buffers] = count & 0xff;
    frame[HDR.num_buffers + 1] = count >> 8;
    let at = 0;
    for (const chain of this.#rxHeld.splice(0, count)) {
      const n = scatterBytes(ctx.mem, chain.writable, frame.subarray(at), 'virtio-net receive buffer');
      q.pushUsed(chain.head, n);
      at += n;
    }
    this.rxFrames++;
    return true;
  }

  #dropRx(ctx: VirtioDeviceContext, why: string): 0 {
    this.rxDropped++;
    this.#warnOnce(ctx, `rx:${why.replace(/\d+/g, 'N')}`, `virtio-net: dropped a received frame: ${why}`);
    return 0;
  }

  /** A tap that fails to read would fail again at once: stop receiving until the driver resets us. */
  #haltRx(ctx: VirtioDeviceContext, why: string): void {
    this.#rxHalted = true;
    this.#unwatch();
    ctx.log.warn({ device: 'net', tap: this.tap.name }, `virtio-net: receiving from tap ${this.tap.name} failed (${why}): receive stopped until the device is reset`);
  }

  #watch(): void {
    if (this.#stopWatch || this.#rxHalted || !this.#ctx) return;
    const ctx = this.#ctx;
    this.#stopWatch = this.tap.onReadable((error) => this.#onTapReadable(ctx, error));
  }

  #unwatch(): void {
    const stop = this.#stopWatch;
    this.#stopWatch = undefined;
    stop?.();
  }

  /** The watch's callback: outside notify(), so a broken chain is reported through ctx.fail(). */
  #onTapReadable(ctx: VirtioDeviceContext, error?: string): void {
    if (error !== undefined) {
      this.#stopWatch = undefined; // the watch ended itself
      if (ctx === this.#ctx) this.#haltRx(ctx, error);
      return;
    }
    if (ctx !== this.#ctx || !ctx.live) return this.#unwatch();
    this.#run(ctx, () => this.#receive(ctx));
  }

  // ---- transmit --------------------------------------------------------------------------------

  /** Sends what the driver queued on the transmit queue; throws VirtqError for a broken chain. */
  #transmit(ctx: VirtioDeviceContext): void {
    const q = ctx.queue(TX_QUEUE);
    if (!q) return;
    const before = q.nextUsed;
    let served = 0;
    // While this drains the queue the driver need not kick: each kick is a VM exit.
    q.disableNotifications();
    try {
      while (served < BURST) {
        const chain = q.pop();
        if (!chain) {
          // Send what is staged before asking for kicks again: the driver gets its buffers back
          // while it still need not kick, and a frame it adds meanwhile is taken without one.
          this.#flushTx(ctx, q);
          if (q.armNotifications()) break; // drained: the driver's next chain kicks
          continue; // chains came in as we asked: take them too
        }
        this.#send(ctx, q, chain);
        served++;
      }
    } finally {
      this.#flushTx(ctx, q);
      if (served > 0) ctx.usedAdded(TX_QUEUE, before);
    }
    // More may be waiting: finish on the next turn, with notifications still off (the driver is told
    // not to kick for them, and with EVENT_IDX would not kick for chains it already announced).
    if (served === BURST) this.#continueTx(ctx);
  }

  #continueTx(ctx: VirtioDeviceContext): void {
    if (this.#txContinuation) return;
    this.#txContinuation = setImmediate(() => {
      this.#txContinuation = undefined;
      if (ctx === this.#ctx && ctx.live) this.#run(ctx, () => this.#transmit(ctx));
    });
  }

  /**
   * Checks one transmit chain and stages its frame, or drops it; the chain goes back to the driver
   * once its frame is on the tap. Staged frames go to the tap together, with one writeEach, straight
   * from the buffer that holds them: guest RAM for a frame in one buffer (the usual case: Linux puts
   * the header in front of the packet), or a copy for a scattered one, sent at once (the next one
   * reuses the copy). Frames from another buffer are sent first, so frames keep their order.
   */
  #send(ctx: VirtioDeviceContext, q: SplitQueue, chain: DescriptorChain): void {
    if (chain.writable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-net transmit request ${chain.head} has a device-writable buffer`);
    const bufs = chain.readable;
    const len = chainLength(bufs);
    // Oversized or runt frames are the network's problem, not the ring's: drop them as a NIC would
    // rather than fail the whole device (the driver already let them through its own checks).
    if (len > NET_MAX_TX) return this.#dropTx(ctx, q, chain.head, `a ${len}-byte transmit request is longer than ${NET_MAX_TX} bytes`);
    if (len < NET_HDR_LEN + ETH_HLEN) return this.#dropTx(ctx, q, chain.head, `a ${len}-byte transmit request is shorter than a header and an Ethernet header`);
    // A one-buffer chain lies in one RAM region (the queue splits buffers at region boundaries).
    const region = bufs.length === 1 ? ctx.mem.regionIndex(bufs[0]!.addr, len) : -1;
    let bytes: Uint8Array;
    let at = 0;
    if (region >= 0) {
      const r = ctx.mem.regions[region]!;
      bytes = r.bytes;
      at = bufs[0]!.addr - r.gpa;
    } else {
      bytes = gatherBytes(ctx.mem, bufs, this.#txScratch, 'virtio-net transmit buffer');
    }
    // The tap acts on checksum and segmentation requests: only the negotiated ones may reach it
    // (§5.1.6.2); the kernel then checks their offsets and sizes against the frame itself. A guest
    // rewriting its header after these checks only reaches those checks, which any unprivileged tap
    // writer faces.
    const flags = bytes[at + HDR.flags]!;
    const gso = bytes[at + HDR.gso_type]!;
    if (flags & ~NET_HDR_F.NEEDS_CSUM || (flags && !this.#rules.txCsum)) return this.#dropTx(ctx, q, chain.head, `the header asks for checksum offload (flags ${flags}), which was not negotiated`);
    if (!this.#rules.txGso.has(gso)) return this.#dropTx(ctx, q, chain.head, `the header asks for segmentation offload (gso_type ${gso}), which was not negotiated`);
    if (bytes !== this.#txBytes) this.#flushTx(ctx, q);
    this.#txBytes = bytes;
    const n = this.#txStaged++;
    this.#txSpans[2 * n] = at;
    this.#txSpans[2 * n + 1] = len;
    this.#txHeads[n] = chain.head;
    this.#txGso[n] = gso;
    if (region < 0 || this.#txStaged === TX_BATCH) this.#flushTx(ctx, q);
  }

  /** Writes the staged frames to the tap and gives their chains back (the device writes nothing into them). */
  #flushTx(ctx: VirtioDeviceContext, q: SplitQueue): void {
    const n = this.#txStaged;
    if (n === 0) return;
    this.#txStaged = 0;
    const refused = this.tap.writeEach(this.#txBytes, this.#txSpans, n, this.#txSent);
    for (let i = 0; i < n; i++) {
      this.#countTx(this.#txSent[i] === 1, this.#txGso[i]!);
      q.pushUsed(this.#txHeads[i]!, 0);
    }
    if (refused) this.#warnOnce(ctx, 'tx:refused', `virtio-net: dropped a transmitted frame: tap ${this.tap.name} refused a frame: ${describeError(refused)}`);
  }

  /** Counts a frame the tap took (sent) or dropped: queue full or link down, ordinary loss not worth a log line. */
  #countTx(sent: boolean, gso: number): void {
    if (!sent) {
      this.txDropped++;
      return;
    }
    this.txFrames++;
    if (gso !== NET_HDR_GSO.NONE) this.txGsoFrames++;
  }

  #dropTx(ctx: VirtioDeviceContext, q: SplitQueue, head: number, why: string): void {
    q.pushUsed(head, 0);
    this.txDropped++;
    this.#warnOnce(ctx, `tx:${why.replace(/\d+/g, 'N')}`, `virtio-net: dropped a transmitted frame: ${why}`);
  }

  // ---- shared ----------------------------------------------------------------------------------

  /** Runs work started by the event loop rather than by the transport: errors fail the device. */
  #run(ctx: VirtioDeviceContext, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.#unwatch();
      ctx.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** One log line per kind of problem per device, resets included: a guest must not be able to flood the log. */
  #warnOnce(ctx: VirtioDeviceContext, key: string, msg: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    ctx.log.warn({ device: 'net', tap: this.tap.name }, `${msg} (further ones are only counted)`);
  }
}

/** Bytes the device may write into a receive chain; one with a readable part breaks the rules. */
function receiveRoom(chain: DescriptorChain): number {
  if (chain.readable.length > 0) throw new VirtqError('WRITE_BEFORE_READ', `virtio-net receive buffer ${chain.head} has a device-readable part`);
  return chainLength(chain.writable);
}

/** Whether the tap's header asks only for what the driver accepted; the reason if not. */
function unusableRxHeader(frame: Uint8Array, rules: HeaderRules): string | undefined {
  // Neither can happen while the tap's offloads (TUNSETOFFLOAD) match the rules, but frames queued
  // before the driver (re)negotiated can: refuse rather than hand the guest a partial checksum or a
  // 64 KiB super-frame it never asked for.
  if (frame[HDR.flags]! & NET_HDR_F.NEEDS_CSUM && !rules.rxCsum) return 'has a partial checksum';
  if (!rules.rxGso.has(frame[HDR.gso_type]!)) return `is a segmentation-offload frame (gso_type ${frame[HDR.gso_type]})`;
  return undefined;
}

const MAC_FORM = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

/** Parses 'xx:xx:xx:xx:xx:xx'; refuses malformed, multicast and all-zero addresses, naming the value. */
export function parseMac(text: string): Uint8Array {
  if (!MAC_FORM.test(text)) throw new VmmError('BAD_CONFIG', `MAC address ${JSON.stringify(text)} is not of the form 52:54:00:12:34:56`);
  const mac = Uint8Array.from(text.split(':'), (h) => parseInt(h, 16));
  if (mac[0]! & 1) throw new VmmError('BAD_CONFIG', `MAC address ${text} is a multicast address (odd first byte); a NIC needs a unicast one`);
  if (mac.every((b) => b === 0)) throw new VmmError('BAD_CONFIG', `MAC address ${text} is all zeroes`);
  return mac;
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A random unicast, locally administered address (bit 1 of the first byte set, bit 0 clear). */
export function randomMac(): Uint8Array {
  const mac = new Uint8Array(lazyCrypto().randomBytes(6));
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}
