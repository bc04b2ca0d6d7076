// nodevisor's native addon: one function per KVM ioctl (or small family), plus the mmaps behind
// kvm_run and guest RAM, the vCPU kick, and the event-loop hook for a vCPU on the main thread.
// Policy and device logic live in TypeScript.
#include <linux/kvm.h>
#include <sys/mman.h>

#include "common.h"
#include "mappings.h"

namespace nv {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InitSystem(env, exports);
  InitVm(env, exports);
  InitVcpu(env, exports);
  InitMappings(env, exports);
  InitEventfd(env, exports);
  InitFdio(env, exports);
  InitLayout(env, exports);
  InitLoopVcpu(env, exports);
  exports.Set("kickSignal", Napi::Number::New(env, KickSignal()));
  return exports;
}

}  // namespace nv

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return nv::Init(env, exports); }

NODE_API_MODULE(nodevisor, InitAddon)
