//===- DeriveBackward.cpp - gradient regions by reverse-mode AD -----------===//
//
// The backward of attention splits in two. The softmax part is the same for
// every spec and belongs to the backend: with P recomputed from the saved
// log-sum-exp, dP = dO V^T, D = rowsum(dO * O) and dS = P * (dP - D). What
// depends on the spec is how dS reaches q, k, the parameters and the
// captured tensors through the score. This pass derives that part, region
// by region, as reverse-mode derivatives of the canonical regions: each
// gradient region recomputes the forward values it needs, walks the ops
// backwards accumulating adjoints, and hands the adjoints of what the region
// read to attn.grad_* ops. Canonicalisation then removes the recomputed
// values no adjoint needs: for RBF attention (score = scaled_dot +
// key_bias) score_grad is just two grad ops on its adjoint.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"
#include "rbfc/Transforms/ScoreTerms.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#include <cmath>

#define DEBUG_TYPE "attn-derive-backward"

namespace rbfc {
#define GEN_PASS_DEF_ATTNDERIVEBACKWARD
#include "rbfc/Transforms/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

/// Builds the gradient region of one forward region.
class RegionDifferentiator {
public:
  RegionDifferentiator(attn::AttentionOp op, Region &forward, Region &grad)
      : op(op), forward(forward), grad(grad), b(op.getLoc(), op.getContext()) {}

  LogicalResult run();

private:
  /// Adds `contribution` to the adjoint of the forward value `value`.
  void accumulate(Value value, Value contribution) {
    if (!isa<FloatType>(value.getType()))
      return;
    Value &adjoint = adjoints[value];
    adjoint = adjoint ? arith::AddFOp::create(b, adjoint, contribution)
                      : contribution;
  }
  /// Propagates the adjoint `x` of `forwardOp`'s result to its operands.
  LogicalResult propagate(Operation *forwardOp, Value x);

  Value f32(double value) {
    return arith::ConstantOp::create(b, b.getF32FloatAttr(value));
  }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, x, y); }
  Value neg(Value x) { return arith::NegFOp::create(b, x); }
  Value cmp(arith::CmpFPredicate predicate, Value x, Value y) {
    return arith::CmpFOp::create(b, predicate, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, c, x, y);
  }

  attn::AttentionOp op;
  Region &forward, &grad;
  ImplicitLocOpBuilder b;
  /// Forward values to their recomputation in the gradient region.
  IRMapping recomputed;
  /// Forward values to the adjoint built so far.
  DenseMap<Value, Value> adjoints;
};

LogicalResult RegionDifferentiator::run() {
  Block &block = op.createRegionBlock(grad);
  Block &source = forward.front();
  // The gradient region's arguments are the forward region's with the
  // adjoint inserted after the indices.
  for (BlockArgument arg : source.getArguments()) {
    unsigned position = arg.getArgNumber();
    if (position >= attn::AttentionOp::kNumIndexArgs)
      ++position;
    recomputed.map(arg, block.getArgument(position));
  }
  Value seed = block.getArgument(attn::AttentionOp::kNumIndexArgs);
  b.setInsertionPointToEnd(&block);
  for (Operation &forwardOp : source.without_terminator())
    b.clone(forwardOp, recomputed);

  accumulate(attn::AttentionOp::getYielded(forward)[0], seed);
  // Every use of a value comes after its definition, so in reverse order
  // a value's adjoint is complete when its definition is reached.
  SmallVector<Operation *> ops = llvm::to_vector(llvm::map_range(
      source.without_terminator(), [](Operation &o) { return &o; }));
  for (Operation *forwardOp : llvm::reverse(ops))
    for (Value result : forwardOp->getResults())
      if (Value x = adjoints.lookup(result))
        if (failed(propagate(forwardOp, x)))
          return failure();
  // Parameters are the region's only float arguments.
  for (BlockArgument arg : source.getArguments())
    if (Value x = adjoints.lookup(arg))
      attn::GradParamOp::create(b, recomputed.lookup(arg), x);
  attn::YieldOp::create(b);
  eraseDeadOps(block);
  return success();
}

