//===- spec_fuzzer.cpp - libFuzzer target over the .attn frontend ---------===//
//
// Feeds arbitrary bytes to rbfc::buildAttnModule as a spec: lexing, parsing,
// type checking, MLIRGen and the verifier all run on hostile input. What
// compiles also goes through the canonical pipeline, whose algebra passes
// pattern-match the IR the frontend emits. A diagnostic is the expected
// answer to bad input; a crash, an assertion, a sanitizer report or an MLIR
// fatal error is a bug.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/ErrorHandling.h"

#include <cstdint>
#include <cstdlib>

namespace {

/// Diagnostics are printed only with RBFC_FUZZ_PRINT set, to see why a
/// reproducer is rejected; bad input is the common case.
bool printDiagnostics() {
  static const bool enabled = std::getenv("RBFC_FUZZ_PRINT") != nullptr;
  return enabled;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A fresh context per input: uniqued attributes and types would otherwise
  // pile up across millions of runs and trip libFuzzer's RSS limit.
  mlir::MLIRContext context(mlir::MLIRContext::Threading::DISABLED);
  // Swallow every diagnostic; the frontend must report, never crash.
  mlir::ScopedDiagnosticHandler handler(&context, [](mlir::Diagnostic &diag) {
    if (printDiagnostics())
      llvm::errs() << diag.getLocation() << ": " << diag << "\n";
    return mlir::success();
  });

  llvm::StringRef spec(reinterpret_cast<const char *>(data), size);
  rbfc::FrontendOptions options;
  // Vary the compile options with the input so each spec exercises the
  // lse result and every element type without a separate corpus.
  if (size > 0) {
    static const char *const kDtypes[] = {"bf16", "f16", "f32"};
    options.dtype = kDtypes[data[size - 1] % 3];
    options.withLse = (data[size - 1] & 0x4) != 0;
    options.headDim = (data[size - 1] & 0x8) ? 128 : 64;
  }
  mlir::OwningOpRef<mlir::ModuleOp> module =
      rbfc::buildAttnModule(context, spec, "fuzz.attn", options);
  if (!module)
    return 0;

  mlir::PassManager pm(&context);
  rbfc::buildAttnCanonicalizePipeline(pm);
  // The pass manager verifies after every pass: a pass that leaves invalid
  // IR fails here instead of crashing a later pass. That is a bug as well.
  if (mlir::failed(pm.run(*module)))
    llvm::report_fatal_error("the canonical pipeline failed on a spec the "
                             "frontend accepted");
  return 0;
}
