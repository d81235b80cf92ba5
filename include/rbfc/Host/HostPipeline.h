//===- HostPipeline.h - from canonical attn IR to host code -----*- C++ -*-===//
//
// The host backend's compilation steps, shared by `rbfc --target=host` and
// the in-process JIT (rbfc::host::HostKernel): lower the canonical attn IR
// with attn-lower-to-host, then scf/vector/arith/math/memref to the LLVM
// dialect, translate to LLVM IR and optimise it for the CPU this runs on.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_HOST_HOSTPIPELINE_H
#define RBFC_HOST_HOSTPIPELINE_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Error.h"

#include <memory>

namespace llvm {
class LLVMContext;
class Module;
class TargetMachine;
class raw_pwrite_stream;
} // namespace llvm

namespace rbfc::host {

/// How the host kernel tiles the problem (see attn-lower-to-host).
struct HostTiling {
  int64_t tileM = 32;
  int64_t tileN = 64;
};

/// Registers the dialects and LLVM IR translations the host pipeline needs.
void registerHostDialects(mlir::MLIRContext &context);

/// Adds attn-lower-to-host and the conversions to the LLVM dialect.
void buildHostLoweringPipeline(mlir::OpPassManager &pm,
                               const HostTiling &tiling);

/// Where host code runs: in this process through ORC (its default large
/// code model), or from an object file that links into executables and
/// shared libraries (position-independent, small code model, so the
/// linker needs no text relocations).
enum class HostCodeUse { JIT, ObjectFile };

/// A TargetMachine for the CPU this process runs on (its features, -O3).
llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createHostTargetMachine(HostCodeUse use = HostCodeUse::JIT);

/// Translates a module in the LLVM dialect to LLVM IR and runs the -O3
/// pipeline for `targetMachine` on it.
llvm::Expected<std::unique_ptr<llvm::Module>>
translateAndOptimize(mlir::ModuleOp module, llvm::LLVMContext &llvmContext,
                     llvm::TargetMachine &targetMachine);

/// rbfc --target=host: lowers the canonical `module` and writes `emit`
/// ("kernel": the scf/vector kernel after attn-lower-to-host, "llvm": the
/// optimised LLVM IR, "obj": an object file for the host CPU) to `os`.
/// Errors go to the context's diagnostic handler; returns failure then.
mlir::LogicalResult emitHostArtifact(mlir::ModuleOp module,
                                     llvm::StringRef emit,
                                     const HostTiling &tiling,
                                     llvm::raw_pwrite_stream &os);

} // namespace rbfc::host

#endif // RBFC_HOST_HOSTPIPELINE_H
