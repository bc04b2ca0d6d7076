/**
 * The 9P2000.L wire format: message type numbers, Linux errno values, a bounds-checked reader that
 * turns a request into a typed value, and a writer for replies.
 *
 * Every message is size[4] type[1] tag[2] followed by a body; all integers are little-endian,
 * strings are len[2] + bytes (UTF-8 by convention, kept as raw bytes here so host names that are not
 * valid UTF-8 survive the round trip), a qid is type[1] version[4] path[8].
 *
 * Everything a guest sends is untrusted: the reader checks each field against the end of the message
 * and throws ProtocolError (never a RangeError) when one does not fit; the server turns that into an
 * Rlerror(EPROTO) reply.
 */

/** Message type numbers. T-messages are requests; the reply to type T is T + 1. */
export const MSG = {
  Tlerror: 6,
  Rlerror: 7,
  Tstatfs: 8,
  Rstatfs: 9,
  Tlopen: 12,
  Rlopen: 13,
  Tlcreate: 14,
  Rlcreate: 15,
  Tsymlink: 16,
  Rsymlink: 17,
  Tmknod: 18,
  Rmknod: 19,
  Trename: 20,
  Rrename: 21,
  Treadlink: 22,
  Rreadlink: 23,
  Tgetattr: 24,
  Rgetattr: 25,
  Tsetattr: 26,
  Rsetattr: 27,
  Txattrwalk: 30,
  Rxattrwalk: 31,
  Txattrcreate: 32,
  Rxattrcreate: 33,
  Treaddir: 40,
  Rreaddir: 41,
  Tfsync: 50,
  Rfsync: 51,
  Tlock: 52,
  Rlock: 53,
  Tgetlock: 54,
  Rgetlock: 55,
  Tlink: 70,
  Rlink: 71,
  Tmkdir: 72,
  Rmkdir: 73,
  Trenameat: 74,
  Rrenameat: 75,
  Tunlinkat: 76,
  Runlinkat: 77,
  Tversion: 100,
  Rversion: 101,
  Tauth: 102,
  Rauth: 103,
  Tattach: 104,
  Rattach: 105,
  Tflush: 108,
  Rflush: 109,
  Twalk: 110,
  Rwalk: 111,
  Tread: 116,
  Rread: 117,
  Twrite: 118,
  Rwrite: 119,
  Tclunk: 120,
  Rclunk: 121,
  Tremove: 122,
  Rremove: 123,
} as const;

/** size[4] type[1] tag[2]. */
export const HEADER_SIZE = 7;
/** Header plus the count[4] that precedes the payload of Rread / Rreaddir / Twrite. */
export const IO_HEADER_SIZE = HEADER_SIZE + 4;
export const QID_SIZE = 13;
/** The tag of Tversion, and of replies to requests too broken to read a tag from. */
export const NOTAG = 0xffff;
export const NOFID = 0xffffffff;
/** At most this many names in one Twalk (the protocol's MAXWELEM). */
export const MAX_WALK_NAMES = 16;
export const VERSION_9P2000_L = '9P2000.L';

/** qid.type bits. */
export const QT = { DIR: 0x80, SYMLINK: 0x02, FILE: 0x00 } as const;

/** Tgetattr request_mask / Rgetattr valid bits. */
export const GETATTR = {
  MODE: 0x1, NLINK: 0x2, UID: 0x4, GID: 0x8, RDEV: 0x10, ATIME: 0x20, MTIME: 0x40, CTIME: 0x80,
  INO: 0x100, SIZE: 0x200, BLOCKS: 0x400, BASIC: 0x7ff, BTIME: 0x800, GEN: 0x1000, DATA_VERSION: 0x2000,
} as const;

/** Tsetattr valid bits. */
export const SETATTR = {
  MODE: 0x1, UID: 0x2, GID: 0x4, SIZE: 0x8, ATIME: 0x10, MTIME: 0x20, CTIME: 0x40, ATIME_SET: 0x80, MTIME_SET: 0x100,
} as const;

