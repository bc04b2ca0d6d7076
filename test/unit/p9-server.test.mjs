import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { P9Server, P9_MAX_MSIZE } from '../../dist/devices/virtio/p9/server.js';
import { Reader, Writer, ProtocolError, MSG } from '../../dist/devices/virtio/p9/protocol.js';
import { Listing } from '../../dist/devices/virtio/p9/listing.js';
import { P9Client, Msg, E, O, QT, NOTAG, T, ecodeOf, header } from '../helpers/p9-client.mjs';

const AT_REMOVEDIR = 0x200;
const ROOT = 1;

let tmp;
const made = [];
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'p9-test-'));
  made.push(tmp);
  const share = path.join(tmp, 'share');
  const outside = path.join(tmp, 'outside');
  fs.mkdirSync(share);
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'top secret');
  fs.writeFileSync(path.join(share, 'hello.txt'), 'hello world');
  fs.mkdirSync(path.join(share, 'sub'));
  fs.writeFileSync(path.join(share, 'sub', 'inner.txt'), 'inner');
  fs.symlinkSync('/etc', path.join(share, 'etc-link'));
  fs.symlinkSync(path.join(outside, 'secret'), path.join(share, 'abs-secret'));
  fs.symlinkSync('../outside', path.join(share, 'rel-outside'));
  fs.symlinkSync('hello.txt', path.join(share, 'hello-link'));
});
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

const sharePath = (...p) => path.join(tmp, 'share', ...p);
const outsidePath = (...p) => path.join(tmp, 'outside', ...p);

/** A server on the temp share, negotiated and attached as fid ROOT. */
function session(opts = {}) {
  const server = new P9Server({ root: sharePath(), ...opts });
  const c = new P9Client((b) => server.handle(b));
  assert.equal(c.version(65536).version, '9P2000.L');
  ok(c.attach(ROOT));
  return { server, c };
}

function ok(r) {
  assert.equal(r.ecode, undefined, `expected success, got errno ${r.ecode}`);
  return r;
}
function errno(r, e) {
  assert.equal(r.ecode, e, `expected errno ${e}, got ${r.ecode === undefined ? 'success' : r.ecode}`);
}
const text = (b) => new TextDecoder().decode(b);

/** Walks from the root to `names` into `fid` and opens it. */
function open(c, fid, names, flags = O.RDONLY) {
  ok(c.walk(ROOT, fid, names));
  return c.lopen(fid, flags);
}

/** Snapshot of everything under a directory: names, types, contents and modes. */
function snapshot(dir) {
  const out = {};
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    const st = fs.lstatSync(p);
    out[name] = st.isDirectory() ? { dir: snapshot(p), mode: st.mode } : st.isSymbolicLink() ? { link: fs.readlinkSync(p) } : { data: fs.readFileSync(p, 'latin1'), mode: st.mode, mtime: st.mtimeMs };
  }
  return out;
}

describe('9P2000.L codec', () => {
  it('the reader bounds-checks every field and throws ProtocolError, not RangeError', () => {
    const r = new Reader(new Uint8Array([3, 0, 0x61, 0x62]));
    assert.throws(() => r.str(), ProtocolError);
    const r2 = new Reader(new Uint8Array([1, 2, 3]));
    assert.throws(() => r2.u32(), ProtocolError);
    assert.equal(r2.u16(), 0x201);
    assert.throws(() => r2.u16(), ProtocolError);
    assert.equal(r2.u8(), 3);
  });

  it('the writer grows as needed and patches counts in place', () => {
    const w = new Writer(MSG.Rread, 0x1234, 8);
    w.u32(0);
    for (let i = 0; i < 100; i++) w.u64(BigInt(i)).u8(i).u16(i).str('ab');
    w.setU32(7, 99);
    const out = w.finish();
    assert.equal(out.length, 7 + 4 + 100 * (8 + 1 + 2 + 4));
    const h = header(out);
    assert.deepEqual(h, { size: out.length, type: MSG.Rread, tag: 0x1234 });
    const r = new Reader(out, 7);
    assert.equal(r.u32(), 99);
    for (let i = 0; i < 100; i++) {
      assert.equal(r.u64(), BigInt(i));
      assert.equal(r.u8(), i);
      assert.equal(r.u16(), i);
      assert.equal(new TextDecoder().decode(r.str()), 'ab');
    }
    assert.equal(r.remaining, 0);
  });

  it('type numbers are the protocol\'s', () => {
    assert.equal(MSG.Tversion, 100);
    assert.equal(MSG.Tlopen, 12);
    assert.equal(MSG.Treaddir, 40);
    assert.equal(MSG.Rlerror, 7);
    assert.equal(MSG.Tunlinkat, 76);
  });
});

describe('9P server: session', () => {
  it('negotiates msize (capped) and refuses other versions and tiny msizes', () => {
    const server = new P9Server({ root: sharePath() });
    const c = new P9Client((b) => server.handle(b));
    errno(c.attach(ROOT), E.EPROTO); // nothing before Tversion
    assert.deepEqual(c.version(16 << 20), { msize: P9_MAX_MSIZE, version: '9P2000.L' });
    assert.equal(server.msize, P9_MAX_MSIZE);
    assert.equal(c.version(8192, '9P2000.u').version, 'unknown');
    errno(c.attach(ROOT), E.EPROTO);
    errno(c.version(100), E.EINVAL);
    assert.equal(c.version(8192).msize, 8192);
    ok(c.attach(ROOT));
  });

  it('Tversion starts over: earlier fids are gone', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, ['hello.txt']));
    c.version(65536);
    errno(c.getattr(2), E.EBADF);
    errno(c.getattr(ROOT), E.EBADF);
  });

  it('attach gives the root directory qid; a fid in use cannot be attached again', () => {
    const { c } = session();
    errno(c.attach(ROOT), E.EINVAL);
    const r = ok(c.attach(9));
    assert.equal(r.qid.type, QT.DIR);
    assert.equal(r.qid.path, fs.statSync(sharePath(), { bigint: true }).ino);
  });

  it('flush answers at once; xattrs, auth and mknod are not supported', () => {
    const { c } = session();
    ok(c.flush(5));
    errno(c.xattrwalk(ROOT, 2, 'user.x'), E.EOPNOTSUPP);
    errno(c.xattrcreate(ROOT, 'user.x'), E.EOPNOTSUPP);
    errno(c.mknod(ROOT, 'fifo'), E.EOPNOTSUPP);
    errno(c.call(T.auth, (m) => m.u32(7).str('u').str('').u32(0)), E.EOPNOTSUPP);
  });
});

