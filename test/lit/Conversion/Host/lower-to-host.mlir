// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="tile-m=16 tile-n=32 rows-per-step=2 key-lanes=8 key-vectors-per-step=2 head-dim-vectors-per-step=1" \
// RUN:   | FileCheck %s
// No weight and no rescale goes through libm.
// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="tile-m=16 tile-n=32 rows-per-step=2 key-lanes=8" \
// RUN:   | FileCheck %s --check-prefix=NO-LIBM
// NO-LIBM-NOT: math.exp2
// The blocking follows the key lanes when not given: as many key vectors
// and head_dim vectors per step as the vector registers hold (32 with 16
// lanes, AVX-512; 16 with 8, AVX2), and the fewest rows per step from 4
// whose passes keep 12 accumulators (AVX-512: 4 rows x the 4 key vectors
// of a 64-key tile; AVX2: 6 rows x 2 of the 8 key vectors, 6 x 2 of
// head_dim's 2), 4 when none up to 8 does (AVX-512 at head_dim 16, one
// vector of it); tile_m is 16 row blocks. The backward keeps 4 rows and
// 64-row tiles.
// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="key-lanes=16" | FileCheck %s --check-prefix=AUTO
// AUTO: rbfc.head_dim_vectors_per_step = 1 : i64, rbfc.key_lanes = 16 : i64, rbfc.key_vectors_per_step = 4 : i64, rbfc.rows_per_step = 4 : i64, rbfc.tile_m = 64 : i64, rbfc.tile_n = 64 : i64
// RUN: rbf-opt %s --split-input-file --verify-diagnostics \
// RUN:   --attn-lower-to-host="key-lanes=8" | FileCheck %s --check-prefix=AUTO-AVX2
// AUTO-AVX2: rbfc.head_dim_vectors_per_step = 2 : i64, rbfc.key_lanes = 8 : i64, rbfc.key_vectors_per_step = 2 : i64, rbfc.rows_per_step = 6 : i64, rbfc.tile_m = 96 : i64, rbfc.tile_n = 64 : i64

// Causal attention in canonical form (rbfc examples/causal.attn --lse): the
// kernel walks key tiles of 32, skips the tiles tile_class calls masked and
// evaluates the mask per element only in partial tiles. head_dim is 16 and
// a score vector holds 8 keys, so vector<16xf32> is a row of q, k or v and
// vector<8xf32> the scores of one row and 8 keys, or 8 elements of an
// accumulator row.

