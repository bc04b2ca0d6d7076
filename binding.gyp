{
  "targets": [
    {
      "target_name": "nodevisor",
      "sources": [
        "native/src/addon.cc",
        "native/src/eventfd.cc",
        "native/src/fdio.cc",
        "native/src/kvm_abi.c",
        "native/src/layout.cc",
        "native/src/loop_vcpu.cc",
        "native/src/mappings.cc",
        "native/src/release_later.cc",
        "native/src/system.cc",
        "native/src/vcpu.cc",
        "native/src/vm.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra"]
    }
  ]
}
