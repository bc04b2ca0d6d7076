// System ioctls on /dev/kvm.
#include <fcntl.h>
#include <linux/kvm.h>
#include <unistd.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "common.h"
#include "kvm_abi.h"
#include "release_later.h"

namespace nv {
namespace {

// open(path = '/dev/kvm') -> fd, O_CLOEXEC so that children (tap helpers, qemu) never inherit it.
Napi::Value Open(const Napi::CallbackInfo& info) {
  std::string path = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "/dev/kvm";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) ThrowErrno(info.Env(), errno, "open", path.c_str());
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  if (::close(fd) < 0) ThrowErrno(info.Env(), errno, "close", "close");
  return info.Env().Undefined();
}

// closeLater(fd): closes fd on the addon's release thread (release_later.h), for an fd whose close
// may be the last reference to a VM (a VM made ahead that nobody took). Errors are not reported:
// the fd is the caller's to give up, and is gone either way.
Napi::Value CloseLater(const Napi::CallbackInfo& info) {
  int fd = ArgFd(info, 0);
  ReleaseLater([fd] { ::close(fd); });
  return info.Env().Undefined();
}

// KVM_GET_API_VERSION: 12 on every kernel since 2.6.22.
Napi::Value ApiVersion(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_GET_API_VERSION, 0));
}

// KVM_CHECK_EXTENSION on the system or a VM fd: 0 when absent, else a capability-specific value.
Napi::Value CheckExtension(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_CHECK_EXTENSION, static_cast<unsigned long>(ArgU32(info, 1))));
}

// KVM_GET_VCPU_MMAP_SIZE: bytes to mmap from a vCPU fd (kvm_run plus the PIO data page...).
Napi::Value VcpuMmapSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_GET_VCPU_MMAP_SIZE, 0));
}

// KVM_GET_SUPPORTED_CPUID -> Uint8Array of nent kvm_cpuid_entry2 records. Grows the buffer on E2BIG.
Napi::Value SupportedCpuid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  for (uint32_t cap = 64; cap <= 4096; cap *= 2) {
    std::vector<uint8_t> buf(cap * nv_sizeof_cpuid_entry2);
    uint32_t nent = cap;
    int r = nv_get_supported_cpuid(fd, buf.data(), &nent);
    if (r == -E2BIG) continue;
    if (r < 0) ThrowErrno(env, -r, "ioctl", "KVM_GET_SUPPORTED_CPUID");
    auto result = Napi::Uint8Array::New(env, nent * nv_sizeof_cpuid_entry2);
    std::memcpy(result.Data(), buf.data(), result.ByteLength());
    return result;
  }
  ThrowErrno(env, E2BIG, "ioctl", "KVM_GET_SUPPORTED_CPUID");
}

// KVM_GET_MSR_INDEX_LIST -> Uint32Array of the MSR indices KVM saves and restores.
Napi::Value MsrIndexList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint32_t n = 0;
  int r = nv_msr_index_list(fd, nullptr, &n);  // E2BIG tells how many there are
  if (r < 0 && r != -E2BIG) ThrowErrno(env, -r, "ioctl", "KVM_GET_MSR_INDEX_LIST");
  auto result = Napi::Uint32Array::New(env, n);
  r = nv_msr_index_list(fd, result.Data(), &n);
  if (r < 0) ThrowErrno(env, -r, "ioctl", "KVM_GET_MSR_INDEX_LIST");
  return result;
}

// KVM_CREATE_VM(type) -> VM fd.
Napi::Value CreateVm(const Napi::CallbackInfo& info) {
  unsigned long type = info.Length() > 1 ? ArgU32(info, 1) : 0;
  return Napi::Number::New(info.Env(), NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_CREATE_VM, type));
}

// KVM_CREATE_VM on a thread of its own, for a VM wanted soon: startVmCreation(kvmFd[, type[, tssAddr,
// identityMapAddr, pit2Flags]]) -> job, then finishVmCreation(job) -> VM fd, which waits for the
// thread if it is not done yet. Creating a VM takes the kernel milliseconds (a third of
// Machine.create under emulation); this lets a program creating machines in a burst have the next
// VM made on another core meanwhile. When to do that is the caller's business (src/kvm/kvm.ts).
// Given the three numbers, the thread also gives the VM the x86 calls every VM of ours starts with,
// in this order: KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP and
// KVM_CREATE_PIT2 (another ~4 ms of each machine under nested KVM); which values, the caller says.
// If one fails, the VM is closed there and finishVmCreation throws that call's errno and name. The
// thread works on a duplicate of kvmFd, so the caller may close its own at once.
struct CreatedVm {
  int fd = -1;
  int err = 0;
  const char* failed = "KVM_CREATE_VM";  // the call that set err
};

struct VmCreation {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  CreatedVm result;
};