describe('9P server: files', () => {
  it('walk, getattr, lopen and read a file', () => {
    const { c } = session();
    const w = ok(c.walk(ROOT, 2, ['sub', 'inner.txt']));
    assert.equal(w.qids.length, 2);
    assert.equal(w.qids[0].type, QT.DIR);
    assert.equal(w.qids[1].type, QT.FILE);
    const st = fs.statSync(sharePath('sub', 'inner.txt'), { bigint: true });
    assert.equal(w.qids[1].path, st.ino);
    const a = ok(c.getattr(2));
    assert.equal(a.size, 5n);
    assert.equal(a.mode, Number(st.mode));
    assert.equal(a.nlink, 1n);
    assert.equal(a.mtime[0], st.mtimeNs / 1_000_000_000n);
    assert.equal(a.mtime[1], st.mtimeNs % 1_000_000_000n);
    assert.equal(a.valid & 0x7ffn, 0x7ffn);
    const o = ok(c.lopen(2, O.RDONLY));
    assert.equal(o.qid.type, QT.FILE);
    assert.equal(text(ok(c.read(2, 0, 100)).data), 'inner');
    assert.equal(text(ok(c.read(2, 2, 2)).data), 'ne');
    assert.equal(ok(c.read(2, 1000, 10)).data.length, 0);
    errno(c.lopen(2, O.RDONLY), E.EINVAL); // already open
  });

  it('a walk that fails part way returns the qids so far and creates no fid', () => {
    const { c } = session();
    const w = ok(c.walk(ROOT, 2, ['sub', 'nope', 'x']));
    assert.equal(w.qids.length, 1);
    errno(c.getattr(2), E.EBADF);
    errno(c.walk(ROOT, 2, ['nope']), E.ENOENT);
    assert.equal(ok(c.walk(ROOT, 2, ['hello.txt', 'x'])).qids.length, 1, 'a file is not walked through');
    ok(c.walk(ROOT, 3, ['hello.txt']));
    errno(c.walk(3, 4, ['x']), E.ENOTDIR);
  });

  it('walk with no names clones a fid; walk in place moves it', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, []));
    ok(c.walk(2, 2, ['sub']));
    assert.equal(ok(c.getattr(2)).qid.type, QT.DIR);
    errno(c.walk(ROOT, 2, ['hello.txt']), E.EINVAL); // newfid in use
    errno(c.walk(ROOT, 3, Array(17).fill('sub')), E.E2BIG);
  });

  it('reads are capped at msize and at the room the caller has for the reply', () => {
    const { server, c } = session();
    fs.writeFileSync(sharePath('big'), Buffer.alloc(200000, 7));
    ok(open(c, 2, ['big']));
    assert.equal(ok(c.read(2, 0, 1 << 20)).data.length, 65536 - 11);
    const raw = new Msg(T.read, 3).u32(2).u64(0).u32(100000).done();
    const reply = server.handle(raw, 1000);
    assert.equal(reply.length, 1000);
    assert.equal(header(reply).type, T.read + 1);
  });

  it('write through an fid opened read-write; a read-only fid cannot write', () => {
    const { c } = session();
    ok(open(c, 2, ['hello.txt'], O.RDWR));
    assert.equal(ok(c.write(2, 6, 'there')).count, 5);
    assert.equal(fs.readFileSync(sharePath('hello.txt'), 'utf8'), 'hello there');
    ok(c.write(2, 20, 'x'));
    assert.equal(fs.statSync(sharePath('hello.txt')).size, 21);
    ok(c.fsync(2));
    ok(c.fsync(2, 1));
    ok(open(c, 3, ['sub', 'inner.txt']));
    errno(c.write(3, 0, 'nope'), E.EBADF);
    assert.equal(fs.readFileSync(sharePath('sub', 'inner.txt'), 'utf8'), 'inner');
    errno(c.read(ROOT, 0, 10), E.EBADF); // not open
  });

  it('lopen with O_TRUNC and O_APPEND', () => {
    const { c } = session();
    ok(open(c, 2, ['hello.txt'], O.WRONLY | O.APPEND));
    ok(c.write(2, 0, '!'));
    assert.equal(fs.readFileSync(sharePath('hello.txt'), 'utf8'), 'hello world!');
    ok(open(c, 3, ['hello.txt'], O.WRONLY | O.TRUNC));
    assert.equal(fs.statSync(sharePath('hello.txt')).size, 0);
  });

  it('lcreate makes a new file and leaves the fid open on it', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, ['sub']));
    const r = ok(c.lcreate(2, 'new.txt', O.RDWR | O.CREAT, 0o640));
    assert.equal(r.qid.type, QT.FILE);
    ok(c.write(2, 0, 'fresh'));
    assert.equal(text(ok(c.read(2, 0, 10)).data), 'fresh');
    assert.equal(fs.readFileSync(sharePath('sub', 'new.txt'), 'utf8'), 'fresh');
    assert.equal(ok(c.getattr(2)).size, 5n);
    ok(c.walk(ROOT, 3, ['sub']));
    errno(c.lcreate(3, 'new.txt', O.RDWR | O.CREAT | O.EXCL), E.EEXIST);
    ok(c.walk(ROOT, 4, ['hello.txt']));
    errno(c.lcreate(4, 'x', O.RDWR | O.CREAT), E.ENOTDIR);
  });

  it('setattr: size, mode (set-id bits dropped), times', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, ['hello.txt']));
    ok(c.setattr(2, { valid: 0x8, size: 5n }));
    assert.equal(fs.readFileSync(sharePath('hello.txt'), 'utf8'), 'hello');
    ok(c.setattr(2, { valid: 0x1, mode: 0o6751 }));
    assert.equal(fs.statSync(sharePath('hello.txt')).mode & 0o7777, 0o751);
    ok(c.setattr(2, { valid: 0x20 | 0x100, mtime: [1_000_000_000n, 500_000_000n] }));
    assert.equal(Math.round(fs.statSync(sharePath('hello.txt')).mtimeMs), 1_000_000_000_500);
    errno(c.setattr(2, { valid: 0x20 | 0x100, mtime: [1n, 2_000_000_000n] }), E.EINVAL);
    ok(c.walk(ROOT, 3, ['sub']));
    errno(c.setattr(3, { valid: 0x8, size: 0n }), E.EISDIR);
  });

  it('statfs', () => {
    const { c } = session();
    const s = ok(c.statfs(ROOT));
    assert.ok(s.bsize > 0);
    assert.equal(s.namelen, 255);
  });

  it('clunk forgets the fid', () => {
    const { c, server } = session();
    ok(open(c, 2, ['hello.txt']));
    assert.equal(server.fidCount, 2);
    ok(c.clunk(2));
    assert.equal(server.fidCount, 1);
    errno(c.read(2, 0, 1), E.EBADF);
    errno(c.clunk(2), E.EBADF);
  });
});

