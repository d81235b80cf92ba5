//===- DiagonalStaging.h - table reads by diagonal, via shared -*- C++ -*-===//
//
// A relative-position table is read at an index that depends on the score's
// element only through its diagonal q_idx - kv_idx (attn::DiagonalIndex
// proves it). Read per element, every distinct diagonal of a lane's
// fragment costs a clamped 64-bit index, its product with the stride and a
// global load: about 17 instructions and an LDG each, 43 of them a tile in
// relative_bias's mma.sync kernel at head_dim 64, which ran at half of
// dot's rate. A warp's 16 x rowAtoms rows and a tile's tile_n keys span
// only rowsPerWarp + tile_n - 1 diagonals, so the warp reads each of them
// once (a few loads a lane) into its window in shared memory, and every
// element then reads its diagonal's slot there: one ld.shared at an
// immediate offset from a per-lane base.
//
// A warp's window over its rows [row0, row0 + R) and a tile's columns
// [column0, column0 + C) holds the diagonals in order, R + C - 1 slots.
// Where rows are queries (the forward, dQ), slot s is the diagonal
// row0 - column0 - C + 1 + s, and lane row r, column c of a lane (l/4 and
// 2 (l%4) of the fragment) lie in slot l/4 - 2 (l%4) + laneRowOffset(r) -
// laneColumnOffset(c) + C - 1; where rows are keys (dK/dV's S^T), slot s
// is column0 - row0 - R + 1 + s, and the element's slot is
// 2 (l%4) - l/4 + laneColumnOffset(c) - laneRowOffset(r) + R - 1.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_DIAGONALSTAGING_H
#define RBFC_CONVERSION_NVGPU_DIAGONALSTAGING_H

#include "rbfc/Conversion/NVGPU/FragmentLayout.h"
#include "rbfc/Conversion/NVGPU/RegionApplication.h"
#include "rbfc/Conversion/NVGPU/SharedTile.h"

namespace rbfc {

class DiagonalStaging : public KernelEmitter {
public:
  /// What a fragment's rows index; its columns index the other.
  enum class Rows { Queries, Keys };

  /// The attn.load ops of `op`'s score region whose element depends on the
  /// score's element only through q_idx - kv_idx (and values uniform over
  /// a (batch, head)): the loads this component stages.
  static llvm::SmallVector<attn::LoadOp> stagedLoads(attn::AttentionOp op);

  /// A window for each of `warps` warps of `rowsPerWarp` rows and each of
  /// `loads`, on tiles of `columns` columns, from `shared`.
  static llvm::SmallVector<mlir::Value>
  carveWindows(SharedMemoryArena &shared, llvm::ArrayRef<attn::LoadOp> loads,
               int64_t warps, int64_t rowsPerWarp, int64_t columns);

  /// Stages `loads` (stagedLoads of the op `regions` evaluates) in
  /// `windows` (carveWindows') for warps that each own `rowsPerWarp` rows
  /// of `fragment`, which index `rows`, on tiles of `columns` columns.
  DiagonalStaging(mlir::ImplicitLocOpBuilder &b, RegionApplication &regions,
                  llvm::ArrayRef<attn::LoadOp> loads,
                  llvm::ArrayRef<mlir::Value> windows, FragmentLane &fragment,
                  mlir::Value lane, mlir::Value warp, Rows rows,
                  int64_t rowsPerWarp, int64_t columns);

  /// Writes the warp's windows for the tile whose rows start at
  /// `rowOrigin` (the block's first row) and columns at `columnOrigin`; the
  /// element reads of the previous tile must be behind (they are, in
  /// program order: a warp barrier orders the lanes).
  mlir::LogicalResult stage(mlir::Value rowOrigin, mlir::Value columnOrigin);
  /// The slot of the element in lane row `laneRow` and column
  /// `columnOffset` (FragmentLayout::laneColumnOffset) of the lane's.
  mlir::Value slot(int64_t laneRow, int64_t columnOffset);
  /// For RegionApplication's hook: a staged load's value at the element
  /// whose slot is `element.diagonalSlot`; a null Value for other ops.
  mlir::FailureOr<mlir::Value> read(mlir::Operation *attnOp,
                                    const ElementValues &element);

private:
  static int64_t windowLength(int64_t rowsPerWarp, int64_t columns) {
    return rowsPerWarp + columns - 1;
  }
  int64_t windowLength() const { return windowLength(rowsPerWarp, columns); }
  /// The window of `load` (its index among `loads`).
  mlir::Value window(attn::LoadOp load);

  RegionApplication &regions;
  llvm::SmallVector<attn::LoadOp> loads;
  llvm::SmallVector<mlir::Value> windows;
  FragmentLane &fragment;
  mlir::Value lane, warp;
  Rows rows;
  int64_t rowsPerWarp, columns;
  /// The warp's first word of each window, and that plus the lane's slot
  /// base (l/4 - 2 (l%4), or its negative where rows are keys): every
  /// element's slot is a constant from the latter.
  mlir::Value windowBase, laneSlotBase;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_DIAGONALSTAGING_H
