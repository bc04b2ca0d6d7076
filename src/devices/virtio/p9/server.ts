/**
 * A 9P2000.L file server over one host directory: one request in, one reply out (handle()).
 *
 * Confinement. A fid names a list of path components below the root, never a host path: each
 * component is a single name checked when walked ('..' pops a component and stops at the root, names
 * with '/' or NUL are refused), so a fid cannot name anything outside the root by construction. The
 * host must also never follow a symbolic link while resolving a fid, or a link inside the share
 * (planted by the guest with Tsymlink, or already there) would lead outside it. Node has no openat(),
 * so every operation re-checks, with lstat, that each directory above the target is still a real
 * directory, and acts on the target itself with calls that do not follow links (lstat, O_NOFOLLOW,
 * lchown, lutimes, rename, unlink, rmdir, readlink) or refuses links first (chmod, truncate).
 * Requests are served one at a time and synchronously, so the guest cannot swap a directory for a link
 * between the check and the use; only another host process could, and the host owns the directory.
 *
 * Modes: guest-supplied permission bits lose setuid/setgid, and a file opened for writing or
 * truncated loses them too (as the kernel does for a writer without CAP_FSETID, which the VMM, run as
 * root, has), so a guest cannot plant a set-id program in the host directory. Ownership (gid in
 * Tlcreate/Tmkdir/Tsymlink) is left to the host: the files belong to whoever runs the VMM.
 *
 * Errors are Linux errno values in Rlerror. Anything unexpected becomes EIO (and is reported through
 * the optional onUnexpected hook); no exception leaves handle().
 */
import * as fs from 'node:fs';
import {
  AT_REMOVEDIR, ERRNO, GETATTR, HEADER_SIZE, IO_HEADER_SIZE, LINUX_O, LOCK_SUCCESS, LOCK_TYPE_UNLCK, MSG, NOFID, P9Error, ProtocolError,
  QID_SIZE, QT, SETATTR, VERSION_9P2000_L, Writer, decodeRequest, encodeEmpty, encodeRlerror, peekTag, readHeader,
  type ErrnoName, type Qid, type Request,
} from './protocol.js';
import { Listing } from './listing.js';

/** The largest msize offered: bounds every request and reply (and so each host read or write). */
export const P9_MAX_MSIZE = 512 * 1024;
/** Below this an Rgetattr or a directory entry with a long name might not fit: refuse to negotiate. */
export const P9_MIN_MSIZE = 4096;
/** Fids per session: each may hold a host file descriptor, so the table is what bounds those. */
export const P9_MAX_FIDS = 4096;
/**
 * Directory entries held in listings at once, over all open directories of a session (a name's
 * length and 4 bytes each: listing.ts): a guest opening one large directory through many fids must
 * not exhaust the VMM's heap. At most ~260 MiB per session, with every name 255 bytes long.
 */
export const P9_MAX_LISTED_ENTRIES = 1 << 20;

const NAME_MAX = 255;
const PATH_MAX = 4096;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
/** Permission bits a guest may set: setuid/setgid are dropped (see the header comment). */
const MODE_ALLOWED = 0o1777;
const DIRENT_FIXED = QID_SIZE + 8 + 1 + 2; // qid, offset, type, name length
const SLASH = Buffer.from('/');
const DOT = Listing.DOT;
const DOTDOT = Listing.DOTDOT;

export interface P9ServerOptions {
  /** The shared host directory. */
  readonly root: string;
  /** Every modifying operation fails with EROFS and nothing on the host changes. */
  readonly readOnly?: boolean;
  readonly maxFids?: number;
  /** Directory entries held in listings at once (P9_MAX_LISTED_ENTRIES). */
  readonly maxListedEntries?: number;
  readonly maxMsize?: number;
  /** Told about errors that are not plain errno failures (bugs), which the guest sees as EIO. */
  readonly onUnexpected?: (error: unknown) => void;
}

interface OpenFile {
  readonly fd: number;
  readonly dir: boolean;
  /** Directory listing ('.', '..', then names sorted), taken when the guest reads from offset 0. */
  listing?: Listing;
}

interface Fid {
  /** Components below the root; [] is the root itself. */
  path: Buffer[];
  open?: OpenFile;
}

type Stats = fs.BigIntStats;

const fail = (name: ErrnoName, why: string): never => {
  throw new P9Error(ERRNO[name], why);
};

/** The Linux errno for an exception: ours, or a Node system error's code. */
export function errnoOf(e: unknown): number {
  if (e instanceof P9Error) return e.errno;
  if (e instanceof ProtocolError) return ERRNO.EPROTO;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (Object.hasOwn(ERRNO, code)) return ERRNO[code as ErrnoName];
    if (code === 'ENOTSUP') return ERRNO.EOPNOTSUPP;
    if (code.startsWith('ERR_')) return ERRNO.EINVAL; // Node refused an argument (say, a NUL byte in a path)
  }
  return ERRNO.EIO;
}

/** Whether errnoOf() would be guessing: not one of ours and not a system error with a known code. */
function isUnexpected(e: unknown): boolean {
  if (e instanceof P9Error || e instanceof ProtocolError) return false;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code !== 'string' || (!Object.hasOwn(ERRNO, code) && code !== 'ENOTSUP' && !code.startsWith('ERR_'));
}

