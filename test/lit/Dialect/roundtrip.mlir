// RUN: rbf-opt %s | rbf-opt | FileCheck %s
// RUN: rbf-opt %s -mlir-print-op-generic | rbf-opt | FileCheck %s

// Every attn op and every optional part of attn.attention prints in a form
// that parses back to the same op: the custom form, and the generic form.

!qkv = tensor<?x?x?x64xbf16>

// The smallest op: a score region and nothing else.
// CHECK-LABEL: func.func @score_only
// CHECK: %[[O:.*]] = attn.attention softmax %{{.*}}, %{{.*}}, %{{.*}} {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
// CHECK-NEXT: ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
// CHECK-NEXT: %[[D:.*]] = attn.dot : f32
// CHECK-NEXT: attn.yield %[[D]] : f32
// CHECK-NEXT: }
// CHECK-NEXT: return %[[O]]
func.func @score_only(%q: !qkv, %k: !qkv, %v: !qkv) -> !qkv {
  %o = attn.attention softmax %q, %k, %v
      {capture_names = [], param_defaults = [], param_names = []}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return %o : !qkv
}

// Parameters and captures: their block arguments take their names, a unit
// default means the caller must pass the parameter.
// CHECK-LABEL: func.func @params_and_captures
// CHECK-SAME: (%[[Q:.*]]: tensor<?x?x?x64xbf16>, %[[K:.*]]: tensor<?x?x?x64xbf16>, %[[V:.*]]: tensor<?x?x?x64xbf16>, %[[G:.*]]: f32, %[[W:.*]]: i32, %[[BIAS:.*]]: tensor<?x?xf32>, %[[IDS:.*]]: tensor<4xi64>)
// CHECK: attn.attention softmax %[[Q]], %[[K]], %[[V]] params(%[[G]], %[[W]] : f32, i32) captures(%[[BIAS]], %[[IDS]] : tensor<?x?xf32>, tensor<4xi64>)
// CHECK-SAME: {capture_names = ["bias", "ids"], param_defaults = [1.250000e-01 : f32, unit], param_names = ["gamma", "window"]}
// CHECK-NEXT: ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32, %window: i32, %bias: tensor<?x?xf32>, %ids: tensor<4xi64>):
// CHECK-NEXT: %[[X:.*]] = attn.load %bias[%h, %kv_idx] : tensor<?x?xf32>
// CHECK-NEXT: %{{.*}} = attn.load %ids[%b] : tensor<4xi64>
// CHECK-NEXT: %[[S:.*]] = arith.mulf %gamma, %[[X]] : f32
// CHECK-NEXT: attn.yield %[[S]] : f32
func.func @params_and_captures(%q: !qkv, %k: !qkv, %v: !qkv, %g: f32, %w: i32,
                               %bias: tensor<?x?xf32>, %ids: tensor<4xi64>) -> !qkv {
  %o = attn.attention softmax %q, %k, %v params(%g, %w : f32, i32)
      captures(%bias, %ids : tensor<?x?xf32>, tensor<4xi64>)
      {capture_names = ["bias", "ids"], param_defaults = [1.250000e-01 : f32, unit],
       param_names = ["gamma", "window"]}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %gm: f32, %wn: i32,
       %bs: tensor<?x?xf32>, %is: tensor<4xi64>):
    %x = attn.load %bs[%h, %j] : tensor<?x?xf32>
    %n = attn.load %is[%b] : tensor<4xi64>
    %s = arith.mulf %gm, %x : f32
    attn.yield %s : f32
  }
  return %o : !qkv
}

