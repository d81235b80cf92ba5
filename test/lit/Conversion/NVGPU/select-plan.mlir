// RUN: rbf-opt %s --attn-select-plan="arch=sm_90a" --split-input-file --verify-diagnostics | FileCheck %s

// sm_90a at head_dim 128: the wgmma kernel, two consumer warpgroups of 64
// rows, TMA copies, 160-key tiles for dot's scores without a mask and 128
// under one (the mma.sync plans of sm_90: select-plan-unmeasured.mlir);
// dot's softmax overlapped with the products.
// CHECK-LABEL: func.func @d128
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 160, warps = 8, stages = 2, key_terms = "bulk", copy = "tma", overlap = true>
// CHECK-NOT: small_plans
func.func @d128(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>, %v: tensor<?x?x?x128xbf16>) -> tensor<?x?x?x128xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x128xbf16>
}

// -----

// At head_dim 32 the kernel is compiled for three blocks per multiprocessor.
// CHECK-LABEL: func.func @d32
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2, blocks_per_sm = 3>
func.func @d32(%q: tensor<?x?x?x32xbf16>, %k: tensor<?x?x?x32xbf16>, %v: tensor<?x?x?x32xbf16>) -> tensor<?x?x?x32xbf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x32xbf16>, tensor<?x?x?x32xbf16>, tensor<?x?x?x32xbf16> -> tensor<?x?x?x32xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x32xbf16>
}

// -----

// A key bias at head_dim 128 that rides in S = Q K^T: the producer brings
// its terms by bulk copies, they start S's accumulators, and the scores
// are dot's (overlapped).
// CHECK-LABEL: func.func @rbf_d128
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 160, warps = 8, stages = 2, key_terms = "bulk", copy = "tma", overlap = true>
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

// -----

// Scores beyond dot's at head_dim 128 without a mask: 128-key tiles, the
// softmax overlapped with the products where nothing is gathered per
// element (softcapping's tanh)...
// CHECK-LABEL: func.func @softcap_d128
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 2, key_terms = "bulk", copy = "tma", overlap = true>
func.func @softcap_d128(%arg0: tensor<?x?x?x128xbf16>, %arg1: tensor<?x?x?x128xbf16>, %arg2: tensor<?x?x?x128xbf16>, %arg3: f32) -> tensor<?x?x?x128xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3 : f32) {capture_names = [], param_defaults = [5.000000e+01 : f32], param_names = ["cap"]} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %cap: f32):
    %1 = attn.dot : f32
    %2 = arith.divf %1, %cap : f32
    %3 = math.tanh %2 : f32
    %4 = arith.mulf %cap, %3 : f32
    attn.yield %4 : f32
  }
  return %0 : tensor<?x?x?x128xbf16>
}

// -----

// ...and overlapped too where the score reads a relative-position table:
// read once a diagonal through shared memory, its values hold no more
// registers than softcapping's tanh.
// CHECK-LABEL: func.func @relative_bias_d128
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 2, key_terms = "bulk", copy = "tma", overlap = true>
func.func @relative_bias_d128(%arg0: tensor<?x?x?x128xbf16>, %arg1: tensor<?x?x?x128xbf16>, %arg2: tensor<?x?x?x128xbf16>, %arg3: tensor<?x?xf32>) -> tensor<?x?x?x128xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 captures(%arg3 : tensor<?x?xf32>) {capture_names = ["bias"], param_defaults = [], param_names = []} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %bias: tensor<?x?xf32>):
    %1 = attn.dot : f32
    %2 = arith.subi %q_idx, %kv_idx : index
    %3 = attn.load %bias[%h, %2] : tensor<?x?xf32>
    %4 = arith.addf %1, %3 : f32
    attn.yield %4 : f32
  }
  return %0 : tensor<?x?x?x128xbf16>
}

// -----

// The same table at head_dim 64: the cooperative kernel at two blocks a
// multiprocessor, like dot (the staged reads spill nothing there).
// CHECK-LABEL: func.func @relative_bias_d64
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 128, warps = 8, stages = 2, blocks_per_sm = 2>
func.func @relative_bias_d64(%arg0: tensor<?x?x?x64xbf16>, %arg1: tensor<?x?x?x64xbf16>, %arg2: tensor<?x?x?x64xbf16>, %arg3: tensor<?x?xf32>) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 captures(%arg3 : tensor<?x?xf32>) {capture_names = ["bias"], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %bias: tensor<?x?xf32>):
    %1 = attn.dot : f32
    %2 = arith.subi %q_idx, %kv_idx : index
    %3 = attn.load %bias[%h, %2] : tensor<?x?xf32>
    %4 = arith.addf %1, %3 : f32
    attn.yield %4 : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}

