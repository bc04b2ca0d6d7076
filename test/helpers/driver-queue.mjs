// The driver side of a split virtqueue, for device tests: lays out rings in fake guest memory and
// publishes descriptor chains the way a guest driver would.
export class DriverQueue {
  constructor(mem, base, size) {
    this.mem = mem;
    this.size = size;
    this.desc = base;
    this.avail = base + 16 * size;
    this.used = (this.avail + 6 + 2 * size + 3) & ~3;
    this.nextDesc = 0;
    this.availIdx = 0;
  }

  get config() {
    return { size: this.size, descAddr: this.desc, availAddr: this.avail, usedAddr: this.used };
  }

  writeDesc(i, addr, len, flags, next, table = this.desc) {
    const v = this.mem.view(table + 16 * i, 16);
    v.setBigUint64(0, BigInt(addr), true);
    v.setUint32(8, len, true);
    v.setUint16(12, flags, true);
    v.setUint16(14, next, true);
  }

  /** Publishes a chain of buffers [{ addr, len, write }]; returns its head. */
  addChain(bufs) {
    const head = this.nextDesc;
    bufs.forEach((b, i) => {
      const idx = (head + i) % this.size;
      const last = i === bufs.length - 1;
      this.writeDesc(idx, b.addr, b.len, (b.write ? 2 : 0) | (last ? 0 : 1), (idx + 1) % this.size);
    });
    this.nextDesc = (head + bufs.length) % this.size;
    this.publish(head);
    return head;
  }

  publish(head) {
    this.mem.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.writeU16(this.avail + 2, this.availIdx);
  }

  usedIdx() {
    return this.mem.readU16(this.used + 2);
  }

  usedElem(i) {
    return { id: this.mem.readU32(this.used + 4 + 8 * i), len: this.mem.readU32(this.used + 8 + 8 * i) };
  }
}
