//===- HostEmitter.h - pieces of the host backend's schedules ---*- C++ -*-===//
//
// The forward and backward CPU schedules of attn-lower-to-host walk the same
// tiles and evaluate the same regions: this is what they share. Rows of
// q, k, v (and dO) are vector<head_dim x f32> values; the attn element ops
// of a region become code on them, and the attn.grad_* ops of a gradient
// region become additions to whatever the schedule keeps for that gradient.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_HOST_HOSTEMITTER_H
#define RBFC_CONVERSION_HOST_HOSTEMITTER_H

#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "llvm/Support/MathExtras.h"

#include <functional>

namespace rbfc::host {

/// A memref type for a tensor argument of the attention op: dynamic sizes
/// except a static minor dimension (head_dim), dynamic strides and offset so
/// that the caller can pass views of larger tensors. `unitMinorStride` keeps
/// the minor stride 1, which vector loads along head_dim need.
mlir::MemRefType stridedMemRefFor(mlir::ShapedType type, bool unitMinorStride);

/// Appends the arguments every host function of `attention` ends with,
/// before its work range: each param, each capture, then q_offset,
/// kv_offset, q_seq_len and kv_seq_len (where the call's rows sit in the
/// whole sequence, docs/abi.md "Sequence blocks").
void appendTrailingArgumentTypes(rbfc::attn::AttentionOp attention,
                                 llvm::SmallVectorImpl<mlir::Type> &types);

/// What a schedule does with the gradient a gradient region adds to. A
/// null entry drops that gradient (the pass of the schedule does not own
/// it).
struct GradientSinks {
  std::function<void(mlir::Value adjoint)> scaledDot, keyBias;
  std::function<void(rbfc::attn::Vector side, mlir::Value adjoint)> norm2;
  std::function<void(unsigned param, mlir::Value adjoint)> param;
  /// `indices` are already clamped into the capture's dimensions.
  std::function<void(unsigned capture, mlir::ValueRange indices,
                     mlir::Value adjoint)>
      capture;
};

/// The gradients a gradient region inlined over a vector of keys adds to,
/// as vector<lanes x f32> (one lane per key). Parameters and captures go
/// to the row's scalar GradientSinks instead: a parameter's lanes summed, a
/// capture's lane by lane (its indices may differ per key).
struct VectorGradientSinks {
  std::function<void(mlir::Value adjoints)> scaledDot, keyBias;
  std::function<void(rbfc::attn::Vector side, mlir::Value adjoints)> norm2;
};

/// Values an element region may read for one (query row, key) pair; the
/// materializer turns attn element ops into code on them.
struct ElementContext {
  mlir::Value b, h, qIdx, kvIdx, kvHead;
  /// The query row as vector<head_dim x f32>, null outside per-row code.
  mlir::Value queryRow;
  /// The query pre-scale (q_scale region), null when the op has none.
  mlir::Value qScale;
  /// The key_bias region's value for kvIdx, null where it is not known.
  mlir::Value keyBias;
  /// The key row where the schedule has loaded it; otherwise each inlined
  /// region loads it on first use.
  mlir::Value keyRow;
  /// The adjoint argument of a gradient region.
  mlir::Value adjoint;
  /// Where a gradient region's attn.grad_* ops add to.
  const GradientSinks *sinks = nullptr;
};

/// How the blocked kernels cut their work: `tileM` query rows per work item
/// and `tileN` keys per key tile; a step handles `rowsPerStep` rows (or
/// accumulator rows) at a time, with vectors of `keyLanes` f32. Its
/// register block, like a GEMM micro-kernel's, is rowsPerStep x
/// `keyVectorsPerStep` score vectors (one pass over head_dim each) and
/// rowsPerStep x `headDimVectorsPerStep` accumulator vectors (one pass over
/// the weighted rows each), so that every loaded vector feeds several FMAs.
struct HostBlocking {
  int64_t tileM, tileN, rowsPerStep, keyLanes, keyVectorsPerStep,
      headDimVectorsPerStep;
  int64_t keyVectors() const { return llvm::divideCeil(tileN, keyLanes); }
  int64_t paddedTileN() const { return keyVectors() * keyLanes; }
  int64_t paddedTileM() const { return llvm::alignTo(tileM, rowsPerStep); }
};

/// What a score or mask region reads for one query row against `lanes`
/// consecutive keys `firstKey`, `firstKey + 1`, ...: the region is evaluated
/// once for all of them, its kv_idx being a vector<lanes x index> and every
/// value that depends on kv_idx a vector as well (the regions are
/// elementwise over (q_idx, kv_idx)).
struct KeyVectorContext {
  /// b, h, kvHead, qIdx, queryRow and qScale of the row; `row.kvIdx` and
  /// `row.keyBias` are not used.
  ElementContext row;
  mlir::Value firstKey;
  int64_t lanes = 0;
  /// vector<lanes x f32>: q . k of each key (scaled_dot is q_scale times it).
  mlir::Value dots;
  /// vector<lanes x f32>: the key_bias region's value of each key; null when
  /// the op has none.
  mlir::Value keyBias;
  /// For a gradient region: vector<lanes x f32> adjoints, the keys whose
  /// gradients count (vector<lanes x i1>; every other lane adds 0, whatever
  /// the region computes there), and where the gradients go (`row.sinks`
  /// takes the parameters' and captures').
  mlir::Value adjoint, kept;
  const VectorGradientSinks *vectorSinks = nullptr;
};

/// Builds host code for one attention op inside one generated function.
/// Subclasses bind the tensors, sizes, parameters and captures from their
/// function's arguments, then emit their schedule with these helpers.
class HostEmitter {
protected:
  HostEmitter(rbfc::attn::AttentionOp attention, mlir::func::FuncOp kernel);

