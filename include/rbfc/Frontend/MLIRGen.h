//===- MLIRGen.h - from an .attn spec to the attn dialect -------*- C++ -*-===//
#ifndef RBFC_FRONTEND_MLIRGEN_H
#define RBFC_FRONTEND_MLIRGEN_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace rbfc {

/// What a spec leaves to the compiler's caller: the kernel is specialised
/// for one head dimension and element type.
struct FrontendOptions {
  int64_t headDim = 64;
  /// Element type of q, k, v and the output: "bf16", "f16" or "f32".
  std::string dtype = "bf16";
  /// Whether the function also returns the log-sum-exp of each row.
  bool withLse = false;
};

/// Registers the dialects the frontend emits into `context`.
void loadFrontendDialects(mlir::MLIRContext &context);

/// Parses and type-checks the spec in `buffer` and builds a module with one
/// `func.func @NAME(q, k, v, params..., captures...)` around an
/// `attn.attention` op. Every problem is reported through the context's
/// diagnostic engine at a `filename:line:col` location; returns null then.
mlir::OwningOpRef<mlir::ModuleOp>
buildAttnModule(mlir::MLIRContext &context, llvm::StringRef buffer,
                llvm::StringRef filename, const FrontendOptions &options);

} // namespace rbfc

#endif // RBFC_FRONTEND_MLIRGEN_H
