//===- rbfc.cpp - the rbfc command-line compiler --------------------------===//
//
// rbfc SPEC [-o OUT] [--emit=attn|mlir] [--head-dim=N] [--dtype=T] [--lse]
//
// Every stage can be printed: `attn` is the IR straight from the spec,
// `mlir` the canonical form after the algebra pipeline.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <CLI/CLI.hpp>

namespace {

struct Options {
  std::string input;
  std::string output = "-";
  std::string emit = "mlir";
  int64_t headDim = 64;
  std::string dtype = "bf16";
  bool withLse = false;
  bool printIRAfterAll = false;
};

int compile(const Options &options) {
  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> buffer =
      mlir::openInputFile(options.input, &error);
  if (!buffer) {
    llvm::errs() << "rbfc: error: " << error << "\n";
    return 1;
  }
  llvm::StringRef text = buffer->getBuffer();
  std::string bufferName =
      options.input == "-" ? "<stdin>" : options.input;

  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(text, bufferName), llvm::SMLoc());
  mlir::MLIRContext context;
  mlir::SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);

  rbfc::FrontendOptions frontend;
  frontend.headDim = options.headDim;
  frontend.dtype = options.dtype;
  frontend.withLse = options.withLse;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      rbfc::buildAttnModule(context, text, bufferName, frontend);
  if (!module)
    return 1;

  if (options.emit != "attn") {
    mlir::PassManager pm(&context);
    if (options.printIRAfterAll) {
      context.disableMultithreading();
      pm.enableIRPrinting(
          /*shouldPrintBeforePass=*/[](mlir::Pass *, mlir::Operation *) {
            return false;
          },
          /*shouldPrintAfterPass=*/[](mlir::Pass *, mlir::Operation *) {
            return true;
          },
          /*printModuleScope=*/true, /*printAfterOnlyOnChange=*/false);
    }
    rbfc::buildAttnCanonicalizePipeline(pm);
    if (mlir::failed(pm.run(*module)))
      return 1;
  }

  std::unique_ptr<llvm::ToolOutputFile> output =
      mlir::openOutputFile(options.output, &error);
  if (!output) {
    llvm::errs() << "rbfc: error: " << error << "\n";
    return 1;
  }
  module->print(output->os());
  output->keep();
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  CLI::App app{"rbfc: compile an attention spec (.attn) into a fused "
               "attention kernel.\n\n"
               "A spec names the score of one (query, key) pair, an optional "
               "mask and the normalisation; see docs/language.md.\n"
               "Example:\n"
               "  rbfc examples/rbf.attn --emit=attn     # IR from the spec\n"
               "  rbfc examples/rbf.attn                 # canonical IR\n",
               "rbfc"};
  app.add_option("spec", options.input, "the .attn spec to compile ('-' reads "
                                        "standard input)")
      ->required();
  app.add_option("-o,--output", options.output,
                 "where to write the result ('-' is standard output)");
  app.add_option("--emit", options.emit,
                 "what to produce: 'attn' (IR from the spec), 'mlir' (the "
                 "canonical IR after the algebra passes)")
      ->check(CLI::IsMember({"attn", "mlir"}))
      ->capture_default_str();
  app.add_option("--head-dim", options.headDim,
                 "head dimension the kernel is specialised for")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--dtype", options.dtype,
                 "element type of q, k, v and the output")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  app.add_flag("--lse", options.withLse,
               "also return the log-sum-exp of each query row");
  app.add_flag("--print-ir-after-all", options.printIRAfterAll,
               "print the IR after every pass (to standard error)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    int code = app.exit(e);
    // CLI11 returns 0 for --help; any misuse must fail.
    return code == 0 ? 0 : 1;
  }
  return compile(options);
}
