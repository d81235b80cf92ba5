//===- KeyBiasProduct.h - a key bias carried by S = Q K^T -------*- C++ -*-===//
//
// A score scaled_dot + key_bias is q_scale * (q.k + key_bias / q_scale): the
// key's term t = key_bias / q_scale can ride in the product S = Q K^T as one
// more column of K (t) against a column of ones in Q, and the kernel then
// scores every element as a plain scaled dot product. That holds for every
// value of the parameters only when t does not depend on the ones that can
// make q_scale zero: RBF's key_bias -gamma ||k||^2 over q_scale 2 gamma is
// -||k||^2 / 2 at every gamma, gamma = 0 included. This analysis finds the
// parameters that cancel between the two regions; the key-terms prologue
// evaluates both with those set to 1.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_DIALECT_ATTN_KEYBIASPRODUCT_H
#define RBFC_DIALECT_ATTN_KEYBIASPRODUCT_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "llvm/ADT/SmallVector.h"

#include <string>

namespace rbfc::attn {

struct KeyBiasProduct {
  /// Positions in the op's parameter list of the parameters that cancel:
  /// q_scale is a nonzero constant times exactly these, and key_bias has
  /// each of them as a factor as many times and nowhere else.
  llvm::SmallVector<unsigned> cancelledParams;

  /// The analysis of `op`, or in `whyNot` the reason its key bias cannot
  /// ride in the product.
  static std::optional<KeyBiasProduct> analyze(AttentionOp op,
                                               std::string *whyNot = nullptr);
};

} // namespace rbfc::attn

#endif // RBFC_DIALECT_ATTN_KEYBIASPRODUCT_H
