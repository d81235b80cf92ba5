// RUN: rbf-opt %s --pass-pipeline='builtin.module(gpu.module(attn-approximate-tanh))' | FileCheck %s

// A kernel's f32 tanh becomes the intrinsic with afn, which NVPTX selects as
// tanh.approx.f32; other element types stay math.tanh (libdevice), and so
// does every tanh of a kernel marked rbfc.exact_functions (the backward's
// gradient kernels), whose mark goes.
module attributes {gpu.container_module} {
  gpu.module @kernels {
    // CHECK-LABEL: func.func @softcap
    // CHECK: %[[T:.+]] = llvm.intr.tanh(%{{.+}}) {fastmathFlags = #llvm.fastmath<afn>} : (f32) -> f32
    // CHECK: arith.mulf %{{.+}}, %[[T]] : f32
    // CHECK: math.tanh %{{.+}} : f64
    // CHECK-NOT: math.tanh %{{.+}} : f32
    func.func @softcap(%s: f32, %cap: f32, %wide: f64) -> (f32, f64) {
      %x = arith.divf %s, %cap : f32
      %t = math.tanh %x : f32
      %c = arith.mulf %cap, %t : f32
      %w = math.tanh %wide : f64
      return %c, %w : f32, f64
    }
    // CHECK-LABEL: func.func @gradient
    // CHECK-NOT: rbfc.exact_functions
    // CHECK: math.tanh %{{.+}} : f32
    // CHECK-NOT: llvm.intr.tanh
    func.func @gradient(%s: f32) -> f32 attributes {rbfc.exact_functions} {
      %t = math.tanh %s : f32
      return %t : f32
    }
  }
}
