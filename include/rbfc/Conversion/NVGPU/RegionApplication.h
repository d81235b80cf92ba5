//===- RegionApplication.h - attn regions evaluated in a kernel -*- C++ -*-===//
//
// The element regions of attn.attention (score, mask, q_scale, key_bias,
// row_bias), its tile_class region and the gradient regions that
// attn-derive-backward adds (score_grad, key_bias_grad, q_scale_grad,
// row_bias_grad), evaluated inside a GPU kernel: their arith/math ops are
// cloned, their attn ops replaced by what the kernel has at that point (an
// accumulator element for attn.dot, a key's term loaded from the workspace
// for attn.key_bias, a captured tensor read for attn.load). Which values
// those are comes from the kernel through ElementValues; which q_idx and
// kv_idx an element of a fragment stands for, from binders the kernel gives
// per column and per lane row: the fragment layout does not say which axis
// is which (FragmentLayout.h).
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_REGIONAPPLICATION_H
#define RBFC_CONVERSION_NVGPU_REGIONAPPLICATION_H

#include "rbfc/Conversion/NVGPU/FragmentLayout.h"
#include "rbfc/Conversion/NVGPU/KernelArguments.h"

#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseMap.h"

namespace rbfc {

/// What the attn element ops of a region stand for at one element, and its
/// q_idx and kv_idx; null where the kernel does not have the value there
/// (the op is then reported as not evaluable there).
struct ElementValues {
  mlir::Value qIdx, kvIdx;
  mlir::Value dot;                // attn.dot: the raw accumulator q.k
  mlir::Value qScale;             // q_scale (attn.scaled_dot = dot * qScale)
  mlir::Value keyBias;            // attn.key_bias: the key's bias
  mlir::Value queryNorm, keyNorm; // attn.norm2 q and k
  mlir::Value adjoint;            // a gradient region's adjoint argument
  /// The element's slot in its warp's diagonal windows (DiagonalStaging.h),
  /// null where the kernel stages no load.
  mlir::Value diagonalSlot;
};

/// A kernel's own cases for attn ops the built-in ones do not cover (the
/// backward's gradient ops): the value `attnOp` stands for, a failure
/// reported on it, or a null Value to leave it to the built-in cases. For a
/// result-less op (attn.grad_*) the hook emits what the op does and returns
/// a null Value; returning one without emitting anything drops the op.
using ElementOpHook = llvm::function_ref<mlir::FailureOr<mlir::Value>(
    mlir::Operation *attnOp, mlir::IRMapping &mapping,
    const ElementValues &element)>;

/// What the tile_class region proves about a tile: every element kept, or
/// every element masked.
struct TileClass {
  mlir::Value allKept, allMasked;
};

class RegionApplication : public KernelEmitter {
public:
  /// The regions of `op`, in a kernel whose arguments are `sizes`,
  /// `params` and `captures` and whose block computes (`batch`, `head`);
  /// `lane` is the lane that scans a load_bound box with its warp.
  RegionApplication(mlir::ImplicitLocOpBuilder &b, attn::AttentionOp op,
                    const ProblemSizes &sizes,
                    llvm::ArrayRef<mlir::Value> params,
                    llvm::ArrayRef<CaptureArgs> captures, mlir::Value batch,
                    mlir::Value head, mlir::Value lane, int64_t headDim)
      : KernelEmitter(b), op(op), sizes(sizes), params(params),
        captures(captures), batch(batch), head(head), lane(lane),
        headDim(headDim) {}

  /// The value `region` (an element region) yields at `element`.
  mlir::FailureOr<mlir::Value>
  evaluateElementRegion(mlir::Region &region, const ElementValues &element,
                        ElementOpHook hook = {});
  /// The q_scale region at (batch, head), which the verifier keeps uniform
  /// there; 1 without one.
  mlir::FailureOr<mlir::Value> queryScale();
  /// The key_bias region of the key `kvIdx` whose squared norm is `keyNorm`
  /// (null when the region does not read it): a term that depends on the
  /// key alone, which the prologue or the producer warps compute once.
  mlir::FailureOr<mlir::Value> keyBias(mlir::Value kvIdx, mlir::Value keyNorm);
  /// Evaluates the gradient region `region` (score_grad, key_bias_grad, ...)
  /// at `element`, whose adjoint is the region's; the attn.grad_* ops are
  /// the kernel's to implement, through `hook`.
  mlir::LogicalResult evaluateGradRegion(mlir::Region &region,
                                         const ElementValues &element,
                                         ElementOpHook hook);
  /// The value one attn op of an element region stands for at `element`:
  /// `hook`'s, else the built-in cases'.
  mlir::FailureOr<mlir::Value> materialize(mlir::Operation *attnOp,
                                           mlir::IRMapping &mapping,
                                           const ElementValues &element,
                                           ElementOpHook hook = {});