const isDirMode = (mode: bigint | number): boolean => (Number(mode) & S_IFMT) === S_IFDIR;
const isRegMode = (mode: bigint | number): boolean => (Number(mode) & S_IFMT) === S_IFREG;
const isLinkMode = (mode: bigint | number): boolean => (Number(mode) & S_IFMT) === S_IFLNK;

const sameName = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

/** A name that may be created in a directory: one non-empty component, not '.' or '..'. */
function checkNewName(name: Uint8Array): Buffer {
  if (name.byteLength === 0) fail('EINVAL', 'empty name');
  if (name.byteLength > NAME_MAX) fail('ENAMETOOLONG', `name of ${name.byteLength} bytes`);
  if (name.includes(0x2f) || name.includes(0)) fail('EINVAL', "name contains '/' or NUL");
  if (sameName(name, DOT) || sameName(name, DOTDOT)) fail('EINVAL', "'.' or '..' is not a name to create or remove");
  return Buffer.from(name);
}

/** A name to walk: one component, or '.' / '..'. The empty name names nothing. */
function checkWalkName(name: Uint8Array): Buffer {
  if (name.byteLength === 0) fail('ENOENT', 'empty name');
  if (name.byteLength > NAME_MAX) fail('ENAMETOOLONG', `name of ${name.byteLength} bytes`);
  if (name.includes(0x2f) || name.includes(0)) fail('EINVAL', "name contains '/' or NUL");
  return Buffer.from(name);
}

/** Offsets from the wire are u64; the host takes signed 64-bit positions. */
function readPosition(offset: bigint): bigint {
  if (offset > 0x7fff_ffff_ffff_ffffn) fail('EINVAL', `offset ${offset} is negative as a signed position`);
  return offset;
}

/** fs.writeSync takes a Number position: beyond 2^53 we cannot express it (no file is that large). */
function writePosition(offset: bigint): number {
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) fail('EFBIG', `offset ${offset} beyond 2^53`);
  return Number(offset);
}

/** The host's open flags for a Tlopen/Tlcreate: the access mode and the flags that are safe to honour. */
function hostOpenFlags(flags: number): number {
  const c = fs.constants;
  const acc = flags & LINUX_O.ACCMODE;
  if (acc === 3) fail('EINVAL', 'access mode 3');
  let out = acc === LINUX_O.WRONLY ? c.O_WRONLY : acc === LINUX_O.RDWR ? c.O_RDWR : c.O_RDONLY;
  if (flags & LINUX_O.TRUNC) out |= c.O_TRUNC;
  if (flags & LINUX_O.APPEND) out |= c.O_APPEND;
  if (flags & LINUX_O.DIRECTORY) out |= c.O_DIRECTORY;
  if ((flags & LINUX_O.SYNC) === LINUX_O.SYNC) out |= c.O_SYNC;
  else if (flags & LINUX_O.DSYNC) out |= c.O_DSYNC;
  // Never follow a link at the last component; never block the event loop on a FIFO. O_DIRECT,
  // O_NOATIME and the rest are dropped: they would only add alignment or permission failures.
  return out | c.O_NOFOLLOW | c.O_NONBLOCK;
}

const wantsWrite = (flags: number): boolean => (flags & LINUX_O.ACCMODE) !== LINUX_O.RDONLY || (flags & LINUX_O.TRUNC) !== 0;

/** Operations that change the host directory: refused with EROFS in read-only mode. */
const MODIFYING: ReadonlySet<Request['op']> = new Set<Request['op']>([
  'lcreate', 'write', 'mkdir', 'unlinkat', 'renameat', 'rename', 'symlink', 'link', 'mknod', 'setattr', 'xattrcreate',
]);

