// vCPU ioctls. Every function takes the vCPU fd first; the TS Vcpu class owns it.
#include <linux/kvm.h>

#include <vector>

#include "common.h"
#include "kvm_abi.h"

namespace nv {
namespace {

// KVM_RUN -> 0 when the vCPU exited (read kvm_run.exit_reason), or -EINTR / -EAGAIN when it was
// kicked or must simply be re-entered: those are normal control flow, so they are returned, not thrown.
// This is the hot path: raw Node-API, no allocation.
napi_value Run(napi_env env, napi_callback_info cbinfo) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, nullptr);
  int32_t fd = -1;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, nullptr, "run: expected a vCPU fd");
    return nullptr;
  }
  int r = ::ioctl(fd, KVM_RUN, 0);
  int result = 0;
  if (r < 0) {
    int e = errno;
    if (e == EINTR || e == EAGAIN) {
      result = -e;
    } else {
      try {
        ThrowErrno(Napi::Env(env), e, "ioctl", "KVM_RUN");
      } catch (const Napi::Error& err) {
        err.ThrowAsJavaScriptException();
        return nullptr;
      }
    }
  }
  napi_value out;
  napi_create_int32(env, result, &out);
  return out;
}

#define NV_VCPU_STRUCT(Name, REQ, Type)                                    \
  Napi::Value Name(const Napi::CallbackInfo& info) {                      \
    Type* s = ArgStruct<Type>(info, 1, #REQ);                             \
    NV_IOCTL_NAMED(info.Env(), ArgFd(info, 0), REQ, #REQ, s);                         \
    return info.Env().Undefined();                                        \
  }
NV_VCPU_STRUCT(GetRegs, KVM_GET_REGS, kvm_regs)
NV_VCPU_STRUCT(SetRegs, KVM_SET_REGS, kvm_regs)
NV_VCPU_STRUCT(GetSregs, KVM_GET_SREGS, kvm_sregs)
NV_VCPU_STRUCT(SetSregs, KVM_SET_SREGS, kvm_sregs)
NV_VCPU_STRUCT(GetFpu, KVM_GET_FPU, kvm_fpu)
NV_VCPU_STRUCT(SetFpu, KVM_SET_FPU, kvm_fpu)
NV_VCPU_STRUCT(GetLapic, KVM_GET_LAPIC, kvm_lapic_state)
NV_VCPU_STRUCT(SetLapic, KVM_SET_LAPIC, kvm_lapic_state)
NV_VCPU_STRUCT(GetXcrs, KVM_GET_XCRS, kvm_xcrs)
NV_VCPU_STRUCT(SetXcrs, KVM_SET_XCRS, kvm_xcrs)
NV_VCPU_STRUCT(GetMpState, KVM_GET_MP_STATE, kvm_mp_state)
NV_VCPU_STRUCT(SetMpState, KVM_SET_MP_STATE, kvm_mp_state)
NV_VCPU_STRUCT(GetVcpuEvents, KVM_GET_VCPU_EVENTS, kvm_vcpu_events)
NV_VCPU_STRUCT(SetVcpuEvents, KVM_SET_VCPU_EVENTS, kvm_vcpu_events)
#undef NV_VCPU_STRUCT

// KVM_SET_CPUID2(entries): `entries` holds nent kvm_cpuid_entry2 records (40 bytes each).
Napi::Value SetCpuid2(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1);
  if (b.length % nv_sizeof_cpuid_entry2 != 0) ThrowType(info.Env(), "KVM_SET_CPUID2: entries must be a multiple of 40 bytes");
  int r = nv_set_cpuid2(ArgFd(info, 0), b.data, b.length / nv_sizeof_cpuid_entry2);
  if (r < 0) ThrowErrno(info.Env(), -r, "ioctl", "KVM_SET_CPUID2");
  return info.Env().Undefined();
}

// KVM_GET_MSRS / KVM_SET_MSRS(entries): `entries` holds n kvm_msr_entry records (16 bytes each:
// index, reserved, data). Returns how many were processed; GET fills in the data in place.
Napi::Value GetMsrs(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1);
  if (b.length % nv_sizeof_msr_entry != 0) ThrowType(info.Env(), "KVM_GET_MSRS: entries must be a multiple of 16 bytes");
  int r = nv_get_msrs(ArgFd(info, 0), b.data, b.length / nv_sizeof_msr_entry);
  if (r < 0) ThrowErrno(info.Env(), -r, "ioctl", "KVM_GET_MSRS");
  return Napi::Number::New(info.Env(), r);
}
Napi::Value SetMsrs(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1);
  if (b.length % nv_sizeof_msr_entry != 0) ThrowType(info.Env(), "KVM_SET_MSRS: entries must be a multiple of 16 bytes");
  int r = nv_set_msrs(ArgFd(info, 0), b.data, b.length / nv_sizeof_msr_entry);
  if (r < 0) ThrowErrno(info.Env(), -r, "ioctl", "KVM_SET_MSRS");
  return Napi::Number::New(info.Env(), r);
}