// -----

// At head_dim 64 the cooperative wgmma kernel, two blocks a
// multiprocessor; RBF's key bias over q_scale is -||k||^2 / 2 at every gamma,
// so it rides in S = Q K^T, on dot's 128-key tiles. Its 64-row small kernel
// stays at one block a multiprocessor: the producer's warps computing the
// key terms of two blocks cost more than the second block hides.
// CHECK-LABEL: func.func @rbf_d64
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 128, warps = 8, stages = 2, key_terms = "product", blocks_per_sm = 2>
// CHECK-SAME: small_plans = [#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, key_terms = "producer", copy = "tma">, #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 64, tile_n = 128, warps = 4, stages = 4, key_terms = "producer", copy = "tma">]
func.func @rbf_d64(%arg0: tensor<?x?x?x64xbf16>, %arg1: tensor<?x?x?x64xbf16>, %arg2: tensor<?x?x?x64xbf16>, %arg3: f32) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3 : f32) {capture_names = [], log2_domain, param_defaults = [0.0883883461 : f32], param_names = ["gamma"]} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
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
  return %0 : tensor<?x?x?x64xbf16>
}

// -----

// A key bias whose ratio to q_scale depends on a parameter that can make
// q_scale zero (gamma, a factor of q_scale but not of the key bias -beta
// ||k||^2) stays apart: 64-key tiles, the terms copied by the threads.
// CHECK-LABEL: func.func @scaled_key_bias_d64
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 64, warps = 8, stages = 2, blocks_per_sm = 2>
func.func @scaled_key_bias_d64(%arg0: tensor<?x?x?x64xbf16>, %arg1: tensor<?x?x?x64xbf16>, %arg2: tensor<?x?x?x64xbf16>, %arg3: f32, %arg4: f32) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3, %arg4 : f32, f32) {capture_names = [], log2_domain, param_defaults = [0.0883883461 : f32, 1.0 : f32], param_names = ["gamma", "beta"]} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %1 = attn.scaled_dot : f32
    %2 = attn.key_bias : f32
    %3 = arith.addf %1, %2 : f32
    attn.yield %3 : f32
  } q_scale {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %cst = arith.constant 2.885390e+00 : f32
    %1 = arith.mulf %gamma, %cst : f32
    attn.yield %1 : f32
  } key_bias {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %cst = arith.constant 1.44269502 : f32
    %1 = attn.norm2 k : f32
    %2 = arith.mulf %beta, %cst : f32
    %3 = arith.mulf %2, %1 : f32
    %4 = arith.negf %3 : f32
    attn.yield %4 : f32
  } row_bias {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %1 = attn.norm2 q : f32
    %2 = arith.mulf %gamma, %1 : f32
    %3 = arith.negf %2 : f32
    attn.yield %3 : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}

// -----

// gamma a factor of the key bias as often as of q_scale, but read again
// inside another factor, -gamma (||k||^2 + gamma): the ratio depends on it,
// so the key bias stays apart.
// CHECK-LABEL: func.func @key_bias_reads_gamma_again_d64
// CHECK: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma_cooperative", tile_m = 128, tile_n = 64, warps = 8, stages = 2, blocks_per_sm = 2>
func.func @key_bias_reads_gamma_again_d64(%arg0: tensor<?x?x?x64xbf16>, %arg1: tensor<?x?x?x64xbf16>, %arg2: tensor<?x?x?x64xbf16>, %arg3: f32, %arg4: f32) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3, %arg4 : f32, f32) {capture_names = [], log2_domain, param_defaults = [0.0883883461 : f32, 1.0 : f32], param_names = ["gamma", "beta"]} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %1 = attn.scaled_dot : f32
    %2 = attn.key_bias : f32
    %3 = arith.addf %1, %2 : f32
    attn.yield %3 : f32
  } q_scale {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %cst = arith.constant 2.885390e+00 : f32
    %1 = arith.mulf %gamma, %cst : f32
    attn.yield %1 : f32
  } key_bias {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %cst = arith.constant 1.44269502 : f32
    %1 = attn.norm2 k : f32
    %2 = arith.addf %1, %gamma : f32
    %3 = arith.mulf %gamma, %cst : f32
    %4 = arith.mulf %3, %2 : f32
    %5 = arith.negf %4 : f32
    attn.yield %5 : f32
  } row_bias {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %beta: f32):
    %1 = attn.norm2 q : f32
    %2 = arith.mulf %gamma, %1 : f32
    %3 = arith.negf %2 : f32
    attn.yield %3 : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}

// -----

