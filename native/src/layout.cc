// Exposes the C layout table (kvm_abi.c) to JS as `layout`: { 'kvm_run.exit_reason': 8, ... }.
#include "common.h"
#include "kvm_abi.h"

namespace nv {

void InitLayout(Napi::Env env, Napi::Object exports) {
  Napi::Object o = Napi::Object::New(env);
  for (size_t i = 0; i < nv_layout_count; i++) o.Set(nv_layout[i].name, Napi::Number::New(env, nv_layout[i].value));
  o.Freeze();
  exports.Set("layout", o);
}

}  // namespace nv
