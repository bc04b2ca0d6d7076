// The KVM ioctls whose argument structs end in a flexible array member, and the struct layout table.
//
// Why C: the kernel's uapi headers declare those arrays with __DECLARE_FLEX_ARRAY, which under C++
// gives the struct a different size (kvm_cpuid2 is 12 bytes instead of 8, kvm_xsave 4100 instead of
// 4096), and since _IOWR() encodes sizeof() in the request number, C++ code would send request
// numbers the kernel rejects with EINVAL. Everything that depends on those sizes is compiled as C.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct nv_layout_entry {
  const char* name;
  size_t value;
};
extern const struct nv_layout_entry nv_layout[];
extern const size_t nv_layout_count;

// Each returns >= 0 on success and -errno on failure.
int nv_get_supported_cpuid(int kvm_fd, void* entries, uint32_t* nent);     // KVM_GET_SUPPORTED_CPUID
int nv_set_cpuid2(int vcpu_fd, const void* entries, uint32_t nent);        // KVM_SET_CPUID2
int nv_msr_index_list(int kvm_fd, uint32_t* indices, uint32_t* n);         // KVM_GET_MSR_INDEX_LIST
int nv_get_msrs(int vcpu_fd, void* entries, uint32_t n);                   // KVM_GET_MSRS
int nv_set_msrs(int vcpu_fd, const void* entries, uint32_t n);             // KVM_SET_MSRS
int nv_set_gsi_routing(int vm_fd, const void* entries, uint32_t n);        // KVM_SET_GSI_ROUTING
int nv_get_xsave(int vcpu_fd, void* xsave);                                // KVM_GET_XSAVE
int nv_set_xsave(int vcpu_fd, const void* xsave);                          // KVM_SET_XSAVE
extern const size_t nv_sizeof_xsave, nv_sizeof_cpuid_entry2, nv_sizeof_msr_entry, nv_sizeof_irq_routing_entry;

#ifdef __cplusplus
}
#endif
