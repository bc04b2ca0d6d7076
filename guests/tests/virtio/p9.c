/*
 * virtio-9p scenarios: 9p, 9p-ro and 9p-escape. The device (virtio 1.2 §5.x, "9P transport")
 * carries one 9P2000.L message per chain: the T-message in device-readable buffers, room for the
 * R-message in device-writable ones. Its configuration space holds the mount tag (tag_len u16, then
 * the tag, not NUL-terminated) when MOUNT_TAG (bit 0) is negotiated.
 * 9P2000.L: every message is size[4] type[1] tag[2] body, little-endian; strings are len[2] bytes;
 * a qid is type[1] version[4] path[8]; errors come back as Rlerror ecode[4] (a Linux errno).
 */
#include "scenarios.h"

#define P9_F_MOUNT_TAG (1ul << 0)
#define MSIZE 65536
#define NOTAG 0xffff
#define NOFID 0xffffffffu

enum {
  Rlerror = 7, Tlopen = 12, Tlcreate = 14, Tversion = 100, Tattach = 104, Twalk = 110, Tread = 116,
  Twrite = 118, Tclunk = 120,
};
/* Linux open flags, as 9P2000.L carries them. */
#define L_O_RDONLY 0
#define L_O_WRONLY 01
#define L_O_CREAT 0100
#define L_O_TRUNC 01000
#define EROFS 30
#define P9_ERR_PROTO 1000 /* our own: a reply that is not what the request calls for */

static struct vdev pd;
static u8 tx[8192] __attribute__((aligned(4096)));
static u8 rx[MSIZE] __attribute__((aligned(4096)));
static u32 msize = MSIZE;

struct qid { u8 type; u32 version; u64 path; };

/* ---------------- encoding ---------------- */

static u32 tx_len;
static void w8(u8 v) { if (tx_len + 1 <= sizeof tx) tx[tx_len++] = v; }
static void w16(u16 v) { w8((u8)v), w8(v >> 8); }
static void w32(u32 v) { w16((u16)v), w16(v >> 16); }
static void w64(u64 v) { w32((u32)v), w32(v >> 32); }
static void wstr(const char *s) {
  u16 n = (u16)strlen(s);
  w16(n);
  for (u16 i = 0; i < n; i++) w8((u8)s[i]);
}
static void begin(u8 type, u16 tag) { tx_len = 4, w8(type), w16(tag); }

/* A bounds-checked reader over the reply: past the end it yields zeros and marks itself bad. */
struct rd { const u8 *b; u32 len, at; int bad; };
static const u8 *take(struct rd *r, u32 n) {
  if (r->bad || n > r->len - r->at) return r->bad = 1, NULL;
  r->at += n;
  return r->b + r->at - n;
}
static u8 r8(struct rd *r) { const u8 *p = take(r, 1); return p ? p[0] : 0; }
static u16 r16(struct rd *r) { const u8 *p = take(r, 2); return p ? (u16)(p[0] | p[1] << 8) : 0; }
static u32 r32(struct rd *r) { const u8 *p = take(r, 4); return p ? p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24 : 0; }
static u64 r64(struct rd *r) { u64 lo = r32(r); return lo | (u64)r32(r) << 32; }
static struct qid rqid(struct rd *r) { struct qid q; q.type = r8(r), q.version = r32(r), q.path = r64(r); return q; }

/* ---------------- transactions ---------------- */

/*
 * Sends the message built in tx, waits for the reply and checks its frame: the size field within
 * what the device wrote, the tag echoed, the type the request calls for (or Rlerror). Returns 0
 * with `body` positioned after the header, a positive errno for Rlerror, or <0 (transport).
 */
static int rpc(struct rd *body) {
  u8 type = tx[4];
  u16 tag = (u16)(tx[5] | tx[6] << 8);
  tx[0] = (u8)tx_len, tx[1] = (u8)(tx_len >> 8), tx[2] = (u8)(tx_len >> 16), tx[3] = (u8)(tx_len >> 24);
  struct vbuf b[2] = {{(u64)tx, tx_len, 0}, {(u64)rx, msize, 1}};
  u32 used = 0;
  int r = vq_call(&pd, &pd.vq[0], b, 2, REQUEST_MS, &used);
  if (r) return r;
  struct rd h = {rx, used, 0, 0};
  u32 size = r32(&h);
  u8 rtype = r8(&h);
  u16 rtag = r16(&h);
  if (h.bad || size < 7 || size > used || rtag != tag) return P9_ERR_PROTO;
  *body = (struct rd){rx, size, 7, 0};
  if (rtype == Rlerror) {
    u32 e = r32(body);
    return body->bad || !e ? P9_ERR_PROTO : (int)e;
  }
  return rtype == type + 1 ? 0 : P9_ERR_PROTO;
}

