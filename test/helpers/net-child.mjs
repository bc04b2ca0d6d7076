// Runs inside a throwaway network namespace (test/unit/virtio-net.test.mjs starts it with
// `ip netns exec`): plays a tiny guest on top of the virtio-net model over a real tap, nvtap0, with
// the rings in fake guest memory, and talks to the namespace's own kernel stack through it: ARP, ICMP
// echo and a short TCP exchange. Prints one JSON line with what it saw; the test judges it.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { VirtioNet } from '../../dist/devices/virtio/net.js';
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
const HDR = 12;
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
  negotiated: 0n,
  live: true,
  queue: (i) => queues[i],
  usedAdded() {},
  configChanged() {},
  fail: (e) => failures.push(`fail: ${e.message}`),
  log: { warn: (_o, m) => failures.push(`warn: ${m}`), info() {}, debug() {} },
};

// Receive chains as a Linux driver without MRG_RXBUF posts them (here split header/data, as Windows
// does, to exercise the scatter), reposted under the same head once used.
const rxBufs = new Map();
function postRx() {
  for (let i = 0; i < RX_CHAINS; i++) {
    const hdr = 0x100000 + i * 0x1000;
    const data = 0x200000 + i * 0x800;
    rxBufs.set(rxRing.addChain([{ addr: hdr, len: HDR, write: true }, { addr: data, len: RX_DATA, write: true }]), { hdr, data });
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

/** Takes used receive chains, reposts them, answers ARP for the guest's address. */
function pollRx() {
  let reposted = false;
  while (rxSeen !== rxRing.usedIdx()) {
    const { id, len } = rxRing.usedElem(rxSeen % rxRing.size);
    rxSeen = (rxSeen + 1) & 0xffff;
    const b = rxBufs.get(id);
    if (!b) throw new Error(`used ring returned unknown head ${id}`);
    if (len > HDR) {
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

let txBuf = 0x400000;
function send(frame) {
  // Header and frame in separate descriptors, the frame itself split in two: the gather is exercised.
  const at = txBuf;
  txBuf = txBuf >= 0x700000 ? 0x400000 : txBuf + 0x10000;
  mem.write(at, new Uint8Array(HDR));
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

function tcp(srcPort, dstPort, seq, ack, flags, data = []) {
  const seg = [...u16(srcPort), ...u16(dstPort), ...u16(seq >>> 16), ...u16(seq & 0xffff), ...u16(ack >>> 16), ...u16(ack & 0xffff), 0x50, flags, ...u16(64240), 0, 0, 0, 0, ...data];
  const c = csum(seg, sumOf(pseudo(GUEST_IP, HOST_IP, 6, seg.length)));
  seg[16] = c >> 8;
  seg[17] = c & 0xff;
  return seg;
}
function sumOf(bytes) {
  return ~csum(bytes) & 0xffff;
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

  out.rxHeaders = headers;
  out.counters = { rxFrames: dev.rxFrames, rxDropped: dev.rxDropped, txFrames: dev.txFrames, txDropped: dev.txDropped };
} catch (e) {
  out.error = e.message;
} finally {
  out.failures = failures;
  server.close();
  dev.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