// CHECK-LABEL: func.func @causal(
// CHECK-SAME: memref<?x?x?x16xbf16, strided<[?, ?, ?, 1], offset: ?>>
// CHECK-SAME: memref<?x?x?xf32, strided<[?, ?, ?], offset: ?>>, %[[Q_OFFSET:arg[0-9]+]]: index, %[[KV_OFFSET:arg[0-9]+]]: index, %{{.*}}: index, %{{.*}}: index, %[[BEGIN:arg[0-9]+]]: index, %[[END:arg[0-9]+]]: index)
// CHECK-SAME: llvm.emit_c_interface
// CHECK-SAME: rbfc.head_dim_vectors_per_step = 1 : i64, rbfc.key_lanes = 8 : i64, rbfc.key_vectors_per_step = 2 : i64, rbfc.rows_per_step = 2 : i64, rbfc.tile_m = 16 : i64, rbfc.tile_n = 32 : i64
// CHECK: %[[Q_TILES:.*]] = arith.ceildivsi %{{.*}}, %c16
// K^T of a key tile: head_dim rows of 32 keys.
// CHECK: %[[KEY_T:.*]] = memref.alloca() : memref<16x32xf32>
// The work range is cut to the items the sizes have: batch x heads x
// ceil(q_len / 16).
// CHECK: %[[BATCH_HEADS:.*]] = arith.muli %{{.*}}, %{{.*}} : index
// CHECK: %[[ITEMS:.*]] = arith.muli %[[BATCH_HEADS]], %[[Q_TILES]]
// CHECK: %[[FIRST:.*]] = arith.maxsi %[[BEGIN]], %c0
// CHECK: %[[LAST:.*]] = arith.minsi %[[END]], %[[ITEMS]]
// CHECK: scf.for %{{.*}} = %[[FIRST]] to %[[LAST]]
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
// Whole tiles (all kept, 32 keys) take the code without mask and padding.
// In the others each block of 2 rows is classified on its own (its rows
// against the tile's keys): blocks the mask drops are skipped, blocks it
// keeps whole take the same code as a whole tile.
// CHECK: %[[FULL:.*]] = arith.cmpi eq, %{{.*}}, %c32
// CHECK: %[[WHOLE:.*]] = arith.andi %[[KEPT]], %[[FULL]]
// CHECK: scf.for %{{.*}} step %c2
// CHECK: %[[BLOCK:.*]]:2 = scf.if %[[WHOLE]] -> (i1, i1)
// CHECK: scf.yield %true{{.*}}, %false
// CHECK: } else {
// CHECK: %[[BLOCK_KEPT:.*]] = arith.cmpi sle, %{{.*}}, %{{.*}} : index
// CHECK: %[[BLOCK_MASKED:.*]] = arith.cmpi sgt, %{{.*}}, %{{.*}} : index
// CHECK: %[[BLOCK_WHOLE:.*]] = arith.andi %[[BLOCK_KEPT]], %[[FULL]]
// CHECK: scf.yield %[[BLOCK_WHOLE]], %[[BLOCK_MASKED]]
// CHECK: %[[BLOCK_LIVE:.*]] = arith.xori %[[BLOCK]]#1, %true
// CHECK: scf.if %[[BLOCK_LIVE]]
// CHECK: scf.if %[[BLOCK]]#0
// The block's scores against the 32 keys in two passes over head_dim of 2
// key vectors each, like a GEMM micro-kernel: 2 x 2 accumulators, each K^T
// vector loaded once for both rows' FMAs, each broadcast query element
// used for both key vectors; no horizontal sum.
// CHECK: scf.for %{{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: %[[K0:.*]] = vector.load %[[KEY_T]][%{{.*}}, %c0{{.*}}] {{.*}} vector<8xf32>
// CHECK: %[[K1:.*]] = vector.load %[[KEY_T]][%{{.*}}, %c8{{.*}}] {{.*}} vector<8xf32>
// CHECK: %[[Q0:.*]] = vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK-NEXT: vector.fma %[[Q0]], %[[K0]], {{.*}} : vector<8xf32>
// CHECK-NEXT: vector.fma %[[Q0]], %[[K1]], {{.*}} : vector<8xf32>
// CHECK: %[[Q1:.*]] = vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK-NEXT: vector.fma %[[Q1]], %[[K0]], {{.*}} : vector<8xf32>
// CHECK-NEXT: vector.fma %[[Q1]], %[[K1]], {{.*}} : vector<8xf32>
// CHECK-NOT: vector.reduction <add>
// CHECK: scf.yield
// CHECK: vector.store {{.*}} : memref<2x32xf32>, vector<8xf32>
// CHECK: scf.for %{{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>, vector<8xf32>, vector<8xf32>)
// CHECK: vector.load %[[KEY_T]][%{{.*}}, %c16{{.*}}] {{.*}} vector<8xf32>
// CHECK: vector.load %[[KEY_T]][%{{.*}}, %c24{{.*}}] {{.*}} vector<8xf32>
// CHECK: scf.yield
// No mask and no padding lanes here. The softmax takes the block's rows in
// two loops, a row at a time (unrolled, the rows' code would interleave and
// spill their score vectors): first the scores, written over the dots, and
// the running maximum, so that the second, the weights, starts with every
// row's shift known.
// CHECK-NOT: arith.cmpi
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %c2{{.*}} step %c1
// CHECK-NOT: arith.cmpi
// The row's maximum by compare-and-select (one maxps, no NaN test) in a
// balanced tree over the 4 score vectors, then across lanes by rotations;
// the rescale from the polynomial exp2.
// CHECK: %[[S0:.*]] = arith.mulf {{.*}} : vector<8xf32>
// CHECK: %[[S1:.*]] = arith.mulf {{.*}} : vector<8xf32>
// CHECK: %[[S2:.*]] = arith.mulf {{.*}} : vector<8xf32>
// CHECK: %[[S3:.*]] = arith.mulf {{.*}} : vector<8xf32>
// CHECK: arith.cmpf ogt, %[[S0]], %[[S1]] : vector<8xf32>
// CHECK: arith.cmpf ogt, %[[S2]], %[[S3]] : vector<8xf32>
// CHECK: vector.shuffle {{.*}} [4, 5, 6, 7, 0, 1, 2, 3] : vector<8xf32>, vector<8xf32>
// CHECK: math.roundeven {{.*}} : f32
// CHECK: scf.for %{{.*}} = %c0{{.*}} to %c2{{.*}} step %c1
// The weights from the polynomial exp2; the row's sum stays a vector (one
// partial sum a lane, reduced in finalize), the tile's weights added to it
// in a balanced tree.
// CHECK: math.fma {{.*}} : vector<8xf32>
// CHECK: arith.bitcast {{.*}} : vector<8xi32> to vector<8xf32>
// CHECK: vector.store %[[W0:.*]], %{{.*}}[%{{.*}}, %c0{{.*}}] : memref<2x32xf32>, vector<8xf32>
// CHECK: vector.store %[[W1:.*]], %{{.*}}[%{{.*}}, %c8{{.*}}] : memref<2x32xf32>, vector<8xf32>
// CHECK: vector.store %[[W2:.*]], %{{.*}}[%{{.*}}, %c16{{.*}}] : memref<2x32xf32>, vector<8xf32>
// CHECK: vector.store %[[W3:.*]], %{{.*}}[%{{.*}}, %c24{{.*}}] : memref<2x32xf32>, vector<8xf32>
// CHECK: %[[W01:.*]] = arith.addf %[[W0]], %[[W1]] : vector<8xf32>
// CHECK: %[[W23:.*]] = arith.addf %[[W2]], %[[W3]] : vector<8xf32>
// CHECK: %[[TILE_SUM:.*]] = arith.addf %[[W01]], %[[W23]] : vector<8xf32>
// CHECK: arith.addf %{{.*}}, %[[TILE_SUM]] : vector<8xf32>
// CHECK-NOT: vector.reduction
// P*V in two passes over the keys, one per vector of 8 head_dim elements:
// each value row loaded (and widened) once a pass, its 8 elements used by
// both rows' FMAs.
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>)
// CHECK: vector.load {{.*}} vector<16xbf16>
// CHECK: %[[V0:.*]] = vector.extract_strided_slice {{.*}} {offsets = [0], sizes = [8], strides = [1]}
// CHECK: vector.fma %{{.*}}, %[[V0]], {{.*}} : vector<8xf32>
// CHECK: vector.fma %{{.*}}, %[[V0]], {{.*}} : vector<8xf32>
// CHECK: scf.for {{.*}} iter_args({{.*}}) -> (vector<8xf32>, vector<8xf32>)
// CHECK: %[[V1:.*]] = vector.extract_strided_slice {{.*}} {offsets = [8], sizes = [8], strides = [1]}
// CHECK: vector.fma %{{.*}}, %[[V1]], {{.*}} : vector<8xf32>
// CHECK: vector.fma %{{.*}}, %[[V1]], {{.*}} : vector<8xf32>
// CHECK: } else {
// The partial tile: the mask on vectors of keys, lanes past the tile's last
// key -inf, masked keys skip the update.
// CHECK: arith.cmpi sle, {{.*}} : vector<8xindex>
// CHECK: arith.select {{.*}} : vector<8xi1>, vector<8xf32>
// CHECK: arith.cmpi slt, {{.*}} : vector<8xindex>
// CHECK: arith.select {{.*}} : vector<8xi1>, vector<8xf32>
// CHECK: arith.cmpf une
// CHECK: arith.select {{.*}} vector<8xf32>
// The output row is normalised and rounded (the sum's lanes added first);
// lse = (max + log2 sum) * ln 2.
// CHECK: vector.reduction <add>, {{.*}} : vector<8xf32> into f32
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
// CHECK-NOT: arith.cmpf ogt, {{.*}} : vector<8xf32>
// CHECK: vector.reduction <add>, {{.*}} : vector<16xf32> into f32
// CHECK: vector.broadcast {{.*}} : f32 to vector<8xf32>
// CHECK: arith.subf {{.*}} : vector<8xf32>
// CHECK: math.fma {{.*}} : vector<8xf32>
// CHECK: vector.extract_strided_slice {{.*}} : vector<16xf32> to vector<8xf32>
// CHECK: vector.fma {{.*}} : vector<8xf32>
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
