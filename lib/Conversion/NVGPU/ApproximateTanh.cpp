//===- ApproximateTanh.cpp - tanh.approx.f32 for the kernels' f32 tanh ---===//
#include "rbfc/Conversion/NVGPU/ApproximateTanh.h"
#include "rbfc/Conversion/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-approximate-tanh"

namespace rbfc {
#define GEN_PASS_DEF_ATTNAPPROXIMATETANH
#include "rbfc/Conversion/Passes.h.inc"
} // namespace rbfc

using namespace mlir;

namespace {

/// math.tanh on f32 -> llvm.intr.tanh {afn}, which NVPTX selects as
/// tanh.approx.f32.
struct TanhToApproximateIntrinsic : OpRewritePattern<math::TanhOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(math::TanhOp tanh,
                                PatternRewriter &rewriter) const override {
    if (!tanh.getType().isF32())
      return rewriter.notifyMatchFailure(tanh, "not f32: libdevice keeps it");
    auto approximate = LLVM::TanhOp::create(
        rewriter, tanh.getLoc(), tanh.getType(), tanh.getOperand());
    approximate.setFastmathFlags(LLVM::FastmathFlags::afn);
    LLVM_DEBUG(llvm::dbgs() << "tanh.approx.f32 at " << tanh.getLoc() << "\n");
    rewriter.replaceOp(tanh, approximate);
    return success();
  }
};

struct AttnApproximateTanh
    : rbfc::impl::AttnApproximateTanhBase<AttnApproximateTanh> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<TanhToApproximateIntrinsic>(&getContext());
    FrozenRewritePatternSet frozen(std::move(patterns));
    for (auto function :
         getOperation().getBody()->getOps<FunctionOpInterface>()) {
      if (function->removeAttr(rbfc::kExactFunctionsAttrName)) {
        LLVM_DEBUG(llvm::dbgs() << function.getName() << ": exact\n");
        continue;
      }
      if (failed(applyPatternsGreedily(function, frozen)))
        return signalPassFailure();
    }
  }
};

} // namespace
