// Memory mappings shared by every thread of the process: guest RAM and each vCPU's kvm_run.
//
// A view (an ArrayBuffer or SharedArrayBuffer over the pages) belongs to one isolate, but a vCPU
// runs in a worker thread while the main thread also needs a view, so mappings live in a
// process-wide registry keyed by a small id. Each isolate asks for its own view of the same pages;
// every view holds a reference, so the pages stay mapped until the registry entry is released and
// the last view is garbage-collected (a kvm_run mapping is swapped for zeros when released, since
// it keeps its vCPU and so its whole VM alive: mappings.cc, ReleaseMapping). KVM's contract for a
// memory slot (the pages stay mapped until the slot is deleted or the VM fd is closed) is kept by
// the TS Vm, which releases RAM only after closing the VM.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <pthread.h>

namespace nv {

struct Mapping {
  void* addr = nullptr;
  size_t length = 0;
  bool isRun = false;                     // a vCPU's kvm_run page(s)
  std::atomic<pthread_t> runner{0};       // thread currently allowed to be kicked (kvm_run only)
  ~Mapping();
};

std::shared_ptr<Mapping> FindMapping(uint32_t id);

// Sends the kick signal to the thread registered on a kvm_run mapping, after setting immediate_exit
// so that a KVM_RUN entered after the signal also returns EINTR at once.
void KickMapping(Mapping& m);

// The signal used to kick a vCPU thread out of KVM_RUN (handler does nothing, installed once,
// without SA_RESTART so that the ioctl returns EINTR).
int KickSignal();
void InstallKickHandler();

}  // namespace nv
