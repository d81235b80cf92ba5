//===- ScoreDependence.h - what a region value depends on -------*- C++ -*-===//
//
// The algebra passes and the verifier decide where a score term may live by
// what it depends on: the query side (q, q_idx), the key side (k, kv_idx),
// or neither (b, h, parameters, sizes, constants). Captured tensors carry the
// dependences of their indices.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_DIALECT_ATTN_SCOREDEPENDENCE_H
#define RBFC_DIALECT_ATTN_SCOREDEPENDENCE_H

#include "mlir/IR/Value.h"
#include "llvm/ADT/DenseMap.h"

namespace rbfc::attn {

/// A set of the element coordinates and vectors a value depends on.
enum Dependence : unsigned {
  kDependsOnNothing = 0,
  kDependsOnBatch = 1u << 0,
  kDependsOnHead = 1u << 1,
  kDependsOnQueryIndex = 1u << 2,
  kDependsOnKeyIndex = 1u << 3,
  kDependsOnQueryVector = 1u << 4,
  kDependsOnKeyVector = 1u << 5,
  kDependsOnScaledDot = 1u << 6,
  kDependsOnKeyBias = 1u << 7,
};

constexpr unsigned kQuerySide = kDependsOnQueryIndex | kDependsOnQueryVector |
                                kDependsOnScaledDot;
constexpr unsigned kKeySide = kDependsOnKeyIndex | kDependsOnKeyVector |
                              kDependsOnScaledDot | kDependsOnKeyBias;

/// Computes and caches the dependence set of values inside the element
/// regions of an attn.attention op.
class ScoreDependence {
public:
  unsigned get(mlir::Value value);

  /// True when `value` is the same for every element of one (batch, head).
  bool isUniform(mlir::Value value) {
    return (get(value) & (kQuerySide | kKeySide)) == 0;
  }
  bool isRowOnly(mlir::Value value) { return (get(value) & kKeySide) == 0; }
  bool isKeyOnly(mlir::Value value) { return (get(value) & kQuerySide) == 0; }

private:
  llvm::DenseMap<mlir::Value, unsigned> cache;
};

} // namespace rbfc::attn

#endif // RBFC_DIALECT_ATTN_SCOREDEPENDENCE_H
