//===- GradientPartials.h - deterministic sums of gradients -----*- C++ -*-===//
//
// The gradients of parameters and captured tensors sum contributions from
// every element of every block. The backward kernels never add them with
// float atomics: each lane keeps its own partial sum per *slot*, a block adds
// its lanes in a fixed order (a butterfly within each warp, then the warps
// in turn) and writes one partial row per (batch, head, tile) to the
// workspace, and a reduction kernel adds the rows in order. The same inputs
// give the same bits on every run.
//
// A slot is a parameter, or an attn.grad_capture op whose indices depend on
// the batch and head only (a per-head ALiBi slope, RBF's per-head gamma):
// its target element is one per (batch, head), which the reduction kernel
// recomputes. A capture the score reads at an index that is a monotone
// function of the diagonal q_idx - kv_idx (a relative-position table) is
// summed per diagonal instead (DiagonalSums.h). A capture read at other
// indices that depend on q_idx or kv_idx has no GPU gradient; the host
// backend computes it (docs/backward.md).
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_GRADIENTPARTIALS_H
#define RBFC_CONVERSION_NVGPU_GRADIENTPARTIALS_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

namespace rbfc {

/// Which partial-sum slot each gradient of parameters and captures uses.
class GradientSlots {
public:
  explicit GradientSlots(attn::AttentionOp op);

  /// Parameters first (slot p for parameter p), then the uniform
  /// attn.grad_capture ops.
  int64_t size() const { return numParams + uniformSinks.size(); }
  int64_t paramSlot(unsigned param) const { return param; }
  /// The slot of a grad_capture op, none when its indices are not uniform.
  std::optional<int64_t> captureSlot(attn::GradCaptureOp sink) const;
  llvm::ArrayRef<attn::GradCaptureOp> getUniformSinks() const {
    return uniformSinks;
  }
  /// The score's read of a relative-position table whose gradient the
  /// dK/dV kernel sums per diagonal (at most one per spec), and the
  /// direction in which its element moves with q_idx - kv_idx.
  std::optional<attn::GradCaptureOp> getDiagonalSink() const {
    return diagonalSink;
  }
  int getDiagonalDirection() const { return diagonalDirection; }
  /// Whether the GPU backward computes capture `capture`'s gradient: an f32
  /// capture every grad_capture op of which is uniform.
  bool hasGradient(unsigned capture) const {
    return captureHasGradient[capture];
  }

private:
  int64_t numParams;
  llvm::SmallVector<attn::GradCaptureOp> uniformSinks;
  std::optional<attn::GradCaptureOp> diagonalSink;
  int diagonalDirection = 0;
  llvm::SmallVector<bool> captureHasGradient;
};

/// A lane's partial sums, one per slot, and the block's reduction of them.
class GradientPartials : public KernelEmitter {
public:
  GradientPartials(mlir::ImplicitLocOpBuilder &b, const GradientSlots &slots)
      : KernelEmitter(b), slots(slots) {}

  /// Zeros for every slot, to start a loop's state with.
  llvm::SmallVector<mlir::Value> zeros();
  /// Adds `value` to slot `slot` of `partials`.
  void accumulate(llvm::MutableArrayRef<mlir::Value> partials, int64_t slot,
                  mlir::Value value) {
    partials[slot] = fadd(partials[slot], value);
  }
  /// Adds the block's lanes' `partials`, warp by warp in order, and stores
  /// the sums at `row` (slot s at row + s) of the f32 buffer `memref`.
  /// `scratch` is shared memory for warps x slots floats. Every thread of
  /// the block must call it.
  void storeBlockSums(llvm::ArrayRef<mlir::Value> partials, mlir::Value lane,
                      mlir::Value warp, mlir::Value threadId, int64_t warps,
                      mlir::Value scratch, mlir::Value memref, mlir::Value row);

private:
  const GradientSlots &slots;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_GRADIENTPARTIALS_H
