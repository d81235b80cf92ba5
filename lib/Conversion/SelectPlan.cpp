//===- SelectPlan.cpp - the default kernel plan per target ----------------===//
//
// The mma.sync kernel gives each warp 16 query rows, so the query tile is
// 16 x warps. Eight warps and a 128-row tile keep every K/V tile in shared
// memory reused by 128 queries (the reuse FlashAttention-2 gets) while each
// thread holds only 16 rows' worth of the output accumulator: 64 registers
// at head_dim 128. The key tile is as wide as the registers for S allow.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/FlashKernel.h"
#include "rbfc/Conversion/Passes.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-select-plan"

namespace rbfc {
#define GEN_PASS_DEF_ATTNSELECTPLAN
#include "rbfc/Conversion/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

/// Architectures the mma.sync kernel targets (PTX 8.0, m16n8k16 bf16).
bool isSupportedArch(StringRef arch) {
  return llvm::is_contained({"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"},
                            arch);
}

attn::PlanAttr defaultPlan(MLIRContext *ctx, StringRef arch, int64_t headDim) {
  if (headDim >= 256)
    return attn::PlanAttr::get(ctx, arch, "mma_sync", /*tile_m=*/64,
                               /*tile_n=*/32, /*warps=*/4, /*stages=*/2);
  int64_t tileN = headDim <= 64 ? 128 : 64;
  return attn::PlanAttr::get(ctx, arch, "mma_sync", /*tile_m=*/128, tileN,
                             /*warps=*/8, /*stages=*/2);
}

struct AttnSelectPlan : rbfc::impl::AttnSelectPlanBase<AttnSelectPlan> {
  using Base::Base;

  void runOnOperation() override {
    if (!isSupportedArch(arch)) {
      getOperation()->emitError()
          << "unsupported target architecture '" << arch
          << "'; expected sm_80, sm_86, sm_89, sm_90 or sm_90a";
      return signalPassFailure();
    }
    WalkResult result = getOperation()->walk([&](attn::AttentionOp op) {
      attn::PlanAttr plan = op.getPlanAttr();
      if (!plan) {
        auto query = cast<RankedTensorType>(op.getQuery().getType());
        plan = defaultPlan(op.getContext(), arch, query.getDimSize(3));
        op.setPlanAttr(plan);
        LLVM_DEBUG(llvm::dbgs() << "chose " << plan << "\n");
      } else if (plan.getArch() != arch) {
        op.emitOpError() << "has a plan for " << plan.getArch()
                         << " but the target is " << arch;
        return WalkResult::interrupt();
      }
      return failed(verifyMmaSyncPlan(op, plan)) ? WalkResult::interrupt()
                                                 : WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
