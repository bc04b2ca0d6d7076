// Runs inside a throwaway network namespace (test/unit/virtio-net.test.mjs starts it with
// `ip netns exec`): plays a tiny guest on top of the virtio-net model over a real tap, nvtap0, with
// the rings in fake guest memory, and talks to the namespace's own kernel stack through it: ARP, ICMP
// echo and a short TCP exchange. With --offloads the guest takes what Linux's driver takes
// (checksum and TCP segmentation offloads both ways, MRG_RXBUF) and also sends one 8000-byte TCP
// super-frame for the kernel to segment, and receives the kernel's 4000-byte answer. Prints one JSON
// line with what it saw; the test judges it.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { VirtioNet, VIRTIO_NET_F } from '../../dist/devices/virtio/net.js';
import { SplitQueue } from '../../dist/devices/virtio/queue.js';
import { fakeMemory } from './fake-memory.mjs';
import { DriverQueue } from './driver-queue.mjs';

// `node --test test/` also runs every file under test/ on its own: only act inside the test's namespace.
if (!process.argv.includes('--in-namespace')) process.exit(0);

const TAP = 'nvtap0';
const GUEST_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUEST_IP = [10, 0, 2, 15];
const HOST_IP = [10, 0, 2, 1];
const TCP_PORT = 7777;
const BULK_PORT = 7778;
const HDR = 12;
const OFFLOADS = process.argv.includes('--offloads');
const LINUX_FEATURES = ['CSUM', 'HOST_TSO4', 'GUEST_CSUM', 'GUEST_TSO4', 'MRG_RXBUF'].reduce((all, f) => all | (1n << BigInt(VIRTIO_NET_F[f])), 0n);
/** A Linux driver's mergeable receive buffer: header and data in one page fragment. */
const MRG_BUF = 1526;
const RX_CHAINS = 32;
const RX_DATA = 1514; // GOOD_PACKET_LEN minus the VLAN tag: what a Linux driver posts without MRG_RXBUF

const mem = fakeMemory(8 << 20);
const rxRing = new DriverQueue(mem, 0x1000, 64);
const txRing = new DriverQueue(mem, 0x3000, 64);
const features = { indirect: false, eventIdx: true };
const queues = [new SplitQueue(mem, rxRing.config, features), new SplitQueue(mem, txRing.config, features)];
const failures = [];
const ctx = {
  mem,
  negotiated: OFFLOADS ? LINUX_FEATURES : 0n,
  live: true,
  queue: (i) => queues[i],
  usedAdded() {},
  configChanged() {},
  fail: (e) => failures.push(`fail: ${e.message}`),
  log: { warn: (_o, m) => failures.push(`warn: ${m}`), info() {}, debug() {} },
};

// Receive chains as a Linux driver without MRG_RXBUF posts them (here split header/data, as Windows
// does, to exercise the scatter), reposted under the same head once used.
// With MRG_RXBUF, single buffers as Linux posts them.
const rxBufs = new Map();
function postRx() {
  for (let i = 0; i < RX_CHAINS; i++) {
    const hdr = 0x100000 + i * 0x1000;
    const data = 0x200000 + i * 0x800;
    if (OFFLOADS) rxBufs.set(rxRing.addChain([{ addr: hdr, len: MRG_BUF, write: true }]), { hdr, data: hdr + HDR });
    else rxBufs.set(rxRing.addChain([{ addr: hdr, len: HDR, write: true }, { addr: data, len: RX_DATA, write: true }]), { hdr, data });
  }
  dev.notify(0);
}