// Under a mask too (the mma.sync kernel's 32-key tiles with workspace
// loads: select-plan-unmeasured.mlir at sm_90 has the unmasked one), with
// 128-key tiles and the softmax overlapped with the products.
// CHECK-LABEL: func.func @rbf_causal_d128
// CHECK: kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 2, key_terms = "bulk", copy = "tma", overlap = true>
func.func @rbf_causal_d128(%arg0: tensor<?x?x?x128xbf16>, %arg1: tensor<?x?x?x128xbf16>, %arg2: tensor<?x?x?x128xbf16>, %arg3: f32) -> tensor<?x?x?x128xbf16> {
  %0 = attn.attention softmax %arg0, %arg1, %arg2 params(%arg3 : f32) {capture_names = [], log2_domain, param_defaults = [0.0883883461 : f32], param_names = ["gamma"]} : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16> -> tensor<?x?x?x128xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
    %1 = attn.scaled_dot : f32
    %2 = attn.key_bias : f32
    %3 = arith.addf %1, %2 : f32
    attn.yield %3 : f32
  } mask {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
    %1 = arith.cmpi sle, %kv_idx, %q_idx : index
    attn.yield %1 : i1
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
  } tile_class {
  ^bb0(%b: index, %h: index, %q_lo: index, %q_hi: index, %kv_lo: index, %kv_hi: index, %gamma: f32):
    %1 = arith.cmpi sle, %kv_hi, %q_lo : index
    %2 = arith.cmpi sgt, %kv_lo, %q_hi : index
    attn.yield %1, %2 : i1, i1
  }
  return %0 : tensor<?x?x?x128xbf16>
}

// -----

// Without a key bias, 128-key tiles. Beside the cooperative kernel, the
// warp-specialised one with TMA copies for problems too small to fill the
// device with it, and the same with 64-row tiles, two blocks a
// multiprocessor, for problems that leave its wave half empty or fill it
// up to twice (small-problems.test).
// CHECK-LABEL: func.func @d64
// CHECK: kernel = "wgmma_cooperative", tile_m = 128, tile_n = 128, warps = 8, stages = 2, blocks_per_sm = 2>
// CHECK-SAME: small_plans = [#attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 128, tile_n = 128, warps = 8, stages = 4, key_terms = "producer", copy = "tma">, #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 64, tile_n = 128, warps = 4, stages = 3, key_terms = "producer", blocks_per_sm = 2, copy = "tma">]
func.func @d64(%q: tensor<?x?x?x64xf16>, %k: tensor<?x?x?x64xf16>, %v: tensor<?x?x?x64xf16>) -> tensor<?x?x?x64xf16> {
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16>, tensor<?x?x?x64xf16> -> tensor<?x?x?x64xf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xf16>
}

// -----

// A mask that reads a capture per element (document ids) keeps mma.sync at
// head_dim 64: at two blocks a multiprocessor the gathers spilled.
// CHECK-LABEL: func.func @document_d64
// CHECK: kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>
// CHECK-NOT: small_plans
func.func @document_d64(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>, %doc: tensor<?x?xi32>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention softmax %q, %k, %v captures(%doc : tensor<?x?xi32>) {capture_names = ["doc"], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %d: tensor<?x?xi32>):
    %s = attn.dot : f32
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %d: tensor<?x?xi32>):
    %1 = attn.load %d[%b, %q_idx] : tensor<?x?xi32>
    %2 = attn.load %d[%b, %kv_idx] : tensor<?x?xi32>
    %3 = arith.cmpi eq, %1, %2 : i32
    attn.yield %3 : i1
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

// A capture read per head only (ALiBi's slopes, per-head gammas) does not
// gather per element: the cooperative kernel.
// CHECK-LABEL: func.func @per_head_d64
// CHECK: kernel = "wgmma_cooperative"
func.func @per_head_d64(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>, %g: tensor<?xf32>) -> tensor<?x?x?x64xbf16> {
  %o = attn.attention softmax %q, %k, %v captures(%g : tensor<?xf32>) {capture_names = ["g"], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gs: tensor<?xf32>):
    %s = attn.dot : f32
    %1 = attn.load %gs[%h] : tensor<?xf32>
    %2 = arith.mulf %s, %1 : f32
    attn.yield %2 : f32
  }
  return %o : tensor<?x?x?x64xbf16>
}

// -----

// A plan already set is kept, and is the only one.
// CHECK-LABEL: func.func @kept
// CHECK: tile_m = 64, tile_n = 32, warps = 4, stages = 3
// CHECK-NOT: small_plans
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
  // expected-error @below {{wgmma_cooperative kernels take bf16 or f16 inputs, not f32}}
  %o = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32> score {
  ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  return %o : tensor<?x?x?x64xf32>
}
