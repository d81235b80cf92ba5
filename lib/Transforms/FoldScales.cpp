//===- FoldScales.cpp - the dot product's scale into Q, base 2 ------------===//
//
// alpha * (q.k) = (alpha q).k: when alpha is the same for every element of a
// (batch, head), a backend multiplies the query tile once instead of every
// score. Then exp(s) = exp2(s log2 e): scaling the score by log2(e) ahead of
// time lets the kernel use exp2 with no multiply per element. The q_scale
// region and the log2_domain flag record both folds for the backward pass.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"
#include "rbfc/Transforms/ScoreTerms.h"

#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#include <cmath>

#define DEBUG_TYPE "attn-fold-scales"

namespace rbfc {
#define GEN_PASS_DEF_ATTNFOLDSCALES
#include "rbfc/Transforms/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

constexpr double kLog2E = 1.4426950408889634;

/// The largest value above `dot` that stays linear in it: reached through a
/// chain of single uses of add, sub, neg, and mul/div by uniform values.
Value linearRoot(Value dot, attn::ScoreDependence &dependence) {
  Value current = dot;
  while (current.hasOneUse()) {
    Operation *user = *current.getUsers().begin();
    bool linear =
        TypeSwitch<Operation *, bool>(user)
            .Case<arith::AddFOp, arith::SubFOp, arith::NegFOp>(
                [](Operation *) { return true; })
            .Case<arith::MulFOp>([&](arith::MulFOp mul) {
              Value other =
                  mul.getLhs() == current ? mul.getRhs() : mul.getLhs();
              return other != current && dependence.isUniform(other);
            })
            .Case<arith::DivFOp>([&](arith::DivFOp div) {
              return div.getLhs() == current && div.getRhs() != current &&
                     dependence.isUniform(div.getRhs());
            })
            .Default([](Operation *) { return false; });
    if (!linear)
      break;
    current = user->getResult(0);
  }
  return current;
}

/// Rewrites the one linear root of the dot product as
/// `scaled_dot + rest` and moves the dot's factor into q_scale.
void foldDotScale(attn::AttentionOp op) {
  Block &score = op.getScore().front();
  SmallVector<attn::DotOp> dots(score.getOps<attn::DotOp>());
  if (dots.empty() || !op.getQScale().empty())
    return;
  // Dot ops are pure and identical; one is enough.
  for (attn::DotOp dot : llvm::drop_begin(dots)) {
    dot.replaceAllUsesWith(dots.front().getResult());
    dot.erase();
  }
  Value dot = dots.front();
  attn::ScoreDependence dependence;
  Value root = linearRoot(dot, dependence);

  SmallVector<Term> scaleTerms, rest;
  for (Term &term : decomposeSum(root)) {
    auto position = llvm::find_if(
        term.factors, [&](const Factor &factor) { return factor.value == dot; });
    if (position == term.factors.end()) {
      rest.push_back(term);
      continue;
    }
    term.factors.erase(position);
    scaleTerms.push_back(term);
  }
  LLVM_DEBUG(llvm::dbgs() << "dot scale terms: " << scaleTerms.size()
                          << ", other terms: " << rest.size() << "\n");
  addTermsToRegion(op, op.getQScale(), scaleTerms);

  OpBuilder builder = OpBuilder::atBlockBegin(&score);
  Term scaledDot;
  scaledDot.factors.push_back(
      {attn::ScaledDotOp::create(builder, op.getLoc(), builder.getF32Type()),
       false});
  rest.insert(rest.begin(), scaledDot);
  builder.setInsertionPointAfterValue(root);
  IRMapping identity;
  Value replacement = buildSum(builder, op.getLoc(), rest, identity);
  root.replaceAllUsesWith(replacement);
  eraseDeadOps(score);
}

/// Multiplies the value `region` yields by `factor`, merging it into the
/// constant coefficients of its terms.
void scaleRegionYield(Region &region, double factor) {
  SmallVector<Term> terms =
      decomposeSum(attn::AttentionOp::getYielded(region)[0]);
  for (Term &term : terms)
    term.coefficient *= factor;
  replaceRegionYield(region, terms);
}

/// Scales the score by log2(e), pushing the factor into q_scale and
/// key_bias where the score reads them as bare terms.
void moveToBaseTwo(attn::AttentionOp op) {
  SmallVector<Term> terms =
      decomposeSum(attn::AttentionOp::getYielded(op.getScore())[0]);
  for (Term &term : terms) {
    Value single = term.factors.size() == 1 ? term.factors[0].value : Value();
    bool bare = single && single.hasOneUse() &&
                isBareFactor(term, single);
    if (bare && single.getDefiningOp<attn::ScaledDotOp>()) {
      scaleRegionYield(op.getQScale(), kLog2E);
      continue;
    }
    if (bare && single.getDefiningOp<attn::KeyBiasOp>()) {
      scaleRegionYield(op.getKeyBias(), kLog2E);
      continue;
    }
    term.coefficient *= kLog2E;
  }
  replaceRegionYield(op.getScore(), terms);
  op.setLog2Domain(true);
}

struct AttnFoldScalesPass : rbfc::impl::AttnFoldScalesBase<AttnFoldScalesPass> {
  void runOnOperation() override {
    getOperation()->walk([](attn::AttentionOp op) {
      if (op.getLog2Domain())
        return;
      foldDotScale(op);
      moveToBaseTwo(op);
    });
  }
};

} // namespace
