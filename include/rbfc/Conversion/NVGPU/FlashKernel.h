//===- FlashKernel.h - the flash-attention forward kernel -----*- C++ -*-===//
//
// Builds the FlashAttention-2 style forward kernel of one canonical
// attn.attention as a gpu.func made of nvgpu/nvvm ops, its matrix products
// by mma.sync (sm_80+) or by wgmma (sm_90a), as the plan's kernel says. The
// data-to-thread mapping is the one of mma.sync m16n8k16 in both (see
// docs/kernel.md): warp w owns query rows [16w, 16w + 16) of the tile, lane
// l holds rows l/4 and l/4 + 8 and key columns 2(l%4), 2(l%4) + 1 of every
// 8-key slice.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_FLASHKERNEL_H
#define RBFC_CONVERSION_NVGPU_FLASHKERNEL_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace rbfc {

/// Name of the dictionary attribute on the kernel that holds the launch
/// descriptor of docs/abi.md.
inline constexpr llvm::StringLiteral kDescriptorAttrName = "rbfc.descriptor";

/// The compute capability an "sm_NN[a]" target names (90 for "sm_90a"),
/// 0 for anything else: the kernel's sm_90 features key on it.
int archVersion(llvm::StringRef arch);

/// The bytes of shared memory a block of `arch` can have, opted in (the
/// CUDA programming guide's table of compute capabilities).
int64_t sharedMemoryLimit(llvm::StringRef arch);

/// Fails on `op`, saying why and what would help (`remedy`), when kernel
/// `entry`'s `bytes` of shared memory are more than a block of `arch` can
/// have, opted in: caught when compiling rather than by the driver when the
/// kernel is loaded.
mlir::LogicalResult checkSharedMemory(mlir::Operation *op, llvm::StringRef arch,
                                      llvm::StringRef entry, int64_t bytes,
                                      llvm::StringRef remedy);

/// Checks that `plan` can be built for `op` by the flash kernel of its
/// structure (mma_sync or wgmma); the diagnostic says which constraint
/// fails.
mlir::LogicalResult verifyFlashPlan(attn::AttentionOp op, attn::PlanAttr plan);

/// Appends to `module` the kernel `name` computing `op` (canonical) with
/// `plan` (its plan or one of its small_plans). Emits a diagnostic on `op` and
/// fails on what the kernel cannot express.
mlir::FailureOr<mlir::gpu::GPUFuncOp>
buildFlashKernel(attn::AttentionOp op, attn::PlanAttr plan,
                 mlir::gpu::GPUModuleOp module, llvm::StringRef name);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_FLASHKERNEL_H
