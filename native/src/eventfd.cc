// eventfds and pipes: the doorbells and byte channels between vCPU threads, KVM (ioeventfd, irqfd)
// and the main thread's event loop.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common.h"

namespace nv {
namespace {

// eventfd(initval, nonblock) -> fd (always EFD_CLOEXEC).
Napi::Value Create(const Napi::CallbackInfo& info) {
  unsigned int init = info.Length() > 0 ? ArgU32(info, 0) : 0;
  int flags = EFD_CLOEXEC;
  if (info.Length() > 1 && info[1].ToBoolean()) flags |= EFD_NONBLOCK;
  int fd = ::eventfd(init, flags);
  if (fd < 0) ThrowErrno(info.Env(), errno, "eventfd", "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// eventfdRead(fd) -> the counter (and resets it), or 0 when a non-blocking eventfd is empty.
Napi::Value Read(const Napi::CallbackInfo& info) {
  uint64_t v = 0;
  if (::read(ArgFd(info, 0), &v, sizeof v) != sizeof v) {
    int e = errno;
    if (e == EAGAIN) return Napi::Number::New(info.Env(), 0);
    ThrowErrno(info.Env(), e, "read", "eventfd");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  uint64_t v = info.Length() > 1 ? ArgU64(info, 1) : 1;
  if (::write(ArgFd(info, 0), &v, sizeof v) != sizeof v) ThrowErrno(info.Env(), errno, "write", "eventfd");
  return info.Env().Undefined();
}

// pipe(nonblockRead, nonblockWrite) -> [readFd, writeFd], both O_CLOEXEC. vCPU threads write console
// bytes and doorbells with a plain write(2); the main thread reads the other end as a stream, so
// nothing crosses JS threads.
Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) ThrowErrno(info.Env(), errno, "pipe", "pipe2");
  if (info.Length() > 0 && info[0].ToBoolean()) ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  if (info.Length() > 1 && info[1].ToBoolean()) ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  auto out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  out.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return out;
}

}  // namespace

void InitEventfd(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfd", Napi::Function::New(env, Create, "eventfd"));
  exports.Set("eventfdRead", Napi::Function::New(env, Read, "eventfdRead"));
  exports.Set("eventfdWrite", Napi::Function::New(env, Write, "eventfdWrite"));
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
}

}  // namespace nv
