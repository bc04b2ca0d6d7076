#include "mappings.h"

#include <linux/kvm.h>
#include <sys/mman.h>
#include <unistd.h>
#include <algorithm>
#include <csignal>
#include <map>
#include <mutex>

// V8's headers are not clean under -Wextra.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <v8.h>
#pragma GCC diagnostic pop

#include "common.h"
#include "release_later.h"

namespace nv {

namespace {
std::mutex gMutex;
std::map<uint32_t, std::shared_ptr<Mapping>> gMappings;
uint32_t gNextId = 1;
std::once_flag gKickOnce;

uint32_t Register(std::shared_ptr<Mapping> m) {
  std::lock_guard<std::mutex> lock(gMutex);
  uint32_t id = gNextId++;
  gMappings.emplace(id, std::move(m));
  return id;
}

void OnKick(int) {}

}  // namespace

// The pages go on the release thread, a chunk at a time. The last reference is dropped by a view's
// deleter, which V8 runs as it sweeps freed array buffers, and unmapping RAM the guest has touched
// takes as long as freeing its pages; a garbage collection that comes before that sweep is done
// waits for it. Two collections in a row after releasing a fully touched 1 GiB took 94-114 ms when
// the deleter unmapped, 23-33 ms now (21 ms with the mapping kept). In chunks, because unmapping
// holds the process's mmap lock, which every other thread that maps memory then waits for. The
// range stays mapped until then, so no new mapping can reuse it before it is gone.
constexpr size_t kUnmapChunk = 32u << 20;

Mapping::~Mapping() {
  if (!addr || addr == MAP_FAILED) return;
  ReleaseLater([a = static_cast<char*>(addr), len = length] {
    for (size_t at = 0; at < len; at += kUnmapChunk) ::munmap(a + at, std::min(kUnmapChunk, len - at));
  });
}

std::shared_ptr<Mapping> FindMapping(uint32_t id) {
  std::lock_guard<std::mutex> lock(gMutex);
  auto it = gMappings.find(id);
  return it == gMappings.end() ? nullptr : it->second;
}

int KickSignal() { return SIGRTMIN + 5; }

void InstallKickHandler() {
  std::call_once(gKickOnce, [] {
    struct sigaction sa {};
    sa.sa_handler = OnKick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(KickSignal(), &sa, nullptr);
  });
}

void KickMapping(Mapping& m) {
  auto* run = static_cast<struct kvm_run*>(m.addr);
  __atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_t t = m.runner.load();
  if (t) pthread_kill(t, KickSignal());
}

namespace {

// The largest view handed out. V8 refuses bigger external ArrayBuffers, and a refused creation can
// run the finalizer on a path where node-addon-api frees the finalizer data again (a double free),
// so oversized requests are refused here, before V8 sees them; callers view large RAM in chunks.
constexpr uint64_t kMaxView = 1ull << 31;

// A view of guest RAM is a SharedArrayBuffer over the mapping, made through V8's API: the one place
// the addon leaves N-API. N-API only makes external ArrayBuffers, and V8 counts their bytes as
// memory that a garbage collection could free, starting a full collection of the thread's heap each
// time that count has grown by ~64 MiB since the last. Guest RAM is not such memory (the machine
// owns it; no collection frees it while the machine runs), yet each machine's RAM views paid for
// collections: with a 120 MB live heap, 20 views of 128 MiB took 168-419 ms, against 0.3 ms for
// 4 KiB views. V8 leaves a shared backing store out of that count. The pages stay mapped until the last view, on
// any thread, is gone (the deleter may run on any thread: it only drops a shared_ptr).
Napi::Value ExternalView(Napi::Env env, const std::shared_ptr<Mapping>& m, uint64_t offset, uint64_t length) {
  if (offset > m->length || length > m->length - offset || length > kMaxView) ThrowErrno(env, ERANGE, "mmap", "mappingBuffer");
  auto* owner = new std::shared_ptr<Mapping>(m);
  if (m->isRun) {  // a few KiB, read on every exit: the plain N-API ArrayBuffer, as it always was
    return Napi::ArrayBuffer::New(
        env, static_cast<uint8_t*>(m->addr) + offset, length,
        [](Napi::Env, void*, std::shared_ptr<Mapping>* o) { delete o; }, owner);
  }
  v8::Isolate* isolate = v8::Isolate::GetCurrent();
  std::unique_ptr<v8::BackingStore> store = v8::SharedArrayBuffer::NewBackingStore(
      static_cast<uint8_t*>(m->addr) + offset, length,
      [](void*, size_t, void* o) { delete static_cast<std::shared_ptr<Mapping>*>(o); }, owner);
  v8::Local<v8::SharedArrayBuffer> view = v8::SharedArrayBuffer::New(isolate, std::move(store));
  // In Node's N-API, a napi_value is the v8::Value* of a Local in the callback's handle scope
  // (v8impl::JsValueFromV8LocalValue); this call runs inside that scope.
  return Napi::Value(env, reinterpret_cast<napi_value>(*view));
}

// With transparent huge pages asked for, guest RAM starts on a 2 MiB boundary. KVM maps a guest
// page with a 2 MiB entry of its nested page table (EPT/NPT) only where the host page behind it is
// huge and the guest-physical and host-virtual addresses are equal modulo 2 MiB (guest RAM starts at
// guest-physical 0). Kernels before 6.7 place a large anonymous mapping on any 4 KiB boundary, so
// without this the advice gives the host huge pages and the guest still 4 KiB translations. QEMU
// aligns all of its RAM this way; we do not without the advice, because the only KVM we can measure
// on (nested, on QEMU's TCG, as CI runs) booted the kit's Linux no faster with all RAM aligned:
// median 19.8 against 19.0 s over 7 alternated pairs, and one aligned boot stalled for over 4 s.
constexpr uintptr_t kHugeAlign = 2u << 20;

// mapAnonymous(bytes, hugepages: 0 none | 1 transparent (madvise) | 2 hugetlbfs) -> id
// Guest RAM: private anonymous memory, MAP_NORESERVE so that a large --mem costs nothing until touched.
Napi::Value MapAnonymous(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t bytes = ArgU64(info, 0);
  uint32_t huge = info.Length() > 1 ? ArgU32(info, 1) : 0;
  if (bytes == 0 || bytes > UINT64_MAX - kHugeAlign) ThrowErrno(env, EINVAL, "mmap", "mmap");
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (huge == 2) flags |= MAP_HUGETLB;  // hugetlbfs mappings are aligned to their page size already
  // For THP, reserve 2 MiB more than asked, then give back what lies outside the aligned range.
  size_t reserved = huge == 1 ? bytes + kHugeAlign : bytes;
  void* p = ::mmap(nullptr, reserved, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) ThrowErrno(env, errno, "mmap", "mmap");
  if (huge == 1) {
    uintptr_t start = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (start + kHugeAlign - 1) & ~(kHugeAlign - 1);
    if (aligned > start) ::munmap(p, aligned - start);
    uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    uintptr_t end = (aligned + bytes + page - 1) & ~(page - 1);  // the kernel maps whole pages
    if (start + reserved > end) ::munmap(reinterpret_cast<void*>(end), start + reserved - end);
    p = reinterpret_cast<void*>(aligned);
    ::madvise(p, bytes, MADV_HUGEPAGE);  // best effort: THP may be disabled on the host
  }
  auto m = std::make_shared<Mapping>();
  m->addr = p;
  m->length = bytes;
  return Napi::Number::New(env, Register(m));
}

// mapVcpuRun(vcpuFd, bytes) -> id: the shared kvm_run area of a vCPU fd.
Napi::Value MapVcpuRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0);
  uint64_t bytes = ArgU64(info, 1);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) ThrowErrno(env, errno, "mmap", "mmap(kvm_run)");
  auto m = std::make_shared<Mapping>();
  m->addr = p;
  m->length = bytes;
  m->isRun = true;
  return Napi::Number::New(env, Register(m));
}

