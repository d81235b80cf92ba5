//===- HostKernel.h - a JIT-compiled CPU attention kernel -------*- C++ -*-===//
//
// Compiles an attention spec in-process for the CPU this runs on and runs it
// on host buffers:
//
//   auto kernel = rbfc::host::HostKernel::compile(source, "rbf.attn", {});
//   rbfc::host::HostKernelArgs args;
//   args.query = {q, rbfc::host::ElementType::f32, {B, H, Nq, D}, {...}};
//   ...
//   if (llvm::Error error = (*kernel)->run(args)) ...
//
// The kernel is the tiled streaming-softmax schedule of attn-lower-to-host,
// run by a pool of threads over (batch, head, query tile) work items.
// docs/host-backend.md describes the schedule and the ABI.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_HOST_HOSTKERNEL_H
#define RBFC_HOST_HOSTKERNEL_H

#include "rbfc/Host/HostPipeline.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace mlir {
class ExecutionEngine;
} // namespace mlir

namespace rbfc::host {

enum class ElementType { f32, f16, bf16, i32, i64 };

/// A strided view of host memory; sizes and strides count elements.
struct TensorRef {
  void *data = nullptr;
  ElementType type = ElementType::f32;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
};

/// Row-major strides of `sizes`.
std::vector<int64_t> contiguousStrides(const std::vector<int64_t> &sizes);

struct HostKernelOptions {
  int64_t headDim = 64;
  /// Element type of q, k, v and the output: "f32", "f16" or "bf16".
  std::string dtype = "f32";
  /// Whether the kernel also writes the log-sum-exp of every query row.
  bool withLse = false;
  /// Whether to derive and build the backward as well (HostKernel::backward).
  /// Implies withLse: the backward reads the forward's log-sum-exp.
  bool withBackward = false;
  HostTiling tiling;
};

/// The inputs and outputs of one call. q/o are [batch, heads, q_len,
/// head_dim], k/v [batch, kv_heads, kv_len, head_dim] with a head_dim
/// stride of 1; lse is [batch, heads, q_len] f32 (only with `withLse`).
struct HostKernelArgs {
  TensorRef query, key, value, output, lse;
  /// Spec parameters by name; a parameter left out takes its default.
  std::map<std::string, double> params;
  /// Captured tensors by name (every capture of the spec is required).
  std::map<std::string, TensorRef> captures;
  /// Worker threads; 0 uses one per hardware thread.
  unsigned numThreads = 0;
  /// Where the rows of q and k sit in the whole sequence: the spec sees
  /// q_idx + qOffset, kv_idx + kvOffset, and qSeqLen, kvSeqLen as q_len and
  /// kv_len (0: offset + the call's length; docs/abi.md, "Sequence
  /// blocks").
  int64_t qOffset = 0, kvOffset = 0, qSeqLen = 0, kvSeqLen = 0;
};

/// How the backward runs (docs/host-backend.md, "Backward"): `fused`, one
/// pass per (batch, kv head) that also accumulates dQ (5 tile products per
/// tile pair); `split`, a dK/dV pass per key tile and a dQ pass per query
/// tile (7, and more work items); `automatic`, fused when there are
/// kFusedBackwardItems (batch, kv head) items or more. The gradients of q,
/// k and v are the same bits either way.
enum class BackwardSchedule { automatic, fused, split };
inline constexpr int64_t kFusedBackwardItems = 8;

/// The inputs and outputs of one backward call (docs/host-backend.md,
/// "Backward"): the forward call's (HostKernelArgs, whose lse is required
/// here; when the keys are split into blocks, output and lse are the rows'
/// over every block and the gradients this block's share), and outputGrad is
/// dL/dO (output's shape and type), lseGrad dL/dlse
/// ([batch, heads, q_len] f32; data null: zero). The gradients of q, k and v
/// are written (not accumulated) to queryGrad, keyGrad and valueGrad (the
/// shapes and element type of q, k, v; any strides with a head_dim stride
/// of 1). A parameter or capture gets its gradient only when asked for: its
/// name in paramGrads (where to write the f32 value) or captureGrads (an f32
/// tensor with the capture's sizes). Both must name f32 parameters and
/// captures. The captures' and parameters' gradients are summed in a fixed
/// order: the same inputs give the same bits, whatever the thread count.
struct HostBackwardArgs : HostKernelArgs {
  TensorRef outputGrad, lseGrad;
  TensorRef queryGrad, keyGrad, valueGrad;
  std::map<std::string, float *> paramGrads;
  std::map<std::string, TensorRef> captureGrads;
  BackwardSchedule schedule = BackwardSchedule::automatic;
};

class HostKernel {
public:
  struct Param {
    std::string name;
    bool isInteger;
    std::optional<double> defaultValue;
  };
  struct Capture {
    std::string name;
    ElementType type;
    int64_t rank;
  };

  /// Parses `source` (an .attn spec; `bufferName` names it in diagnostics),
  /// runs the canonical pipeline and the host lowering and JIT-compiles the
  /// result. Errors carry the compiler's diagnostics.
  static llvm::Expected<std::unique_ptr<HostKernel>>
  compile(llvm::StringRef source, llvm::StringRef bufferName,
          const HostKernelOptions &options);

  ~HostKernel();

  /// Runs the kernel. Every size, stride and type is checked first; a
  /// mismatch returns an error and touches no buffer.
  llvm::Error run(const HostKernelArgs &args) const;

  /// Runs the backward (the kernel must be compiled withBackward). Checked
  /// like run: a mismatch returns an error and writes nothing. The first
  /// call that runs a schedule (split or fused) JIT-compiles it.
  llvm::Error backward(const HostBackwardArgs &args) const;

  llvm::StringRef name() const { return entryName; }
  const std::vector<Param> &params() const { return paramInfo; }
  const std::vector<Capture> &captures() const { return captureInfo; }
  const HostKernelOptions &options() const { return compileOptions; }
  /// Query rows per forward work item: the options' tile_m, or what the
  /// lowering chose for this CPU when it is 0.
  int64_t tileM() const { return forwardTileM; }
  bool isSoftmax() const { return softmax; }

private:
  HostKernel() = default;

  HostKernelOptions compileOptions;
  std::string entryName;
  std::vector<Param> paramInfo;
  std::vector<Capture> captureInfo;
  bool softmax = true;
  /// The tiles the lowering recorded (rbfc.tile_m, rbfc.tile_n) on the
  /// forward and on the backward's passes, by which their work items count.
  int64_t forwardTileM = 0, backwardTileM = 0, backwardTileN = 0;
  /// Checks the forward tensors, parameters and captures `run` and
  /// `backward` share and resolves them into kernel arguments.
  struct ResolvedCall;
  llvm::Expected<ResolvedCall> resolve(const HostKernelArgs &args) const;

  /// The forward and the backward's rows pass (null without withBackward).
  std::unique_ptr<mlir::ExecutionEngine> engine;
  void (*entry)(void **) = nullptr;
  void (*rowsEntry)(void **) = nullptr;

  /// A backward schedule's gradient passes: dK/dV and dQ (split), or the
  /// fused pass. Each schedule is JIT-compiled from the lowered module's
  /// bytecode when a call first runs it: most callers run one, and each is
  /// a third or more of a backward kernel's compile time.
  struct GradientPasses;
  llvm::Expected<const GradientPasses *> gradientPasses(bool fused) const;
  std::string loweredBytecode;
  mutable std::mutex gradientPassesMutex;
  mutable std::unique_ptr<GradientPasses> splitPasses, fusedPasses;
};

} // namespace rbfc::host

#endif // RBFC_HOST_HOSTKERNEL_H