LogicalResult RegionDifferentiator::propagate(Operation *forwardOp, Value x) {
  auto in = [&](unsigned i) {
    return recomputed.lookup(forwardOp->getOperand(i));
  };
  auto operand = [&](unsigned i) { return forwardOp->getOperand(i); };
  Value result = forwardOp->getNumResults()
                     ? recomputed.lookup(forwardOp->getResult(0))
                     : Value();
  using P = arith::CmpFPredicate;
  return TypeSwitch<Operation *, LogicalResult>(forwardOp)
      .Case([&](arith::AddFOp) {
        accumulate(operand(0), x);
        accumulate(operand(1), x);
        return success();
      })
      .Case([&](arith::SubFOp) {
        accumulate(operand(0), x);
        accumulate(operand(1), neg(x));
        return success();
      })
      .Case([&](arith::NegFOp) {
        accumulate(operand(0), neg(x));
        return success();
      })
      .Case([&](arith::MulFOp) {
        accumulate(operand(0), mul(x, in(1)));
        accumulate(operand(1), mul(x, in(0)));
        return success();
      })
      .Case([&](arith::DivFOp) {
        accumulate(operand(0), div(x, in(1)));
        accumulate(operand(1), neg(div(mul(x, result), in(1))));
        return success();
      })
      .Case<arith::MaximumFOp, arith::MinimumFOp>([&](Operation *extremum) {
        // PyTorch's maximum/minimum: the operand that wins takes the
        // gradient, equal operands take half each, and with a NaN both take
        // it whole.
        bool isMax = isa<arith::MaximumFOp>(extremum);
        Value half = mul(x, f32(0.5));
        Value tie = cmp(P::OEQ, in(0), in(1));
        Value share = select(tie, half, x);
        Value lhsLoses = cmp(isMax ? P::OLT : P::OGT, in(0), in(1));
        Value rhsLoses = cmp(isMax ? P::OGT : P::OLT, in(0), in(1));
        accumulate(operand(0), select(lhsLoses, f32(0), share));
        accumulate(operand(1), select(rhsLoses, f32(0), share));
        return success();
      })
      .Case([&](arith::SelectOp) {
        // torch.where: the chosen operand takes the gradient, the other 0.
        accumulate(operand(1), select(in(0), x, f32(0)));
        accumulate(operand(2), select(in(0), f32(0), x));
        return success();
      })
      .Case([&](math::AbsFOp) {
        // sign(a) * x, with sign(0) = 0 as in PyTorch.
        Value positive = cmp(P::OGT, in(0), f32(0));
        Value negative = cmp(P::OLT, in(0), f32(0));
        accumulate(operand(0),
                   select(positive, x, select(negative, neg(x), f32(0))));
        return success();
      })
      .Case([&](math::ExpOp) {
        accumulate(operand(0), mul(x, result));
        return success();
      })
      .Case([&](math::Exp2Op) {
        accumulate(operand(0), mul(x, mul(result, f32(M_LN2))));
        return success();
      })
      .Case([&](math::LogOp) {
        accumulate(operand(0), div(x, in(0)));
        return success();
      })
      .Case([&](math::Log2Op) {
        accumulate(operand(0), div(mul(x, f32(M_LOG2E)), in(0)));
        return success();
      })
      .Case([&](math::TanhOp) {
        Value slope = arith::SubFOp::create(b, f32(1), mul(result, result));
        accumulate(operand(0), mul(x, slope));
        return success();
      })
      .Case([&](math::SqrtOp) {
        accumulate(operand(0), div(mul(x, f32(0.5)), result));
        return success();
      })
      .Case([&](math::RsqrtOp) {
        // d(a^-1/2)/da = -a^-3/2 / 2.
        Value cube = mul(result, mul(result, result));
        accumulate(operand(0), mul(x, mul(cube, f32(-0.5))));
        return success();
      })
      // Piecewise constant, or a function of integers: gradient 0.
      .Case<math::FloorOp, math::CeilOp, arith::SIToFPOp, arith::UIToFPOp,
            arith::ConstantOp, attn::LoadBoundOp>(
          [](Operation *) { return success(); })
      .Case([&](attn::ScaledDotOp) {
        attn::GradScaledDotOp::create(b, x);
        return success();
      })
      .Case([&](attn::Norm2Op norm) {
        attn::GradNorm2Op::create(b, norm.getVector(), x);
        return success();
      })
      .Case([&](attn::KeyBiasOp) {
        attn::GradKeyBiasOp::create(b, x);
        return success();
      })
      .Case([&](attn::LoadOp load) {
        if (!load.getType().isF32())
          return success();
        SmallVector<Value> indices;
        for (Value index : load.getIndices())
          indices.push_back(recomputed.lookup(index));
        attn::GradCaptureOp::create(b, recomputed.lookup(load.getCapture()),
                                    indices, x);
        return success();
      })
      .Case([&](attn::DotOp) {
        return forwardOp->emitOpError(
            "cannot be differentiated outside the canonical form: the "
            "backward reads the scaled dot product (run attn-fold-scales "
            "first)");
      })
      .Case([&](attn::Dist2Op) {
        return forwardOp->emitOpError(
            "cannot be differentiated outside the canonical form (run "
            "attn-expand-distance first)");
      })
      .Default([&](Operation *other) {
        return other->emitOpError(
            "cannot be differentiated: the backward pass has no derivative "
            "for it");
      });
}

struct AttnDeriveBackwardPass
    : rbfc::impl::AttnDeriveBackwardBase<AttnDeriveBackwardPass> {
  void runOnOperation() override {
    WalkResult result = getOperation()->walk([](attn::AttentionOp op) {
      if (op.hasBackward())
        return WalkResult::advance();
      std::pair<Region *, Region *> pairs[] = {
          {&op.getScore(), &op.getScoreGrad()},
          {&op.getKeyBias(), &op.getKeyBiasGrad()},
          {&op.getQScale(), &op.getQScaleGrad()},
          {&op.getRowBias(), &op.getRowBiasGrad()}};
      for (auto [forward, grad] : pairs) {
        if (forward->empty())
          continue;
        if (failed(RegionDifferentiator(op, *forward, *grad).run()))
          return WalkResult::interrupt();
        // A region whose value reaches no gradient (a constant q_scale)
        // needs no backward work; score_grad stays, it marks the op as
        // derived.
        bool addsToGradients =
            llvm::any_of(grad->front().getOperations(), [](Operation &inner) {
              return isa<attn::GradScaledDotOp, attn::GradNorm2Op,
                         attn::GradKeyBiasOp, attn::GradParamOp,
                         attn::GradCaptureOp>(inner);
            });
        if (grad != &op.getScoreGrad() && !addsToGradients)
          grad->getBlocks().clear();
      }
      LLVM_DEBUG(llvm::dbgs() << "derived the backward of " << op << "\n");
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