describe('9P server: directories', () => {
  it('readdir lists ., .. and the entries in order, with offsets to resume from', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, []));
    ok(c.lopen(2, O.RDONLY | O.DIRECTORY));
    const { entries } = ok(c.readdirAll(2));
    const names = entries.map((e) => e.name);
    assert.deepEqual(names, ['.', '..', 'abs-secret', 'etc-link', 'hello-link', 'hello.txt', 'rel-outside', 'sub']);
    assert.deepEqual(entries.map((e) => e.offset), names.map((_, i) => BigInt(i + 1)));
    const byName = Object.fromEntries(entries.map((e) => [e.name, e]));
    assert.equal(byName.sub.type, 4); // DT_DIR
    assert.equal(byName['hello.txt'].type, 8); // DT_REG
    assert.equal(byName['etc-link'].type, 10); // DT_LNK
    assert.equal(byName['etc-link'].qid.type, QT.SYMLINK);
    assert.equal(byName['..'].qid.path, byName['.'].qid.path, "the root's parent is the root");
    // Small reads resume where the last one stopped.
    const small = ok(c.readdirAll(2, 60));
    assert.deepEqual(small.entries.map((e) => e.name), names);
    errno(c.readdir(2, 0, 10), E.EINVAL); // no room for one entry
    errno(c.readdir(ROOT, 0, 1000), E.EBADF); // not open
  });

  it('readdir of a subdirectory: .. is its parent', () => {
    const { c } = session();
    ok(open(c, 2, ['sub']));
    const { entries } = ok(c.readdirAll(2));
    assert.deepEqual(entries.map((e) => e.name), ['.', '..', 'inner.txt']);
    assert.equal(entries[1].qid.path, fs.statSync(sharePath(), { bigint: true }).ino);
  });

  it('mkdir, unlinkat (files and directories), renameat', () => {
    const { c } = session();
    const m = ok(c.mkdir(ROOT, 'd', 0o750));
    assert.equal(m.qid.type, QT.DIR);
    assert.ok(fs.statSync(sharePath('d')).isDirectory());
    errno(c.mkdir(ROOT, 'd'), E.EEXIST);
    ok(c.walk(ROOT, 2, ['d']));
    ok(c.lcreate(2, 'f', O.WRONLY | O.CREAT));
    ok(c.clunk(2));
    ok(c.walk(ROOT, 3, ['d']));
    errno(c.unlinkat(ROOT, 'd', AT_REMOVEDIR), E.ENOTEMPTY);
    errno(c.unlinkat(3, 'f', AT_REMOVEDIR), E.ENOTDIR);
    errno(c.unlinkat(ROOT, 'd', 0x1), E.EINVAL);
    ok(c.unlinkat(3, 'f'));
    assert.ok(!fs.existsSync(sharePath('d', 'f')));
    ok(c.unlinkat(ROOT, 'd', AT_REMOVEDIR));
    assert.ok(!fs.existsSync(sharePath('d')));
    errno(c.unlinkat(ROOT, 'missing'), E.ENOENT);
    ok(c.walk(ROOT, 4, ['sub']));
    ok(c.renameat(ROOT, 'hello.txt', 4, 'moved.txt'));
    assert.ok(!fs.existsSync(sharePath('hello.txt')));
    assert.equal(fs.readFileSync(sharePath('sub', 'moved.txt'), 'utf8'), 'hello world');
  });

  it('fids follow a rename of the file or of a directory above it', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, ['sub', 'inner.txt']));
    ok(c.renameat(ROOT, 'sub', ROOT, 'sub2'));
    assert.equal(ok(c.getattr(2)).size, 5n);
    ok(c.lopen(2, O.RDONLY));
    assert.equal(text(ok(c.read(2, 0, 10)).data), 'inner');
    ok(c.walk(ROOT, 3, ['hello.txt']));
    ok(c.walk(ROOT, 4, ['sub2']));
    ok(c.rename(3, 4, 'h.txt'));
    assert.equal(fs.readFileSync(sharePath('sub2', 'h.txt'), 'utf8'), 'hello world');
    assert.equal(ok(c.getattr(3)).size, 11n);
    errno(c.rename(ROOT, 4, 'x'), E.EBUSY);
  });

  it('remove deletes and clunks; the fid is clunked even when it fails', () => {
    const { c, server } = session();
    ok(c.walk(ROOT, 2, ['hello.txt']));
    ok(c.remove(2));
    assert.ok(!fs.existsSync(sharePath('hello.txt')));
    errno(c.getattr(2), E.EBADF);
    ok(c.walk(ROOT, 3, ['sub']));
    errno(c.remove(3), E.ENOTEMPTY);
    errno(c.getattr(3), E.EBADF);
    ok(c.walk(ROOT, 4, []));
    errno(c.remove(4), E.EBUSY);
    assert.equal(server.fidCount, 1);
  });

  it('symlink stores the target as given; readlink returns it as is; link makes a hard link', () => {
    const { c } = session();
    const s = ok(c.symlink(ROOT, 'ln', '../../anywhere/at/all'));
    assert.equal(s.qid.type, QT.SYMLINK);
    assert.equal(fs.readlinkSync(sharePath('ln')), '../../anywhere/at/all');
    ok(c.walk(ROOT, 2, ['ln']));
    assert.equal(ok(c.readlink(2)).target, '../../anywhere/at/all');
    ok(c.walk(ROOT, 3, ['etc-link']));
    assert.equal(ok(c.readlink(3)).target, '/etc');
    errno(c.readlink(ROOT), E.EINVAL);
    errno(c.symlink(ROOT, 'empty', ''), E.ENOENT);
    ok(c.walk(ROOT, 4, ['hello.txt']));
    ok(c.link(ROOT, 4, 'hard'));
    assert.equal(fs.statSync(sharePath('hard')).ino, fs.statSync(sharePath('hello.txt')).ino);
  });
});

