//===- DropRowInvariant.cpp - factor per-query terms out of softmax -------===//
//
// softmax_j(s_ij + r_i) = softmax_j(s_ij): a term that is the same for every
// key of a row cancels. It still shifts the row's log-sum-exp, so it moves
// to the row_bias region rather than vanishing. Under `none` the weights are
// exp(s_ij) themselves and the term scales the output: nothing moves.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"
#include "rbfc/Transforms/ScoreTerms.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-drop-row-invariant"

namespace rbfc {
#define GEN_PASS_DEF_ATTNDROPROWINVARIANT
#include "rbfc/Transforms/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

struct AttnDropRowInvariantPass
    : rbfc::impl::AttnDropRowInvariantBase<AttnDropRowInvariantPass> {
  void runOnOperation() override {
    getOperation()->walk([](attn::AttentionOp op) {
      if (!op.isSoftmax())
        return;
      attn::ScoreDependence dependence;
      SmallVector<Term> kept, rowTerms;
      for (Term &term : decomposeSum(attn::AttentionOp::getYielded(
               op.getScore())[0])) {
        bool rowOnly = (dependenceOf(dependence, term) & attn::kKeySide) == 0;
        (rowOnly ? rowTerms : kept).push_back(term);
      }
      LLVM_DEBUG(llvm::dbgs() << "row-invariant terms: " << rowTerms.size()
                              << ", kept: " << kept.size() << "\n");
      if (rowTerms.empty())
        return;
      addTermsToRegion(op, op.getRowBias(), rowTerms);
      replaceRegionYield(op.getScore(), kept);
    });
  }
};

} // namespace
