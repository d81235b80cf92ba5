// The plans of head dims and targets the H100 measurements did not choose:
// tiles on which ptxas spills nothing (scripts/ptxas-spills.sh) and one
// block per multiprocessor, so that ptxas spends registers before it spills.
// RUN: rbf-opt %s --attn-select-plan="arch=sm_80" --split-input-file | FileCheck %s --check-prefix=SM80
// RUN: rbf-opt %s --attn-select-plan="arch=sm_90" --split-input-file | FileCheck %s --check-prefix=SM90

// 64-key tiles up to head_dim 80; sm_90 keeps its measured plan at 128
// (sm_90a takes the wgmma kernel there: select-plan.mlir).
// SM80-LABEL: func.func @d80
// SM80: plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2, blocks_per_sm = 1>
// SM90-LABEL: func.func @d80
// SM90: plan = #attn.plan<arch = "sm_90", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2, blocks_per_sm = 1>
func.func @d80(%q: tensor<?x?x?x80xbf16>, %k: tensor<?x?x?x80xbf16>, %v: tensor<?x?x?x80xbf16>) -> tensor<?x?x?x80xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x80xbf16>, tensor<?x?x?x80xbf16>, tensor<?x?x?x80xbf16> -> tensor<?x?x?x80xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x80xbf16>
}

// -----

// SM80-LABEL: func.func @d96
// SM80: plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 32, warps = 4, stages = 2, blocks_per_sm = 1>
// SM90-LABEL: func.func @d96
// SM90: plan = #attn.plan<arch = "sm_90", kernel = "mma_sync", tile_m = 128, tile_n = 32, warps = 4, stages = 2, blocks_per_sm = 1>
func.func @d96(%q: tensor<?x?x?x96xbf16>, %k: tensor<?x?x?x96xbf16>, %v: tensor<?x?x?x96xbf16>) -> tensor<?x?x?x96xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x96xbf16>, tensor<?x?x?x96xbf16>, tensor<?x?x?x96xbf16> -> tensor<?x?x?x96xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x96xbf16>
}

// -----

// SM80-LABEL: func.func @d128
// SM80: plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 32, warps = 4, stages = 2, blocks_per_sm = 1>
// SM90-LABEL: func.func @d128
// SM90: plan = #attn.plan<arch = "sm_90", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>
func.func @d128(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>, %v: tensor<?x?x?x128xbf16>) -> tensor<?x?x?x128xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x128xbf16>
}

// -----

// One atom a warp above 128.
// SM80-LABEL: func.func @d240
// SM80: plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 64, tile_n = 32, warps = 4, stages = 2, blocks_per_sm = 1>
// SM90-LABEL: func.func @d240
// SM90: plan = #attn.plan<arch = "sm_90", kernel = "mma_sync", tile_m = 64, tile_n = 32, warps = 4, stages = 2, blocks_per_sm = 1>
func.func @d240(%q: tensor<?x?x?x240xbf16>, %k: tensor<?x?x?x240xbf16>, %v: tensor<?x?x?x240xbf16>) -> tensor<?x?x?x240xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x240xbf16>, tensor<?x?x?x240xbf16>, tensor<?x?x?x240xbf16> -> tensor<?x?x?x240xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x240xbf16>
}

// -----

// A key bias at 128 on sm_80 (no bulk copies): loaded from the workspace,
// with 32-key tiles.
// SM80-LABEL: func.func @rbf_d128
// SM80: plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 32, warps = 4, stages = 2, key_terms = "global", blocks_per_sm = 1>
// SM90-LABEL: func.func @rbf_d128
// SM90: plan = #attn.plan<arch = "sm_90", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2, key_terms = "bulk">
func.func @rbf_d128(%arg0: tensor<?x?x?x128xbf16>, %arg1: tensor<?x?x?x128xbf16>, %arg2: tensor<?x?x?x128xbf16>, %arg3: f32) -> tensor<?x?x?x128xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3 : f32) {capture_names = [], log2_domain, param_defaults = [0.0883883461 : f32], param_names = ["gamma"]} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
    %1 = attn.scaled_dot : f32
    %2 = attn.key_bias : f32
    %3 = arith.addf %1, %2 : f32
    attn.yield %3 : f32
  } q_scale {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
    %cst = arith.constant 2.885390e+00 : f32
    %1 = arith.mulf %gamma, %cst : f32
    attn.yield %1 : f32
  } key_bias {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
    %cst = arith.constant 1.44269502 : f32
    %1 = attn.norm2 k : f32
    %2 = arith.mulf %gamma, %cst : f32
    %3 = arith.mulf %2, %1 : f32
    %4 = arith.negf %3 : f32
    attn.yield %4 : f32
  } row_bias {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
    %1 = attn.norm2 q : f32
    %2 = arith.mulf %gamma, %1 : f32
    %3 = arith.negf %2 : f32
    attn.yield %3 : f32
  }
  return %0 : tensor<?x?x?x128xbf16>
}