describe('9P server: confinement', () => {
  it("'..' at the root stays at the root", () => {
    const { c } = session();
    const rootIno = fs.statSync(sharePath(), { bigint: true }).ino;
    const w = ok(c.walk(ROOT, 2, ['..', '..', '..']));
    assert.deepEqual(w.qids.map((q) => q.path), [rootIno, rootIno, rootIno]);
    ok(c.lopen(2, O.RDONLY));
    const names = ok(c.readdirAll(2)).entries.map((e) => e.name);
    assert.ok(names.includes('hello.txt') && !names.includes('share') && !names.includes('outside'));
    const f = ok(c.walk(ROOT, 3, ['sub', '..', '..', 'hello.txt']));
    assert.equal(f.qids.at(-1).path, fs.statSync(sharePath('hello.txt'), { bigint: true }).ino);
    assert.equal(ok(c.walk(ROOT, 4, ['..', 'outside'])).qids.length, 1, "'..' then a name next to the share: not found");
    errno(c.getattr(4), E.EBADF);
  });

  it("names with '/', NUL, or empty are refused; '.' and '..' cannot be created or removed", () => {
    const { c } = session();
    errno(c.walk(ROOT, 2, ['sub/inner.txt']), E.EINVAL);
    errno(c.walk(ROOT, 2, ['../outside']), E.EINVAL);
    errno(c.walk(ROOT, 2, ['/etc']), E.EINVAL);
    errno(c.walk(ROOT, 2, ['']), E.ENOENT);
    errno(c.walk(ROOT, 2, ['hello.txt\0']), E.EINVAL);
    errno(c.walk(ROOT, 2, ['x'.repeat(256)]), E.ENAMETOOLONG);
    errno(c.mkdir(ROOT, '../evil'), E.EINVAL);
    errno(c.mkdir(ROOT, ''), E.EINVAL);
    errno(c.mkdir(ROOT, '..'), E.EINVAL);
    errno(c.lcreate(ROOT, '../../x', O.RDWR | O.CREAT), E.EINVAL);
    errno(c.symlink(ROOT, 'a/b', 'x'), E.EINVAL);
    errno(c.unlinkat(ROOT, '..', AT_REMOVEDIR), E.EINVAL);
    errno(c.unlinkat(ROOT, '../outside/secret'), E.EINVAL);
    errno(c.renameat(ROOT, 'hello.txt', ROOT, '../stolen'), E.EINVAL);
    errno(c.renameat(ROOT, '../outside', ROOT, 'x'), E.EINVAL);
    assert.ok(fs.existsSync(outsidePath('secret')) && !fs.existsSync(path.join(tmp, 'stolen')) && !fs.existsSync(path.join(tmp, 'x')));
  });

  it('a symlink to /etc is a link, not a way out: walking through it fails, opening it is ELOOP', () => {
    const { c } = session();
    const w = ok(c.walk(ROOT, 2, ['etc-link']));
    assert.equal(w.qids[0].type, QT.SYMLINK);
    errno(c.lopen(2, O.RDONLY), E.ELOOP);
    errno(c.lopen(2, O.RDONLY | O.DIRECTORY), E.ELOOP);
    const through = c.walk(ROOT, 3, ['etc-link', 'passwd']);
    assert.equal(through.qids?.length, 1, 'stops at the link');
    errno(c.getattr(3), E.EBADF);
    errno(c.walk(2, 3, ['passwd']), E.ENOTDIR);
    errno(c.walk(2, 3, ['..']), E.ENOTDIR);
    const a = ok(c.getattr(2));
    assert.equal(a.mode & 0o170000, 0o120000, 'getattr describes the link itself');
    errno(c.readdir(2, 0, 1000), E.EBADF);
    errno(c.lcreate(2, 'x', O.RDWR | O.CREAT), E.ENOTDIR);
    errno(c.mkdir(2, 'x'), E.ENOTDIR);
    ok(c.statfs(2)); // about the share's filesystem, not /etc's
  });

  it('an absolute symlink to a file outside: no read, no write, no truncate, no chmod of the target', () => {
    const { c } = session();
    const before = fs.statSync(outsidePath('secret'));
    ok(c.walk(ROOT, 2, ['abs-secret']));
    errno(c.lopen(2, O.RDONLY), E.ELOOP);
    errno(c.lopen(2, O.RDWR | O.TRUNC), E.ELOOP);
    errno(c.setattr(2, { valid: 0x8, size: 0n }), E.EINVAL);
    errno(c.setattr(2, { valid: 0x1, mode: 0o777 }), E.EOPNOTSUPP);
    errno(c.lcreate(ROOT, 'abs-secret', O.RDWR | O.CREAT), E.ELOOP);
    errno(c.lcreate(ROOT, 'abs-secret', O.RDWR | O.CREAT | O.TRUNC), E.ELOOP);
    errno(c.mkdir(ROOT, 'abs-secret'), E.EEXIST);
    const after = fs.statSync(outsidePath('secret'));
    assert.equal(fs.readFileSync(outsidePath('secret'), 'utf8'), 'top secret');
    assert.equal(after.mode, before.mode);
    ok(c.walk(ROOT, 3, ['rel-outside']));
    errno(c.walk(3, 4, ['secret']), E.ENOTDIR);
    errno(c.lopen(3, O.RDONLY), E.ELOOP);
    // Removing or renaming the link touches only the link.
    ok(c.unlinkat(ROOT, 'abs-secret'));
    assert.equal(fs.readFileSync(outsidePath('secret'), 'utf8'), 'top secret');
  });

  it('a symlink created by the guest is not followed either', () => {
    const { c } = session();
    ok(c.symlink(ROOT, 'mine', outsidePath('secret')));
    ok(c.walk(ROOT, 2, ['mine']));
    errno(c.lopen(2, O.RDONLY), E.ELOOP);
    ok(c.symlink(ROOT, 'mydir', outsidePath()));
    assert.equal(ok(c.walk(ROOT, 3, ['mydir', 'secret'])).qids.length, 1, 'stops at the link');
    ok(c.walk(ROOT, 4, ['mydir']));
    errno(c.lcreate(4, 'planted', O.RDWR | O.CREAT), E.ENOTDIR);
    errno(c.mkdir(4, 'planted'), E.ENOTDIR);
    assert.deepEqual(fs.readdirSync(outsidePath()), ['secret']);
  });

  it('a directory swapped for a link after the walk: the old fid does not lead through it', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, ['sub', 'inner.txt']));
    ok(c.walk(ROOT, 3, ['sub']));
    fs.writeFileSync(outsidePath('inner.txt'), 'outside data');
    // The host (not the guest) moves things: the server's fids still say sub/...
    fs.renameSync(sharePath('sub'), sharePath('sub-old'));
    fs.symlinkSync(outsidePath(), sharePath('sub'));
    errno(c.lopen(2, O.RDONLY), E.ENOTDIR);
    errno(c.getattr(2), E.ENOTDIR);
    errno(c.lcreate(3, 'planted', O.RDWR | O.CREAT), E.ENOTDIR);
    errno(c.walk(3, 4, ['inner.txt']), E.ENOTDIR);
    assert.deepEqual(fs.readdirSync(outsidePath()).sort(), ['inner.txt', 'secret']);
  });

  it('an open directory replaced by a link cannot be listed through the link', () => {
    const { c } = session();
    fs.mkdirSync(sharePath('empty'));
    ok(open(c, 2, ['empty']));
    ok(c.unlinkat(ROOT, 'empty', AT_REMOVEDIR));
    ok(c.symlink(ROOT, 'empty', outsidePath()));
    errno(c.readdir(2, 0, 4096), E.ESTALE);
  });
});

