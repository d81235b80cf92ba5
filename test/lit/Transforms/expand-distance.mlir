// RUN: rbf-opt %s --attn-expand-distance | FileCheck %s

// ||q - k||^2 becomes ||q||^2 + ||k||^2 - 2 q.k; nothing else changes.
// CHECK-LABEL: func.func @rbf
// CHECK: score {
// CHECK-NOT: attn.dist2
// CHECK-DAG: %[[TWO:.*]] = arith.constant 2.000000e+00 : f32
// CHECK-DAG: %[[NQ:.*]] = attn.norm2 q : f32
// CHECK-DAG: %[[NK:.*]] = attn.norm2 k : f32
// CHECK-DAG: %[[DOT:.*]] = attn.dot : f32
// CHECK-DAG: %[[TD:.*]] = arith.mulf %[[DOT]], %[[TWO]] : f32
// CHECK-DAG: %[[N:.*]] = arith.addf %[[NQ]], %[[NK]] : f32
// CHECK: %[[D:.*]] = arith.subf %[[N]], %[[TD]] : f32
// CHECK: %[[S:.*]] = arith.mulf %{{.*}}, %[[D]] : f32
// CHECK: attn.yield %[[S]] : f32
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

// A score without a distance is left alone.
// CHECK-LABEL: func.func @plain
// CHECK: %[[DOT:.*]] = attn.dot : f32
// CHECK-NEXT: attn.yield %[[DOT]] : f32
func.func @plain(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>) -> tensor<?x?x?x64xbf16> {
  %0 = attn.attention softmax %q, %k, %v {capture_names = [], param_defaults = [], param_names = []} : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xbf16> score {
  ^bb0(%b: index, %h: index, %i: index, %j: index):
    %d = attn.dot : f32
    attn.yield %d : f32
  }
  return %0 : tensor<?x?x?x64xbf16>
}