/** Seconds and nanoseconds (0 <= nsec < 1e9, also before 1970: seconds round down). */
function splitNs(ns: bigint): [bigint, bigint] {
  const nsec = ((ns % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n;
  return [(ns - nsec) / 1_000_000_000n, nsec];
}

/**
 * A time for fs.lutimesSync. Node takes a negative number of seconds for "now", so a time before
 * 1970 goes as a Date (to the millisecond); later ones as seconds (to the microsecond).
 */
function utime(seconds: number): number | Date {
  return seconds >= 0 ? seconds : new Date(seconds * 1000);
}

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_IXGRP = 0o010;

/**
 * Clears the set-id bits of a file about to be written or truncated, as the kernel does for a writer
 * without CAP_FSETID (setgid only with group-execute: without it, it marks mandatory locking).
 */
function killSetId(fd: number, mode: number): void {
  const bits = (mode & S_ISUID) | ((mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP) ? S_ISGID : 0);
  if (bits) fs.fchmodSync(fd, mode & 0o7777 & ~bits);
}

/**
 * The size of the reply to requests that change state (a new fid, a new file) when they succeed,
 * checked before they are carried out: a reply swapped for EMSGSIZE afterwards would leave the
 * guest's view and ours apart. Other replies are either as small as Rlerror or cut to fit.
 */
function successReplySize(req: Request): number {
  switch (req.op) {
    case 'walk': return HEADER_SIZE + 2 + QID_SIZE * req.names.length;
    case 'attach': case 'mkdir': case 'symlink': case 'mknod': return HEADER_SIZE + QID_SIZE;
    case 'lopen': case 'lcreate': return HEADER_SIZE + QID_SIZE + 4;
    default: return 0;
  }
}

export class P9Server {
  readonly root: string;
  readonly readOnly: boolean;
  readonly maxFids: number;
  readonly maxListedEntries: number;
  readonly maxMsize: number;
  readonly #rootBuf: Buffer;
  readonly #rootDev: bigint;
  readonly #rootIno: bigint;
  readonly #fids = new Map<number, Fid>();
  readonly #onUnexpected: ((error: unknown) => void) | undefined;
  /** 0 until Tversion: nothing else is served before. */
  #msize = 0;
  /** Entries in the listings of open directories (P9_MAX_LISTED_ENTRIES). */
  #listed = 0;

  constructor(opts: P9ServerOptions) {
    // Resolve the root once, here: links above or at the root are the host's own choice.
    let root: string;
    try {
      root = fs.realpathSync(opts.root);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such directory' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
      throw new Error(`shared directory ${opts.root}: ${why}`);
    }
    const st = fs.statSync(root, { bigint: true });
    if (!st.isDirectory()) throw new Error(`shared path ${opts.root} is not a directory`);
    this.root = root;
    this.#rootBuf = Buffer.from(root === '/' ? '' : root);
    this.#rootDev = st.dev;
    this.#rootIno = st.ino;
    this.readOnly = opts.readOnly ?? false;
    this.maxFids = opts.maxFids ?? P9_MAX_FIDS;
    this.maxListedEntries = opts.maxListedEntries ?? P9_MAX_LISTED_ENTRIES;
    this.maxMsize = Math.max(P9_MIN_MSIZE, Math.min(opts.maxMsize ?? P9_MAX_MSIZE, P9_MAX_MSIZE));
    this.#onUnexpected = opts.onUnexpected;
  }

  /** The negotiated msize (0 before Tversion). */
  get msize(): number {
    return this.#msize;
  }

  /** The largest request accepted now: the negotiated msize, or the cap before Tversion. */
  get maxRequest(): number {
    return this.#msize || this.maxMsize;
  }

  get fidCount(): number {
    return this.#fids.size;
  }

  /**
   * Serves one request. `maxReply` is the room the transport has for the reply: reads and directory
   * listings are cut to fit it, and any other reply that would not fit becomes Rlerror(EMSGSIZE).
   */
  handle(request: Uint8Array, maxReply = Number.MAX_SAFE_INTEGER): Uint8Array {
    const tag = peekTag(request);
    try {
      const header = readHeader(request);
      const req = decodeRequest(request, header);
      const limit = Math.min(this.maxRequest, maxReply);
      if (successReplySize(req) > limit) return encodeRlerror(tag, ERRNO.EMSGSIZE);
      const reply = this.#dispatch(req, header.tag, limit);
      return reply.byteLength > limit ? encodeRlerror(tag, ERRNO.EMSGSIZE) : reply;
    } catch (e) {
      if (isUnexpected(e)) this.#onUnexpected?.(e);
      return encodeRlerror(tag, errnoOf(e));
    }
  }

  /** Back to the state before Tversion: every fid clunked, every host file closed. */
  reset(): void {
    for (const fid of this.#fids.values()) this.#close(fid);
    this.#fids.clear();
    this.#listed = 0;
    this.#msize = 0;
  }

  #dispatch(req: Request, tag: number, limit: number): Uint8Array {
    if (req.op === 'version') return this.#version(req, tag);
    if (this.#msize === 0) fail('EPROTO', 'no Tversion yet');
    if (this.readOnly && MODIFYING.has(req.op)) fail('EROFS', `${req.op} on a read-only share`);
    switch (req.op) {
      case 'attach': return this.#attach(req, tag);
      case 'walk': return this.#walk(req, tag);
      case 'getattr': return this.#getattr(req, tag);
      case 'setattr': return this.#setattr(req, tag);
      case 'lopen': return this.#lopen(req, tag);
      case 'lcreate': return this.#lcreate(req, tag);
      case 'read': return this.#read(req, tag, limit);
      case 'write': return this.#write(req, tag);
      case 'clunk': return this.#clunk(req, tag);
      case 'remove': return this.#remove(req, tag);
      case 'readdir': return this.#readdir(req, tag, limit);
      case 'statfs': return this.#statfs(req, tag);
      case 'mkdir': return this.#mkdir(req, tag);
      case 'unlinkat': return this.#unlinkat(req, tag);
      case 'renameat': return this.#renameat(req, tag);
      case 'rename': return this.#rename(req, tag);
      case 'fsync': return this.#fsync(req, tag);
      case 'symlink': return this.#symlink(req, tag);
      case 'readlink': return this.#readlink(req, tag);
      case 'link': return this.#link(req, tag);
      case 'lock': return this.#lock(req, tag);
      case 'getlock': return this.#getlock(req, tag);
      // Requests are served synchronously: by the time Tflush arrives, the old one has its reply.
      case 'flush': return encodeEmpty(MSG.Rflush, tag);
      case 'auth': return fail('EOPNOTSUPP', 'no authentication: attach with afid NOFID');
      case 'mknod': return fail('EOPNOTSUPP', 'device nodes and FIFOs are not created on the host');
      case 'xattrwalk':
      case 'xattrcreate': return fail('EOPNOTSUPP', 'extended attributes are not supported');
      case 'unknown': return fail('EOPNOTSUPP', `message type ${req.type}`);
    }
  }

  // ---- fids and paths ----

  #fid(id: number): Fid {
    const fid = this.#fids.get(id);
    if (!fid) return fail('EBADF', `fid ${id} is not in use`);
    return fid;
  }

  /** Checks that `id` can become a new fid now (not NOFID, not in use, room in the table). */
  #checkNewFid(id: number): void {
    if (id === NOFID) fail('EINVAL', 'NOFID as a new fid');
    if (this.#fids.has(id)) fail('EINVAL', `fid ${id} is already in use`);
    if (this.#fids.size >= this.maxFids) fail('EMFILE', `all ${this.maxFids} fids in use`);
  }

  /**
   * Every host path starts with the root's path, resolved once (constructor). A guest can change what
   * that path leads to when it can write above the root: through another share that holds this one
   * (`--share ~:home` with the current directory shared too), it can move the root away and put a
   * link to anywhere in its place or in an ancestor's. So each path built first checks that the root's
   * path still leads to the directory it did (lstat: a link at the root itself is not followed).
   * Requests are served one at a time, on one thread, so no request of either share runs between
   * this check and the use of the path.
   */
  #checkRoot(): void {
    let st: Stats | undefined;
    try {
      st = fs.lstatSync(this.#rootBuf.byteLength ? this.#rootBuf : SLASH, { bigint: true });
    } catch {
      // gone: refused below
    }
    if (!st?.isDirectory() || st.ino !== this.#rootIno || st.dev !== this.#rootDev) fail('ESTALE', `the shared directory ${this.root} was moved or replaced`);
  }

  #host(path: readonly Buffer[]): Buffer {
    this.#checkRoot();
    const parts: Buffer[] = [this.#rootBuf];
    for (const c of path) parts.push(SLASH, c);
    const out = parts.length === 1 ? Buffer.from(this.#rootBuf.byteLength ? this.#rootBuf : SLASH) : Buffer.concat(parts);
    if (out.byteLength >= PATH_MAX) fail('ENAMETOOLONG', `host path of ${out.byteLength} bytes`);
    return out;
  }

  /**
   * The host path of `path`, after checking that every directory above its last component is a real
   * directory (lstat: a link there is refused, not followed). The last component is the caller's:
   * each caller acts on it without following links.
   */
  #resolve(path: readonly Buffer[]): Buffer {
    for (let n = 1; n < path.length; n++) {
      const st = fs.lstatSync(this.#host(path.slice(0, n)), { bigint: true });
      if (!st.isDirectory()) fail('ENOTDIR', 'a directory on the path was replaced by a non-directory');
    }
    return this.#host(path);
  }

  /** A fid that names a directory, resolved: for operations that take a name in it. */
  #dir(id: number): { path: Buffer[]; host: Buffer } {
    const fid = this.#fid(id);
    const host = this.#resolve(fid.path);
    if (!fs.lstatSync(host, { bigint: true }).isDirectory()) fail('ENOTDIR', `fid ${id} is not a directory`);
    return { path: fid.path, host };
  }

  /** Host path of `name` in directory fid `dfid`, the name checked. */
  #child(dfid: number, name: Uint8Array): { path: Buffer[]; host: Buffer } {
    const n = checkNewName(name);
    const dir = this.#dir(dfid);
    const path = [...dir.path, n];
    return { path, host: this.#host(path) };
  }

  #lstat(path: readonly Buffer[]): Stats {
    return fs.lstatSync(this.#resolve(path), { bigint: true });
  }

  #qid(st: Stats): Qid {
    const type = st.isDirectory() ? QT.DIR : st.isSymbolicLink() ? QT.SYMLINK : QT.FILE;
    // Inode numbers repeat across filesystems: a file on another filesystem mounted inside the share
    // gets its device mixed into the high bits, so the guest does not confuse two files.
    const path = st.dev === this.#rootDev ? st.ino : (1n << 63n) | ((st.dev & 0x7fffn) << 48n) ^ st.ino;
    // version 0: "no version"; an mtime-based one would make the guest drop its inode on every write.
    return { type, version: 0, path: BigInt.asUintN(64, path) };
  }

  #close(fid: Fid): void {
    if (!fid.open) return;
    this.#setListing(fid.open, undefined);
    try {
      fs.closeSync(fid.open.fd);
    } catch {
      /* closing cannot usefully fail here */
    }
    fid.open = undefined;
  }

  /** After a rename, fids under the old name follow it, as open files on a local filesystem would. */
  #renamed(from: readonly Buffer[], to: readonly Buffer[]): void {
    for (const fid of this.#fids.values()) {
      if (fid.path.length < from.length) continue;
      if (!from.every((c, i) => sameName(c, fid.path[i]!))) continue;
      fid.path = [...to, ...fid.path.slice(from.length)];
    }
  }

  // ---- session ----

  #version(req: Extract<Request, { op: 'version' }>, tag: number): Uint8Array {
    this.reset(); // Tversion starts a new session: earlier fids are gone
    if (req.msize < P9_MIN_MSIZE) fail('EINVAL', `msize ${req.msize} below ${P9_MIN_MSIZE}`);
    const ours = Buffer.compare(Buffer.from(req.version), Buffer.from(VERSION_9P2000_L)) === 0;
    const msize = Math.min(req.msize, this.maxMsize);
    if (ours) this.#msize = msize;
    return new Writer(MSG.Rversion, tag).u32(msize).str(ours ? VERSION_9P2000_L : 'unknown').finish();
  }

  #attach(req: Extract<Request, { op: 'attach' }>, tag: number): Uint8Array {
    // The whole share is the only tree: aname and the user are not used to pick anything.
    this.#checkNewFid(req.fid);
    const st = this.#lstat([]);
    this.#fids.set(req.fid, { path: [] });
    return new Writer(MSG.Rattach, tag).qid(this.#qid(st)).finish();
  }

  #walk(req: Extract<Request, { op: 'walk' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    if (req.newfid !== req.fid) this.#checkNewFid(req.newfid);
    else if (fid.open) fail('EINVAL', 'walking an open fid in place');
    let path = fid.path;
    const qids: Qid[] = [];
    if (req.names.length > 0) this.#resolve(path);
    for (const raw of req.names) {
      try {
        path = this.#step(path, raw);
        qids.push(this.#qid(fs.lstatSync(this.#host(path), { bigint: true })));
      } catch (e) {
        if (qids.length === 0) throw e; // the first name failed: an error, not a partial walk
        break;
      }
    }
    if (qids.length === req.names.length) {
      if (req.newfid === req.fid) fid.path = path;
      else this.#fids.set(req.newfid, { path });
    }
    const w = new Writer(MSG.Rwalk, tag).u16(qids.length);
    for (const q of qids) w.qid(q);
    return w.finish();
  }

  /** One walk step from directory `path` (which must be a real directory, not a link to one). */
  #step(path: Buffer[], raw: Uint8Array): Buffer[] {
    const name = checkWalkName(raw);
    if (!fs.lstatSync(this.#host(path), { bigint: true }).isDirectory()) fail('ENOTDIR', 'walk from a non-directory');
    if (sameName(name, DOT)) return path;
    if (sameName(name, DOTDOT)) return path.slice(0, -1); // at the root, '..' is the root
    return [...path, name];
  }

  #clunk(req: Extract<Request, { op: 'clunk' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    this.#close(fid);
    this.#fids.delete(req.fid);
    return encodeEmpty(MSG.Rclunk, tag);
  }

  // ---- attributes ----

  #stat(fid: Fid): Stats {
    // An open file is asked through its descriptor: it may have been unlinked or renamed meanwhile.
    return fid.open ? fs.fstatSync(fid.open.fd, { bigint: true }) : this.#lstat(fid.path);
  }

  #getattr(req: Extract<Request, { op: 'getattr' }>, tag: number): Uint8Array {
    const st = this.#stat(this.#fid(req.fid));
    const w = new Writer(MSG.Rgetattr, tag, 160);
    w.u64(BigInt(GETATTR.BASIC)).qid(this.#qid(st));
    w.u32(Number(st.mode)).u32(Number(st.uid)).u32(Number(st.gid));
    w.u64(st.nlink).u64(st.rdev).u64(st.size).u64(st.blksize).u64(st.blocks);
    for (const ns of [st.atimeNs, st.mtimeNs, st.ctimeNs, st.birthtimeNs]) {
      const [sec, nsec] = splitNs(ns);
      w.u64(sec).u64(nsec);
    }
    return w.u64(0n).u64(0n).finish(); // gen, data_version
  }

  #setattr(req: Extract<Request, { op: 'setattr' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    const host = this.#resolve(fid.path);
    const st = fs.lstatSync(host, { bigint: true });
    const v = req.valid;
    if (v & SETATTR.MODE) this.#chmod(fid, host, st, req.mode);
    if (v & (SETATTR.UID | SETATTR.GID)) {
      fs.lchownSync(host, v & SETATTR.UID ? req.uid : -1, v & SETATTR.GID ? req.gid : -1);
    }
    if (v & SETATTR.SIZE) this.#truncate(fid, host, st, req.size);
    if (v & (SETATTR.ATIME | SETATTR.MTIME)) this.#utimes(host, st, req);
    // CTIME alone asks for nothing the host lets us set: ctime moves with the changes above.
    return encodeEmpty(MSG.Rsetattr, tag);
  }

  #chmod(fid: Fid, host: Buffer, st: Stats, mode: number): void {
    const bits = mode & MODE_ALLOWED;
    if (fid.open) return fs.fchmodSync(fid.open.fd, bits);
    // chmod() follows links and Linux has no lchmod: a link's mode cannot change anyway.
    if (st.isSymbolicLink()) fail('EOPNOTSUPP', 'chmod of a symbolic link');
    fs.chmodSync(host, bits);
  }

  #truncate(fid: Fid, host: Buffer, st: Stats, size: bigint): void {
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) fail('EFBIG', `size ${size}`);
    if (st.isDirectory()) fail('EISDIR', 'truncate of a directory');
    if (!st.isFile()) fail('EINVAL', 'truncate of a non-regular file');
    if (fid.open && !fid.open.dir) {
      try {
        killSetId(fid.open.fd, fs.fstatSync(fid.open.fd).mode);
        return fs.ftruncateSync(fid.open.fd, Number(size));
      } catch (e) {
        if (errnoOf(e) !== ERRNO.EBADF && errnoOf(e) !== ERRNO.EINVAL) throw e; // opened read-only: by path below
      }
    }
    // truncate() by path follows links: open without following instead.
    const fd = fs.openSync(host, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    try {
      killSetId(fd, fs.fstatSync(fd).mode);
      fs.ftruncateSync(fd, Number(size));
    } finally {
      fs.closeSync(fd);
    }
  }

  #utimes(host: Buffer, st: Stats, req: Extract<Request, { op: 'setattr' }>): void {
    const now = Date.now() / 1000;
    const pick = (given: number, set: number, sec: bigint, nsec: bigint, current: bigint): number | Date => {
      if (!(req.valid & given)) return utime(Number(current) / 1e9); // keep (to the microsecond: lutimes takes a double)
      if (!(req.valid & set)) return now;
      if (nsec >= 1_000_000_000n) fail('EINVAL', `nanoseconds ${nsec}`);
      return utime(Number(BigInt.asIntN(64, sec)) + Number(nsec) / 1e9);
    };
    const atime = pick(SETATTR.ATIME, SETATTR.ATIME_SET, req.atimeSec, req.atimeNsec, st.atimeNs);
    const mtime = pick(SETATTR.MTIME, SETATTR.MTIME_SET, req.mtimeSec, req.mtimeNsec, st.mtimeNs);
    fs.lutimesSync(host, atime, mtime);
  }

  #statfs(req: Extract<Request, { op: 'statfs' }>, tag: number): Uint8Array {
    // statfs() follows links: ask about the directory holding a link, never the link's target.
    const path = this.#fid(req.fid).path;
    const host = this.#resolve(path);
    const target = fs.lstatSync(host, { bigint: true }).isSymbolicLink() ? this.#host(path.slice(0, -1)) : host;
    const s = fs.statfsSync(target, { bigint: true });
    const w = new Writer(MSG.Rstatfs, tag);
    w.u32(Number(s.type & 0xffffffffn)).u32(Number(s.bsize & 0xffffffffn));
    w.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree);
    return w.u64(0n).u32(NAME_MAX).finish(); // fsid (Node does not report it), namelen
  }

  // ---- opening, reading, writing ----

  #lopen(req: Extract<Request, { op: 'lopen' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    if (fid.open) fail('EINVAL', `fid ${req.fid} is already open`);
    if (this.readOnly && wantsWrite(req.flags)) fail('EROFS', 'open for writing on a read-only share');
    const host = this.#resolve(fid.path);
    const st = fs.lstatSync(host, { bigint: true });
    if (st.isSymbolicLink()) fail('ELOOP', 'open of a symbolic link (the guest resolves links itself)');
    if (st.isDirectory() && (req.flags & LINUX_O.ACCMODE) !== LINUX_O.RDONLY) fail('EISDIR', 'directory opened for writing');
    if (!st.isDirectory() && !st.isFile()) fail('EOPNOTSUPP', 'only regular files and directories can be opened');
    const fd = fs.openSync(host, hostOpenFlags(req.flags));
    const open = this.#adopt(fd, wantsWrite(req.flags));
    fid.open = open;
    return new Writer(MSG.Rlopen, tag).qid(this.#qid(fs.fstatSync(fd, { bigint: true }))).u32(0).finish(); // iounit 0: msize rules
  }

  /**
   * Keeps a freshly opened descriptor if it is a regular file or directory (checked again: lstat was
   * earlier); a file opened to be written loses its set-id bits.
   */
  #adopt(fd: number, forWriting: boolean): OpenFile {
    try {
      const st = fs.fstatSync(fd);
      if (!isRegMode(st.mode) && !isDirMode(st.mode)) fail('EOPNOTSUPP', 'only regular files and directories can be opened');
      // Can fail (EROFS, EPERM: a read-only mount or an immutable file inside the share): the
      // descriptor is closed all the same, or each such request would leak one.
      if (forWriting && isRegMode(st.mode)) killSetId(fd, st.mode);
      return { fd, dir: isDirMode(st.mode) };
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  #lcreate(req: Extract<Request, { op: 'lcreate' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    if (fid.open) fail('EINVAL', `fid ${req.fid} is already open`);
    const child = this.#child(req.fid, req.name);
    const exclusive = (req.flags & LINUX_O.EXCL) !== 0;
    if (!exclusive) {
      // An existing name is opened, not created: never open a FIFO or device node (opening one has
      // effects of its own), as Tlopen never does.
      const existing = lstatOrUndefined(child.host);
      if (existing?.isDirectory()) fail('EISDIR', 'Tlcreate of an existing directory');
      if (existing?.isSymbolicLink()) fail('ELOOP', 'Tlcreate of an existing symbolic link (never followed)');
      if (existing && !existing.isFile()) fail('EOPNOTSUPP', 'only regular files can be opened');
    }
    const flags = hostOpenFlags(req.flags) | fs.constants.O_CREAT | (exclusive ? fs.constants.O_EXCL : 0);
    const fd = fs.openSync(child.host, flags, req.mode & 0o777); // no set-id bits; sticky means nothing on a file
    fid.open = this.#adopt(fd, true);
    fid.path = child.path; // the fid now names the new file, opened
    return new Writer(MSG.Rlcreate, tag).qid(this.#qid(fs.fstatSync(fd, { bigint: true }))).u32(0).finish();
  }

  #openFile(id: number): OpenFile {
    const open = this.#fid(id).open;
    if (!open) return fail('EBADF', `fid ${id} is not open`);
    return open;
  }

  #read(req: Extract<Request, { op: 'read' }>, tag: number, limit: number): Uint8Array {
    const open = this.#openFile(req.fid);
    if (open.dir) fail('EISDIR', 'Tread on a directory (use Treaddir)');
    const count = Math.max(0, Math.min(req.count, limit - IO_HEADER_SIZE));
    const w = new Writer(MSG.Rread, tag, IO_HEADER_SIZE + count).u32(0);
    const got = count === 0 ? 0 : fs.readSync(open.fd, w.reserve(count), 0, count, readPosition(req.offset));
    return w.truncate(IO_HEADER_SIZE + got).setU32(HEADER_SIZE, got).finish();
  }

  #write(req: Extract<Request, { op: 'write' }>, tag: number): Uint8Array {
    const open = this.#openFile(req.fid);
    if (open.dir) fail('EISDIR', 'Twrite on a directory');
    const n = req.data.byteLength === 0 ? 0 : fs.writeSync(open.fd, req.data, 0, req.data.byteLength, writePosition(req.offset));
    return new Writer(MSG.Rwrite, tag).u32(n).finish();
  }

  #fsync(req: Extract<Request, { op: 'fsync' }>, tag: number): Uint8Array {
    const open = this.#openFile(req.fid);
    if (req.datasync) fs.fdatasyncSync(open.fd);
    else fs.fsyncSync(open.fd);
    return encodeEmpty(MSG.Rfsync, tag);
  }

  // ---- directories ----

  #readdir(req: Extract<Request, { op: 'readdir' }>, tag: number, limit: number): Uint8Array {
    const fid = this.#fid(req.fid);
    const open = fid.open;
    if (!open) return fail('EBADF', `fid ${req.fid} is not open`);
    if (!open.dir) fail('ENOTDIR', 'Treaddir on a file');
    // Node cannot list a directory by descriptor: list by path, once sure the path still names the
    // directory that was opened (not, say, a link put in its place after it was removed).
    const host = this.#resolve(fid.path);
    const now = fs.lstatSync(host, { bigint: true });
    const opened = fs.fstatSync(open.fd, { bigint: true });
    if (!now.isDirectory() || now.ino !== opened.ino || now.dev !== opened.dev) fail('ESTALE', 'the open directory is no longer at its path');
    // The listing is taken at offset 0 (rewinddir) and kept, so offsets stay valid while reading on;
    // it is let go once read to its end (the guest then clunks, or rewinds).
    if (req.offset === 0n || !open.listing) this.#setListing(open, this.#list(host, this.maxListedEntries - this.#listed + (open.listing?.length ?? 0)));
    const reply = this.#direntReply(tag, fid.path, host, open.listing!, req.offset, Math.max(0, Math.min(req.count, limit - IO_HEADER_SIZE)));
    if (reply.byteLength === IO_HEADER_SIZE) this.#setListing(open, undefined);
    return reply;
  }

  /** Replaces a directory's listing, within the session's budget of listed entries. */
  #setListing(open: OpenFile, listing: Listing | undefined): void {
    const held = open.listing?.length ?? 0;
    const wanted = listing?.length ?? 0;
    if (this.#listed - held + wanted > this.maxListedEntries) {
      fail('ENOMEM', `listing ${wanted} entries would hold more than ${this.maxListedEntries} at once (close some directories)`);
    }
    this.#listed += wanted - held;
    open.listing = listing;
  }

  /** Rreaddir: entries from index `offset` that fit in `room` bytes; each carries the next entry's index. */
  #direntReply(tag: number, path: readonly Buffer[], host: Buffer, listing: Listing, offset: bigint, room: number): Uint8Array {
    const w = new Writer(MSG.Rreaddir, tag, IO_HEADER_SIZE + Math.min(room, 8192)).u32(0);
    let used = 0;
    for (let i = offset < BigInt(listing.length) ? Number(offset) : listing.length; i < listing.length; i++) {
      const name = listing.name(i);
      if (used + DIRENT_FIXED + name.byteLength > room) {
        // An empty reply means "end of directory": a buffer too small for one entry must not say that.
        if (used === 0) fail('EINVAL', `readdir count ${room} too small for the next entry`);
        break;
      }
      const st = this.#entryStat(path, host, name);
      if (!st) continue; // gone since the listing was taken
      w.qid(this.#qid(st)).u64(BigInt(i + 1)).u8((Number(st.mode) & S_IFMT) >> 12).str(name); // type: DT_* is S_IFMT >> 12
      used += DIRENT_FIXED + name.byteLength;
    }
    return w.setU32(HEADER_SIZE, used).finish();
  }

  /** The listing of `host`, read only as far as `room` entries (the session's budget left). */
  #list(host: Buffer, room: number): Listing {
    return Listing.read(host, room) ?? fail('ENOMEM', `the directory has more entries than the ${room} that can be listed now, of ${this.maxListedEntries} at once (close some directories)`);
  }

  /** lstat of one directory entry; '..' of the root is the root (the guest cannot see above it). */
  #entryStat(path: readonly Buffer[], host: Buffer, name: Buffer): Stats | undefined {
    try {
      if (name === DOT) return fs.lstatSync(host, { bigint: true });
      if (name === DOTDOT) return fs.lstatSync(this.#host(path.slice(0, -1)), { bigint: true });
      return fs.lstatSync(Buffer.concat([host, SLASH, name]), { bigint: true });
    } catch (e) {
      if (errnoOf(e) === ERRNO.ENOENT) return undefined;
      throw e;
    }
  }

  #mkdir(req: Extract<Request, { op: 'mkdir' }>, tag: number): Uint8Array {
    const child = this.#child(req.dfid, req.name);
    fs.mkdirSync(child.host, { mode: req.mode & MODE_ALLOWED });
    return new Writer(MSG.Rmkdir, tag).qid(this.#qid(fs.lstatSync(child.host, { bigint: true }))).finish();
  }

  #unlinkat(req: Extract<Request, { op: 'unlinkat' }>, tag: number): Uint8Array {
    if (req.flags & ~AT_REMOVEDIR) fail('EINVAL', `unlinkat flags ${req.flags}`);
    const child = this.#child(req.dfid, req.name);
    if (req.flags & AT_REMOVEDIR) fs.rmdirSync(child.host);
    else fs.unlinkSync(child.host);
    return encodeEmpty(MSG.Runlinkat, tag);
  }

  #remove(req: Extract<Request, { op: 'remove' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    // Tremove clunks the fid whatever the outcome.
    this.#close(fid);
    this.#fids.delete(req.fid);
    if (this.readOnly) fail('EROFS', 'remove on a read-only share');
    if (fid.path.length === 0) fail('EBUSY', 'the root cannot be removed');
    const host = this.#resolve(fid.path);
    if (fs.lstatSync(host, { bigint: true }).isDirectory()) fs.rmdirSync(host);
    else fs.unlinkSync(host);
    return encodeEmpty(MSG.Rremove, tag);
  }

  #renameat(req: Extract<Request, { op: 'renameat' }>, tag: number): Uint8Array {
    const from = this.#child(req.olddfid, req.oldname);
    const to = this.#child(req.newdfid, req.newname);
    fs.renameSync(from.host, to.host);
    this.#renamed(from.path, to.path);
    return encodeEmpty(MSG.Rrenameat, tag);
  }

  #rename(req: Extract<Request, { op: 'rename' }>, tag: number): Uint8Array {
    const fid = this.#fid(req.fid);
    if (fid.path.length === 0) fail('EBUSY', 'the root cannot be renamed');
    const from = fid.path;
    const fromHost = this.#resolve(from);
    const to = this.#child(req.dfid, req.name);
    fs.renameSync(fromHost, to.host);
    this.#renamed(from, to.path);
    return encodeEmpty(MSG.Rrename, tag);
  }

  // ---- links ----

  #symlink(req: Extract<Request, { op: 'symlink' }>, tag: number): Uint8Array {
    const child = this.#child(req.dfid, req.name);
    if (req.target.byteLength === 0) fail('ENOENT', 'empty link target');
    if (req.target.byteLength >= PATH_MAX) fail('ENAMETOOLONG', 'link target');
    if (req.target.includes(0)) fail('EINVAL', 'NUL in link target');
    // The target is stored as text and never followed by this server: it may point anywhere.
    fs.symlinkSync(Buffer.from(req.target), child.host);
    return new Writer(MSG.Rsymlink, tag).qid(this.#qid(fs.lstatSync(child.host, { bigint: true }))).finish();
  }

  #readlink(req: Extract<Request, { op: 'readlink' }>, tag: number): Uint8Array {
    const host = this.#resolve(this.#fid(req.fid).path);
    if (!isLinkMode(fs.lstatSync(host, { bigint: true }).mode)) fail('EINVAL', 'not a symbolic link');
    return new Writer(MSG.Rreadlink, tag).str(fs.readlinkSync(host, { encoding: 'buffer' })).finish();
  }

  #link(req: Extract<Request, { op: 'link' }>, tag: number): Uint8Array {
    const target = this.#resolve(this.#fid(req.fid).path);
    const child = this.#child(req.dfid, req.name);
    fs.linkSync(target, child.host); // link() does not follow a link at the source: it links the link
    return encodeEmpty(MSG.Rlink, tag);
  }

  // ---- locks ----
  // One guest is the only client of this share, and its kernel already arbitrates between its own
  // processes; host-side locks would add nothing, so every lock is granted and none is reported.

  #lock(req: Extract<Request, { op: 'lock' }>, tag: number): Uint8Array {
    this.#fid(req.fid);
    return new Writer(MSG.Rlock, tag).u8(LOCK_SUCCESS).finish();
  }

  #getlock(req: Extract<Request, { op: 'getlock' }>, tag: number): Uint8Array {
    this.#fid(req.fid);
    return new Writer(MSG.Rgetlock, tag).u8(LOCK_TYPE_UNLCK).u64(req.start).u64(req.length).u32(req.procId).str(req.clientId).finish();
  }
}

function lstatOrUndefined(host: Buffer): fs.Stats | undefined {
  try {
    return fs.lstatSync(host);
  } catch (e) {
    if (errnoOf(e) === ERRNO.ENOENT) return undefined;
    throw e;
  }
}