describe('9P server: a share inside another, writable share', () => {
  // `run --share ~:home` from a project folder shares the current directory too: the guest can then
  // move the inner share's root, or an ancestor of it, through the outer share.
  function nested() {
    fs.mkdirSync(sharePath('a', 'inner'), { recursive: true });
    fs.writeFileSync(sharePath('a', 'inner', 'f'), 'inner file');
    const outer = session().c;
    const innerServer = new P9Server({ root: sharePath('a', 'inner') });
    const inner = new P9Client((b) => innerServer.handle(b));
    inner.version(65536);
    ok(inner.attach(ROOT));
    ok(inner.walk(ROOT, 2, [])); // a fid at the inner root, walked before the swap
    ok(outer.walk(ROOT, 2, ['a']));
    return { outer, inner };
  }
  const outsideUntouched = () => assert.deepEqual(fs.readdirSync(outsidePath()), ['secret']);

  it('its root moved away and replaced by a link to outside: nothing is reached through the link', () => {
    const { outer, inner } = nested();
    ok(outer.renameat(2, 'inner', 2, 'moved'));
    ok(outer.symlink(2, 'inner', outsidePath()));
    errno(inner.walk(ROOT, 3, ['secret']), E.ESTALE);
    errno(inner.lcreate(2, 'planted', O.RDWR), E.ESTALE);
    errno(inner.mkdir(2, 'planted'), E.ESTALE);
    errno(inner.getattr(2), E.ESTALE);
    outsideUntouched();
    // Put back where it was, the directory is served again.
    fs.unlinkSync(sharePath('a', 'inner'));
    fs.renameSync(sharePath('a', 'moved'), sharePath('a', 'inner'));
    ok(inner.walk(ROOT, 3, ['f']));
    assert.equal(text(ok(inner.lopen(3, O.RDONLY)) && ok(inner.read(3, 0n, 100)).data), 'inner file');
  });

  it('an ancestor of its root replaced by a link to a look-alike outside: refused too', () => {
    const { outer, inner } = nested();
    fs.mkdirSync(outsidePath('inner'));
    ok(outer.walk(ROOT, 3, []));
    ok(outer.renameat(3, 'a', 3, 'a-moved'));
    ok(outer.symlink(3, 'a', outsidePath()));
    errno(inner.lcreate(2, 'planted', O.RDWR), E.ESTALE);
    assert.deepEqual(fs.readdirSync(outsidePath('inner')), []);
  });
});

