// RUN: rbf-opt %s --attn-expand-distance | FileCheck %s

// CHECK-LABEL: func.func @rbf
// CHECK: score {
// CHECK-DAG: %[[NQ:.*]] = attn.norm2 q : f32
// CHECK-DAG: %[[NK:.*]] = attn.norm2 k : f32
// CHECK-DAG: %[[DOT:.*]] = attn.dot : f32
// CHECK-DAG: %[[TWO:.*]] = arith.constant 2.000000e+00 : f32
// CHECK-DAG: %[[TD:.*]] = arith.mulf %[[TWO]], %[[DOT]] : f32
// CHECK-DAG: %[[N:.*]] = arith.addf %[[NQ]], %[[NK]] : f32
// CHECK: %[[D:.*]] = arith.subf %[[N]], %[[TD]] : f32
// CHECK-NOT: attn.dist2
func.func @rbf(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>, %g: f32) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %q, %k, %v params(%g : f32) {capture_names = [], param_defaults = [1.250000e-01 : f32], param_names = ["gamma"]} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %i: index, %j: index, %gamma: f32):
    %n = arith.negf %gamma : f32
    %d = attn.dist2 : f32
    %s = arith.mulf %n, %d : f32
    attn.yield %s : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}