// mappingBuffer(id, offset = 0, length = rest) -> SharedArrayBuffer (guest RAM) or ArrayBuffer
// (kvm_run): a view of [offset, offset+length) of the mapping for the calling isolate (at most
// 2 GiB: ERANGE beyond).
Napi::Value MappingBuffer(const Napi::CallbackInfo& info) {
  auto m = FindMapping(ArgU32(info, 0));
  if (!m) ThrowErrno(info.Env(), EBADF, "mmap", "mappingBuffer");
  uint64_t offset = info.Length() > 1 ? ArgU64(info, 1) : 0;
  uint64_t length = info.Length() > 2 ? ArgU64(info, 2) : (offset <= m->length ? m->length - offset : 0);
  return ExternalView(info.Env(), m, offset, length);
}

// adviseMapping(id, offset, length, advice): madvise(2) on [offset, offset+length) of the mapping
// (page-aligned; EINVAL outside it). What to advise where is the caller's policy.
Napi::Value AdviseMapping(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto m = FindMapping(ArgU32(info, 0));
  if (!m) ThrowErrno(env, EBADF, "madvise", "adviseMapping");
  uint64_t offset = ArgU64(info, 1);
  uint64_t length = ArgU64(info, 2);
  int advice = static_cast<int>(ArgU32(info, 3));
  if (offset > m->length || length > m->length - offset) ThrowErrno(env, EINVAL, "madvise", "adviseMapping");
  if (::madvise(static_cast<char*>(m->addr) + offset, length, advice) != 0) ThrowErrno(env, errno, "madvise", "adviseMapping");
  return env.Undefined();
}

