// The kernel's listed parameters become 128-byte grid-constant byval
// parameters, 64-byte aligned; the list goes. Other kernels are untouched.
// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --pass-pipeline='builtin.module(gpu.module(attn-tensor-map-params))' | FileCheck %s

module attributes {gpu.container_module} {
  gpu.module @kernels {
    // CHECK-LABEL: llvm.func @maps(
    // CHECK-SAME: %arg0: !llvm.ptr<1>, %arg1: i64,
    // CHECK-SAME: %arg2: !llvm.ptr {llvm.align = 64 : i64, llvm.byval = !llvm.array<128 x i8>, nvvm.grid_constant},
    // CHECK-SAME: %arg3: !llvm.ptr {llvm.align = 64 : i64, llvm.byval = !llvm.array<128 x i8>, nvvm.grid_constant})
    // CHECK-SAME: attributes {nvvm.kernel} {
    llvm.func @maps(%data: !llvm.ptr<1>, %n: i64, %key: !llvm.ptr, %value: !llvm.ptr) attributes {nvvm.kernel, rbfc.tensor_map_args = array<i64: 2, 3>} {
      llvm.return
    }
    // CHECK-LABEL: llvm.func @plain(
    // CHECK-SAME: %arg0: !llvm.ptr<1>) attributes {nvvm.kernel} {
    llvm.func @plain(%data: !llvm.ptr<1>) attributes {nvvm.kernel} {
      llvm.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @kernels {
    // expected-error @below {{rbfc.tensor_map_args on a function that is not a kernel}}
    llvm.func @device(%key: !llvm.ptr) attributes {rbfc.tensor_map_args = array<i64: 0>} {
      llvm.return
    }
  }
}

// -----

module attributes {gpu.container_module} {
  gpu.module @kernels {
    // expected-error @below {{tensor-map parameter 1 is not a pointer parameter of the kernel}}
    llvm.func @not_pointer(%key: !llvm.ptr, %n: i64) attributes {nvvm.kernel, rbfc.tensor_map_args = array<i64: 0, 1>} {
      llvm.return
    }
  }
}
