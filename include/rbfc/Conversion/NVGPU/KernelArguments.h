//===- KernelArguments.h - parameter lists of docs/abi.md -------*- C++ -*-===//
//
// A kernel's parameters are built from groups, in docs/abi.md's order:
// buffers first, then the problem sizes, the tensors' strides, the spec's
// params and captures. KernelSignature assembles such a list and binds each
// parameter, when it declares the kernel, to the Value its group names, so
// that a longer list (the backward's dO, dQ, dK, dV and gradients) is made
// of the same groups instead of a second copy of the binding code.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_KERNELARGUMENTS_H
#define RBFC_CONVERSION_NVGPU_KERNELARGUMENTS_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <array>

namespace rbfc {

/// A [batch, heads, length, head_dim] tensor: its flat buffer and its
/// batch, head and row strides in elements (the head_dim stride is 1).
struct TensorArgs {
  mlir::Value data;
  std::array<mlir::Value, 3> strides;
};

/// The problem sizes, as index values, and where the call's rows sit in
/// the whole sequence: the regions see q_idx + qOffset, kv_idx + kvOffset,
/// and qSeqLen, kvSeqLen as q_len and kv_len (a sequence split over calls
/// or ranks keeps its masks and position terms).
struct ProblemSizes {
  mlir::Value batch, heads, kvHeads, qLen, kvLen;
  mlir::Value qOffset, kvOffset, qSeqLen, kvSeqLen;
};

/// A captured tensor: its flat buffer, sizes and strides in elements.
struct CaptureArgs {
  mlir::Value data;
  llvm::SmallVector<mlir::Value> sizes, strides;
};

/// A kernel's parameter list, group by group. Each add appends parameters
/// and the Value each will be bound to; the Values must stay where they
/// are until `declare`.
class KernelSignature {
public:
  explicit KernelSignature(mlir::MLIRContext *context) : context(context) {}

  /// A pointer to global memory, seen as a flat buffer of `elementType`.
  void addBuffer(mlir::Type elementType, mlir::Value *bound);
  /// An i64 the kernel computes with as an index.
  void addIndex(mlir::Value *bound);
  /// A scalar taken as it is.
  void addScalar(mlir::Type type, mlir::Value *bound);
  /// A CUtensorMap (128 bytes) passed by value, bound to its generic
  /// address: the kernel names it in TMA copies. The function records the
  /// parameter's index in kTensorMapArgsAttrName, and attn-tensor-map-params
  /// makes it a grid-constant parameter once the kernel is an llvm.func.
  void addTensorMap(mlir::Value *bound);

  void addSizes(ProblemSizes &sizes);
  void addStrides(TensorArgs &tensor);
  /// One parameter per param of `op`, in declaration order.
  void addParams(attn::AttentionOp op,
                 llvm::SmallVectorImpl<mlir::Value> &params);
  /// Per capture of `op`: its buffer, sizes and strides.
  void addCaptures(attn::AttentionOp op,
                   llvm::SmallVectorImpl<CaptureArgs> &captures);

  /// Adds the kernel `name`, `threads` threads per block, to `module`, sets
  /// the insertion point to its entry and binds every parameter there.
  mlir::gpu::GPUFuncOp declare(mlir::ImplicitLocOpBuilder &b,
                               mlir::gpu::GPUModuleOp module,
                               llvm::StringRef name, int64_t threads) const;

private:
  struct Parameter {
    mlir::Type type;
    mlir::Value *bound;
    bool isIndex;
    bool isTensorMap = false;
  };
  mlir::MLIRContext *context;
  llvm::SmallVector<Parameter> parameters;
};

/// The kernel attribute that lists its tensor-map parameters' indices.
inline constexpr llvm::StringLiteral kTensorMapArgsAttrName =
    "rbfc.tensor_map_args";

/// The parameters of the forward kernel and of its key-terms prologue,
/// which take the same list (docs/abi.md, "Kernel parameters").
struct ForwardArgs {
  TensorArgs q, k, v, o;
  /// With an LSE output: [batch, heads, q_len] f32, and its batch and head
  /// strides.
  mlir::Value lse;
  std::array<mlir::Value, 2> lseStrides;
  /// With per-key terms: their f32 planes (docs/abi.md, "Workspace").
  mlir::Value workspace;
  ProblemSizes sizes;
  llvm::SmallVector<mlir::Value> params;
  llvm::SmallVector<CaptureArgs> captures;
  /// With TMA copies: the tensor maps of K and V (docs/abi.md, "Tensor
  /// maps"), after every other parameter.
  mlir::Value keyMap, valueMap;

  /// Appends the list to `signature`, bound to these fields.
  void addTo(KernelSignature &signature, attn::AttentionOp op, bool hasLse,
             bool hasWorkspace, bool hasTensorMaps);
};

/// The parameters every backward kernel takes (docs/abi.md, "Backward"),
/// one list for all of them so that one packed argument buffer serves each
/// launch: the forward's tensors and its lse, dO, dlse (may be null: zero),
/// dQ, dK, dV, the workspace, the gradient mask, the sizes, every tensor's
/// strides, the params and captures, then per param where its gradient goes
/// (one f32; null when not asked) and per capture where its gradient goes
/// (a buffer with the capture's sizes and its own strides; null when not
/// asked).
struct BackwardArgs {
  TensorArgs q, k, v, o, outputGrad, queryGrad, keyGrad, valueGrad;
  mlir::Value lse, lseGrad;
  std::array<mlir::Value, 2> lseStrides, lseGradStrides;
  mlir::Value workspace;
  /// Bit p: parameter p's gradient is asked for; bit (params + c): capture
  /// c's.
  mlir::Value gradMask;
  ProblemSizes sizes;
  llvm::SmallVector<mlir::Value> params;
  llvm::SmallVector<CaptureArgs> captures;
  /// Per param: where its gradient goes (an f32).
  llvm::SmallVector<mlir::Value> paramGrads;
  /// Per capture: its gradient's buffer and strides (sizes: the capture's).
  llvm::SmallVector<CaptureArgs> captureGrads;

  void addTo(KernelSignature &signature, attn::AttentionOp op);
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_KERNELARGUMENTS_H
