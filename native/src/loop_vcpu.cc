// A vCPU that runs on a thread with an event loop (design.md, threads rule 2).
//
// A thread inside KVM_RUN is not running its event loop. So the vCPU runs only where the loop would
// otherwise sleep: in a prepare callback, just before libuv polls. Meanwhile a helper thread waits
// on what the loop would have waited on: libuv's backend fd, until the loop's next timer. The moment
// the loop has work, the helper kicks the vCPU out of KVM_RUN, the callback returns, and the loop
// polls and runs its callbacks as usual; the next prepare enters the guest again.
//
// nodevisor uses this for a machine's first milliseconds, before a vCPU worker thread is ready (a
// worker costs ~50 ms of Node start-up), so that a guest that exits at once never needs one. What
// the callback does, and when the vCPU moves to a worker, is TypeScript's business.
//
// One such vCPU per process at a time: there is one helper thread.
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "common.h"
#include "mappings.h"

namespace nv {
namespace {

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// The helper thread's orders. It is started once and never joined: it waits on `cv` while disarmed.
struct Watch {
  std::mutex mu;
  std::condition_variable cv;
  std::shared_ptr<Mapping> target;  // the vCPU to kick; null while disarmed
  int backendFd = -1;
  int64_t deadlineMs = -1;          // CLOCK_MONOTONIC ms of the loop's next timer; -1: none
  uint64_t generation = 0;          // bumped by every arm and disarm
  int wakeFd = -1;                  // eventfd: ends the helper's poll when its orders change
  bool started = false;
};
// Never destroyed: at exit, glibc's pthread_cond_destroy would wait for the helper blocked on `cv`.
Watch& gWatch = *new Watch;

void HelperMain() {
  std::unique_lock<std::mutex> lk(gWatch.mu);
  for (;;) {
    gWatch.cv.wait(lk, [] { return gWatch.target != nullptr; });
    std::shared_ptr<Mapping> target = gWatch.target;
    const uint64_t generation = gWatch.generation;
    struct pollfd fds[2] = {{gWatch.backendFd, POLLIN, 0}, {gWatch.wakeFd, POLLIN, 0}};
    int timeout = gWatch.deadlineMs < 0 ? -1 : static_cast<int>(std::max<int64_t>(0, gWatch.deadlineMs - NowMs()));
    lk.unlock();
    // Polling the epoll fd only reports that it has events; the loop still receives them itself.
    int r = ::poll(fds, 2, timeout);
    if (r > 0 && (fds[1].revents & POLLIN)) {
      uint64_t v;
      if (::read(gWatch.wakeFd, &v, sizeof v) < 0) { /* already drained */ }
    }
    lk.lock();
    if (gWatch.generation != generation || r < 0) continue;  // new orders, or EINTR: look again
    if (r == 0 || fds[0].revents != 0) {
      // The loop has work (or a timer is due): kick once, then wait to be armed again.
      KickMapping(*target);
      gWatch.target = nullptr;
    }
  }
}

void Arm(std::shared_ptr<Mapping> target, int backendFd, int timeoutMs) {
  {
    std::lock_guard<std::mutex> lk(gWatch.mu);
    gWatch.target = std::move(target);
    gWatch.backendFd = backendFd;
    gWatch.deadlineMs = timeoutMs < 0 ? -1 : NowMs() + timeoutMs;
    gWatch.generation++;
  }
  gWatch.cv.notify_one();
}

void Disarm() {
  {
    std::lock_guard<std::mutex> lk(gWatch.mu);
    if (!gWatch.target) return;  // the helper kicked, and disarmed itself
    gWatch.target = nullptr;
    gWatch.generation++;
  }
  uint64_t one = 1;
  if (::write(gWatch.wakeFd, &one, sizeof one) < 0) { /* counter full: the helper wakes anyway */ }
}

// The one running loop vCPU: its prepare handle, its callback and the kvm_run it kicks.
struct LoopVcpu {
  uv_prepare_t prepare;
  uv_idle_t again;  // active: the loop must not sleep, so that OnPrepare comes round again at once
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  std::shared_ptr<Mapping> run;
  int closedHandles = 0;
  bool inCallback = false;
  bool stopped = false;
};
LoopVcpu* gActive = nullptr;

void Release(LoopVcpu* lv);

void OnPrepare(uv_prepare_t* handle) {
  auto* lv = static_cast<LoopVcpu*>(handle->data);
  uv_loop_t* loop = handle->loop;
  uv_idle_stop(&lv->again);
  // 0: the loop has something to do first (an immediate, a pending callback, fds not yet added to
  // its epoll set, which the helper's poll could not see). Let it do that without sleeping, and
  // come back on the next iteration.
  int timeout = uv_backend_timeout(loop);
  if (timeout == 0) {
    uv_idle_start(&lv->again, [](uv_idle_t*) {});
    return;
  }
  Arm(lv->run, uv_backend_fd(loop), timeout);
  napi_env env = lv->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value fn, recv, result;
  napi_get_reference_value(env, lv->callback, &fn);
  napi_get_global(env, &recv);  // make_callback wants an object as `this`
  // make_callback: nextTicks and promise jobs queued by the callback run when it returns.
  lv->inCallback = true;
  napi_status st = napi_make_callback(env, lv->context, recv, fn, 0, nullptr, &result);
  lv->inCallback = false;
  if (st == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);  // a bug of ours: 'uncaughtException', as from any callback
  }
  napi_close_handle_scope(env, scope);
  Disarm();
  if (lv->stopped) Release(lv);  // loopVcpuStop() was called from the callback
  // The guest ran for a while; without this the loop would time its poll from a stale clock and
  // sleep past a due timer.
  uv_update_time(loop);
}

// Frees what Start() took; the memory goes when both handles are closed.
void Release(LoopVcpu* lv) {
  napi_delete_reference(lv->env, lv->callback);
  napi_async_destroy(lv->env, lv->context);
  lv->run.reset();
  auto closed = [](uv_handle_t* h) {
    auto* owner = static_cast<LoopVcpu*>(h->data);
    if (++owner->closedHandles == 2) delete owner;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&lv->prepare), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&lv->again), closed);
}

