//===- rbfc.cpp - the rbfc command-line compiler --------------------------===//
//
// rbfc SPEC [-o OUT] [--emit=attn|mlir|kernel|llvm|ptx|cubin] [--arch=sm_XX]
//      [--plan=#attn.plan<...>] [--head-dim=N] [--dtype=T] [--lse]
//
// Every stage can be printed: `attn` is the IR straight from the spec,
// `mlir` the canonical form after the algebra pipeline, `kernel` the
// gpu.module built from nvgpu/nvvm ops, then LLVM IR, PTX and cubin. PTX and
// cubin come with the launch descriptor of docs/abi.md beside them.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/NVGPU/TargetEmission.h"
#include "rbfc/Frontend/MLIRGen.h"
#include "rbfc/Host/HostPipeline.h"
#include "rbfc/Transforms/Passes.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/ADT/SmallString.h"
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
  /// Also derive the backward and build its kernels; implies withLse, since
  /// the backward reads the forward's log-sum-exp.
  bool backward = false;
  bool printIRAfterAll = false;
  std::string arch = "sm_90a";
  std::string plan;
  std::string descriptor;
  bool ptxasVerbose = false;
  /// "host" builds the CPU kernel (docs/host-backend.md) for kernel, llvm
  /// and obj; otherwise those stages build the GPU kernel.
  std::string target;
  /// --target=host, llvm and obj: the CPU to build for (default: this one).
  rbfc::host::HostCpu cpu;
};

int writeFile(const std::string &path, llvm::StringRef contents) {
  std::string error;
  std::unique_ptr<llvm::ToolOutputFile> file =
      mlir::openOutputFile(path, &error);
  if (!file) {
    llvm::errs() << "rbfc: error: " << error << "\n";
    return 1;
  }
  file->os() << contents;
  file->keep();
  return 0;
}

int writeModule(const std::string &path, mlir::ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os);
  return writeFile(path, text);
}

/// --target=host: the CPU kernel as scf/vector IR, LLVM IR or an object.
int emitHost(const Options &options, mlir::ModuleOp module) {
  llvm::SmallString<0> artifact;
  llvm::raw_svector_ostream os(artifact);
  if (mlir::failed(
          rbfc::host::emitHostArtifact(module, options.emit, {}, options.cpu,
                                       os)))
    return 1;
  return writeFile(options.output, artifact);
}

bool isKernelStage(llvm::StringRef emit) {
  return emit == "kernel" || emit == "llvm" || emit == "ptx" || emit == "cubin";
}

/// Where the descriptor goes: --descriptor, else OUTPUT with its extension
/// replaced by .json, else nowhere (output on standard output).
std::string descriptorPath(const Options &options) {
  if (!options.descriptor.empty())
    return options.descriptor;
  if (options.output == "-")
    return "";
  llvm::StringRef output = options.output;
  size_t dot = output.rfind('.');
  size_t slash = output.rfind('/');
  if (dot != llvm::StringRef::npos &&
      (slash == llvm::StringRef::npos || dot > slash))
    output = output.take_front(dot);
  return (output + ".json").str();
}

/// Lowers the canonical module to a GPU kernel and writes the stage asked.
int emitKernel(const Options &options, mlir::ModuleOp module) {
  if (!options.plan.empty() &&
      mlir::failed(rbfc::overridePlan(module, options.plan))) {
    llvm::errs() << "rbfc: error: --plan expects an attribute like '"
                 << rbfc::kPlanExample << "', got '" << options.plan << "'\n";
    return 1;
  }
  if (mlir::failed(rbfc::lowerToGPUKernels(module, options.arch)))
    return 1;
  if (options.emit == "kernel")
    return writeModule(options.output, module);
  mlir::FailureOr<std::string> descriptor = rbfc::kernelDescriptorJSON(module);
  if (mlir::failed(descriptor))
    return 1;
  bool llvmIR = options.emit == "llvm";
  mlir::FailureOr<std::string> text = rbfc::serializeKernels(
      module, options.arch,
      llvmIR ? rbfc::KernelFormat::LLVM : rbfc::KernelFormat::PTX);
  if (mlir::failed(text))
    return 1;
  std::string image = *text;
  if (options.emit == "cubin" || options.ptxasVerbose) {
    std::string report, error;
    mlir::FailureOr<std::string> cubin = rbfc::assemblePTX(
        *text, options.arch, options.ptxasVerbose, report, error);
    if (mlir::failed(cubin)) {
      llvm::errs() << "rbfc: error: " << error << "\n";
      return 1;
    }
    if (options.ptxasVerbose)
      llvm::errs() << report;
    if (options.emit == "cubin")
      image = *cubin;
  }
  if (int status = writeFile(options.output, image))
    return status;
  std::string path = descriptorPath(options);
  if (llvmIR || path.empty())
    return 0;
  return writeFile(path, *descriptor);
}

