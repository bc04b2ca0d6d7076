// File-descriptor plumbing that Node's own streams cannot do: a readiness watcher on the main
// thread's event loop (libuv's uv_poll) for fds that net.Socket refuses (eventfds signalled by KVM's
// ioeventfds, tap character devices), and opening a tap interface (TUNSETIFF). What happens when an
// fd becomes readable is decided in TypeScript, and so is which offloads a tap gets (TUNSETOFFLOAD).
// Also a read that never waits (preadv2 RWF_NOWAIT), so a disk read served by the page cache needs
// no trip through libuv's thread pool, and plain read(2) and batched write(2)s for the tap, where
// fs.readSync/writeSync cost more than the system call itself (and throw an Error for each EAGAIN).
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <climits>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <vector>
#include <unistd.h>
#include <uv.h>

#include "common.h"

namespace nv {
namespace {

// watchFd(fd, onReadable) -> stop(): calls onReadable() on the main thread each time fd is readable
// (level-triggered: the callback must drain the fd). stop() ends the watch and must be called once
// the watch is no longer wanted, even after an error ended it; the fd stays open.
struct Watch {
  uv_poll_t poll;
  Napi::FunctionReference callback;
  napi_env env;
  bool stopped = false;  // no more callbacks
  bool closed = false;   // uv_close issued: the struct is freed in OnClose
};

void OnClose(uv_handle_t* h) { delete static_cast<Watch*>(h->data); }

void OnReadable(uv_poll_t* p, int status, int /*events*/) {
  auto* w = static_cast<Watch*>(p->data);
  if (w->stopped) return;
  Napi::Env env(w->env);
  Napi::HandleScope scope(env);
  // Errors (status < 0, e.g. EBADF) are reported to the callback as its argument, and the watch
  // stops; the handle is released only by stop(), which the owner may still call.
  if (status < 0) {
    w->stopped = true;
    uv_poll_stop(p);
    w->callback.MakeCallback(env.Global(), {Napi::String::New(env, uv_err_name(status))});
    return;
  }
  w->callback.MakeCallback(env.Global(), {});
}

Napi::Value WatchFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  if (info.Length() < 2 || !info[1].IsFunction()) ThrowType(env, "argument 1: expected a function");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) ThrowType(env, "no event loop");
  auto* w = new Watch();
  w->env = env;
  w->callback = Napi::Persistent(info[1].As<Napi::Function>());
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r < 0) {
    delete w;
    ThrowErrno(env, -r, "uv_poll_init", "watchFd");
  }
  w->poll.data = w;
  uv_poll_start(&w->poll, UV_READABLE, OnReadable);
  return Napi::Function::New(env, [w](const Napi::CallbackInfo&) {
    if (w->closed) return;
    w->stopped = w->closed = true;
    uv_poll_stop(&w->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), OnClose);
  }, "stop");
}

// openTap(name, vnetHdr) -> { fd, name }: attaches to (or creates) tap interface `name`, non-blocking,
// without packet information; with vnetHdr each frame carries a struct virtio_net_hdr_v1 (12 bytes).
Napi::Value OpenTap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) ThrowType(env, "argument 0: expected an interface name");
  std::string name = info[0].As<Napi::String>();
  if (name.empty() || name.size() >= IFNAMSIZ) ThrowErrno(env, EINVAL, "ioctl", "TUNSETIFF");
  bool vnet = info.Length() > 1 && info[1].ToBoolean();
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "open", "/dev/net/tun");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    ::close(fd);
    ThrowErrno(env, e, "ioctl", "TUNSETIFF");
  }
  if (vnet) {
    int hdr = 12;
    if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
      int e = errno;
      ::close(fd);
      ThrowErrno(env, e, "ioctl", "TUNSETVNETHDRSZ");
    }
  }
  auto out = Napi::Object::New(env);
  out.Set("fd", Napi::Number::New(env, fd));
  out.Set("name", Napi::String::New(env, ifr.ifr_name));
  return out;
}

// setTapOffload(fd, flags): which offloads (TUN_F_*) the kernel may leave to the reader of tap `fd`:
// frames with a partial checksum or a segmentation super-frame arrive only once they are allowed.
Napi::Value SetTapOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  unsigned int flags = ArgU32(info, 1);
  if (::ioctl(fd, TUNSETOFFLOAD, flags) < 0) ThrowErrno(env, errno, "ioctl", "TUNSETOFFLOAD");
  return env.Undefined();
}

// Argument i, an array of 1 to IOV_MAX TypedArrays (views into guest RAM), as iovecs.
std::vector<iovec> ArgIovecs(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  std::string at = "argument " + std::to_string(i);
  if (info.Length() <= i || !info[i].IsArray()) ThrowType(env, at + ": expected an array of views");
  Napi::Array views = info[i].As<Napi::Array>();
  uint32_t n = views.Length();
  if (n == 0 || n > IOV_MAX) ThrowType(env, at + ": expected 1 to IOV_MAX views");
  std::vector<iovec> iov(n);
  for (uint32_t k = 0; k < n; k++) {
    Napi::Value v = views[k];
    if (!v.IsTypedArray()) ThrowType(env, at + ": expected TypedArrays");
    Bytes b = TypedArrayBytes(v.As<Napi::TypedArray>());
    iov[k] = {b.data, b.length};
  }
  return iov;
}

