//===- HoistKeyTerms.cpp - per-key score terms into key_bias --------------===//
//
// A term that does not depend on the query row is a property of the key
// row: ||k_j||^2, a captured per-key vector, a constant. Computing it per
// key tile instead of per element is what removes the tax of RBF attention.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Dialect/Attn/AttnOps.h"
#include "rbfc/Transforms/Passes.h"
#include "rbfc/Transforms/ScoreTerms.h"

#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-hoist-key-terms"

namespace rbfc {
#define GEN_PASS_DEF_ATTNHOISTKEYTERMS
#include "rbfc/Transforms/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;

namespace {

struct AttnHoistKeyTermsPass
    : rbfc::impl::AttnHoistKeyTermsBase<AttnHoistKeyTermsPass> {
  void runOnOperation() override {
    getOperation()->walk([](attn::AttentionOp op) {
      attn::ScoreDependence dependence;
      SmallVector<Term> kept, keyTerms;
      for (Term &term :
           decomposeSum(attn::AttentionOp::getYielded(op.getScore())[0])) {
        unsigned depends = dependenceOf(dependence, term);
        // An existing attn.key_bias term stays: it already is per key.
        bool keyOnly = (depends & attn::kQuerySide) == 0 &&
                       (depends & attn::kDependsOnKeyBias) == 0 &&
                       term.coefficient != 0.0;
        (keyOnly ? keyTerms : kept).push_back(term);
      }
      LLVM_DEBUG(llvm::dbgs() << "key-only terms: " << keyTerms.size()
                              << ", kept: " << kept.size() << "\n");
      if (keyTerms.empty())
        return;
      bool hadKeyBias = !op.getKeyBias().empty();
      addTermsToRegion(op, op.getKeyBias(), keyTerms);
      if (!hadKeyBias) {
        Block &score = op.getScore().front();
        OpBuilder builder(score.getTerminator());
        Term read;
        read.factors.push_back(
            {attn::KeyBiasOp::create(builder, op.getLoc(),
                                     builder.getF32Type()),
             false});
        kept.push_back(read);
      }
      replaceRegionYield(op.getScore(), kept);
    });
  }
};

} // namespace