static int p9_version(void) {
  begin(Tversion, NOTAG), w32(MSIZE), wstr("9P2000.L");
  struct rd r;
  int e = rpc(&r);
  if (e) return e;
  u32 m = r32(&r);
  u16 n = r16(&r);
  const u8 *v = take(&r, n);
  if (r.bad || n != 8 || memcmp(v, "9P2000.L", 8) || m < 4096 || m > MSIZE) return P9_ERR_PROTO;
  msize = m;
  return 0;
}

static int p9_attach(u32 fid, struct qid *q) {
  begin(Tattach, 1), w32(fid), w32(NOFID), wstr("root"), wstr(""), w32(0);
  struct rd r;
  int e = rpc(&r);
  if (!e) *q = rqid(&r), e = r.bad ? P9_ERR_PROTO : 0;
  return e;
}

/* Walks `name` (NULL: a clone of fid) from fid to newfid; *q gets the last qid. */
static int p9_walk(u32 fid, u32 newfid, const char *name, struct qid *q) {
  begin(Twalk, 1), w32(fid), w32(newfid), w16(name ? 1 : 0);
  if (name) wstr(name);
  struct rd r;
  int e = rpc(&r);
  if (e) return e;
  u16 n = r16(&r);
  if (n != (name ? 1 : 0)) return r.bad ? P9_ERR_PROTO : 2; /* a partial walk: the name is missing */
  if (n) *q = rqid(&r);
  return r.bad ? P9_ERR_PROTO : 0;
}

static int p9_lopen(u32 fid, u32 flags) {
  begin(Tlopen, 1), w32(fid), w32(flags);
  struct rd r;
  return rpc(&r);
}

static int p9_lcreate(u32 fid, const char *name, u32 flags, u32 mode) {
  begin(Tlcreate, 1), w32(fid), wstr(name), w32(flags), w32(mode), w32(0);
  struct rd r;
  return rpc(&r);
}

/* Reads up to `count` bytes at `off`; *data points into the reply buffer. */
static int p9_read(u32 fid, u64 off, u32 count, const u8 **data, u32 *n) {
  begin(Tread, 1), w32(fid), w64(off), w32(count);
  struct rd r;
  int e = rpc(&r);
  if (e) return e;
  *n = r32(&r);
  *data = take(&r, *n);
  return r.bad || *n > count ? P9_ERR_PROTO : 0;
}

static int p9_write(u32 fid, u64 off, const char *s, u32 *n) {
  u32 len = strlen(s);
  begin(Twrite, 1), w32(fid), w64(off), w32(len);
  for (u32 i = 0; i < len; i++) w8((u8)s[i]);
  struct rd r;
  int e = rpc(&r);
  if (!e) *n = r32(&r), e = r.bad ? P9_ERR_PROTO : 0;
  return e;
}

static int p9_clunk(u32 fid) {
  begin(Tclunk, 1), w32(fid);
  struct rd r;
  return rpc(&r);
}

/* ---------------- the checks ---------------- */

static const char *err_name(int e) { return e < 0 ? virtio_strerror(e) : e == P9_ERR_PROTO ? "malformed reply" : "Rlerror"; }

/* Device up, tag printed, Tversion and Tattach (fid 0 is the root). */
static int session(const char *who, struct qid *root) {
  int r = device_up(&pd, who, VIRTIO_ID_9P, 0, P9_F_MOUNT_TAG, 1, 64);
  if (r) return fail(r == VIRTIO_ENODEV ? 2 : 90, who, "%s", virtio_strerror(r));
  if (pd.features & P9_F_MOUNT_TAG) {
    u16 n = virtio_cfg16(&pd, 0);
    static char tag[64];
    if (n >= sizeof tag || 2u + n > pd.devcfg_len) return fail(91, who, "tag length %u does not fit the configuration space", n);
    for (u16 i = 0; i < n; i++) tag[i] = (char)virtio_cfg8(&pd, 2 + i);
    printf("9p: tag %.*s\n", (int)n, tag);
  } else {
    puts("9p: no mount tag offered");
  }
  int e = p9_version();
  if (e) return fail(92, who, "Tversion: %s %d", err_name(e), e);
  printf("9p: 9P2000.L, msize %u\n", msize);
  if ((e = p9_attach(0, root))) return fail(93, who, "Tattach: %s %d", err_name(e), e);
  printf("9p: attached, root qid type %02x path %lx\n", root->type, root->path);
  return 0;
}

