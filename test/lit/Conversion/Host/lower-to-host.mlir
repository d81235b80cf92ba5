// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="tile-m=16 tile-n=32 rows-per-step=2 key-lanes=8" \
// RUN:   | FileCheck %s
// No weight goes through libm: the only math.exp2 left is the scalar
// rescale of a row's running state, once per row and key tile.
// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="tile-m=16 tile-n=32 rows-per-step=2 key-lanes=8" \
// RUN:   | FileCheck %s --check-prefix=NO-VECTOR-LIBM
// NO-VECTOR-LIBM-NOT: math.exp2 {{.*}} : vector
// The rows per step follow from head_dim and the key lanes when not given:
// with 16 lanes (AVX-512), 4 rows at head_dim 16.
// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="key-lanes=16" | FileCheck %s --check-prefix=AUTO
// AUTO: rbfc.key_lanes = 16 : i64, rbfc.rows_per_step = 4 : i64

// Causal attention in canonical form (rbfc examples/causal.attn --lse): the
// kernel walks key tiles of 32, skips the tiles tile_class calls masked and
// evaluates the mask per element only in partial tiles. head_dim is 16 and
// a score vector holds 8 keys, so vector<16xf32> is a row of q, k, v or the
// accumulator and vector<8xf32> the scores of one row and 8 keys.

// CHECK-LABEL: func.func @causal(
// CHECK-SAME: memref<?x?x?x16xbf16, strided<[?, ?, ?, 1], offset: ?>>
// CHECK-SAME: memref<?x?x?xf32, strided<[?, ?, ?], offset: ?>>, %[[Q_OFFSET:arg[0-9]+]]: index, %[[KV_OFFSET:arg[0-9]+]]: index, %{{.*}}: index, %{{.*}}: index, %[[BEGIN:arg[0-9]+]]: index, %[[END:arg[0-9]+]]: index)
// CHECK-SAME: llvm.emit_c_interface
// CHECK-SAME: rbfc.key_lanes = 8 : i64, rbfc.rows_per_step = 2 : i64, rbfc.tile_m = 16 : i64, rbfc.tile_n = 32 : i64
// K^T of a key tile: head_dim rows of 32 keys.
// CHECK: %[[KEY_T:.*]] = memref.alloca() : memref<16x32xf32>
// CHECK: scf.for %{{.*}} = %[[BEGIN]] to %[[END]]
// Key tiles: all_kept = kv_hi <= q_lo, all_masked = kv_lo > q_hi, on the
// indices in the whole sequence (the call's own plus its offsets).
// CHECK: scf.for %[[KV_LO:.*]] = %{{.*}} to %{{.*}} step %c32
// CHECK: %[[Q_LO:.*]] = arith.addi %{{.*}}, %[[Q_OFFSET]]
// CHECK: %[[Q_HI:.*]] = arith.addi %{{.*}}, %[[Q_OFFSET]]
// CHECK: %[[KV_LO_GLOBAL:.*]] = arith.addi %[[KV_LO]], %[[KV_OFFSET]]
// CHECK: %[[KV_HI:.*]] = arith.addi %{{.*}}, %[[KV_OFFSET]]
// CHECK: %[[KEPT:.*]] = arith.cmpi sle, %[[KV_HI]], %[[Q_LO]]
// CHECK: %[[MASKED:.*]] = arith.cmpi sgt, %[[KV_LO_GLOBAL]], %[[Q_HI]]
// CHECK: %[[LIVE:.*]] = arith.xori %[[MASKED]], %true
// CHECK: scf.if %[[LIVE]]
// Packing: 8 key rows, widened, transposed 8 x 8 in registers by shuffles.
// CHECK: scf.for %[[FIRST_KEY:.*]] = %{{.*}} to %{{.*}} step %c8
// CHECK: vector.load {{.*}} vector<16xbf16>
// CHECK: arith.extf {{.*}} : vector<16xbf16> to vector<16xf32>
// CHECK: vector.shuffle {{.*}} [0, 8, 2, 10, 4, 12, 6, 14] : vector<8xf32>, vector<8xf32>
// CHECK: vector.store %{{.*}}, %[[KEY_T]][%{{.*}}, %[[FIRST_KEY]]] {{.*}} vector<8xf32>
// CHECK: scf.if %[[KEPT]]
// The all-kept tile, 2 rows at a time: their scores against the 32 keys are
// 8 accumulators of 8 keys, one FMA per head_dim element, no horizontal sum.
// CHECK: scf.for %{{.*}} step %c2
// CHECK: scf.for %{{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: vector.load %[[KEY_T]]{{.*}} vector<8xf32>
// CHECK: vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK-NEXT: vector.fma {{.*}} : vector<8xf32>
// CHECK-NOT: vector.reduction <add>
// CHECK: scf.yield
// No mask here; lanes past the tile's last key score -inf.
// CHECK-NOT: arith.cmpi sle
// CHECK: arith.cmpi slt, {{.*}} : vector<8xindex>
// CHECK: arith.select {{.*}} : vector<8xi1>, vector<8xf32>
// Online softmax: one max reduction per row and tile, one scalar exp2 for
// the rescale, the weights from the polynomial exp2 on whole vectors.
// CHECK: vector.reduction <maximumf>, {{.*}} : vector<8xf32> into f32
// CHECK: math.exp2 {{.*}} : f32
// CHECK: math.roundeven {{.*}} : vector<8xf32>
// CHECK: math.fma {{.*}} : vector<8xf32>
// CHECK: arith.bitcast {{.*}} : vector<8xi32> to vector<8xf32>
// CHECK: vector.reduction <add>, {{.*}} : vector<8xf32> into f32
// P*V: each value row loaded once, one FMA for each of the 2 rows.
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>)
// CHECK: vector.load {{.*}} vector<16xbf16>
// CHECK: vector.fma {{.*}} : vector<16xf32>
// CHECK: vector.fma {{.*}} : vector<16xf32>
// CHECK: } else {
// The partial tile: the mask on vectors of keys, masked keys skip the update.
// CHECK: arith.cmpi sle, {{.*}} : vector<8xindex>
// CHECK: arith.select {{.*}} : vector<8xi1>, vector<8xf32>
// CHECK: arith.cmpf une
// CHECK: arith.select {{.*}} vector<16xf32>
// The output row is normalised and rounded; lse = (max + log2 sum) * ln 2.
// CHECK: arith.divf
// CHECK: arith.truncf {{.*}} vector<16xf32> to vector<16xbf16>
// CHECK: math.log2
// CHECK-NOT: attn.
module {
  func.func @causal(%arg0: tensor<?x?x?x16xbf16>, %arg1: tensor<?x?x?x16xbf16>, %arg2: tensor<?x?x?x16xbf16>) -> (tensor<?x?x?x16xbf16>, tensor<?x?x?xf32>) {
    %0:2 = attn.attention softmax %arg0, %arg1, %arg2 {capture_names = [], log2_domain, param_defaults = [], param_names = []} : tensor<?x?x?x16xbf16>, tensor<?x?x?x16xbf16>, tensor<?x?x?x16xbf16> -> tensor<?x?x?x16xbf16>, tensor<?x?x?xf32> score {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
      %1 = attn.scaled_dot : f32
      attn.yield %1 : f32
    } mask {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
      %1 = arith.cmpi sle, %kv_idx, %q_idx : index
      attn.yield %1 : i1
    } q_scale {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
      %cst = arith.constant 0.360673755 : f32
      attn.yield %cst : f32
    } tile_class {
    ^bb0(%b: index, %h: index, %q_lo: index, %q_hi: index, %kv_lo: index, %kv_hi: index):
      %1 = arith.cmpi sle, %kv_hi, %q_lo : index
      %2 = arith.cmpi sgt, %kv_lo, %q_hi : index
      attn.yield %1, %2 : i1, i1
    }
    return %0#0, %0#1 : tensor<?x?x?x16xbf16>, tensor<?x?x?xf32>
  }
}

