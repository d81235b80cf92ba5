//===- Passes.h - lowerings of attn to the host and the GPU -----*- C++ -*-===//
#ifndef RBFC_CONVERSION_PASSES_H
#define RBFC_CONVERSION_PASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace rbfc {

#define GEN_PASS_DECL
#include "rbfc/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "rbfc/Conversion/Passes.h.inc"

} // namespace rbfc

#endif // RBFC_CONVERSION_PASSES_H