static int read_hello(const char *who) {
  struct qid q;
  const u8 *data;
  u32 n;
  int e = p9_walk(0, 1, "hello.txt", &q);
  if (e) return fail(94, who, "walk to hello.txt: %s %d", err_name(e), e);
  if ((e = p9_lopen(1, L_O_RDONLY))) return fail(95, who, "Tlopen hello.txt: %s %d", err_name(e), e);
  if ((e = p9_read(1, 0, 4096, &data, &n))) return fail(96, who, "Tread hello.txt: %s %d", err_name(e), e);
  u32 shown = n && data[n - 1] == '\n' ? n - 1 : n;
  printf("9p: hello.txt: %.*s\n", (int)shown, (const char *)data);
  if ((e = p9_clunk(1))) return fail(97, who, "Tclunk: %s %d", err_name(e), e);
  return 0;
}

static int create_file(void) {
  static const char text[] = "written by the guest\n";
  struct qid q;
  u32 n = 0;
  int e = p9_walk(0, 2, NULL, &q);
  if (e) return fail(98, "9p", "clone of the root fid: %s %d", err_name(e), e);
  if ((e = p9_lcreate(2, "from-guest.txt", L_O_WRONLY | L_O_CREAT | L_O_TRUNC, 0644))) return fail(99, "9p", "Tlcreate: %s %d", err_name(e), e);
  if ((e = p9_write(2, 0, text, &n)) || n != sizeof text - 1) return fail(100, "9p", "Twrite: %s %d, %u bytes", err_name(e), e, n);
  if ((e = p9_clunk(2))) return fail(101, "9p", "Tclunk: %s %d", err_name(e), e);
  printf("9p: created from-guest.txt (%u bytes written)\n", n);
  return 0;
}

static int refused_create(void) {
  struct qid q;
  int e = p9_walk(0, 2, NULL, &q);
  if (e) return fail(102, "9p-ro", "clone of the root fid: %s %d", err_name(e), e);
  e = p9_lcreate(2, "from-guest.txt", L_O_WRONLY | L_O_CREAT | L_O_TRUNC, 0644);
  if (e != EROFS) return fail(103, "9p-ro", "Tlcreate on a read-only share: %s %d, expected errno 30", e ? err_name(e) : "succeeded", e);
  printf("9p: read-only share refused a create (errno %d)\n", e);
  p9_clunk(2);
  return 0;
}

/* '..' from the root names the root: nothing above the share is reachable. */
static int dotdot(const struct qid *root) {
  struct qid q;
  int e = p9_walk(0, 3, "..", &q);
  if (e) return fail(104, "9p", "walk to ..: %s %d", err_name(e), e);
  if (q.type != root->type || q.path != root->path) return fail(105, "9p", "walk .. from the root reached qid path %lx, not the root's %lx", q.path, root->path);
  puts("9p: walk .. from the root stays at the root");
  return p9_clunk(3) ? fail(106, "9p", "Tclunk failed") : 0;
}

/* 'escape' is a host symlink to a file outside the share: opening it must fail. */
static int escape(void) {
  struct qid q;
  int e = p9_walk(0, 4, "escape", &q);
  if (e) {
    if (e < 0 || e == P9_ERR_PROTO) return fail(107, "9p", "walk to escape: %s %d", err_name(e), e);
    printf("9p: escape refused at the walk (errno %d)\n", e);
    return 0;
  }
  e = p9_lopen(4, L_O_RDONLY);
  if (e > 0 && e != P9_ERR_PROTO) {
    printf("9p: escape refused (errno %d)\n", e);
    p9_clunk(4);
    return 0;
  }
  if (e) return fail(108, "9p", "Tlopen of escape: %s %d", err_name(e), e);
  const u8 *data;
  u32 n = 0;
  p9_read(4, 0, 64, &data, &n);
  return fail(109, "9p", "opened the symlink escape (qid type %02x) and read %u bytes through it", q.type, n);
}

int scenario_9p(int read_only) {
  const char *who = read_only ? "9p-ro" : "9p";
  struct qid root;
  int r = session(who, &root);
  if (r || (r = read_hello(who))) return r;
  if (read_only) r = refused_create();
  else r = create_file();
  if (r || (r = dotdot(&root))) return r;
  if (!read_only && !cmdline_has("noescape") && (r = escape())) return r;
  p9_clunk(0);
  printf("%s: all checks passed\n", who);
  return 0;
}

int scenario_9p_escape(void) {
  struct qid root;
  int r = session("9p-escape", &root);
  if (r || (r = escape())) return r;
  puts("9p-escape: all checks passed");
  return 0;
}
