//===- RegionInlining.h - attn regions inside schedules -*- C++ -*-===//
//
// Backends evaluate the score, mask, q_scale, key_bias, row_bias and
// tile_class regions of attn.attention inside the loops they generate. The
// arith/math ops of a region are cloned as they are; the attn element ops
// (dot, scaled_dot, norm2, key_bias, size, load, load_bound) mean different
// code per backend (a vector loop on the host, an accumulator fragment on
// the GPU), so the backend supplies them through a callback.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_REGIONINLINING_H
#define RBFC_CONVERSION_REGIONINLINING_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Support/LLVM.h"

namespace rbfc {

/// Produces the value of one attn element op at the builder's insertion
/// point. `mapping` already maps the region's earlier values (and its
/// non-tensor block arguments), so operands of the op can be looked up.
/// For an op without results (attn.grad_*) the callback emits what the op
/// does and returns a null value. Returning failure aborts the inlining; the
/// callback reports why.
using AttnOpMaterializer = llvm::function_ref<mlir::FailureOr<mlir::Value>(
    mlir::OpBuilder &builder, mlir::Operation *attnOp,
    mlir::IRMapping &mapping)>;

/// Clones the single block of `region` at the builder's insertion point and
/// returns the values its attn.yield yields. Block argument i is replaced by
/// `arguments[i]`; a null entry (used for captured tensors, which only attn
/// ops read) leaves that argument unmapped. Ops of the attn dialect are
/// replaced by what `materialize` returns.
mlir::FailureOr<llvm::SmallVector<mlir::Value>>
inlineAttnRegion(mlir::OpBuilder &builder, mlir::Region &region,
                 mlir::ValueRange arguments, AttnOpMaterializer materialize);

/// Index of the captured tensor `tensor` (a block argument of any region of
/// `op`: captures are every region's trailing arguments) among the op's
/// captures.
unsigned captureIndex(attn::AttentionOp op, mlir::Value tensor);

/// `index` clamped into [0, size - 1]: attn.load and attn.load_bound read
/// captures at clamped indices (docs/language.md), so any index expression
/// stays in bounds.
mlir::Value clampToDimension(mlir::OpBuilder &builder, mlir::Location loc,
                             mlir::Value index, mlir::Value size);

/// Combines two elements of an attn.load_bound box: the smaller for `min`,
/// the larger for `max` (NaN-propagating for floats).
mlir::Value combineBound(mlir::OpBuilder &builder, mlir::Location loc,
                         attn::Bound bound, mlir::Value lhs, mlir::Value rhs);

} // namespace rbfc

#endif // RBFC_CONVERSION_REGIONINLINING_H