  /// Binds what an element's column stands for: the slice and which of the
  /// lane's two columns (FragmentLane::forEachElementByColumn) and the
  /// column's index in the fragment (0 .. 8 slices - 1).
  using ColumnBinder =
      llvm::function_ref<void(ElementValues &element, int64_t slice,
                              int64_t column, mlir::Value index)>;
  /// Binds what an element's lane row stands for.
  using RowBinder =
      llvm::function_ref<void(ElementValues &element, int64_t laneRow)>;
  /// The scores of a fragment of `layout` whose accumulators hold the dot
  /// products `dots`, in log2 units: the score region at every element
  /// (its attn ops `scoreHook`'s where it has them), less its lane row's
  /// `rowShifts` when given, and when `masked` -inf where kv_idx >= kv_len
  /// or the mask is false.
  mlir::FailureOr<llvm::SmallVector<Accumulator>>
  applyScoreRegion(FragmentLane &fragment, const FragmentLayout &layout,
                   llvm::ArrayRef<Accumulator> dots, bool masked,
                   ColumnBinder bindColumn, RowBinder bindRow,
                   llvm::ArrayRef<mlir::Value> rowShifts = {},
                   ElementOpHook scoreHook = {});

  /// The tile_class region over rows [qLo, qLo + qRows) and keys
  /// [kvLo, kvLo + kvRows), clipped to q_len and kv_len; constants from the
  /// mask's presence where the op has no tile_class region.
  mlir::FailureOr<TileClass> classifyTile(mlir::Value qLo, int64_t qRows,
                                          mlir::Value kvLo, int64_t kvRows);
  /// Which tile bounds of the tile_class region a kernel holds fixed while
  /// it walks the other axis' tiles.
  enum class FixedAxis { Queries, Keys };
  /// Evaluates now the tile_class region's load_bounds whose boxes follow
  /// only the `fixed` axis' tile bounds, for its tile [lo, lo + rows), and
  /// has classifyTile take them from here: a kernel that classifies one
  /// tile of the other axis after another (liveTiles, its tile loop) then
  /// scans only the boxes that change from tile to tile. classifyTile uses
  /// them where its tile of the fixed axis is this one (the same `lo`
  /// value and `rows`), which they must dominate.
  mlir::LogicalResult fixBounds(FixedAxis fixed, mlir::Value lo, int64_t rows);
  /// The tiles [first, end) of [0, `count`) that may hold a kept element:
  /// from the first to the last that `classify` does not prove all masked
  /// (all of them when the op has no tile_class region).
  mlir::FailureOr<std::pair<mlir::Value, mlir::Value>> liveTiles(
      mlir::Value count,
      llvm::function_ref<mlir::FailureOr<TileClass>(mlir::Value)> classify);
  /// Walks from tile `from` towards `bound` (exclusive, up or down) while
  /// `classify` proves the tile all masked; the first tile that may hold a
  /// kept element, or `bound`.
  mlir::FailureOr<mlir::Value> scanLiveTile(
      mlir::Value from, mlir::Value bound, bool forward,
      llvm::function_ref<mlir::FailureOr<TileClass>(mlir::Value)> classify);

  /// A captured tensor's element at `indices`, each clamped into its
  /// dimension (docs/language.md).
  mlir::Value loadCapture(unsigned capture, mlir::ValueRange indices);

  /// Whether `region` reads the squared norm of q or k.
  static bool usesNorm(mlir::Region &region, attn::Vector side);
  /// Whether `score` yields scaled_dot, or scaled_dot plus a value that does
  /// not depend on the dot product.
  static bool isAffineInDot(mlir::Region &score);

private:
  /// Inlines `region` at `element` and returns what it yields.
  mlir::FailureOr<llvm::SmallVector<mlir::Value>>
  inlineRegion(mlir::Region &region, const ElementValues &element,
               ElementOpHook hook);
  mlir::FailureOr<mlir::Value> loadBound(attn::LoadBoundOp bound,
                                         mlir::IRMapping &mapping);
  /// Inlines the tile_class region over the tile [qLo, qLo + qRows) x
  /// [kvLo, kvLo + kvRows), its attn ops `materializeOp`'s.
  mlir::FailureOr<llvm::SmallVector<mlir::Value>>
  inlineTileClass(mlir::Value qLo, int64_t qRows, mlir::Value kvLo,
                  int64_t kvRows,
                  llvm::function_ref<mlir::FailureOr<mlir::Value>(
                      mlir::OpBuilder &, mlir::Operation *, mlir::IRMapping &)>
                      materializeOp);
  mlir::Value sizeValue(attn::Size size);

  attn::AttentionOp op;
  const ProblemSizes &sizes;
  llvm::ArrayRef<mlir::Value> params;
  llvm::ArrayRef<CaptureArgs> captures;
  mlir::Value batch, head, lane;
  int64_t headDim;
  /// fixBounds' values, by the load_bound op they stand for, and the tile
  /// they were evaluated for.
  llvm::DenseMap<mlir::Operation *, mlir::Value> fixedBounds;
  /// The other bound of a box loadBound scanned with one it was asked
  /// for, until the region asks for it (inlineTileClass clears it).
  llvm::DenseMap<mlir::Operation *, mlir::Value> scannedTwins;
  FixedAxis fixedAxis = FixedAxis::Queries;
  mlir::Value fixedLo;
  int64_t fixedRows = 0;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_REGIONAPPLICATION_H