// preadvNoWait(fd, views, position[, mayWait]) -> bytes read, or -errno: -EAGAIN when the data is not
// all in the page cache (the caller then reads asynchronously), -EOPNOTSUPP where the file system
// cannot promise not to wait. Never blocks, unless mayWait: then a plain preadv, for files whose
// pages live in memory anyway (tmpfs), which cannot promise RWF_NOWAIT. Never throws for an I/O
// error (the asynchronous path reports it).
Napi::Value PreadvNoWait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::vector<iovec> iov = ArgIovecs(info, 1);
  uint64_t position = ArgU64(info, 2);
  int flags = info.Length() > 3 && info[3].ToBoolean() ? 0 : RWF_NOWAIT;
  ssize_t r;
  do r = ::preadv2(fd, iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(position), flags);
  while (r < 0 && errno == EINTR);
  return Napi::Number::New(env, r < 0 ? -errno : static_cast<double>(r));
}

// pwritevAt(fd, views, position) -> bytes written, or -errno. A plain (blocking) pwritev, for disk
// images whose pages are memory (tmpfs), where a write is a copy and libuv's pool only adds hops.
Napi::Value PwritevAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  std::vector<iovec> iov = ArgIovecs(info, 1);
  uint64_t position = ArgU64(info, 2);
  ssize_t r;
  do r = ::pwritev(fd, iov.data(), static_cast<int>(iov.size()), static_cast<off_t>(position));
  while (r < 0 && errno == EINTR);
  return Napi::Number::New(env, r < 0 ? -errno : static_cast<double>(r));
}

// readFd(fd, view) -> bytes, or -errno (EAGAIN included: a non-blocking fd with nothing to read is
// ordinary flow, not an exception). Raw Node-API: one per received frame.
napi_value ReadFd(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr);
  int32_t fd = -1;
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, nullptr, nullptr) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, nullptr, "readFd: expected (fd, Uint8Array)");
    return nullptr;
  }
  ssize_t r;
  do r = ::read(fd, data, length);
  while (r < 0 && errno == EINTR);
  napi_value out;
  napi_create_double(env, r < 0 ? -errno : static_cast<double>(r), &out);
  return out;
}

// writeEach(fd, bytes, spans, count, results): write(2) of each of `count` ranges of `bytes`, one
// call per range, in order: spans holds (offset, length) pairs, results gets each call's bytes or
// -errno (EAGAIN included: a full queue on a non-blocking fd is ordinary flow, not an exception). For
// frames to a tap, where one write(2) is one frame and no call takes several: one call from
// JavaScript for a batch of frames. Ranges are checked against the view (the caller has checked them
// against guest RAM already).
napi_value WriteEach(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr);
  int32_t fd = -1;
  uint32_t count = 0;
  napi_typedarray_type type[3];
  size_t length[3] = {0, 0, 0};
  void* data[3] = {nullptr, nullptr, nullptr};
  bool ok = argc >= 5 && napi_get_value_int32(env, argv[0], &fd) == napi_ok && napi_get_value_uint32(env, argv[3], &count) == napi_ok;
  const int views[3] = {1, 2, 4};
  for (int k = 0; ok && k < 3; k++) ok = napi_get_typedarray_info(env, argv[views[k]], &type[k], &length[k], &data[k], nullptr, nullptr) == napi_ok;
  if (!ok || type[0] != napi_uint8_array || type[1] != napi_uint32_array || type[2] != napi_int32_array ||
      count > length[1] / 2 || count > length[2]) {
    napi_throw_type_error(env, nullptr, "writeEach: expected (fd, Uint8Array, Uint32Array of count pairs, count, Int32Array of count)");
    return nullptr;
  }
  auto* bytes = static_cast<uint8_t*>(data[0]);
  auto* spans = static_cast<const uint32_t*>(data[1]);
  auto* results = static_cast<int32_t*>(data[2]);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t off = spans[2 * i], len = spans[2 * i + 1];
    if (off > length[0] || len > length[0] - off) {
      results[i] = -ERANGE;
      continue;
    }
    ssize_t r;
    do r = ::write(fd, bytes + off, len);
    while (r < 0 && errno == EINTR);
    results[i] = r < 0 ? -errno : static_cast<int32_t>(r);
  }
  return nullptr;
}

}  // namespace

void InitFdio(Napi::Env env, Napi::Object exports) {
  exports.Set("watchFd", Napi::Function::New(env, WatchFd, "watchFd"));
  exports.Set("openTap", Napi::Function::New(env, OpenTap, "openTap"));
  exports.Set("setTapOffload", Napi::Function::New(env, SetTapOffload, "setTapOffload"));
  exports.Set("preadvNoWait", Napi::Function::New(env, PreadvNoWait, "preadvNoWait"));
  exports.Set("pwritevAt", Napi::Function::New(env, PwritevAt, "pwritevAt"));
  napi_value fn;
  napi_create_function(env, "readFd", NAPI_AUTO_LENGTH, ReadFd, nullptr, &fn);
  exports.Set("readFd", Napi::Value(env, fn));
  napi_create_function(env, "writeEach", NAPI_AUTO_LENGTH, WriteEach, nullptr, &fn);
  exports.Set("writeEach", Napi::Value(env, fn));
}

}  // namespace nv
