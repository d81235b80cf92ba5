//===- KeyTermsKernel.h - the per-key terms prologue ------------*- C++ -*-===//
//
// The kernel that runs before the flash kernel when the score has per-key
// terms (RBF's -gamma ||k||^2): once per key, not once per query tile, it
// reads the key's row of K, sums its squares and evaluates the key_bias
// region, and writes the terms to the workspace (docs/abi.md).
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_KEYTERMSKERNEL_H
#define RBFC_CONVERSION_NVGPU_KEYTERMSKERNEL_H

#include "rbfc/Conversion/NVGPU/ForwardBlock.h"

namespace rbfc {

/// Adjacent lanes of the prologue that read one key row together, a chunk
/// each in turn, so a warp's load covers whole rows.
int64_t keyTermLanesPerKey(const ForwardConfig &config);
/// Keys one prologue block covers (docs/abi.md, keys_per_block).
int64_t keyTermKeysPerBlock(const ForwardConfig &config);

/// Appends the prologue `name` of the flash kernel of `op` to `module`.
mlir::LogicalResult buildKeyTermsKernel(mlir::ImplicitLocOpBuilder &b,
                                        attn::AttentionOp op,
                                        const ForwardConfig &config,
                                        const KeyTermWorkspace &workspace,
                                        mlir::gpu::GPUModuleOp module,
                                        llvm::StringRef name);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_KEYTERMSKERNEL_H