describe('9P server: read-only share', () => {
  it('refuses every modifying operation with EROFS and leaves the host untouched', () => {
    const { c } = session({ readOnly: true });
    const before = snapshot(sharePath());
    ok(c.walk(ROOT, 2, ['hello.txt']));
    ok(c.walk(ROOT, 3, ['sub']));
    errno(c.lopen(2, O.WRONLY), E.EROFS);
    errno(c.lopen(2, O.RDWR), E.EROFS);
    errno(c.lopen(2, O.RDONLY | O.TRUNC), E.EROFS);
    errno(c.lcreate(3, 'new', O.RDWR | O.CREAT), E.EROFS);
    errno(c.mkdir(ROOT, 'd'), E.EROFS);
    errno(c.unlinkat(ROOT, 'hello.txt'), E.EROFS);
    errno(c.unlinkat(ROOT, 'sub', AT_REMOVEDIR), E.EROFS);
    errno(c.renameat(ROOT, 'hello.txt', ROOT, 'x'), E.EROFS);
    errno(c.rename(2, ROOT, 'x'), E.EROFS);
    errno(c.symlink(ROOT, 'l', 'x'), E.EROFS);
    errno(c.link(ROOT, 2, 'l'), E.EROFS);
    errno(c.mknod(ROOT, 'n'), E.EROFS);
    errno(c.setattr(2, { valid: 0x8, size: 0n }), E.EROFS);
    errno(c.setattr(2, { valid: 0x1, mode: 0o777 }), E.EROFS);
    errno(c.setattr(2, { valid: 0x20 | 0x100, mtime: [5n, 0n] }), E.EROFS);
    errno(c.xattrcreate(2, 'user.x'), E.EROFS);
    ok(c.lopen(2, O.RDONLY));
    errno(c.write(2, 0, 'overwrite'), E.EROFS);
    assert.equal(text(ok(c.read(2, 0, 100)).data), 'hello world');
    ok(c.fsync(2));
    ok(c.walk(ROOT, 4, ['sub', 'inner.txt']));
    errno(c.remove(4), E.EROFS);
    errno(c.getattr(4), E.EBADF); // clunked all the same
    ok(c.walk(ROOT, 5, []));
    ok(c.lopen(5, O.RDONLY));
    assert.ok(ok(c.readdirAll(5)).entries.length > 2);
    assert.deepEqual(snapshot(sharePath()), before);
  });
});

describe('9P server: malformed requests', () => {
  const raw = (server, bytes) => server.handle(Uint8Array.from(bytes));
  const u32 = (v) => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff];

  it('truncated, oversized or garbled messages get Rlerror(EPROTO) and the server keeps working', () => {
    const { server, c } = session();
    const cases = [
      [], // nothing
      [1, 2, 3], // shorter than a header
      [...u32(5), T.clunk, 9, 0], // size below the header
      [...u32(100), T.clunk, 9, 0, 1, 0, 0, 0], // size beyond what arrived
      [...u32(9), T.clunk, 9, 0, 1, 0], // fid cut short
      [...u32(13), T.walk, 9, 0, ...u32(ROOT), 2, 0], // walk cut in the newfid
      [...u32(20), T.walk, 9, 0, ...u32(ROOT), ...u32(2), 1, 0, 50, 0, 0x61], // name longer than the message
      [...u32(23), T.write, 9, 0, ...u32(ROOT), 0, 0, 0, 0, 0, 0, 0, 0, ...u32(1000)], // count beyond the data
    ];
    for (const bytes of cases) {
      const reply = raw(server, bytes);
      assert.equal(ecodeOf(reply), E.EPROTO, `case ${JSON.stringify(bytes)}`);
      assert.equal(header(reply).tag, bytes.length >= 7 ? 9 : NOTAG);
      assert.equal(header(reply).size, reply.length);
    }
    assert.equal(ecodeOf(raw(server, [...u32(7), 250, 9, 0])), E.EOPNOTSUPP); // unknown type
    ok(c.getattr(ROOT));
    assert.equal(server.fidCount, 1);
  });

  it('bytes after the size field are ignored', () => {
    const { server } = session();
    const m = new Msg(T.getattr, 4).u32(ROOT).u64(0x7ff).done();
    const padded = new Uint8Array(m.length + 10);
    padded.set(m);
    assert.equal(header(server.handle(padded)).type, T.getattr + 1);
  });

  it('random and cut-short messages never throw and always get a well-formed reply', () => {
    const { server, c } = session();
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / (1 << 24);
    const valid = [
      new Msg(T.walk, 1).u32(ROOT).u32(50).u16(2).str('sub').str('inner.txt').done(),
      new Msg(T.getattr, 1).u32(ROOT).u64(0x7ff).done(),
      new Msg(T.readdir, 1).u32(ROOT).u64(0).u32(4096).done(),
      new Msg(T.lcreate, 1).u32(ROOT).str('fuzz').u32(2).u32(0o644).u32(0).done(),
      new Msg(T.setattr, 1).u32(ROOT).u32(0x1).u32(0o755).u32(0).u32(0).u64(0).u64(0).u64(0).u64(0).u64(0).done(),
    ];
    for (let i = 0; i < 3000; i++) {
      let bytes;
      if (i % 3 === 0) {
        bytes = Uint8Array.from({ length: Math.floor(rand() * 40) }, () => Math.floor(rand() * 256));
      } else {
        const v = valid[Math.floor(rand() * valid.length)];
        bytes = v.slice(0, Math.floor(rand() * (v.length + 1)));
        if (i % 3 === 2 && bytes.length > 7) bytes[7 + Math.floor(rand() * (bytes.length - 7))] ^= 1 << Math.floor(rand() * 8);
        if (bytes.length >= 4) new DataView(bytes.buffer).setUint32(0, i % 5 === 0 ? v.length : bytes.length, true);
      }
      const reply = server.handle(bytes);
      const h = header(reply);
      assert.equal(h.size, reply.length);
      assert.ok(h.type % 2 === 1, 'a reply type');
      // The fuzzed setattr may hit the share's root: restore it so the next cases still work.
      fs.chmodSync(sharePath(), 0o755);
    }
    ok(c.getattr(ROOT));
    assert.ok(fs.existsSync(outsidePath('secret')));
  });
});

