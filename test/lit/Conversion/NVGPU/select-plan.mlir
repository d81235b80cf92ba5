// RUN: rbf-opt %s --attn-select-plan="arch=sm_90a" --split-input-file --verify-diagnostics | FileCheck %s

// Four warps of 32 rows (two m16 atoms) each, 64-key tiles.
// CHECK-LABEL: func.func @d128
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>
func.func @d128(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>, %v: tensor<?x?x?x128xbf16>) -> tensor<?x?x?x128xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x128xbf16>
}

// -----

// The same at head_dim 64 (wider key tiles measured slower on the H100).
// CHECK-LABEL: func.func @d64
// CHECK: tile_m = 128, tile_n = 64, warps = 4, stages = 2
func.func @d64(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) -> tensor<?x?x?x64xf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xf16>
}

// -----

// A plan already set is kept.
// CHECK-LABEL: func.func @kept
// CHECK: tile_m = 64, tile_n = 32, warps = 4, stages = 3
func.func @kept(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 64, tile_n = 32, warps = 4, stages = 3>} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

func.func @bad_tile(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  // expected-error @below {{tile_m must be 16, 32 or 64 x warps}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 96, tile_n = 64, warps = 4, stages = 2>} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

func.func @other_arch(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  // expected-error @below {{has a plan for sm_80 but the target is sm_90a}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = [], plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 8, stages = 2>} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

func.func @f32_inputs(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>) -> tensor<?x?x?x64xf32> {
  // expected-error @below {{mma_sync kernels take bf16 or f16 inputs, not f32}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xf32>
}
