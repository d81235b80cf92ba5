//===- Kernel.h - a compiled kernel behind rbfc.h ---------------*- C++ -*-===//
//
// librbfc's C API (include/rbfc/rbfc.h) is a thin shell over these: the
// options of a compile, checked and completed, and the compiled kernel of
// one target, which checks and runs forward and backward calls. Kernels
// are immutable once built and shared between threads (the memory cache
// hands the same one to every caller).
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_JIT_KERNEL_H
#define RBFC_JIT_KERNEL_H

#include "rbfc/JIT/DiskCache.h"
#include "rbfc/Runtime/Descriptor.h"
#include "rbfc/rbfc.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringRef.h"

#include <memory>
#include <string>

namespace rbfc::jit {

/// The options of one compile with every default resolved: equal options
/// and spec text give the same kernel.
struct CompileOptions {
  rbfc_target target = RBFC_TARGET_HOST;
  int64_t headDim = 64;
  rbfc_dtype dtype = RBFC_DTYPE_BF16;
  bool lse = false;
  bool backward = false;
  /// CUDA only: the arch and the plan text ("" for the chosen plan).
  std::string arch;
  std::string plan;
};

class Kernel {
public:
  virtual ~Kernel();

  rbfc_target target() const { return targetKind; }
  /// Names, element type, sizes, params and captures; on the host, filled
  /// from the host kernel (no GPU fields).
  const runtime::Descriptor &descriptor() const { return desc; }

  virtual bool hasBackward() const = 0;
  virtual rbfc_status forward(const rbfc_forward_args &args,
                              void *stream) const = 0;
  virtual rbfc_status backward(const rbfc_backward_args &args,
                               void *stream) const = 0;
  virtual rbfc_status workspaceBytes(const rbfc_tensor *q, const rbfc_tensor *k,
                                     size_t &bytes) const = 0;
  /// What the backward's launch needs; the kernel has a backward.
  virtual rbfc_status backwardWorkspaceBytes(const rbfc_tensor *q,
                                             const rbfc_tensor *k,
                                             size_t &bytes) const = 0;

protected:
  Kernel(rbfc_target target, runtime::Descriptor descriptor)
      : targetKind(target), desc(std::move(descriptor)) {}

  /// Sets the calling thread's error to "rbfc: <kernel name>: <message>".
  rbfc_status fail(rbfc_status status, const std::string &message) const;

private:
  rbfc_target targetKind;
  runtime::Descriptor desc;
};

/// Compiles `spec` for `options`, or finds the kernel in the memory cache
/// or, for CUDA, in the disk cache at `cacheDirectory` ("" for none).
/// Thread-safe: concurrent compiles of one kernel build it once.
rbfc_status compileKernel(llvm::StringRef spec, llvm::StringRef specName,
                          const CompileOptions &options,
                          const std::string &cacheDirectory,
                          std::shared_ptr<const Kernel> &kernel);

/// Parses and checks `spec` as a compile would (for head_dim 64) and
/// describes its attention: name, normalization, params (no default
/// values: they are folded per head dim) and captures.
rbfc_status inspectSpec(llvm::StringRef spec, llvm::StringRef specName,
                        runtime::Descriptor &description);

/// Counts of rbfc_cache_stats; clearMemoryCache as rbfc_cache_clear_memory.
rbfc_cache_stats cacheStats();
void clearMemoryCache();

//===-- Targets ------------------------------------------------------------===//

/// The host target: compiles `spec` in-process (rbfc::host::HostKernel);
/// `description` is its attention as the front end saw it.
rbfc_status buildHostKernel(llvm::StringRef spec, llvm::StringRef specName,
                            const CompileOptions &options,
                            runtime::Descriptor description,
                            std::shared_ptr<const Kernel> &kernel);

/// The arch of the current CUDA context's device (device 0's when none is
/// current), as rbfc_compile_options.arch names it.
rbfc_status currentCudaArch(std::string &arch);

/// The CUDA target: lowers the canonical `module`, its plan set, to PTX and
/// its descriptor. Failures are reported through the module's diagnostics.
mlir::LogicalResult buildCudaArtifact(mlir::ModuleOp module,
                                      const CompileOptions &options,
                                      KernelArtifact &artifact);

/// A CUDA kernel from its artifact (compiled now or read from the disk
/// cache); the image is loaded into a CUDA context at its first call there.
/// Fails when the descriptor does not parse.
rbfc_status loadCudaKernel(KernelArtifact artifact,
                           std::shared_ptr<const Kernel> &kernel);

} // namespace rbfc::jit

#endif // RBFC_JIT_KERNEL_H