// The optional log-sum-exp result, under `none` normalisation, with grouped
// query heads (8 query heads share 2 key/value heads) and static sizes.
// CHECK-LABEL: func.func @lse_none_gqa
// CHECK: %[[R:.*]]:2 = attn.attention none %{{.*}}, %{{.*}}, %{{.*}} {{.*}} : tensor<2x8x128x64xf16>, tensor<2x2x256x64xf16>, tensor<2x2x256x32xf16> -> tensor<2x8x128x32xf16>, tensor<2x8x128xf32> score {
// CHECK: return %[[R]]#0, %[[R]]#1
func.func @lse_none_gqa(%q: tensor<2x8x128x64xf16>, %k: tensor<2x2x256x64xf16>,
                        %v: tensor<2x2x256x32xf16>)
    -> (tensor<2x8x128x32xf16>, tensor<2x8x128xf32>) {
  %o, %lse = attn.attention none %q, %k, %v
      {capture_names = [], param_defaults = [], param_names = []}
      : tensor<2x8x128x64xf16>, tensor<2x2x256x64xf16>, tensor<2x2x256x32xf16>
        -> tensor<2x8x128x32xf16>, tensor<2x8x128xf32>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dist2 : f32
    %n = arith.negf %d : f32
    attn.yield %n : f32
  }
  return %o, %lse : tensor<2x8x128x32xf16>, tensor<2x8x128xf32>
}

// The mask reads indices and captures only.
// CHECK-LABEL: func.func @mask
// CHECK: } mask {
// CHECK-NEXT: ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %doc: tensor<?xi32>):
// CHECK-NEXT: %[[DQ:.*]] = attn.load %doc[%q_idx] : tensor<?xi32>
// CHECK-NEXT: %[[DK:.*]] = attn.load %doc[%kv_idx] : tensor<?xi32>
// CHECK-NEXT: %[[SAME:.*]] = arith.cmpi eq, %[[DQ]], %[[DK]] : i32
// CHECK-NEXT: %[[CAUSAL:.*]] = arith.cmpi ule, %kv_idx, %q_idx : index
// CHECK-NEXT: %[[KEEP:.*]] = arith.andi %[[SAME]], %[[CAUSAL]] : i1
// CHECK-NEXT: attn.yield %[[KEEP]] : i1
func.func @mask(%q: !qkv, %k: !qkv, %v: !qkv, %doc: tensor<?xi32>) -> !qkv {
  %o = attn.attention softmax %q, %k, %v captures(%doc : tensor<?xi32>)
      {capture_names = ["doc"], param_defaults = [], param_names = []}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?xi32>):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?xi32>):
    %di = attn.load %d[%i] : tensor<?xi32>
    %dj = attn.load %d[%j] : tensor<?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    %causal = arith.cmpi ule, %j, %i : index
    %keep = arith.andi %same, %causal : i1
    attn.yield %keep : i1
  }
  return %o : !qkv
}

// q_scale carries the factor folded into the query; the score reads the
// scaled product through attn.scaled_dot.
// CHECK-LABEL: func.func @q_scale
// CHECK: score {
// CHECK: %[[SD:.*]] = attn.scaled_dot : f32
// CHECK-NEXT: attn.yield %[[SD]] : f32
// CHECK-NEXT: } q_scale {
// CHECK-NEXT: ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
// CHECK-NEXT: attn.yield %gamma : f32
func.func @q_scale(%q: !qkv, %k: !qkv, %v: !qkv, %g: f32) -> !qkv {
  %o = attn.attention softmax %q, %k, %v params(%g : f32)
      {capture_names = [], param_defaults = [unit], param_names = ["gamma"]}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %gm: f32):
    %s = attn.scaled_dot : f32
    attn.yield %s : f32
  }
  q_scale {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %gm: f32):
    attn.yield %gm : f32
  }
  return %o : !qkv
}

// key_bias computes the per-key term; the score reads it with attn.key_bias.
// CHECK-LABEL: func.func @key_bias
// CHECK: score {
// CHECK: %[[DOT:.*]] = attn.dot : f32
// CHECK-NEXT: %[[C:.*]] = attn.key_bias : f32
// CHECK-NEXT: %[[S:.*]] = arith.addf %[[DOT]], %[[C]] : f32
// CHECK-NEXT: attn.yield %[[S]] : f32
// CHECK-NEXT: } key_bias {
// CHECK-NEXT: ^bb0(
// CHECK-NEXT: %[[NK:.*]] = attn.norm2 k : f32
// CHECK-NEXT: %[[KB:.*]] = arith.negf %[[NK]] : f32
// CHECK-NEXT: attn.yield %[[KB]] : f32
func.func @key_bias(%q: !qkv, %k: !qkv, %v: !qkv) -> !qkv {
  %o = attn.attention softmax %q, %k, %v
      {capture_names = [], param_defaults = [], param_names = []}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    %c = attn.key_bias : f32
    %s = arith.addf %d, %c : f32
    attn.yield %s : f32
  }
  key_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %n = attn.norm2 k : f32
    %c = arith.negf %n : f32
    attn.yield %c : f32
  }
  return %o : !qkv
}

