//===- Pipeline.cpp - the attn canonical pipeline -------------------------===//
#include "rbfc/Transforms/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void rbfc::buildAttnCanonicalizePipeline(OpPassManager &pm) {
  // Each algebra pass decomposes the score into a sum of products; folding
  // constants and merging duplicate ops first keeps those sums small.
  pm.addPass(createAttnExpandDistance());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  pm.addPass(createAttnDropRowInvariant());
  pm.addPass(createAttnHoistKeyTerms());
  pm.addPass(createAttnFoldScales());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createAttnClassifyMask());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void rbfc::buildAttnBackwardPipeline(OpPassManager &pm) {
  // The gradient regions recompute every forward value; canonicalisation
  // keeps the ones an adjoint needs and folds the unit factors away.
  pm.addPass(createAttnDeriveBackward());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
}

void rbfc::registerRbfcPasses() {
  registerAttnPasses();
  PassPipelineRegistration<>(
      "attn-canonicalize",
      "put every attn.attention into the normal form the backends fuse",
      buildAttnCanonicalizePipeline);
  PassPipelineRegistration<>(
      "attn-backward",
      "derive the gradient regions of canonical attn.attention ops",
      buildAttnBackwardPipeline);
}
