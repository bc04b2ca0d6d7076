// Shared helpers for the nodevisor addon: argument conversion and errno-carrying errors.
// The addon is a thin mirror of the KVM ioctls: no device logic and no policy lives here.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <sys/ioctl.h>

namespace nv {

// Throws a Node-style system error: { code: 'EINVAL', errno: -22, syscall: 'ioctl', ioctl: 'KVM_RUN' }.
// `err` must be captured right after the failing call, before anything else can clobber errno.
[[noreturn]] inline void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* what) {
  const char* name = strerrorname_np(err);
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + std::strerror(err));
  e.Set("code", Napi::String::New(env, name ? name : "UNKNOWN"));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  if (std::strcmp(syscall, "ioctl") == 0) e.Set("ioctl", Napi::String::New(env, what));
  throw e;
}

[[noreturn]] inline void ThrowType(Napi::Env env, const std::string& msg) {
  throw Napi::TypeError::New(env, msg);
}

// Runs an ioctl and throws on failure; the error names the ioctl (`name`, or the stringified request).
// Macros that forward a request must use NV_IOCTL_NAMED with their own #REQ: a forwarded macro
// argument is expanded before # applies, which would name the number instead of the ioctl.
// A signal (a profiler's SIGPROF, our own vCPU kick) can interrupt any ioctl that sleeps, even
// KVM_CREATE_VM: it is retried, as the call did nothing. KVM_RUN alone reports EINTR (vcpu.cc).
#define NV_IOCTL_NAMED(env, fd, req, name, ...)                     \
  ([&]() -> int {                                                   \
    int r_;                                                         \
    do r_ = ::ioctl((fd), (req), ##__VA_ARGS__);                    \
    while (r_ < 0 && errno == EINTR);                               \
    if (r_ < 0) { int e_ = errno; ::nv::ThrowErrno((env), e_, "ioctl", (name)); } \
    return r_;                                                      \
  })()
#define NV_IOCTL(env, fd, req, ...) NV_IOCTL_NAMED(env, fd, req, #req, ##__VA_ARGS__)

inline int ArgFd(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info.Env(), "argument " + std::to_string(i) + ": expected a file descriptor");
  int fd = info[i].As<Napi::Number>().Int32Value();
  if (fd < 0) ThrowErrno(info.Env(), EBADF, "ioctl", "fd");
  return fd;
}

inline uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info.Env(), "argument " + std::to_string(i) + ": expected a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint64_t>(d)))
    ThrowType(info.Env(), "argument " + std::to_string(i) + ": expected an unsigned 32-bit integer");
  return static_cast<uint32_t>(d);
}

// Accepts a safe-integer Number or a BigInt, so that 64-bit guest addresses can cross the boundary.
inline uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() > i && info[i].IsBigInt()) {
    bool lossless = true;
    uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) ThrowType(info.Env(), "argument " + std::to_string(i) + ": BigInt does not fit in 64 bits");
    return v;
  }
  if (info.Length() <= i || !info[i].IsNumber()) ThrowType(info.Env(), "argument " + std::to_string(i) + ": expected a number or bigint");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d)))
    ThrowType(info.Env(), "argument " + std::to_string(i) + ": expected a non-negative safe integer");
  return static_cast<uint64_t>(d);
}

struct Bytes {
  uint8_t* data;
  size_t length;
};

// The bytes of a TypedArray, whether over an ArrayBuffer or a SharedArrayBuffer (guest RAM views
// are shared: mappings.cc). Not through ta.ArrayBuffer().Data(): napi_get_arraybuffer_info refuses a
// SharedArrayBuffer, while napi_get_typedarray_info gives the data pointer of either.
inline Bytes TypedArrayBytes(const Napi::TypedArray& ta) {
  void* data = nullptr;
  if (napi_get_typedarray_info(ta.Env(), ta, nullptr, nullptr, &data, nullptr, nullptr) != napi_ok) ThrowType(ta.Env(), "expected a TypedArray");
  return {static_cast<uint8_t*>(data), ta.ByteLength()};
}

// A byte view of any TypedArray, DataView or ArrayBuffer argument (no copy).
inline Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  if (info.Length() <= i) ThrowType(env, "argument " + std::to_string(i) + ": expected a buffer");
  Napi::Value v = info[i];
  if (v.IsTypedArray()) return TypedArrayBytes(v.As<Napi::TypedArray>());
  if (v.IsDataView()) {
    auto dv = v.As<Napi::DataView>();
    return {static_cast<uint8_t*>(dv.Data()), dv.ByteLength()};
  }
  if (v.IsArrayBuffer()) {
    auto ab = v.As<Napi::ArrayBuffer>();
    return {static_cast<uint8_t*>(ab.Data()), ab.ByteLength()};
  }
  ThrowType(env, "argument " + std::to_string(i) + ": expected a TypedArray, DataView or ArrayBuffer");
}

// A buffer argument that must be exactly sizeof(T): the TS side allocates it from the layout table.
template <typename T>
inline T* ArgStruct(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Bytes b = ArgBytes(info, i);
  if (b.length != sizeof(T))
    ThrowType(info.Env(), std::string(name) + ": expected " + std::to_string(sizeof(T)) + " bytes, got " + std::to_string(b.length));
  return reinterpret_cast<T*>(b.data);
}

// Registration helpers, one per source file.
void InitSystem(Napi::Env env, Napi::Object exports);
void InitVm(Napi::Env env, Napi::Object exports);
void InitVcpu(Napi::Env env, Napi::Object exports);
void InitMappings(Napi::Env env, Napi::Object exports);
void InitEventfd(Napi::Env env, Napi::Object exports);
void InitFdio(Napi::Env env, Napi::Object exports);
void InitLayout(Napi::Env env, Napi::Object exports);
void InitLoopVcpu(Napi::Env env, Napi::Object exports);

}  // namespace nv