// -----

// RBF under `none`: no running maximum (weights are exp2(score) as they
// are), the key_bias region runs once per key into a scratch buffer and is
// read as vectors of 8 keys; norm2(q) is one scalar per row, broadcast.

// CHECK-LABEL: func.func @rbf_none(
// CHECK-SAME: %{{.*}}: f32, %{{.*}}: index, %{{.*}}: index)
// CHECK: %[[KEY_BIAS:.*]] = memref.alloca() : memref<32xf32>
// CHECK: scf.for
// CHECK: scf.for
// CHECK: arith.mulf {{.*}} : vector<16xf32>
// CHECK: vector.reduction <add>
// CHECK: memref.store %{{.*}}, %[[KEY_BIAS]]
// CHECK: vector.load %[[KEY_BIAS]]{{.*}} vector<8xf32>
// CHECK-NOT: arith.maximumf
// CHECK: vector.reduction <add>, {{.*}} : vector<16xf32> into f32
// CHECK: vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK: arith.subf {{.*}} : vector<8xf32>
// CHECK: math.fma {{.*}} : vector<8xf32>
// CHECK: vector.fma {{.*}} : vector<16xf32>
module {
  func.func @rbf_none(%arg0: tensor<?x?x?x16xf32>, %arg1: tensor<?x?x?x16xf32>, %arg2: tensor<?x?x?x16xf32>, %arg3: f32) -> tensor<?x?x?x16xf32> {
    %0 = attn.attention none %arg0, %arg1, %arg2 params(%arg3 : f32) {capture_names = [], log2_domain, param_defaults = [2.500000e-01 : f32], param_names = ["gamma"]} : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32> score {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index, %gamma: f32):
      %cst = arith.constant 1.44269502 : f32
      %1 = attn.scaled_dot : f32
      %2 = attn.key_bias : f32
      %3 = attn.norm2 q : f32
      %4 = arith.mulf %gamma, %cst : f32
      %5 = arith.mulf %4, %3 : f32
      %6 = arith.subf %1, %5 : f32
      %7 = arith.addf %6, %2 : f32
      attn.yield %7 : f32
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
    }
    return %0 : tensor<?x?x?x16xf32>
  }
}

// -----

// The host backend builds one kernel per function.
module {
  // expected-error @+1 {{holds 2 attention ops; the host backend builds one kernel per function}}
  func.func @two(%q: tensor<?x?x?x16xf32>, %k: tensor<?x?x?x16xf32>, %v: tensor<?x?x?x16xf32>) -> (tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>) {
    %0 = attn.attention softmax %q, %k, %v {capture_names = [], log2_domain, param_defaults = [], param_names = []} : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32> score {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
      %1 = attn.dot : f32
      attn.yield %1 : f32
    }
    %1 = attn.attention softmax %q, %k, %v {capture_names = [], log2_domain, param_defaults = [], param_names = []} : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32> score {
    ^bb0(%b: index, %h: index, %q_idx: index, %kv_idx: index):
      %2 = attn.dot : f32
      attn.yield %2 : f32
    }
    return %0, %1 : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>
  }
}