// row_bias holds the per-row term factored out of a softmax score.
// CHECK-LABEL: func.func @row_bias
// CHECK: } row_bias {
// CHECK-NEXT: ^bb0(
// CHECK-NEXT: %[[NQ:.*]] = attn.norm2 q : f32
// CHECK-NEXT: %[[R:.*]] = arith.negf %[[NQ]] : f32
// CHECK-NEXT: attn.yield %[[R]] : f32
func.func @row_bias(%q: !qkv, %k: !qkv, %v: !qkv) -> !qkv {
  %o = attn.attention softmax %q, %k, %v
      {capture_names = [], param_defaults = [], param_names = []}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  row_bias {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %n = attn.norm2 q : f32
    %r = arith.negf %n : f32
    attn.yield %r : f32
  }
  return %o : !qkv
}

// tile_class takes the tile's bounds and yields (all_kept, all_masked);
// attn.load_bound bounds a capture over a box of indices.
// CHECK-LABEL: func.func @tile_class
// CHECK: } tile_class {
// CHECK-NEXT: ^bb0(%b: index, %h: index, %q_lo: index, %q_hi: index, %kv_lo: index, %kv_hi: index, %doc: tensor<?x?xi32>):
// CHECK-NEXT: %[[QMIN:.*]] = attn.load_bound min %doc[%b, %q_lo] to [%b, %q_hi] : tensor<?x?xi32>
// CHECK-NEXT: %[[KMAX:.*]] = attn.load_bound max %doc[%b, %kv_lo] to [%b, %kv_hi] : tensor<?x?xi32>
// CHECK-NEXT: %[[KEPT:.*]] = arith.cmpi eq, %[[QMIN]], %[[KMAX]] : i32
// CHECK-NEXT: %[[MASKED:.*]] = arith.cmpi slt, %[[QMIN]], %[[KMAX]] : i32
// CHECK-NEXT: attn.yield %[[KEPT]], %[[MASKED]] : i1, i1
func.func @tile_class(%q: !qkv, %k: !qkv, %v: !qkv, %doc: tensor<?x?xi32>) -> !qkv {
  %o = attn.attention softmax %q, %k, %v captures(%doc : tensor<?x?xi32>)
      {capture_names = ["doc"], param_defaults = [], param_names = []}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>):
    %s = attn.dot : f32
    attn.yield %s : f32
  }
  mask {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %d: tensor<?x?xi32>):
    %di = attn.load %d[%b, %i] : tensor<?x?xi32>
    %dj = attn.load %d[%b, %j] : tensor<?x?xi32>
    %same = arith.cmpi eq, %di, %dj : i32
    attn.yield %same : i1
  }
  tile_class {
  ^bb0(%b: index, %h: index, %qlo: index, %qhi: index, %klo: index, %khi: index,
       %d: tensor<?x?xi32>):
    %lo = attn.load_bound min %d[%b, %qlo] to [%b, %qhi] : tensor<?x?xi32>
    %hi = attn.load_bound max %d[%b, %klo] to [%b, %khi] : tensor<?x?xi32>
    %kept = arith.cmpi eq, %lo, %hi : i32
    %masked = arith.cmpi slt, %lo, %hi : i32
    attn.yield %kept, %masked : i1, i1
  }
  return %o : !qkv
}