void Stop() {
  if (!gActive) return;
  LoopVcpu* lv = gActive;
  gActive = nullptr;
  Disarm();
  uv_prepare_stop(&lv->prepare);
  uv_idle_stop(&lv->again);
  lv->stopped = true;
  // From inside the callback, its reference and async context are still in use: OnPrepare releases them.
  if (!lv->inCallback) Release(lv);
}

// loopVcpuStart(runMappingId, callback): from now on `callback` runs before every poll of this
// thread's event loop that would wait, with the vCPU of that kvm_run kicked out of KVM_RUN as soon as
// the loop has work. The callback must enter the guest only after setRunner(id, true).
Napi::Value LoopVcpuStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto run = FindMapping(ArgU32(info, 0));
  if (!run || !run->isRun) ThrowErrno(env, EBADF, "uv_prepare_start", "loopVcpuStart");
  if (info.Length() < 2 || !info[1].IsFunction()) ThrowType(env, "argument 1: expected a function");
  if (gActive) ThrowErrno(env, EBUSY, "uv_prepare_start", "loopVcpuStart");
  {
    std::lock_guard<std::mutex> lk(gWatch.mu);
    if (!gWatch.started) {
      gWatch.wakeFd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (gWatch.wakeFd < 0) ThrowErrno(env, errno, "eventfd", "loopVcpuStart");
      std::thread(HelperMain).detach();
      gWatch.started = true;
    }
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) ThrowErrno(env, EINVAL, "uv_prepare_start", "loopVcpuStart");
  auto* lv = new LoopVcpu();
  lv->env = env;
  lv->run = std::move(run);
  napi_create_reference(env, info[1], 1, &lv->callback);
  napi_async_init(env, info[1], Napi::String::New(env, "nodevisor:loopVcpu"), &lv->context);
  uv_prepare_init(loop, &lv->prepare);
  uv_idle_init(loop, &lv->again);
  lv->prepare.data = lv;
  lv->again.data = lv;
  uv_prepare_start(&lv->prepare, OnPrepare);
  gActive = lv;
  return env.Undefined();
}

// loopVcpuStop(): no more callbacks; the loop no longer stays alive for the vCPU.
Napi::Value LoopVcpuStop(const Napi::CallbackInfo& info) {
  Stop();
  return info.Env().Undefined();
}

}  // namespace

void InitLoopVcpu(Napi::Env env, Napi::Object exports) {
  exports.Set("loopVcpuStart", Napi::Function::New(env, LoopVcpuStart, "loopVcpuStart"));
  exports.Set("loopVcpuStop", Napi::Function::New(env, LoopVcpuStop, "loopVcpuStop"));
}

}  // namespace nv