describe('9P server: fid table', () => {
  it('holds at most maxFids fids; clunking makes room again', () => {
    const { server, c } = session({ maxFids: 8 });
    for (let fid = 2; fid <= 8; fid++) ok(c.walk(ROOT, fid, ['hello.txt']));
    assert.equal(server.fidCount, 8);
    errno(c.walk(ROOT, 9, ['hello.txt']), E.EMFILE);
    errno(c.attach(9), E.EMFILE);
    ok(c.walk(ROOT, ROOT, [])); // in place: no new fid needed
    ok(c.clunk(8));
    ok(c.walk(ROOT, 9, ['hello.txt']));
  });

  it('the default limit is 4096 fids, and open fids release their host descriptors on reset', () => {
    const { server, c } = session();
    for (let fid = 2; fid <= 4096; fid++) ok(c.walk(ROOT, fid, []));
    errno(c.walk(ROOT, 5000, []), E.EMFILE);
    for (let fid = 2; fid <= 50; fid++) ok(c.lopen(fid, O.RDONLY));
    server.reset();
    assert.equal(server.fidCount, 0);
    assert.equal(server.msize, 0);
  });

  it('NOFID is never a valid new fid', () => {
    const { c } = session();
    errno(c.walk(ROOT, 0xffffffff, []), E.EINVAL);
  });
});