struct VmSetup {
  bool x86 = false;
  unsigned long tssAddr = 0;
  uint64_t identityMapAddr = 0;
  uint32_t pit2Flags = 0;
};

// Runs on the creation thread: the VM, then its set-up; on failure err and failed say which call.
CreatedVm CreateVmWithSetup(int kvmFd, unsigned long type, const VmSetup& setup) {
  CreatedVm r;
  r.fd = ::ioctl(kvmFd, KVM_CREATE_VM, type);
  if (r.fd < 0) {
    r.err = errno;
    return r;
  }
  if (!setup.x86) return r;
  uint64_t idmap = setup.identityMapAddr;
  kvm_pit_config pit{};
  pit.flags = setup.pit2Flags;
  if (::ioctl(r.fd, KVM_SET_TSS_ADDR, setup.tssAddr) < 0) r.failed = "KVM_SET_TSS_ADDR";
  else if (::ioctl(r.fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0) r.failed = "KVM_SET_IDENTITY_MAP_ADDR";
  else if (::ioctl(r.fd, KVM_CREATE_IRQCHIP, 0) < 0) r.failed = "KVM_CREATE_IRQCHIP";
  else if (::ioctl(r.fd, KVM_CREATE_PIT2, &pit) < 0) r.failed = "KVM_CREATE_PIT2";
  else return r;
  r.err = errno;
  ::close(r.fd);
  r.fd = -1;
  return r;
}
std::mutex gCreationsMu;
std::map<uint32_t, std::shared_ptr<VmCreation>> gCreations;
uint32_t gNextCreation = 1;

Napi::Value StartVmCreation(const Napi::CallbackInfo& info) {
  int kvmFd = ArgFd(info, 0);
  unsigned long type = info.Length() > 1 ? ArgU32(info, 1) : 0;
  VmSetup setup;
  if (info.Length() > 2) {
    setup.x86 = true;
    setup.tssAddr = ArgU32(info, 2);
    setup.identityMapAddr = ArgU64(info, 3);
    setup.pit2Flags = ArgU32(info, 4);
  }
  int dup = ::fcntl(kvmFd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) ThrowErrno(info.Env(), errno, "fcntl", "startVmCreation");
  auto job = std::make_shared<VmCreation>();
  uint32_t id;
  {
    std::lock_guard<std::mutex> lk(gCreationsMu);
    id = gNextCreation++;
    gCreations[id] = job;
  }
  try {
    std::thread([job, dup, type, setup] {
      CreatedVm r = CreateVmWithSetup(dup, type, setup);
      ::close(dup);
      std::lock_guard<std::mutex> lk(job->mu);
      job->result = r;
      job->done = true;
      job->cv.notify_all();
    }).detach();
  } catch (const std::system_error& e) {
    // No thread (EAGAIN at the process's limit): nothing runs, so nothing is kept either.
    ::close(dup);
    std::lock_guard<std::mutex> lk(gCreationsMu);
    gCreations.erase(id);
    ThrowErrno(info.Env(), e.code().value(), "pthread_create", "startVmCreation");
  }
  return Napi::Number::New(info.Env(), id);
}

Napi::Value FinishVmCreation(const Napi::CallbackInfo& info) {
  uint32_t id = ArgU32(info, 0);
  std::shared_ptr<VmCreation> job;
  {
    std::lock_guard<std::mutex> lk(gCreationsMu);
    auto it = gCreations.find(id);
    if (it == gCreations.end()) ThrowErrno(info.Env(), ENOENT, "ioctl", "finishVmCreation: no such job");
    job = it->second;
    gCreations.erase(it);
  }
  std::unique_lock<std::mutex> lk(job->mu);
  job->cv.wait(lk, [&] { return job->done; });
  if (job->result.err) ThrowErrno(info.Env(), job->result.err, "ioctl", job->result.failed);
  return Napi::Number::New(info.Env(), job->result.fd);
}

}  // namespace

void InitSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("open", Napi::Function::New(env, Open, "open"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("closeLater", Napi::Function::New(env, CloseLater, "closeLater"));
  exports.Set("apiVersion", Napi::Function::New(env, ApiVersion, "apiVersion"));
  exports.Set("checkExtension", Napi::Function::New(env, CheckExtension, "checkExtension"));
  exports.Set("vcpuMmapSize", Napi::Function::New(env, VcpuMmapSize, "vcpuMmapSize"));
  exports.Set("supportedCpuid", Napi::Function::New(env, SupportedCpuid, "supportedCpuid"));
  exports.Set("msrIndexList", Napi::Function::New(env, MsrIndexList, "msrIndexList"));
  exports.Set("createVm", Napi::Function::New(env, CreateVm, "createVm"));
  exports.Set("startVmCreation", Napi::Function::New(env, StartVmCreation, "startVmCreation"));
  exports.Set("finishVmCreation", Napi::Function::New(env, FinishVmCreation, "finishVmCreation"));
}

}  // namespace nv