/** Open flags as the Linux client sends them (the guest's own O_* values, x86 numbering). */
export const LINUX_O = {
  ACCMODE: 0o3, RDONLY: 0o0, WRONLY: 0o1, RDWR: 0o2, CREAT: 0o100, EXCL: 0o200, TRUNC: 0o1000, APPEND: 0o2000,
  DSYNC: 0o10000, DIRECTORY: 0o200000, SYNC: 0o4010000,
} as const;

/** Tunlinkat flags. */
export const AT_REMOVEDIR = 0x200;

/** Tlock status / Tgetlock type values. */
export const LOCK_SUCCESS = 0;
export const LOCK_TYPE_UNLCK = 2;

/** Linux errno numbers, as Rlerror carries them (independent of the host's own numbering). */
export const ERRNO = {
  EPERM: 1, ENOENT: 2, EIO: 5, ENXIO: 6, E2BIG: 7, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EACCES: 13, EFAULT: 14,
  EBUSY: 16, EEXIST: 17, EXDEV: 18, ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, ENFILE: 23, EMFILE: 24,
  ETXTBSY: 26, EFBIG: 27, ENOSPC: 28, ESPIPE: 29, EROFS: 30, EMLINK: 31, ERANGE: 34, ENAMETOOLONG: 36,
  ENOSYS: 38, ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, EPROTO: 71, EOVERFLOW: 75, EMSGSIZE: 90,
  EOPNOTSUPP: 95, ESTALE: 116, EDQUOT: 122,
} as const;
export type ErrnoName = keyof typeof ERRNO;

/** A request that cannot be read: the reply is Rlerror(EPROTO). */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/** An operation that failed with a specific errno. */
export class P9Error extends Error {
  override readonly name = 'P9Error';
  constructor(readonly errno: number, message = `errno ${errno}`) {
    super(message);
  }
}

export interface Qid {
  readonly type: number;
  readonly version: number;
  readonly path: bigint;
}

/** Reads fields in order from one message; every read is checked against the message's end. */
export class Reader {
  #pos: number;
  readonly #view: DataView;