  mlir::Value index(int64_t value);
  mlir::Value f32(double value);
  mlir::Value minIndex(mlir::Value a, mlir::Value b);
  /// The loop over the work items [workBegin, workEnd) of a function whose
  /// items are (batch, head, query tile), `numQTiles` tiles a head, the
  /// range cut to the items the sizes have: a caller's range (an object's
  /// user counts them) never reaches past the tensors.
  mlir::scf::ForOp workItemLoop(mlir::Value workBegin, mlir::Value workEnd,
                                mlir::Value numQTiles);
  /// Work item `work` of such a loop: its query tile, and its batch, head
  /// and key/value head in the returned context.
  ElementContext locateWorkItem(mlir::Value work, mlir::Value numQTiles,
                                mlir::Value &qTile);
  /// The first row of tile `tile` of `size` rows and its rows, at most
  /// `size`, the last tile cut at `length`.
  std::pair<mlir::Value, mlir::Value> tileSpan(mlir::Value tile, int64_t size,
                                               mlir::Value length);
  /// The inclusive last index of a tile of `count` from `lo`.
  mlir::Value lastOf(mlir::Value lo, mlir::Value count);
  mlir::VectorType rowType();
  /// vector<head_dim x f32> zeros.
  mlir::Value zeroRow();
  /// Loads row `rowIdx` of a [batch, heads, len, head_dim] memref as f32.
  mlir::Value loadRow(mlir::Value tensor, mlir::Value b, mlir::Value head,
                      mlir::Value rowIdx);
  /// Stores the f32 row `row` as the element type of `tensor`.
  void storeRow(mlir::Value row, mlir::Value tensor, mlir::Value b,
                mlir::Value head, mlir::Value rowIdx);
  /// Sum of the products of two f32 rows, reassociated into a tree.
  mlir::Value dotRows(mlir::Value lhs, mlir::Value rhs);
  /// Inlines an element region (or a gradient region, whose adjoint comes
  /// from `element.adjoint`) for `element`; returns what it yields.
  mlir::FailureOr<llvm::SmallVector<mlir::Value>>
  inlineRegion(mlir::Region &region, ElementContext &element);
  /// The single value an element region yields.
  mlir::FailureOr<mlir::Value> inlineElementRegion(mlir::Region &region,
                                                   ElementContext &element);
  /// The vector<lanes x T> a score or mask region (yielding T) gives for the
  /// keys of `keys`. Ops that only read b, h, q_idx and parameters stay
  /// scalar; elementwise ops on kv_idx-dependent values become vector ops;
  /// what has no vector form here (a capture load at a kv_idx-dependent
  /// index, dist2, norm2 k) is evaluated lane by lane, at kv_idx clamped to
  /// kv_len - 1 so that lanes past the last key never read out of bounds.
  /// A gradient region (score_grad) over the keys of `keys`: its
  /// gradient ops add to keys.vectorSinks and keys.row.sinks.
  mlir::LogicalResult inlineGradRegionOverKeys(mlir::Region &region,
                                               KeyVectorContext &keys);
  mlir::FailureOr<mlir::Value> inlineRegionOverKeys(mlir::Region &region,
                                                    KeyVectorContext &keys);
  /// vector<keyLanes x f32>.
  mlir::VectorType keyVectorType(const HostBlocking &blocking);
  /// Rows [kvLo, kvLo + paddedTileN) of `tensor` at (b, head), as f32, into
  /// `transposed` ([head_dim, paddedTileN] f32 scratch), so that one vector
  /// load gives a head_dim element of keyLanes consecutive rows. Rows past
  /// kv_len repeat the last one (finite values the schedules mask out).
  void packTransposed(mlir::Value tensor, mlir::Value b, mlir::Value head,
                      mlir::Value kvLo, mlir::Value transposed,
                      const HostBlocking &blocking);
  /// The dot products of rows firstRow .. firstRow + rowsPerStep - 1 of
  /// `rows` ([*, head_dim] f32 scratch) with every column of `transposed`,
  /// into rows firstDotRow .. of `dots` ([*, >= paddedTileN] f32). Per
  /// chunk of keyVectorsPerStep key vectors, one pass over head_dim with
  /// rowsPerStep x keyVectorsPerStep accumulators in registers: each key
  /// vector loaded feeds the step's rows, each broadcast query element its
  /// key vectors; one FMA per head_dim element (no horizontal sums).
  void rowBlockDots(mlir::Value rows, mlir::Value firstRow,
                    mlir::Value transposed, mlir::Value dots,
                    mlir::Value firstDotRow, const HostBlocking &blocking);
  /// The blocked update acc_a += sum_{i < count} weight(i, a) row(i) of
  /// the `rescales.size()` accumulator rows from `firstAcc` of `accTile`
  /// ([*, head_dim] f32), each first multiplied by its rescale (none where
  /// null). Per chunk of headDimVectorsPerStep vectors of head_dim, one
  /// pass over i with the chunk of every accumulator in registers: the
  /// chunk of row(i) is loaded once for all of them, each broadcast weight
  /// feeds the chunk's vectors.
  /// The forward's P V and the backward's dV += P^T dO, dK += dS^T q and
  /// dQ += dS k are this with other weights and rows. With `kept`, an
  /// accumulator is left as it is where kept(i, a) is false (0 times a NaN
  /// or infinite row must not reach it).
  void accumulateWeightedRows(
      mlir::Value accTile, mlir::Value firstAcc,
      llvm::ArrayRef<mlir::Value> rescales, mlir::Value count,
      llvm::function_ref<mlir::Value(mlir::Value i, int64_t acc)> weight,
      llvm::function_ref<mlir::Value(mlir::Value i)> row,
      const HostBlocking &blocking,
      llvm::function_ref<mlir::Value(mlir::Value i, int64_t acc)> kept = {});
  /// Runs `body(firstRow)` inside an scf.for over the blocks of rowsPerStep
  /// rows that cover [0, numRows).
  mlir::LogicalResult
  forEachRowBlock(mlir::Value numRows, const HostBlocking &blocking,
                  llvm::function_ref<mlir::LogicalResult(mlir::Value)> body);
  /// The inlineRegionOverKeys context of row `row` of the staged query rows
  /// `queryRows` ([*, head_dim] f32), whose query index is qLo + row.
  KeyVectorContext rowOverKeys(const ElementContext &item, mlir::Value qLo,
                               mlir::Value row, mlir::Value queryRows,
                               const HostBlocking &blocking);
  /// The scores, in base 2, of the row of `keys` against key vector
  /// `keyVector` of the tile from kvLo, given their q . k in `dots` and the
  /// tile's key_bias values in `keyBiasTile` (read when the op has a
  /// key_bias region). Leaves `keys` at that key vector, for the mask.
  mlir::FailureOr<mlir::Value>
  base2ScoresOverKeys(KeyVectorContext &keys, int64_t keyVector,
                      mlir::Value kvLo, mlir::Value dots,
                      mlir::Value keyBiasTile, const HostBlocking &blocking);
  /// The tile_class facts (all_kept, all_masked) of a tile.
  mlir::FailureOr<std::pair<mlir::Value, mlir::Value>>
  classifyTile(mlir::Value b, mlir::Value h, mlir::Value qLo, mlir::Value qHi,
               mlir::Value kvLo, mlir::Value kvHi);
  /// Binds the problem sizes from q [batch, heads, q_len, .] and k
  /// [batch, kv_heads, kv_len, .], and `group`.
  void bindSizes(mlir::Value queryTensor, mlir::Value keyTensor);
  /// Binds the arguments of appendTrailingArgumentTypes, which start at
  /// argument `first` of `entry`; returns the index of the one after them.
  unsigned bindTrailingArguments(mlir::Block *entry, unsigned first);

