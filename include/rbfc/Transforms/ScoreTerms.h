//===- ScoreTerms.h - scores as sums of products ----------------*- C++ -*-===//
//
// The algebra passes see a score as a sum of terms, each a coefficient times
// a product of factors (values of the score region, or their reciprocals).
// Sums, differences, negations and products distribute, so
// `-g * (||q||^2 + ||k||^2 - 2 q.k)` reads as three terms; a non-linear
// function such as tanh stays one opaque factor.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_TRANSFORMS_SCORETERMS_H
#define RBFC_TRANSFORMS_SCORETERMS_H

#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SmallVector.h"

namespace rbfc {

struct Factor {
  mlir::Value value;
  bool reciprocal = false;
};

struct Term {
  double coefficient = 1.0;
  llvm::SmallVector<Factor, 4> factors;
};

/// Decomposes the f32 `value` into a sum of terms. Products of sums expand
/// while the expansion stays small; beyond that the product is one factor.
llvm::SmallVector<Term> decomposeSum(mlir::Value value);

/// The union of the dependences of a term's factors.
unsigned dependenceOf(attn::ScoreDependence &dependence, const Term &term);

/// True when `term` is exactly `factor` with coefficient 1.
bool isBareFactor(const Term &term, mlir::Value factor);

/// Builds `sum(terms)` (0 when empty) at the builder's insertion point.
/// Factors are looked up in `mapping` first, so terms of one region can be
/// rebuilt in another (see cloneExpression).
mlir::Value buildSum(mlir::OpBuilder &builder, mlir::Location loc,
                     llvm::ArrayRef<Term> terms, mlir::IRMapping &mapping);

/// Returns `value` as seen from the region `mapping` clones into: block
/// arguments of an attn.attention region map to the same-numbered argument
/// of `target`, and defining ops are cloned (once) before the insertion
/// point. This relies on every element region taking the same arguments.
mlir::Value cloneExpression(mlir::Value value, mlir::OpBuilder &builder,
                            mlir::Block &target, mlir::IRMapping &mapping);

/// Erases the ops of `block` whose results are unused and that have no side
/// effects, so a pass leaves no dead score terms behind.
void eraseDeadOps(mlir::Block &block);

} // namespace rbfc



namespace rbfc::attn {
class AttentionOp;
} // namespace rbfc::attn

namespace rbfc {

/// Adds the score-region `terms` to what `region` of `op` yields, creating
/// the region (yielding just the terms) when it is empty.
void addTermsToRegion(attn::AttentionOp op, mlir::Region &region,
                      llvm::ArrayRef<Term> terms);

/// Makes the single-value `region` yield `sum(terms)` (terms of that region)
/// and erases what became dead.
void replaceRegionYield(mlir::Region &region, llvm::ArrayRef<Term> terms);

} // namespace rbfc
#endif // RBFC_TRANSFORMS_SCORETERMS_H