const dev = new VirtioNet({ tap: TAP, mac: GUEST_MAC.map((b) => b.toString(16).padStart(2, '0')).join(':') });
dev.bindConfig(new DataView(new ArrayBuffer(16), 0, dev.configSize));
// Count the model's use of the tap: with no receive buffers posted it must neither read nor spin.
let tapReads = 0;
let tapWakeups = 0;
const tapRead = dev.tap.read.bind(dev.tap);
const tapOnReadable = dev.tap.onReadable.bind(dev.tap);
dev.tap.read = (into) => (tapReads++, tapRead(into));
dev.tap.onReadable = (cb) => tapOnReadable((error) => (tapWakeups++, cb(error)));
dev.activate(ctx);
dev.notify(0);
dev.notify(1);

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
ip('link', 'set', TAP, 'up');
ip('addr', 'add', '10.0.2.1/24', 'dev', TAP);
const hostMac = JSON.parse(ip('-j', 'link', 'show', TAP))[0].address;

// ---- the guest's side of the rings ---------------------------------------------------------

let rxSeen = 0;
const received = [];
const headers = [];
/** MRG_RXBUF: the frame being put together from num_buffers chains. */
let partial;

/** Takes used receive chains, reposts them, answers ARP for the guest's address. */
function pollRx() {
  let reposted = false;
  while (rxSeen !== rxRing.usedIdx()) {
    const { id, len } = rxRing.usedElem(rxSeen % rxRing.size);
    rxSeen = (rxSeen + 1) & 0xffff;
    const b = rxBufs.get(id);
    if (!b) throw new Error(`used ring returned unknown head ${id}`);
    if (OFFLOADS) {
      // The first chain starts with the header and says how many chains the frame fills.
      if (!partial) {
        const hdr = [...mem.read(b.hdr, HDR)];
        partial = { hdr, left: hdr[10] | (hdr[11] << 8), parts: [mem.read(b.data, len - HDR)] };
      } else partial.parts.push(mem.read(b.hdr, len));
      if (--partial.left === 0) {
        headers.push(partial.hdr);
        const frame = Uint8Array.from(Buffer.concat(partial.parts));
        if (partial.hdr[0] & 1) completeChecksum(frame, partial.hdr);
        received.push(frame);
        answerArp(frame);
        partial = undefined;
      }
    } else if (len > HDR) {
      headers.push([...mem.read(b.hdr, HDR)]);
      const frame = mem.read(b.data, len - HDR);
      received.push(frame);
      answerArp(frame);
    }
    rxRing.publish(id);
    reposted = true;
  }
  if (reposted) dev.notify(0); // the driver's kick after refilling
}

/** NEEDS_CSUM: what a driver does, the one's complement sum from csum_start stored at csum_offset. */
function completeChecksum(frame, hdr) {
  const start = hdr[6] | (hdr[7] << 8);
  const at = start + (hdr[8] | (hdr[9] << 8));
  const c = csum(frame.subarray(start));
  frame[at] = c >> 8;
  frame[at + 1] = c & 0xff;
}