// releaseMapping(id): drops the registry's reference; pages are unmapped once no view holds them.
//
// A kvm_run mapping is also detached from its vCPU at once, off this thread. It holds its vCPU's
// file, and the vCPU holds the VM: the kernel tears a VM down only when the last of its vCPUs'
// mappings goes, whatever fds were closed before. Left to the views, that happened when the garbage
// collector freed the last one, on whichever thread ran the finalizer: under nested KVM ~45 ms each
// (12 in a row held the main thread for ~500 ms in the middle of a later burst of machines). So the
// mapping is swapped for anonymous memory of the same size (mmap MAP_FIXED over it) on the release
// thread, and the VM goes there and then; views that remain read zeros, and a late kick writes into
// nothing. The job holds a reference, so the address cannot be unmapped (and reused) before the
// swap; the swapped-in pages go with the last view. If the mmap fails, the old mapping (and the VM)
// is left to the last view, as before.
Napi::Value ReleaseMapping(const Napi::CallbackInfo& info) {
  uint32_t id = ArgU32(info, 0);
  std::shared_ptr<Mapping> m;
  {
    std::lock_guard<std::mutex> lock(gMutex);
    auto it = gMappings.find(id);
    if (it == gMappings.end()) return info.Env().Undefined();
    m = std::move(it->second);
    gMappings.erase(it);
  }
  if (m->isRun) {
    ReleaseLater([m = std::move(m)] {
      ::mmap(m->addr, m->length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    });
  }
  return info.Env().Undefined();
}

// setRunner(id): the calling thread is the one that calls KVM_RUN on this kvm_run; kicks target it.
Napi::Value SetRunner(const Napi::CallbackInfo& info) {
  auto m = FindMapping(ArgU32(info, 0));
  if (!m || !m->isRun) ThrowErrno(info.Env(), EBADF, "pthread_kill", "setRunner");
  InstallKickHandler();
  m->runner.store(info.Length() > 1 && info[1].ToBoolean() ? pthread_self() : 0);
  return info.Env().Undefined();
}

// kick(id): callable from any thread; makes the vCPU's current or next KVM_RUN return EINTR.
Napi::Value Kick(const Napi::CallbackInfo& info) {
  auto m = FindMapping(ArgU32(info, 0));
  if (!m || !m->isRun) ThrowErrno(info.Env(), EBADF, "pthread_kill", "kick");
  KickMapping(*m);
  return info.Env().Undefined();
}

}  // namespace

void InitMappings(Napi::Env env, Napi::Object exports) {
  exports.Set("mapAnonymous", Napi::Function::New(env, MapAnonymous, "mapAnonymous"));
  exports.Set("mapVcpuRun", Napi::Function::New(env, MapVcpuRun, "mapVcpuRun"));
  exports.Set("mappingBuffer", Napi::Function::New(env, MappingBuffer, "mappingBuffer"));
  exports.Set("adviseMapping", Napi::Function::New(env, AdviseMapping, "adviseMapping"));
  exports.Set("releaseMapping", Napi::Function::New(env, ReleaseMapping, "releaseMapping"));
  exports.Set("setRunner", Napi::Function::New(env, SetRunner, "setRunner"));
  exports.Set("kick", Napi::Function::New(env, Kick, "kick"));
}

// Used by vm.cc: the host address behind (mapping id, offset, size), bounds-checked.
void* MappingAddress(Napi::Env env, uint32_t id, uint64_t offset, uint64_t size) {
  auto m = FindMapping(id);
  if (!m || m->isRun) ThrowErrno(env, EBADF, "ioctl", "KVM_SET_USER_MEMORY_REGION");
  if (offset > m->length || size > m->length - offset) ThrowErrno(env, EINVAL, "ioctl", "KVM_SET_USER_MEMORY_REGION");
  return static_cast<uint8_t*>(m->addr) + offset;
}

}  // namespace nv
