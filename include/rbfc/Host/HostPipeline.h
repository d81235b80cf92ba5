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
#include <string>

namespace llvm {
class LLVMContext;
class Module;
class TargetMachine;
class raw_pwrite_stream;
} // namespace llvm

namespace rbfc::host {

/// How the host kernel tiles the problem (see attn-lower-to-host).
struct HostTiling {
  /// Query rows per work item; 0 lets attn-lower-to-host choose (16 row
  /// blocks of the forward's rows per step, 64 for the backward).
  int64_t tileM = 0;
  int64_t tileN = 64;
  /// Keys per score vector; 0 takes the f32 lanes of the target CPU's
  /// vector registers.
  int64_t keyLanes = 0;
  /// Query rows per step, key vectors per score step and head_dim vectors
  /// per P*V-style step (attn-lower-to-host's rows-per-step,
  /// key-vectors-per-step, head-dim-vectors-per-step); 0 lets the pass
  /// choose for the vector registers keyLanes implies.
  int64_t rowsPerStep = 0;
  int64_t keyVectorsPerStep = 0;
  int64_t headDimVectorsPerStep = 0;
};

/// f32 lanes of the widest vector registers `target` has: 16 with
/// AVX-512, 8 with AVX, 4 otherwise.
int64_t f32VectorLanes(const llvm::TargetMachine &target);

/// Registers the dialects and LLVM IR translations the host pipeline needs.
void registerHostDialects(mlir::MLIRContext &context);

/// Adds attn-lower-to-host and the conversions to the LLVM dialect, for
/// code that runs on `target`.
void buildHostLoweringPipeline(mlir::OpPassManager &pm,
                               const HostTiling &tiling,
                               const llvm::TargetMachine &target);

/// Where host code runs: in this process through ORC (its default large
/// code model), or from an object file that links into executables and
/// shared libraries (position-independent, small code model, so the
/// linker needs no text relocations).
enum class HostCodeUse { JIT, ObjectFile };

/// The CPU host code is built for: by default the one this process runs
/// on, with its features. `name` is an LLVM CPU name of this target
/// ("x86-64-v3", "skylake-avx512", "znver4", ...) whose own features are
/// taken instead; `features` ("+avx2,-avx512f") adds to or removes from
/// either.
struct HostCpu {
  std::string name;
  std::string features;
};

/// A TargetMachine for `cpu` (-O3). An unknown CPU name or feature is an
/// error that lists what this target knows.
llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
createHostTargetMachine(HostCodeUse use = HostCodeUse::JIT,
                        const HostCpu &cpu = {});

/// LLVM's -O3 pipeline for `targetMachine` without its loop unrolling,
/// which the JIT and object files share. The schedule is register-blocked
/// and unrolled where that pays; LLVM's unroller copied its loops again
/// (a quarter of a backward kernel's object code, 40% of its optimisation
/// time) for no measured speed (docs/host-backend.md, "Compile time").
llvm::Error optimizeHostModule(llvm::Module &module,
                               llvm::TargetMachine &targetMachine);

/// Translates a module in the LLVM dialect to LLVM IR and optimises it
/// (optimizeHostModule).
llvm::Expected<std::unique_ptr<llvm::Module>>
translateAndOptimize(mlir::ModuleOp module, llvm::LLVMContext &llvmContext,
                     llvm::TargetMachine &targetMachine);

/// rbfc --target=host: lowers the canonical `module` and writes `emit`
/// ("kernel": the scf/vector kernel after attn-lower-to-host, "llvm": the
/// optimised LLVM IR, "obj": an object file, both for `cpu`) to `os`.
/// Errors go to the context's diagnostic handler; returns failure then.
mlir::LogicalResult emitHostArtifact(mlir::ModuleOp module,
                                     llvm::StringRef emit,
                                     const HostTiling &tiling,
                                     const HostCpu &cpu,
                                     llvm::raw_pwrite_stream &os);

} // namespace rbfc::host

#endif // RBFC_HOST_HOSTPIPELINE_H