let txBuf = 0x400000;
function send(frame, hdr = new Uint8Array(HDR)) {
  // Header and frame in separate descriptors, the frame itself split in two: the gather is exercised.
  const at = txBuf;
  txBuf = txBuf >= 0x700000 ? 0x400000 : txBuf + 0x10000;
  mem.write(at, hdr);
  mem.write(at + 0x100, frame);
  const cut = Math.min(20, frame.length);
  txRing.addChain([{ addr: at, len: HDR }, { addr: at + 0x100, len: cut }, { addr: at + 0x100 + cut, len: frame.length - cut }]);
  dev.notify(1);
  const used = txRing.usedElem((txRing.usedIdx() - 1) % txRing.size);
  if (txRing.usedIdx() !== txRing.availIdx) throw new Error('transmit chain not returned');
  return used;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(what, match, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    pollRx();
    const hit = received.find(match);
    if (hit) return hit;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (${received.length} other frames seen)`);
    await sleep(5);
  }
}

// ---- packets -------------------------------------------------------------------------------

const u16 = (v) => [(v >> 8) & 0xff, v & 0xff];
const be16 = (f, o) => (f[o] << 8) | f[o + 1];
const be32 = (f, o) => ((f[o] << 24) | (f[o + 1] << 16) | (f[o + 2] << 8) | f[o + 3]) >>> 0;
const macOf = (s) => s.split(':').map((h) => parseInt(h, 16));
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

function csum(bytes, seed = 0) {
  let s = seed;
  for (let i = 0; i < bytes.length; i += 2) s += (bytes[i] << 8) | (bytes[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
const pseudo = (src, dst, proto, len) => [...src, ...dst, 0, proto, ...u16(len)];

function eth(dst, type, payload) {
  return Uint8Array.from([...dst, ...GUEST_MAC, ...u16(type), ...payload]);
}

function ipv4(proto, payload, id) {
  const h = [0x45, 0, ...u16(20 + payload.length), ...u16(id), 0x40, 0, 64, proto, 0, 0, ...GUEST_IP, ...HOST_IP];
  const c = csum(h);
  h[10] = c >> 8;
  h[11] = c & 0xff;
  return [...h, ...payload];
}

function tcp(srcPort, dstPort, seq, ack, flags, data = [], options = []) {
  const offset = (20 + options.length) / 4;
  const seg = [...u16(srcPort), ...u16(dstPort), ...u16(seq >>> 16), ...u16(seq & 0xffff), ...u16(ack >>> 16), ...u16(ack & 0xffff), offset << 4, flags, ...u16(64240), 0, 0, 0, 0, ...options, ...data];
  const c = csum(seg, sumOf(pseudo(GUEST_IP, HOST_IP, 6, seg.length)));
  seg[16] = c >> 8;
  seg[17] = c & 0xff;
  return seg;
}
function sumOf(bytes) {
  return ~csum(bytes) & 0xffff;
}
/** A segment whose checksum is left to the device (NEEDS_CSUM): the field holds the pseudo-header sum. */
function tcpPartial(srcPort, dstPort, seq, ack, flags, data) {
  const seg = tcp(srcPort, dstPort, seq, ack, flags, data);
  const c = sumOf(pseudo(GUEST_IP, HOST_IP, 6, seg.length));
  seg[16] = c >> 8;
  seg[17] = c & 0xff;
  return seg;
}
/** struct virtio_net_hdr_v1 for a TCPv4 super-frame: NEEDS_CSUM from the TCP header, cut into MSS pieces. */
function gsoHeader(mss) {
  const h = new Uint8Array(HDR);
  const v = new DataView(h.buffer);
  h[0] = 1; // NEEDS_CSUM
  h[1] = 1; // GSO_TCPV4
  v.setUint16(2, 14 + 20 + 20, true); // hdr_len
  v.setUint16(4, mss, true); // gso_size
  v.setUint16(6, 14 + 20, true); // csum_start: the TCP header
  v.setUint16(8, 16, true); // csum_offset: TCP's checksum field
  return h;
}

/** Parses an IPv4 frame for the guest; checks its checksums (a partial checksum would fail here). */
function parseIpv4(f) {
  if (be16(f, 12) !== 0x0800 || (f[14] >> 4) !== 4) return undefined;
  const ihl = (f[14] & 15) * 4;
  const total = be16(f, 16);
  const l4 = f.subarray(14 + ihl, 14 + total);
  const src = [...f.subarray(26, 30)];
  const dst = [...f.subarray(30, 34)];
  const proto = f[23];
  const ipOk = csum(f.subarray(14, 14 + ihl)) === 0;
  const l4Ok = proto === 1 ? csum(l4) === 0 : csum(l4, sumOf(pseudo(src, dst, proto, l4.length))) === 0;
  return { src, dst, proto, l4, ipOk, l4Ok, dstMac: [...f.subarray(0, 6)] };
}

function answerArp(f) {
  if (be16(f, 12) !== 0x0806 || be16(f, 20) !== 1 || !eq([...f.subarray(38, 42)], GUEST_IP)) return;
  const sha = [...f.subarray(22, 28)];
  const spa = [...f.subarray(28, 32)];
  send(eth(sha, 0x0806, [0, 1, 8, 0, 6, 4, 0, 2, ...GUEST_MAC, ...GUEST_IP, ...sha, ...spa]));
}

// ---- the exchange --------------------------------------------------------------------------

const out = { hostMac };
const bulk = Buffer.from(Array.from({ length: 8000 }, (_, i) => (i * 13 + 7) & 0xff));
const bulkReply = Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 5 + 1) & 0xff));
const bulkServer = net.createServer((sock) => {
  const got = [];
  let n = 0;
  sock.on('data', (d) => {
    got.push(d);
    n += d.length;
    if (n < bulk.length) return;
    out.bulkServerGot = { bytes: n, matches: Buffer.concat(got).equals(bulk) };
    sock.write(bulkReply);
  });
  sock.on('error', () => {});
});
if (OFFLOADS) await new Promise((r) => bulkServer.listen(BULK_PORT, '10.0.2.1', r));
const server = net.createServer((sock) => {
  sock.on('data', (d) => {
    out.serverGot = d.toString();
    sock.write(`pong: ${d}`);
  });
  sock.on('error', () => {});
});
await new Promise((r) => server.listen(TCP_PORT, '10.0.2.1', r));

try {
  // ARP: who has 10.0.2.1? tell 10.0.2.15
  // No receive buffers yet: the reply (and the kernel's IPv6 chatter) must wait in the tap's queue.
  const arpUsed = send(eth([0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0x0806, [0, 1, 8, 0, 6, 4, 0, 1, ...GUEST_MAC, ...GUEST_IP, 0, 0, 0, 0, 0, 0, ...HOST_IP]));
  await sleep(300);
  out.stalled = { tapReads, tapWakeups, rxFrames: dev.rxFrames };
  postRx();
  const arp = await waitFor('an ARP reply', (f) => be16(f, 12) === 0x0806 && be16(f, 20) === 2);
  out.arp = {
    txUsedLen: arpUsed.len,
    dstMac: [...arp.subarray(0, 6)],
    senderMac: [...arp.subarray(22, 28)],
    senderIp: [...arp.subarray(28, 32)],
    targetMac: [...arp.subarray(32, 38)],
    targetIp: [...arp.subarray(38, 42)],
  };
  const hostHw = [...arp.subarray(22, 28)];

  // ICMP echo request, 56 bytes of payload like ping(8)
  const payload = Array.from({ length: 56 }, (_, i) => (i * 7 + 3) & 0xff);
  const icmp = [8, 0, 0, 0, 0x12, 0x34, 0, 1, ...payload];
  const c = csum(icmp);
  icmp[2] = c >> 8;
  icmp[3] = c & 0xff;
  send(eth(hostHw, 0x0800, ipv4(1, icmp, 0x4242)));
  const reply = await waitFor('an ICMP echo reply', (f) => parseIpv4(f)?.proto === 1 && parseIpv4(f).l4[0] === 0);
  const r = parseIpv4(reply);
  out.icmp = { src: r.src, dst: r.dst, dstMac: r.dstMac, type: r.l4[0], id: be16(r.l4, 4), seq: be16(r.l4, 6), payloadMatches: eq([...r.l4.subarray(8)], payload), ipOk: r.ipOk, l4Ok: r.l4Ok };

  // TCP: handshake, one request, the server's answer
  const isTcp = (pred) => (f) => {
    const p = parseIpv4(f);
    return p?.proto === 6 && be16(p.l4, 0) === TCP_PORT && pred(p);
  };
  const iss = 1000;
  send(eth(hostHw, 0x0800, ipv4(6, tcp(40000, TCP_PORT, iss, 0, 0x02), 0x4243)));
  const synAck = parseIpv4(await waitFor('a SYN-ACK', isTcp((p) => p.l4[13] === 0x12)));
  const hostSeq = be32(synAck.l4, 4);
  out.synAck = { ack: be32(synAck.l4, 8), ipOk: synAck.ipOk, l4Ok: synAck.l4Ok };
  const msg = [...Buffer.from('hello from the guest')];
  send(eth(hostHw, 0x0800, ipv4(6, tcp(40000, TCP_PORT, iss + 1, hostSeq + 1, 0x18, msg), 0x4244)));
  const answer = parseIpv4(await waitFor('the server\'s answer', isTcp((p) => p.l4.length > (p.l4[12] >> 4) * 4)));
  out.tcpAnswer = { text: Buffer.from(answer.l4.subarray((answer.l4[12] >> 4) * 4)).toString(), ipOk: answer.ipOk, l4Ok: answer.l4Ok };
  // Tear the connection down so the kernel stops retransmitting to us.
  send(eth(hostHw, 0x0800, ipv4(6, tcp(40000, TCP_PORT, iss + 1 + msg.length, 0, 0x04), 0x4245)));

  if (OFFLOADS) {
    // 8000 bytes in one TCP super-frame with its checksum left undone: the kernel must cut it into
    // 1448-byte segments and checksum each, or the server never sees the bytes.
    const isBulk = (pred) => (f) => {
      const p = parseIpv4(f);
      return p?.proto === 6 && be16(p.l4, 0) === BULK_PORT && pred(p);
    };
    const iss2 = 5000;
    // MSS 1460: the kernel may then send the answer as one super-frame larger than a receive buffer.
    send(eth(hostHw, 0x0800, ipv4(6, tcp(40001, BULK_PORT, iss2, 0, 0x02, [], [2, 4, ...u16(1460)]), 0x4250)));
    const synAck2 = parseIpv4(await waitFor('a SYN-ACK on the bulk port', isBulk((p) => p.l4[13] === 0x12)));
    const hostSeq2 = be32(synAck2.l4, 4);
    send(eth(hostHw, 0x0800, ipv4(6, tcpPartial(40001, BULK_PORT, iss2 + 1, hostSeq2 + 1, 0x18, [...bulk]), 0x4251)), gsoHeader(1448));
    // The answer: 4000 bytes, which the kernel may hand over as one super-frame with a partial checksum.
    const answer = new Map();
    const answered = () => [...answer.values()].reduce((n, v) => n + v.data.length, 0) >= bulkReply.length;
    await waitFor('the 4000-byte answer', (f) => {
      const p = parseIpv4(f);
      if (p?.proto !== 6 || be16(p.l4, 0) !== BULK_PORT) return false;
      const data = p.l4.subarray((p.l4[12] >> 4) * 4);
      if (data.length > 0) answer.set(be32(p.l4, 4), { data, ok: p.ipOk && p.l4Ok });
      return answered();
    });
    const pieces = [...answer].sort((a, b) => a[0] - b[0]);
    out.bulk = {
      reply: Buffer.concat(pieces.map(([, v]) => v.data)).equals(bulkReply),
      checksumsOk: pieces.every(([, v]) => v.ok),
      txGsoFrames: dev.txGsoFrames,
      rxGsoFrames: dev.rxGsoFrames,
      partialChecksums: headers.filter((h) => h[0] & 1).length,
      mergedFrames: headers.filter((h) => (h[10] | (h[11] << 8)) > 1).length,
    };
    send(eth(hostHw, 0x0800, ipv4(6, tcp(40001, BULK_PORT, iss2 + 1 + bulk.length, 0, 0x04), 0x4252)));
  }

  out.rxHeaders = headers;
  out.counters = { rxFrames: dev.rxFrames, rxDropped: dev.rxDropped, txFrames: dev.txFrames, txDropped: dev.txDropped };
} catch (e) {
  out.error = e.message;
} finally {
  out.failures = failures;
  server.close();
  bulkServer.close();
  dev.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
