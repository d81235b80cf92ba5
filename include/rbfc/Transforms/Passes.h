//===- Passes.h - rbfc passes over the attn dialect -------------*- C++ -*-===//
#ifndef RBFC_TRANSFORMS_PASSES_H
#define RBFC_TRANSFORMS_PASSES_H

#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace rbfc {

#define GEN_PASS_DECL
#include "rbfc/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "rbfc/Transforms/Passes.h.inc"

/// The target-independent pipeline that puts every attn.attention into the
/// normal form: expand distances, factor out row terms, hoist key terms,
/// fold scales, classify the mask, with canonicalisation in between.
void buildAttnCanonicalizePipeline(mlir::OpPassManager &pm);

/// Derives the gradient regions (attn-derive-backward) of canonical ops and
/// cleans them up.
void buildAttnBackwardPipeline(mlir::OpPassManager &pm);

/// Registers every rbfc pass and the `attn-canonicalize` pipeline.
void registerRbfcPasses();

} // namespace rbfc

#endif // RBFC_TRANSFORMS_PASSES_H
