// Kernel objects whose last release is slow, released on a thread of the addon's own.
//
// Closing the last reference to a VM tears it down in the closing thread (on return from the
// syscall): under nested KVM ~45 ms, a few on hardware, which must not land on a thread that runs
// an event loop or a vCPU. ReleaseLater queues the work for one thread, started at the first use and
// never joined; jobs run in order.
#pragma once

#include <functional>

namespace nv {

void ReleaseLater(std::function<void()> job);

}  // namespace nv