  rbfc::attn::AttentionOp attention;
  mlir::func::FuncOp kernel;
  int64_t headDim = 0;
  mlir::Location loc;
  mlir::OpBuilder builder;

  mlir::Value key;
  llvm::SmallVector<mlir::Value> params, captures;
  mlir::Value batch, heads, kvHeads, qLen, kvLen;
  /// Query heads a key/value head serves: heads / kv_heads.
  mlir::Value group;
  /// Added to q_idx and kv_idx wherever a region sees them.
  mlir::Value qOffset, kvOffset;
  /// The whole sequence's lengths: a region's q_len and kv_len.
  mlir::Value qSeqLen, kvSeqLen;

private:
  /// inlineRegionOverKeys and inlineGradRegionOverKeys: what the region
  /// yields, lanes that vary as vectors.
  mlir::FailureOr<llvm::SmallVector<mlir::Value>>
  inlineOverKeys(mlir::Region &region, KeyVectorContext &keys);
  mlir::FailureOr<mlir::Value> materialize(mlir::Operation *op,
                                           mlir::IRMapping &mapping,
                                           ElementContext &element);
  mlir::Value loadCapture(rbfc::attn::LoadOp load, mlir::IRMapping &mapping);
  mlir::Value loadCaptureBound(rbfc::attn::LoadBoundOp bound,
                               mlir::IRMapping &mapping);
  llvm::SmallVector<mlir::Value> clampedIndices(mlir::Value capture,
                                                mlir::ValueRange indices,
                                                mlir::IRMapping &mapping);
};

} // namespace rbfc::host

#endif // RBFC_CONVERSION_HOST_HOSTEMITTER_H