// The plan attribute and the log2_domain flag.
// CHECK-LABEL: func.func @plan
// CHECK: attn.attention softmax
// CHECK-SAME: log2_domain
// CHECK-SAME: plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>
// CHECK-LABEL: func.func @plan_hopper
// CHECK-SAME: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 64, tile_n = 128, warps = 16, stages = 8>
// CHECK-LABEL: func.func @plan_three_warpgroups
// CHECK-SAME: plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 192, tile_n = 128, warps = 12, stages = 2, copy = "tma">
// CHECK-LABEL: func.func @plan_host
// CHECK-SAME: plan = #attn.plan<arch = "host", kernel = "loops", tile_m = 16, tile_n = 16, warps = 1, stages = 1>
func.func @plan(%q: !qkv, %k: !qkv, %v: !qkv) -> !qkv {
  %o = attn.attention softmax %q, %k, %v
      {capture_names = [], param_defaults = [], param_names = [], log2_domain,
       plan = #attn.plan<arch = "sm_80", kernel = "mma_sync", tile_m = 128, tile_n = 64, warps = 4, stages = 2>}
      : !qkv, !qkv, !qkv -> !qkv
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return %o : !qkv
}
func.func @plan_hopper() attributes {
  plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 64, tile_n = 128, warps = 16, stages = 8>} {
  return
}
func.func @plan_three_warpgroups() attributes {
  plan = #attn.plan<arch = "sm_90a", kernel = "wgmma", tile_m = 192, tile_n = 128, warps = 12, stages = 2, copy = "tma">} {
  return
}
func.func @plan_host() attributes {
  plan = #attn.plan<arch = "host", kernel = "loops", tile_m = 16, tile_n = 16, warps = 1, stages = 1>} {
  return
}

// The element ops of a score: products, norms, distance and problem sizes.
// CHECK-LABEL: func.func @element_ops
// CHECK: score {
// CHECK-NEXT: ^bb0(
// CHECK-NEXT: %{{.*}} = attn.dot : f32
// CHECK-NEXT: %{{.*}} = attn.dist2 : f32
// CHECK-NEXT: %{{.*}} = attn.norm2 q : f32
// CHECK-NEXT: %{{.*}} = attn.norm2 k : f32
// CHECK-NEXT: %{{.*}} = attn.size batch : index
// CHECK-NEXT: %{{.*}} = attn.size heads : index
// CHECK-NEXT: %{{.*}} = attn.size kv_heads : index
// CHECK-NEXT: %{{.*}} = attn.size q_len : index
// CHECK-NEXT: %{{.*}} = attn.size kv_len : index
// CHECK-NEXT: %{{.*}} = attn.size head_dim : index
// CHECK: attn.yield %{{.*}} : f32
func.func @element_ops(%q: tensor<?x?x?x128xf32>, %k: tensor<?x?x?x128xf32>,
                       %v: tensor<?x?x?x128xf32>) -> tensor<?x?x?x128xf32> {
  %o = attn.attention softmax %q, %k, %v
      {capture_names = [], param_defaults = [], param_names = []}
      : tensor<?x?x?x128xf32>, tensor<?x?x?x128xf32>, tensor<?x?x?x128xf32>
        -> tensor<?x?x?x128xf32>
  score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %dot = attn.dot : f32
    %dist = attn.dist2 : f32
    %nq = attn.norm2 q : f32
    %nk = attn.norm2 k : f32
    %batch = attn.size batch : index
    %heads = attn.size heads : index
    %kv_heads = attn.size kv_heads : index
    %q_len = attn.size q_len : index
    %kv_len = attn.size kv_len : index
    %head_dim = attn.size head_dim : index
    %s0 = arith.addf %dot, %dist : f32
    %s1 = arith.addf %s0, %nq : f32
    %s2 = arith.addf %s1, %nk : f32
    %n0 = arith.addi %batch, %heads : index
    %n1 = arith.addi %n0, %kv_heads : index
    %n2 = arith.addi %n1, %q_len : index
    %n3 = arith.addi %n2, %kv_len : index
    %n4 = arith.addi %n3, %head_dim : index
    %n5 = arith.index_cast %n4 : index to i64
    %n6 = arith.sitofp %n5 : i64 to f32
    %s3 = arith.addf %s2, %n6 : f32
    attn.yield %s3 : f32
  }
  return %o : tensor<?x?x?x128xf32>
}