  constructor(readonly bytes: Uint8Array, start = 0) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#pos = start;
  }

  get remaining(): number {
    return this.bytes.byteLength - this.#pos;
  }

  #take(n: number, what: string): number {
    if (n > this.remaining) throw new ProtocolError(`${what} (${n} bytes) runs past the end of the message`);
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  u8(what = 'u8'): number { return this.#view.getUint8(this.#take(1, what)); }
  u16(what = 'u16'): number { return this.#view.getUint16(this.#take(2, what), true); }
  u32(what = 'u32'): number { return this.#view.getUint32(this.#take(4, what), true); }
  u64(what = 'u64'): bigint { return this.#view.getBigUint64(this.#take(8, what), true); }

  /** `n` raw bytes, as a view into the message (no copy). */
  data(n: number, what = 'data'): Uint8Array {
    const at = this.#take(n, what);
    return this.bytes.subarray(at, at + n);
  }

  /** A len[2]-prefixed string, as raw bytes. */
  str(what = 'string'): Uint8Array {
    return this.data(this.u16(`${what} length`), what);
  }
}

/** Builds one reply; the header's size field is filled in by finish(). */
export class Writer {
  #buf: Uint8Array;
  #view: DataView;
  #len = HEADER_SIZE;

  constructor(readonly type: number, readonly tag: number, capacity = 64) {
    this.#buf = new Uint8Array(Math.max(capacity, HEADER_SIZE));
    this.#view = new DataView(this.#buf.buffer);
  }

  get length(): number {
    return this.#len;
  }

  /** Room for `n` more bytes; returns the offset where they start. */
  #grow(n: number): number {
    const at = this.#len;
    if (at + n > this.#buf.byteLength) {
      const bigger = new Uint8Array(Math.max(at + n, this.#buf.byteLength * 2));
      bigger.set(this.#buf.subarray(0, at));
      this.#buf = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    this.#len += n;
    return at;
  }

  // Each writer grows first, then takes the view: growing replaces the buffer and its view.
  u8(v: number): this { const at = this.#grow(1); this.#view.setUint8(at, v); return this; }
  u16(v: number): this { const at = this.#grow(2); this.#view.setUint16(at, v, true); return this; }
  u32(v: number): this { const at = this.#grow(4); this.#view.setUint32(at, v >>> 0, true); return this; }
  u64(v: bigint): this { const at = this.#grow(8); this.#view.setBigUint64(at, BigInt.asUintN(64, v), true); return this; }

  data(b: Uint8Array): this {
    const at = this.#grow(b.byteLength);
    this.#buf.set(b, at);
    return this;
  }

  /** Reserves `n` bytes and returns them to be filled in place (e.g. by a file read), avoiding a copy. */
  reserve(n: number): Uint8Array {
    const at = this.#grow(n);
    return this.#buf.subarray(at, at + n);
  }

  /** Overwrites a u32 already written (a count known only once the payload is in). */
  setU32(at: number, v: number): this {
    if (at < HEADER_SIZE || at + 4 > this.#len) throw new RangeError(`setU32 at ${at} outside the message`);
    this.#view.setUint32(at, v >>> 0, true);
    return this;
  }

  /** Drops bytes reserved but not used (a short read). */
  truncate(length: number): this {
    if (length < HEADER_SIZE || length > this.#len) throw new RangeError(`truncate to ${length} outside [${HEADER_SIZE}, ${this.#len}]`);
    this.#len = length;
    return this;
  }

  str(s: Uint8Array | string): this {
    const b = typeof s === 'string' ? new TextEncoder().encode(s) : s;
    if (b.byteLength > 0xffff) throw new P9Error(ERRNO.ENAMETOOLONG, 'string longer than 65535 bytes');
    return this.u16(b.byteLength).data(b);
  }

  qid(q: Qid): this {
    return this.u8(q.type).u32(q.version).u64(q.path);
  }

  /** The finished message, size field set. */
  finish(): Uint8Array {
    this.#view.setUint32(0, this.#len, true);
    this.#view.setUint8(4, this.type);
    this.#view.setUint16(5, this.tag, true);
    return this.#buf.subarray(0, this.#len);
  }
}

export function encodeRlerror(tag: number, errno: number): Uint8Array {
  return new Writer(MSG.Rlerror, tag, HEADER_SIZE + 4).u32(errno).finish();
}

/** A reply with no body (Rclunk, Rflush, Rmkdir's siblings that carry nothing, ...). */
export function encodeEmpty(type: number, tag: number): Uint8Array {
  return new Writer(type, tag, HEADER_SIZE).finish();
}

export interface Header {
  readonly size: number;
  readonly type: number;
  readonly tag: number;
}

/**
 * Reads the header. The message is the first `size` bytes of `bytes`: a size below the header or
 * beyond what was received is a protocol error; bytes after `size` are not part of the message.
 */
export function readHeader(bytes: Uint8Array): Header {
  const r = new Reader(bytes);
  const size = r.u32('size');
  const type = r.u8('type');
  const tag = r.u16('tag');
  if (size < HEADER_SIZE || size > bytes.byteLength) throw new ProtocolError(`size field ${size} does not match the ${bytes.byteLength} bytes received`);
  return { size, type, tag };
}

/** The tag of a request, or NOTAG when not even the header is readable (for the error reply). */
export function peekTag(bytes: Uint8Array): number {
  return bytes.byteLength >= HEADER_SIZE ? new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE).getUint16(5, true) : NOTAG;
}

/** Every request this server understands, decoded; `unknown` carries the type number of anything else. */
export type Request =
  | { op: 'version'; msize: number; version: Uint8Array }
  | { op: 'auth'; afid: number }
  | { op: 'attach'; fid: number; afid: number; uname: Uint8Array; aname: Uint8Array; nuname: number }
  | { op: 'flush'; oldtag: number }
  | { op: 'walk'; fid: number; newfid: number; names: Uint8Array[] }
  | { op: 'getattr'; fid: number; mask: bigint }
  | { op: 'setattr'; fid: number; valid: number; mode: number; uid: number; gid: number; size: bigint; atimeSec: bigint; atimeNsec: bigint; mtimeSec: bigint; mtimeNsec: bigint }
  | { op: 'lopen'; fid: number; flags: number }
  | { op: 'lcreate'; fid: number; name: Uint8Array; flags: number; mode: number; gid: number }
  | { op: 'read'; fid: number; offset: bigint; count: number }
  | { op: 'write'; fid: number; offset: bigint; data: Uint8Array }
  | { op: 'clunk'; fid: number }
  | { op: 'remove'; fid: number }
  | { op: 'readdir'; fid: number; offset: bigint; count: number }
  | { op: 'statfs'; fid: number }
  | { op: 'mkdir'; dfid: number; name: Uint8Array; mode: number; gid: number }
  | { op: 'unlinkat'; dfid: number; name: Uint8Array; flags: number }
  | { op: 'renameat'; olddfid: number; oldname: Uint8Array; newdfid: number; newname: Uint8Array }
  | { op: 'rename'; fid: number; dfid: number; name: Uint8Array }
  | { op: 'fsync'; fid: number; datasync: boolean }
  | { op: 'symlink'; dfid: number; name: Uint8Array; target: Uint8Array; gid: number }
  | { op: 'readlink'; fid: number }
  | { op: 'link'; dfid: number; fid: number; name: Uint8Array }
  | { op: 'mknod'; dfid: number; name: Uint8Array }
  | { op: 'xattrwalk'; fid: number; newfid: number; name: Uint8Array }
  | { op: 'xattrcreate'; fid: number; name: Uint8Array }
  | { op: 'lock'; fid: number }
  | { op: 'getlock'; fid: number; lockType: number; start: bigint; length: bigint; procId: number; clientId: Uint8Array }
  | { op: 'unknown'; type: number };

export type Op = Request['op'];

type Decoder = (r: Reader) => Request;

function walkNames(r: Reader): Uint8Array[] {
  const n = r.u16('nwname');
  if (n > MAX_WALK_NAMES) throw new P9Error(ERRNO.E2BIG, `Twalk with ${n} names (at most ${MAX_WALK_NAMES})`);
  const names: Uint8Array[] = [];
  for (let i = 0; i < n; i++) names.push(r.str('wname'));
  return names;
}

/** Body decoders by T-message type; the field order is the protocol's. */
const DECODERS: ReadonlyMap<number, Decoder> = new Map<number, Decoder>([
  [MSG.Tversion, (r) => ({ op: 'version', msize: r.u32('msize'), version: r.str('version') })],
  [MSG.Tauth, (r) => ({ op: 'auth', afid: r.u32('afid') })],
  [MSG.Tattach, (r) => ({ op: 'attach', fid: r.u32('fid'), afid: r.u32('afid'), uname: r.str('uname'), aname: r.str('aname'), nuname: r.u32('n_uname') })],
  [MSG.Tflush, (r) => ({ op: 'flush', oldtag: r.u16('oldtag') })],
  [MSG.Twalk, (r) => ({ op: 'walk', fid: r.u32('fid'), newfid: r.u32('newfid'), names: walkNames(r) })],
  [MSG.Tgetattr, (r) => ({ op: 'getattr', fid: r.u32('fid'), mask: r.u64('request_mask') })],
  [MSG.Tsetattr, (r) => ({
    op: 'setattr', fid: r.u32('fid'), valid: r.u32('valid'), mode: r.u32('mode'), uid: r.u32('uid'), gid: r.u32('gid'), size: r.u64('size'),
    atimeSec: r.u64('atime_sec'), atimeNsec: r.u64('atime_nsec'), mtimeSec: r.u64('mtime_sec'), mtimeNsec: r.u64('mtime_nsec'),
  })],
  [MSG.Tlopen, (r) => ({ op: 'lopen', fid: r.u32('fid'), flags: r.u32('flags') })],
  [MSG.Tlcreate, (r) => ({ op: 'lcreate', fid: r.u32('fid'), name: r.str('name'), flags: r.u32('flags'), mode: r.u32('mode'), gid: r.u32('gid') })],
  [MSG.Tread, (r) => ({ op: 'read', fid: r.u32('fid'), offset: r.u64('offset'), count: r.u32('count') })],
  [MSG.Twrite, (r) => ({ op: 'write', fid: r.u32('fid'), offset: r.u64('offset'), data: r.data(r.u32('count'), 'write data') })],
  [MSG.Tclunk, (r) => ({ op: 'clunk', fid: r.u32('fid') })],
  [MSG.Tremove, (r) => ({ op: 'remove', fid: r.u32('fid') })],
  [MSG.Treaddir, (r) => ({ op: 'readdir', fid: r.u32('fid'), offset: r.u64('offset'), count: r.u32('count') })],
  [MSG.Tstatfs, (r) => ({ op: 'statfs', fid: r.u32('fid') })],
  [MSG.Tmkdir, (r) => ({ op: 'mkdir', dfid: r.u32('dfid'), name: r.str('name'), mode: r.u32('mode'), gid: r.u32('gid') })],
  [MSG.Tunlinkat, (r) => ({ op: 'unlinkat', dfid: r.u32('dirfd'), name: r.str('name'), flags: r.u32('flags') })],
  [MSG.Trenameat, (r) => ({ op: 'renameat', olddfid: r.u32('olddirfid'), oldname: r.str('oldname'), newdfid: r.u32('newdirfid'), newname: r.str('newname') })],
  [MSG.Trename, (r) => ({ op: 'rename', fid: r.u32('fid'), dfid: r.u32('dfid'), name: r.str('name') })],
  // Older Linux clients send Tfsync without the datasync field: treat it as a full fsync.
  [MSG.Tfsync, (r) => ({ op: 'fsync', fid: r.u32('fid'), datasync: r.remaining >= 4 ? r.u32('datasync') !== 0 : false })],
  [MSG.Tsymlink, (r) => ({ op: 'symlink', dfid: r.u32('fid'), name: r.str('name'), target: r.str('symtgt'), gid: r.u32('gid') })],
  [MSG.Treadlink, (r) => ({ op: 'readlink', fid: r.u32('fid') })],
  [MSG.Tlink, (r) => ({ op: 'link', dfid: r.u32('dfid'), fid: r.u32('fid'), name: r.str('name') })],
  [MSG.Tmknod, (r) => ({ op: 'mknod', dfid: r.u32('dfid'), name: r.str('name') })],
  [MSG.Txattrwalk, (r) => ({ op: 'xattrwalk', fid: r.u32('fid'), newfid: r.u32('newfid'), name: r.str('name') })],
  [MSG.Txattrcreate, (r) => ({ op: 'xattrcreate', fid: r.u32('fid'), name: r.str('name') })],
  [MSG.Tlock, (r) => ({ op: 'lock', fid: r.u32('fid') })],
  [MSG.Tgetlock, (r) => ({
    op: 'getlock', fid: r.u32('fid'), lockType: r.u8('type'), start: r.u64('start'), length: r.u64('length'), procId: r.u32('proc_id'), clientId: r.str('client_id'),
  })],
]);

/** Decodes one request (the header already validated by readHeader). */
export function decodeRequest(bytes: Uint8Array, header: Header): Request {
  const decode = DECODERS.get(header.type);
  if (!decode) return { op: 'unknown', type: header.type };
  return decode(new Reader(bytes.subarray(0, header.size), HEADER_SIZE));
}
