//===- TargetEmission.h - kernels to PTX, LLVM IR, cubin -*- C++ -*-===//
#ifndef RBFC_CONVERSION_NVGPU_TARGETEMISSION_H
#define RBFC_CONVERSION_NVGPU_TARGETEMISSION_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"

#include <string>

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace rbfc {

/// Registers what lowering a kernel to NVVM and serialising it needs: the
/// GPU-side dialects, their conversion interfaces and LLVM IR translations,
/// and the NVVM target.
void registerGPUBackend(mlir::DialectRegistry &registry);

/// A plan as overridePlan reads it, for messages about one that is not.
inline constexpr const char *kPlanExample =
    "#attn.plan<arch = \"sm_90a\", kernel = \"mma_sync\", tile_m = 128, "
    "tile_n = 64, warps = 8, stages = 2>";

/// Sets the plan written in `text` (`#attn.plan<...>`) on every
/// attn.attention of `module`, in place of the one lowerToGPUKernels would
/// choose. Fails when `text` is not a plan; a syntax error in it is also
/// reported through the context's diagnostics.
mlir::LogicalResult overridePlan(mlir::ModuleOp module, llvm::StringRef text);

/// Chooses a plan for `arch` where none is set and lowers every
/// attn.attention of the canonical `module` to a gpu.module kernel.
mlir::LogicalResult lowerToGPUKernels(mlir::ModuleOp module,
                                      llvm::StringRef arch);

/// The launch descriptors (docs/abi.md) of the kernels in `module`, as one
/// JSON document: the object of the only kernel.
mlir::FailureOr<std::string> kernelDescriptorJSON(mlir::ModuleOp module);

enum class KernelFormat { LLVM, PTX };

/// Lowers the gpu.module kernels through NVVM to LLVM IR or PTX text
/// (LLVM's NVPTX backend at -O3) for `arch`.
mlir::FailureOr<std::string> serializeKernels(mlir::ModuleOp module,
                                              llvm::StringRef arch,
                                              KernelFormat format);

/// Assembles `ptx` for `arch` with the CUDA toolkit's ptxas (found on PATH,
/// under $CUDA_HOME or /usr/local/cuda). With `verbose`, ptxas's register
/// and spill report goes to `report`. Fails with `error` set.
mlir::FailureOr<std::string> assemblePTX(llvm::StringRef ptx,
                                         llvm::StringRef arch, bool verbose,
                                         std::string &report,
                                         std::string &error);

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_TARGETEMISSION_H