int compile(const Options &options) {
  bool host = options.target == "host";
  if (options.emit == "obj" && !host) {
    llvm::errs() << "rbfc: error: --emit=obj needs --target=host; GPU kernels "
                    "are emitted with --emit=ptx or --emit=cubin\n";
    return 1;
  }
  if ((!options.cpu.name.empty() || !options.cpu.features.empty()) &&
      !(host && (options.emit == "kernel" || options.emit == "llvm" ||
                 options.emit == "obj"))) {
    llvm::errs() << "rbfc: error: --cpu and --cpu-features choose the CPU of "
                    "--target=host (--emit=kernel, llvm or obj)\n";
    return 1;
  }
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
  mlir::DialectRegistry registry;
  if (isKernelStage(options.emit) && !host)
    rbfc::registerGPUBackend(registry);
  mlir::MLIRContext context(registry);
  // A user's error is the message and the caret into the spec, not the op
  // in MLIR's generic form (rbf-opt keeps MLIR's default for developers).
  context.printOpOnDiagnostic(false);
  mlir::SourceMgrDiagnosticHandler diagnostics(sourceMgr, &context);

  rbfc::FrontendOptions frontend;
  frontend.headDim = options.headDim;
  frontend.dtype = options.dtype;
  frontend.withLse = options.withLse || options.backward;
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
    if (options.backward)
      rbfc::buildAttnBackwardPipeline(pm);
    if (mlir::failed(pm.run(*module)))
      return 1;
  }

  if (host && options.emit != "attn" && options.emit != "mlir")
    return emitHost(options, *module);
  if (isKernelStage(options.emit))
    return emitKernel(options, *module);

  return writeModule(options.output, *module);
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
               "  rbfc examples/rbf.attn                 # canonical IR\n"
               "  rbfc examples/rbf.attn --emit=ptx -o rbf.ptx   # PTX + rbf.json\n",
               "rbfc"};
  app.add_option("spec", options.input, "the .attn spec to compile ('-' reads "
                                        "standard input)")
      ->required();
  app.add_option("-o,--output", options.output,
                 "where to write the result ('-' is standard output)");
  app.add_option("--emit", options.emit,
                 "what to produce: 'attn' (IR from the spec), 'mlir' (the "
                 "canonical IR after the algebra passes), 'kernel' (the GPU "
                 "kernel as nvgpu/nvvm IR), 'llvm' (its LLVM IR), 'ptx', "
                 "'cubin' (through ptxas); ptx and cubin also write the "
                 "launch descriptor (docs/abi.md)")
      ->check(CLI::IsMember(
          {"attn", "mlir", "kernel", "llvm", "ptx", "cubin", "obj"}))
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
  app.add_flag("--backward", options.backward,
               "also derive the backward (gradient regions in the IR) and "
               "build its kernels; implies --lse");
  app.add_option("--arch", options.arch, "GPU architecture of the kernel")
      ->check(CLI::IsMember({"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a"}))
      ->capture_default_str();
  app.add_option("--plan", options.plan,
                 "override the kernel plan, e.g. '#attn.plan<arch = "
                 "\"sm_90a\", kernel = \"mma_sync\", tile_m = 128, tile_n = "
                 "64, warps = 8, stages = 2>'");
  app.add_option("--descriptor", options.descriptor,
                 "where to write the launch descriptor (default: the output "
                 "with extension .json)");
  app.add_flag("--ptxas-verbose", options.ptxasVerbose,
               "run ptxas -v on the kernel and print its register and spill "
               "report");
  app.add_option("--target", options.target,
                 "'host' builds the CPU kernel instead of the GPU one: "
                 "--emit=kernel (scf/vector IR), llvm (optimised for this "
                 "CPU) or obj (an object file)")
      ->check(CLI::IsMember({"host"}));
  app.add_option("--cpu", options.cpu.name,
                 "--target=host: the CPU to build for, an LLVM "
                 "CPU name (x86-64-v3, skylake-avx512, znver4, ...) whose "
                 "features replace this machine's (default: this machine)");
  app.add_option("--cpu-features", options.cpu.features,
                 "--target=host: features to add or remove, "
                 "e.g. '+avx2,-avx512f' (on top of --cpu's or this "
                 "machine's)");
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
