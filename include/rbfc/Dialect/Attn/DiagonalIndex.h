//===- DiagonalIndex.h - indices that follow q_idx - kv_idx -----*- C++ -*-===//
//
// A relative-position table is read at an index that depends on the element
// only through its diagonal q_idx - kv_idx. The GPU backward sums such a
// table's gradient per diagonal, and maps diagonals to table elements by a
// binary search: that needs the index to be a monotone function of the
// diagonal (and of values uniform over a (batch, head)). This analysis
// proves it from the index's arithmetic: affine forms c q_idx - c kv_idx +
// u, and monotone operations (min, max, division by a positive constant)
// of such forms. A bucketing through a float log or a table lookup is not
// proven monotone.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_DIALECT_ATTN_DIAGONALINDEX_H
#define RBFC_DIALECT_ATTN_DIAGONALINDEX_H

#include "rbfc/Dialect/Attn/ScoreDependence.h"

#include "mlir/IR/Value.h"
#include "mlir/IR/ValueRange.h"
#include "llvm/ADT/DenseMap.h"

#include <optional>

namespace rbfc::attn {

class DiagonalIndex {
public:
  /// The direction in which the row-major element that `indices` select
  /// moves as q_idx - kv_idx grows: +1 or -1, 0 when it is the same for
  /// every element of a (batch, head); none when the analysis cannot show
  /// that it is a monotone function of q_idx - kv_idx and uniform values.
  std::optional<int> direction(mlir::ValueRange indices);

private:
  /// What is known of a value: uniform, affine in q_idx and kv_idx with
  /// uniform offset (coefficients), or monotone in the diagonal.
  struct Form {
    enum Kind { Affine, Monotone, Unknown } kind = Unknown;
    int64_t queryCoefficient = 0, keyCoefficient = 0;
    int direction = 0;

    static Form affine(int64_t query, int64_t key) {
      return {Affine, query, key, 0};
    }
    static Form monotone(int direction) { return {Monotone, 0, 0, direction}; }
    static Form unknown() { return {}; }
    /// Direction in the diagonal, none when the value is not a function of
    /// it (an affine form other than c (q_idx - kv_idx) + u).
    std::optional<int> diagonalDirection() const;
  };

  Form get(mlir::Value value);
  Form compute(mlir::Value value);
  /// a + sign * b.
  static Form combine(Form a, Form b, int sign);

  ScoreDependence dependence;
  llvm::DenseMap<mlir::Value, Form> cache;
};

} // namespace rbfc::attn

#endif // RBFC_DIALECT_ATTN_DIAGONALINDEX_H
