//===- ExpandDistance.cpp - ||q - k||^2 as norms and a dot product --------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace rbfc {
#define GEN_PASS_DEF_ATTNEXPANDDISTANCE
#include "rbfc/Transforms/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

/// ||q - k||^2 = ||q||^2 + ||k||^2 - 2 q.k
struct ExpandSquaredDistance : OpRewritePattern<attn::Dist2Op> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(attn::Dist2Op op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Type f32 = rewriter.getF32Type();
    Value queryNorm = attn::Norm2Op::create(rewriter, loc, f32, attn::Vector::q);
    Value keyNorm = attn::Norm2Op::create(rewriter, loc, f32, attn::Vector::k);
    Value dot = attn::DotOp::create(rewriter, loc, f32);
    Value two = arith::ConstantOp::create(rewriter, loc,
                                          rewriter.getF32FloatAttr(2.0f));
    Value twiceDot = arith::MulFOp::create(rewriter, loc, two, dot);
    Value norms = arith::AddFOp::create(rewriter, loc, queryNorm, keyNorm);
    rewriter.replaceOpWithNewOp<arith::SubFOp>(op, norms, twiceDot);
    return success();
  }
};

struct AttnExpandDistancePass
    : rbfc::impl::AttnExpandDistanceBase<AttnExpandDistancePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<ExpandSquaredDistance>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
