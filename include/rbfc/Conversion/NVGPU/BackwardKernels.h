//===- BackwardKernels.h - the mma.sync backward kernels --------*- C++ -*-===//
//
// FlashAttention-2's backward for a derived attn.attention (one with
// gradient regions, docs/backward.md), as five kernels beside the forward
// in the same gpu.module, launched in this order on one stream:
//
//   NAME_bwd_rows       delta = rowsum(dO * O) - dlse and lse2, the saved
//                       log-sum-exp without row terms in base 2, per row
//   NAME_bwd_dkdv       per (key tile, kv head, batch): dK, dV over the
//                       group's query heads and kept query tiles; the key
//                       terms for NAME_bwd_dq; partial sums of gradients
//   NAME_bwd_dq         per (query tile, head, batch): dQ over the kept key
//                       tiles; partial sums of gradients
//   NAME_bwd_tile_sums  the partial sums of each (batch, head), in order
//   NAME_bwd_reduce     the parameters' and captures' gradients
//
// docs/abi.md ("Backward") gives their parameter list, grids and workspace.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_BACKWARDKERNELS_H
#define RBFC_CONVERSION_NVGPU_BACKWARDKERNELS_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace rbfc {

/// Checks that the backward of `op` can be built as mma.sync kernels; the
/// diagnostic says which constraint fails.
mlir::LogicalResult verifyBackwardKernels(attn::AttentionOp op);

/// Appends the backward kernels of `op` (canonical, derived, with an
/// mma_sync plan) to `module`, the forward kernel `forwardName` being
/// there already, and returns the descriptor's "backward" object.
mlir::FailureOr<mlir::DictionaryAttr>
buildBackwardKernels(attn::AttentionOp op, mlir::gpu::GPUModuleOp module,
                     llvm::StringRef forwardName);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_BACKWARDKERNELS_H
