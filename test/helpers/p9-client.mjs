// A small 9P2000.L client for tests, written apart from the server's codec so the two check each other.
// `transport` takes one encoded request and returns the encoded reply. Each call returns the decoded
// reply, or { ecode } for Rlerror.

export const T = {
  statfs: 8, lopen: 12, lcreate: 14, symlink: 16, mknod: 18, rename: 20, readlink: 22, getattr: 24, setattr: 26,
  xattrwalk: 30, xattrcreate: 32, readdir: 40, fsync: 50, lock: 52, getlock: 54, link: 70, mkdir: 72, renameat: 74,
  unlinkat: 76, version: 100, auth: 102, attach: 104, flush: 108, walk: 110, read: 116, write: 118, clunk: 120, remove: 122,
};
export const RLERROR = 7;
export const NOTAG = 0xffff;
export const NOFID = 0xffffffff;
export const E = {
  EPERM: 1, ENOENT: 2, EIO: 5, E2BIG: 7, EBADF: 9, EACCES: 13, EBUSY: 16, EEXIST: 17, ENOTDIR: 20, EISDIR: 21, EINVAL: 22,
  ENOMEM: 12, EMFILE: 24, EROFS: 30, ENAMETOOLONG: 36, ENOTEMPTY: 39, ELOOP: 40, EPROTO: 71, EMSGSIZE: 90, EOPNOTSUPP: 95, ESTALE: 116,
};
export const O = { RDONLY: 0, WRONLY: 1, RDWR: 2, CREAT: 0o100, EXCL: 0o200, TRUNC: 0o1000, APPEND: 0o2000, DIRECTORY: 0o200000 };
export const QT = { DIR: 0x80, SYMLINK: 0x02, FILE: 0 };

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Builds a message: fields appended in order, size patched at the end. */
export class Msg {
  constructor(type, tag) {
    this.bytes = [];
    this.u32(0).u8(type).u16(tag);
  }
  #push(n, v, big = false) {
    const b = new Uint8Array(n);
    const d = new DataView(b.buffer);
    if (n === 1) d.setUint8(0, v);
    else if (n === 2) d.setUint16(0, v, true);
    else if (n === 4) d.setUint32(0, v >>> 0, true);
    else d.setBigUint64(0, big ? v : BigInt(v), true);
    this.bytes.push(...b);
    return this;
  }
  u8(v) { return this.#push(1, v); }
  u16(v) { return this.#push(2, v); }
  u32(v) { return this.#push(4, v); }
  u64(v) { return this.#push(8, BigInt(v), true); }
  raw(b) { this.bytes.push(...b); return this; }
  str(s) {
    const b = typeof s === 'string' ? enc.encode(s) : s;
    return this.u16(b.length).raw(b);
  }
  done() {
    const out = Uint8Array.from(this.bytes);
    new DataView(out.buffer).setUint32(0, out.length, true);
    return out;
  }
}

/** Reads a reply's fields in order. */
export class Rd {
  constructor(bytes, at = 7) {
    this.b = bytes;
    this.d = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = at;
  }
  u8() { return this.d.getUint8((this.at += 1) - 1); }
  u16() { return this.d.getUint16((this.at += 2) - 2, true); }
  u32() { return this.d.getUint32((this.at += 4) - 4, true); }
  u64() { return this.d.getBigUint64((this.at += 8) - 8, true); }
  data(n) { const s = this.b.subarray(this.at, this.at + n); this.at += n; return s; }
  bytesStr() { return this.data(this.u16()); }
  str() { return dec.decode(this.bytesStr()); }
  qid() { return { type: this.u8(), version: this.u32(), path: this.u64() }; }
}

export function header(reply) {
  const d = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  return { size: d.getUint32(0, true), type: d.getUint8(4), tag: d.getUint16(5, true) };
}

/** Rlerror's ecode, or undefined for any other reply. */
export function ecodeOf(reply) {
  const h = header(reply);
  return h.type === RLERROR ? new Rd(reply).u32() : undefined;
}

export class P9Client {
  constructor(transport) {
    this.transport = transport;
    this.tag = 1;
  }

  /** Sends a message built by `build(msg)`; decodes the reply with `parse(reader)`. */
  call(type, build, parse = () => ({}), tag = this.tag++ & 0x7fff) {
    const m = new Msg(type, tag);
    build(m);
    const reply = this.transport(m.done());
    const h = header(reply);
    if (h.size !== reply.length) throw new Error(`reply size field ${h.size} != ${reply.length} bytes`);
    if (h.tag !== tag) throw new Error(`reply tag ${h.tag} != request tag ${tag}`);
    if (h.type === RLERROR) return { ecode: new Rd(reply).u32() };
    if (h.type !== type + 1) throw new Error(`reply type ${h.type} to request type ${type}`);
    const r = new Rd(reply);
    const out = parse(r);
    if (r.at !== reply.length) throw new Error(`reply type ${h.type}: ${reply.length - r.at} bytes left over`);
    return out;
  }

  version(msize = 65536, v = '9P2000.L') {
    return this.call(T.version, (m) => m.u32(msize).str(v), (r) => ({ msize: r.u32(), version: r.str() }), NOTAG);
  }
  attach(fid, aname = '') {
    return this.call(T.attach, (m) => m.u32(fid).u32(NOFID).str('root').str(aname).u32(0), (r) => ({ qid: r.qid() }));
  }
  walk(fid, newfid, names) {
    return this.call(T.walk, (m) => { m.u32(fid).u32(newfid).u16(names.length); for (const n of names) m.str(n); }, (r) => {
      const n = r.u16();
      return { qids: Array.from({ length: n }, () => r.qid()) };
    });
  }
  getattr(fid, mask = 0x3fff) {
    return this.call(T.getattr, (m) => m.u32(fid).u64(mask), (r) => ({
      valid: r.u64(), qid: r.qid(), mode: r.u32(), uid: r.u32(), gid: r.u32(), nlink: r.u64(), rdev: r.u64(), size: r.u64(),
      blksize: r.u64(), blocks: r.u64(), atime: [r.u64(), r.u64()], mtime: [r.u64(), r.u64()], ctime: [r.u64(), r.u64()],
      btime: [r.u64(), r.u64()], gen: r.u64(), dataVersion: r.u64(),
    }));
  }
  setattr(fid, { valid, mode = 0, uid = 0, gid = 0, size = 0n, atime = [0n, 0n], mtime = [0n, 0n] }) {
    return this.call(T.setattr, (m) => m.u32(fid).u32(valid).u32(mode).u32(uid).u32(gid).u64(size).u64(atime[0]).u64(atime[1]).u64(mtime[0]).u64(mtime[1]));
  }
  lopen(fid, flags) {
    return this.call(T.lopen, (m) => m.u32(fid).u32(flags), (r) => ({ qid: r.qid(), iounit: r.u32() }));
  }
  lcreate(fid, name, flags, mode = 0o644) {
    return this.call(T.lcreate, (m) => m.u32(fid).str(name).u32(flags).u32(mode).u32(0), (r) => ({ qid: r.qid(), iounit: r.u32() }));
  }
  read(fid, offset, count) {
    return this.call(T.read, (m) => m.u32(fid).u64(offset).u32(count), (r) => ({ data: r.data(r.u32()).slice() }));
  }
  write(fid, offset, data) {
    const b = typeof data === 'string' ? enc.encode(data) : data;
    return this.call(T.write, (m) => m.u32(fid).u64(offset).u32(b.length).raw(b), (r) => ({ count: r.u32() }));
  }
  clunk(fid) { return this.call(T.clunk, (m) => m.u32(fid)); }
  remove(fid) { return this.call(T.remove, (m) => m.u32(fid)); }
  flush(oldtag) { return this.call(T.flush, (m) => m.u16(oldtag)); }
  fsync(fid, datasync = 0) { return this.call(T.fsync, (m) => m.u32(fid).u32(datasync)); }
  readlink(fid) { return this.call(T.readlink, (m) => m.u32(fid), (r) => ({ target: r.str() })); }
  mkdir(dfid, name, mode = 0o755) {
    return this.call(T.mkdir, (m) => m.u32(dfid).str(name).u32(mode).u32(0), (r) => ({ qid: r.qid() }));
  }
  symlink(dfid, name, target) {
    return this.call(T.symlink, (m) => m.u32(dfid).str(name).str(target).u32(0), (r) => ({ qid: r.qid() }));
  }
  link(dfid, fid, name) { return this.call(T.link, (m) => m.u32(dfid).u32(fid).str(name)); }
  unlinkat(dfid, name, flags = 0) { return this.call(T.unlinkat, (m) => m.u32(dfid).str(name).u32(flags)); }
  renameat(olddfid, oldname, newdfid, newname) {
    return this.call(T.renameat, (m) => m.u32(olddfid).str(oldname).u32(newdfid).str(newname));
  }
  rename(fid, dfid, name) { return this.call(T.rename, (m) => m.u32(fid).u32(dfid).str(name)); }
  mknod(dfid, name) { return this.call(T.mknod, (m) => m.u32(dfid).str(name).u32(0o10644).u32(0).u32(0).u32(0)); }
  xattrwalk(fid, newfid, name) { return this.call(T.xattrwalk, (m) => m.u32(fid).u32(newfid).str(name), (r) => ({ size: r.u64() })); }
  xattrcreate(fid, name) { return this.call(T.xattrcreate, (m) => m.u32(fid).str(name).u64(0).u32(0)); }
  statfs(fid) {
    return this.call(T.statfs, (m) => m.u32(fid), (r) => ({
      type: r.u32(), bsize: r.u32(), blocks: r.u64(), bfree: r.u64(), bavail: r.u64(), files: r.u64(), ffree: r.u64(), fsid: r.u64(), namelen: r.u32(),
    }));
  }
  readdir(fid, offset, count) {
    return this.call(T.readdir, (m) => m.u32(fid).u64(offset).u32(count), (r) => {
      const count = r.u32();
      const end = r.at + count;
      const entries = [];
      while (r.at < end) entries.push({ qid: r.qid(), offset: r.u64(), type: r.u8(), name: r.str() });
      return { entries };
    });
  }

  /** Every name in a directory fid (opened), reading in chunks of `count`. */
  readdirAll(fid, count = 8192) {
    const all = [];
    let offset = 0n;
    for (;;) {
      const r = this.readdir(fid, offset, count);
      if (r.ecode !== undefined) return r;
      if (r.entries.length === 0) return { entries: all };
      all.push(...r.entries);
      offset = r.entries.at(-1).offset;
    }
  }
}