// KVM_GET_XSAVE / KVM_SET_XSAVE: a 4096-byte buffer (the legacy-sized area).
Napi::Value GetXsave(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1);
  if (b.length != nv_sizeof_xsave) ThrowType(info.Env(), "KVM_GET_XSAVE: expected a 4096-byte buffer");
  int r = nv_get_xsave(ArgFd(info, 0), b.data);
  if (r < 0) ThrowErrno(info.Env(), -r, "ioctl", "KVM_GET_XSAVE");
  return info.Env().Undefined();
}
Napi::Value SetXsave(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1);
  if (b.length != nv_sizeof_xsave) ThrowType(info.Env(), "KVM_SET_XSAVE: expected a 4096-byte buffer");
  int r = nv_set_xsave(ArgFd(info, 0), b.data);
  if (r < 0) ThrowErrno(info.Env(), -r, "ioctl", "KVM_SET_XSAVE");
  return info.Env().Undefined();
}

}  // namespace

void InitVcpu(Napi::Env env, Napi::Object exports) {
  napi_value run;
  napi_create_function(env, "run", NAPI_AUTO_LENGTH, Run, nullptr, &run);
  exports.Set("run", Napi::Value(env, run));
  exports.Set("getRegs", Napi::Function::New(env, GetRegs, "getRegs"));
  exports.Set("setRegs", Napi::Function::New(env, SetRegs, "setRegs"));
  exports.Set("getSregs", Napi::Function::New(env, GetSregs, "getSregs"));
  exports.Set("setSregs", Napi::Function::New(env, SetSregs, "setSregs"));
  exports.Set("getFpu", Napi::Function::New(env, GetFpu, "getFpu"));
  exports.Set("setFpu", Napi::Function::New(env, SetFpu, "setFpu"));
  exports.Set("getLapic", Napi::Function::New(env, GetLapic, "getLapic"));
  exports.Set("setLapic", Napi::Function::New(env, SetLapic, "setLapic"));
  exports.Set("getXsave", Napi::Function::New(env, GetXsave, "getXsave"));
  exports.Set("setXsave", Napi::Function::New(env, SetXsave, "setXsave"));
  exports.Set("getXcrs", Napi::Function::New(env, GetXcrs, "getXcrs"));
  exports.Set("setXcrs", Napi::Function::New(env, SetXcrs, "setXcrs"));
  exports.Set("getMpState", Napi::Function::New(env, GetMpState, "getMpState"));
  exports.Set("setMpState", Napi::Function::New(env, SetMpState, "setMpState"));
  exports.Set("getVcpuEvents", Napi::Function::New(env, GetVcpuEvents, "getVcpuEvents"));
  exports.Set("setVcpuEvents", Napi::Function::New(env, SetVcpuEvents, "setVcpuEvents"));
  exports.Set("setCpuid2", Napi::Function::New(env, SetCpuid2, "setCpuid2"));
  exports.Set("getMsrs", Napi::Function::New(env, GetMsrs, "getMsrs"));
  exports.Set("setMsrs", Napi::Function::New(env, SetMsrs, "setMsrs"));
}

}  // namespace nv
