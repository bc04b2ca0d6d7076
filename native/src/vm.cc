// VM ioctls. Every function takes the VM fd as its first argument; the TS Vm class owns it.
#include <linux/kvm.h>

#include <vector>

#include "common.h"
#include "kvm_abi.h"

namespace nv {

void* MappingAddress(Napi::Env env, uint32_t id, uint64_t offset, uint64_t size);

namespace {

// KVM_SET_USER_MEMORY_REGION(vmFd, slot, flags, gpa, size, mappingId, mappingOffset).
// Kernel contract: the host range stays mapped until the slot is deleted (size 0) or the VM fd
// closes; the TS side keeps the mapping alive until then. Expected errors: EEXIST (overlap),
// EINVAL (alignment, slot number).
Napi::Value SetUserMemoryRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  kvm_userspace_memory_region r{};
  r.slot = ArgU32(info, 1);
  r.flags = ArgU32(info, 2);
  r.guest_phys_addr = ArgU64(info, 3);
  r.memory_size = ArgU64(info, 4);
  if (r.memory_size != 0)
    r.userspace_addr = reinterpret_cast<uint64_t>(MappingAddress(env, ArgU32(info, 5), ArgU64(info, 6), r.memory_size));
  NV_IOCTL(env, ArgFd(info, 0), KVM_SET_USER_MEMORY_REGION, &r);
  return env.Undefined();
}

Napi::Value SetTssAddr(const Napi::CallbackInfo& info) {
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_SET_TSS_ADDR, static_cast<unsigned long>(ArgU32(info, 1)));
  return info.Env().Undefined();
}

Napi::Value SetIdentityMapAddr(const Napi::CallbackInfo& info) {
  uint64_t addr = ArgU64(info, 1);
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_SET_IDENTITY_MAP_ADDR, &addr);
  return info.Env().Undefined();
}

Napi::Value CreateIrqchip(const Napi::CallbackInfo& info) {
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_CREATE_IRQCHIP, 0);
  return info.Env().Undefined();
}

// KVM_CREATE_PIT2(flags): KVM_PIT_SPEAKER_DUMMY (1) makes port 0x61 harmless.
Napi::Value CreatePit2(const Napi::CallbackInfo& info) {
  kvm_pit_config cfg{};
  cfg.flags = info.Length() > 1 ? ArgU32(info, 1) : 0;
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_CREATE_PIT2, &cfg);
  return info.Env().Undefined();
}

// KVM_IRQ_LINE(gsi, level): drives an in-kernel irqchip input.
Napi::Value IrqLine(const Napi::CallbackInfo& info) {
  kvm_irq_level l{};
  l.irq = ArgU32(info, 1);
  l.level = ArgU32(info, 2);
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_IRQ_LINE, &l);
  return info.Env().Undefined();
}

// KVM_IRQFD(eventfd, gsi, flags, resamplefd): a write to the eventfd raises the GSI in the kernel.
Napi::Value Irqfd(const Napi::CallbackInfo& info) {
  kvm_irqfd f{};
  f.fd = ArgU32(info, 1);
  f.gsi = ArgU32(info, 2);
  f.flags = info.Length() > 3 ? ArgU32(info, 3) : 0;
  f.resamplefd = info.Length() > 4 ? ArgU32(info, 4) : 0;
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_IRQFD, &f);
  return info.Env().Undefined();
}

// KVM_IOEVENTFD(addr, len, eventfd, flags, datamatch): a guest write to addr signals the eventfd
// without a userspace exit.
Napi::Value Ioeventfd(const Napi::CallbackInfo& info) {
  kvm_ioeventfd e{};
  e.addr = ArgU64(info, 1);
  e.len = ArgU32(info, 2);
  e.fd = static_cast<int32_t>(ArgU32(info, 3));
  e.flags = info.Length() > 4 ? ArgU32(info, 4) : 0;
  e.datamatch = info.Length() > 5 ? ArgU64(info, 5) : 0;
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_IOEVENTFD, &e);
  return info.Env().Undefined();
}

// KVM_REGISTER_COALESCED_MMIO(addr, size, pio): guest writes inside the zone (port I/O when pio is
// 1) are queued in the VM's coalesced ring, a page of every vCPU's kvm_run mapping, instead of
// exiting; userspace takes them from the ring at its next exit.
Napi::Value RegisterCoalescedIo(const Napi::CallbackInfo& info) {
  kvm_coalesced_mmio_zone z{};
  z.addr = ArgU64(info, 1);
  z.size = ArgU32(info, 2);
  z.pio = ArgU32(info, 3);
  NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_REGISTER_COALESCED_MMIO, &z);
  return info.Env().Undefined();
}

