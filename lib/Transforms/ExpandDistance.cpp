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

/// float(a +- b) = float(a) +- float(b) for position differences such as
/// ALiBi's `kv_idx - q_idx`: after the split, each side is a row or key term
/// the later passes can move. Exact while |a|, |b| < 2^24, far above any
/// sequence length.
struct SplitConvertedIndexSum : OpRewritePattern<arith::SIToFPOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(arith::SIToFPOp op,
                                PatternRewriter &rewriter) const override {
    auto cast = op.getIn().getDefiningOp<arith::IndexCastOp>();
    if (!cast || !cast.getIn().getType().isIndex())
      return failure();
    Operation *sum = cast.getIn().getDefiningOp();
    if (!isa_and_nonnull<arith::AddIOp, arith::SubIOp>(sum))
      return failure();
    Location loc = op.getLoc();
    auto convert = [&](Value index) -> Value {
      Value wide =
          arith::IndexCastOp::create(rewriter, loc, cast.getType(), index);
      return arith::SIToFPOp::create(rewriter, loc, op.getType(), wide);
    };
    Value lhs = convert(sum->getOperand(0));
    Value rhs = convert(sum->getOperand(1));
    if (isa<arith::AddIOp>(sum))
      rewriter.replaceOpWithNewOp<arith::AddFOp>(op, lhs, rhs);
    else
      rewriter.replaceOpWithNewOp<arith::SubFOp>(op, lhs, rhs);
    return success();
  }
};

struct AttnExpandDistancePass
    : rbfc::impl::AttnExpandDistanceBase<AttnExpandDistancePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<ExpandSquaredDistance, SplitConvertedIndexSum>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