describe('9P server: hardening (audit findings)', () => {
  it('a file opened for writing or truncated loses its set-id bits (the VMM, as root, would keep them)', () => {
    const { c } = session();
    for (const [name, open] of [['by-open', (fid) => ok(c.lopen(fid, O.WRONLY | O.TRUNC))], ['by-setattr', (fid) => ok(c.setattr(fid, { valid: 0x8, size: 0n }))]]) {
      const file = sharePath(name);
      fs.writeFileSync(file, '#!/bin/sh\n');
      fs.chmodSync(file, 0o6755);
      ok(c.walk(ROOT, 2, [name]));
      open(2);
      assert.equal(fs.statSync(file).mode & 0o7777, 0o755, name);
      ok(c.clunk(2));
    }
    // Opening for reading changes nothing; setgid without group-execute (mandatory locking) stays.
    const kept = sharePath('kept');
    fs.writeFileSync(kept, 'x');
    fs.chmodSync(kept, 0o4755);
    ok(c.walk(ROOT, 3, ['kept']));
    ok(c.lopen(3, O.RDONLY));
    assert.equal(fs.statSync(kept).mode & 0o7777, 0o4755);
    const lock = sharePath('lock');
    fs.writeFileSync(lock, 'x');
    fs.chmodSync(lock, 0o2644);
    ok(c.walk(ROOT, 4, ['lock']));
    ok(c.lopen(4, O.WRONLY));
    assert.equal(fs.statSync(lock).mode & 0o7777, 0o2644);
  });

  it('a descriptor opened for a request that then fails (set-id bits that cannot be dropped) is closed', () => {
    // Tlcreate of an existing set-id file counts as opening it for writing; on a read-only mount
    // inside the share, dropping the bits fails (EROFS). Each such request once leaked a descriptor.
    // In a mount namespace of its own, so that the host's mounts are left alone; without root, in a
    // user namespace too (as root: not, since a chroot, as in CI's emulated VM, refuses a user
    // namespace to anyone).
    const server = new URL('../../dist/devices/virtio/p9/server.js', import.meta.url).href;
    const client = new URL('../helpers/p9-client.mjs', import.meta.url).href;
    fs.mkdirSync(sharePath('ro'));
    fs.writeFileSync(sharePath('ro', 'su'), '#!/bin/sh\n');
    fs.chmodSync(sharePath('ro', 'su'), 0o4755);
    const script = `
      import * as fs from 'node:fs';
      import { execFileSync } from 'node:child_process';
      import { P9Server } from ${JSON.stringify(server)};
      import { P9Client, O } from ${JSON.stringify(client)};
      const ro = ${JSON.stringify(sharePath('ro'))};
      execFileSync('mount', ['--bind', ro, ro]);
      execFileSync('mount', ['-o', 'remount,bind,ro', ro]);
      const s = new P9Server({ root: ${JSON.stringify(sharePath())} });
      const c = new P9Client((b) => s.handle(b));
      c.version(65536);
      c.attach(1);
      const fds = () => fs.readdirSync('/proc/self/fd').length;
      const before = fds();
      const errnos = new Set();
      for (let i = 0; i < 50; i++) {
        c.walk(1, 2, ['ro']);
        errnos.add(c.lcreate(2, 'su', O.RDONLY).ecode);
        c.clunk(2);
      }
      console.log(JSON.stringify({ errnos: [...errnos], leaked: fds() - before }));`;
    const namespaces = process.getuid() === 0 ? ['--mount'] : ['--user', '--map-root-user', '--mount'];
    const out = JSON.parse(execFileSync('unshare', [...namespaces, process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' }));
    assert.deepEqual(out, { errnos: [E.EROFS], leaked: 0 });
    assert.equal(fs.statSync(sharePath('ro', 'su')).mode & 0o7777, 0o4755);
  });

  it('Tlcreate of an existing FIFO or directory is refused without opening it', () => {
    const { c } = session();
    execFileSync('mkfifo', [sharePath('pipe')]);
    // Opened write-only without a reader, a FIFO fails with ENXIO: EOPNOTSUPP shows it was not opened.
    ok(c.walk(ROOT, 2, []));
    errno(c.lcreate(2, 'pipe', O.WRONLY), E.EOPNOTSUPP);
    errno(c.lcreate(2, 'sub', O.RDONLY), E.EISDIR);
    ok(c.lcreate(2, 'hello.txt', O.RDWR)); // an existing regular file opens, as before
  });

  it('times before 1970 survive both ways (Node takes a negative number of seconds for "now")', () => {
    const { c } = session();
    ok(c.walk(ROOT, 2, ['hello.txt']));
    const moon = -14182940n; // 1969-07-20T20:17:40Z
    ok(c.setattr(2, { valid: 0x20 | 0x100, mtime: [BigInt.asUintN(64, moon), 0n] }));
    assert.equal(fs.statSync(sharePath('hello.txt')).mtimeMs, Number(moon) * 1000);
    fs.utimesSync(sharePath('hello.txt'), new Date(-1750), new Date(-1750)); // -1.75 s
    const { mtime } = ok(c.getattr(2));
    assert.deepEqual(mtime, [BigInt.asUintN(64, -2n), 250_000_000n]); // sec rounds down; 0 <= nsec < 1e9
  });

  it('a request whose success reply would not fit is refused before it changes anything', () => {
    const { server, c } = session();
    // Twalk to a new fid with room for an Rlerror only: EMSGSIZE, and the fid is not created.
    const walk = new Msg(T.walk, 9).u32(ROOT).u32(7).u16(1).str('sub').done();
    assert.equal(ecodeOf(server.handle(walk, 12)), E.EMSGSIZE);
    ok(c.walk(ROOT, 7, ['sub']));
    const create = new Msg(T.lcreate, 10).u32(7).str('new').u32(O.RDWR).u32(0o644).u32(0).done();
    assert.equal(ecodeOf(server.handle(create, 12)), E.EMSGSIZE);
    assert.equal(fs.existsSync(sharePath('sub', 'new')), false);
  });

  it('a listing is ., .., then the names sorted by their bytes (any bytes), packed; past max entries it is not made', () => {
    const d = sharePath('names');
    fs.mkdirSync(d);
    const names = [Buffer.from([0xff, 0x61]), Buffer.from('b'), Buffer.from('a'), Buffer.from('ab'), Buffer.from('a'.repeat(255)), Buffer.from([0xc3, 0x28])];
    for (const n of names) fs.writeFileSync(Buffer.concat([Buffer.from(d + '/'), n]), '');
    const l = Listing.read(Buffer.from(d), 8);
    assert.equal(l.length, 8);
    assert.equal(l.name(0), Listing.DOT);
    assert.equal(l.name(1), Listing.DOTDOT);
    const got = Array.from({ length: 6 }, (_, i) => l.name(i + 2));
    assert.deepEqual(got.map((b) => b.toString('hex')), [...names].sort(Buffer.compare).map((b) => b.toString('hex')));
    assert.equal(Listing.read(Buffer.from(d), 7), undefined, 'one entry too many');
    fs.mkdirSync(sharePath('empty'));
    assert.equal(Listing.read(Buffer.from(sharePath('empty')), 2).length, 2, 'an empty directory is . and ..');
  });

  it('directory listings held at once are bounded (ENOMEM past it); a listing read to its end is let go', () => {
    for (let i = 0; i < 100; i++) fs.writeFileSync(sharePath('sub', `f${i}`), '');
    const { c } = session({ maxListedEntries: 250 }); // a listing of sub is 103 entries with . and ..
    for (const fid of [2, 3, 4]) {
      ok(c.walk(ROOT, fid, ['sub']));
      ok(c.lopen(fid, O.RDONLY));
    }
    ok(c.readdir(2, 0n, 512));
    ok(c.readdir(3, 0n, 512));
    errno(c.readdir(4, 0n, 512), E.ENOMEM);
    ok(c.clunk(2));
    ok(c.readdir(4, 0n, 512));
    assert.equal(ok(c.readdirAll(3)).entries.length, 103); // to its end: its listing is let go
    ok(c.walk(ROOT, 5, ['sub']));
    ok(c.lopen(5, O.RDONLY));
    ok(c.readdir(5, 0n, 512));
  });
});