// KVM_SIGNAL_MSI(addressLo, addressHi, data, flags, devid) -> 1 delivered, 0 blocked by the guest.
Napi::Value SignalMsi(const Napi::CallbackInfo& info) {
  kvm_msi m{};
  m.address_lo = ArgU32(info, 1);
  m.address_hi = ArgU32(info, 2);
  m.data = ArgU32(info, 3);
  m.flags = info.Length() > 4 ? ArgU32(info, 4) : 0;
  m.devid = info.Length() > 5 ? ArgU32(info, 5) : 0;
  return Napi::Number::New(info.Env(), NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_SIGNAL_MSI, &m));
}

// KVM_SET_GSI_ROUTING(entries): `entries` holds nr kvm_irq_routing_entry records (48 bytes each).
Napi::Value SetGsiRouting(const Napi::CallbackInfo& info) {
  Bytes b = ArgBytes(info, 1);
  if (b.length % nv_sizeof_irq_routing_entry != 0) ThrowType(info.Env(), "KVM_SET_GSI_ROUTING: entries must be a multiple of 48 bytes");
  int r = nv_set_gsi_routing(ArgFd(info, 0), b.data, b.length / nv_sizeof_irq_routing_entry);
  if (r < 0) ThrowErrno(info.Env(), -r, "ioctl", "KVM_SET_GSI_ROUTING");
  return info.Env().Undefined();
}

// Struct-in/struct-out VM ioctls: the caller passes a buffer of exactly the struct's size.
#define NV_VM_STRUCT(Name, REQ, Type)                                      \
  Napi::Value Name(const Napi::CallbackInfo& info) {                      \
    Type* s = ArgStruct<Type>(info, 1, #REQ);                             \
    NV_IOCTL_NAMED(info.Env(), ArgFd(info, 0), REQ, #REQ, s);                         \
    return info.Env().Undefined();                                        \
  }
NV_VM_STRUCT(GetIrqchip, KVM_GET_IRQCHIP, kvm_irqchip)
NV_VM_STRUCT(SetIrqchip, KVM_SET_IRQCHIP, kvm_irqchip)
NV_VM_STRUCT(GetPit2, KVM_GET_PIT2, kvm_pit_state2)
NV_VM_STRUCT(SetPit2, KVM_SET_PIT2, kvm_pit_state2)
NV_VM_STRUCT(GetClock, KVM_GET_CLOCK, kvm_clock_data)
NV_VM_STRUCT(SetClock, KVM_SET_CLOCK, kvm_clock_data)
#undef NV_VM_STRUCT

// KVM_CREATE_VCPU(id) -> vCPU fd.
Napi::Value CreateVcpu(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), NV_IOCTL(info.Env(), ArgFd(info, 0), KVM_CREATE_VCPU, static_cast<unsigned long>(ArgU32(info, 1))));
}

}  // namespace

void InitVm(Napi::Env env, Napi::Object exports) {
  exports.Set("setUserMemoryRegion", Napi::Function::New(env, SetUserMemoryRegion, "setUserMemoryRegion"));
  exports.Set("setTssAddr", Napi::Function::New(env, SetTssAddr, "setTssAddr"));
  exports.Set("setIdentityMapAddr", Napi::Function::New(env, SetIdentityMapAddr, "setIdentityMapAddr"));
  exports.Set("createIrqchip", Napi::Function::New(env, CreateIrqchip, "createIrqchip"));
  exports.Set("createPit2", Napi::Function::New(env, CreatePit2, "createPit2"));
  exports.Set("irqLine", Napi::Function::New(env, IrqLine, "irqLine"));
  exports.Set("irqfd", Napi::Function::New(env, Irqfd, "irqfd"));
  exports.Set("ioeventfd", Napi::Function::New(env, Ioeventfd, "ioeventfd"));
  exports.Set("registerCoalescedIo", Napi::Function::New(env, RegisterCoalescedIo, "registerCoalescedIo"));
  exports.Set("signalMsi", Napi::Function::New(env, SignalMsi, "signalMsi"));
  exports.Set("setGsiRouting", Napi::Function::New(env, SetGsiRouting, "setGsiRouting"));
  exports.Set("getIrqchip", Napi::Function::New(env, GetIrqchip, "getIrqchip"));
  exports.Set("setIrqchip", Napi::Function::New(env, SetIrqchip, "setIrqchip"));
  exports.Set("getPit2", Napi::Function::New(env, GetPit2, "getPit2"));
  exports.Set("setPit2", Napi::Function::New(env, SetPit2, "setPit2"));
  exports.Set("getClock", Napi::Function::New(env, GetClock, "getClock"));
  exports.Set("setClock", Napi::Function::New(env, SetClock, "setClock"));
  exports.Set("createVcpu", Napi::Function::New(env, CreateVcpu, "createVcpu"));
}

}  // namespace nv
