//===- DiagonalSums.h - a relative-position table's gradient ----*- C++ -*-===//
//
// The gradient of a table read at an index that follows the diagonal
// q_idx - kv_idx (DiagonalIndex.h) sums the score's adjoint over every
// element of a diagonal. Without float atomics, and with the same bits on
// every run:
//
//   dK/dV kernel: per (key tile, query tile) pair, each thread stores its
//     elements' values into a [keys][queries] f32 tile in shared memory,
//     each group of 16 keys (rows) in its own region with 16 zero floats
//     before it and at the end of each row. After a barrier each warp sums
//     the diagonals of one group's rows, a lane per diagonal, by fixed
//     offsets: the zeros stand in for the elements past the tile's edges,
//     so no load tests a bound. After another barrier thread t adds the
//     groups' sums that make up diagonal t of the tile, in group order, to
//     the block's own row of the workspace, at the diagonal's offset from
//     the block's last key (the query tiles in order, so the row's
//     additions are ordered too).
//   reduce kernel: a table element's gradient is the sum, over (batch,
//     head) and over the diagonals whose index selects it -- an interval,
//     the index being monotone in the diagonal, found by binary search --
//     of the key tiles' rows, in that order.
//
// Row (batch, head, key tile) of the workspace holds round_up(q_len,
// query tile) + key tile floats: entry l is the diagonal
// q_idx - kv_idx = l - (key tile's first key + key tile - 1).
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_DIAGONALSUMS_H
#define RBFC_CONVERSION_NVGPU_DIAGONALSUMS_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

#include "llvm/Support/MathExtras.h"

namespace rbfc {

class DiagonalSums : public KernelEmitter {
public:
  /// For blocks of keyTile / 16 warps, one per group of 16 keys.
  DiagonalSums(mlir::ImplicitLocOpBuilder &b, int64_t keyTile,
               int64_t queryTile)
      : KernelEmitter(b), keyTile(keyTile), queryTile(queryTile) {}

  /// f32 elements of the shared buffer: the groups' tiles, then their
  /// diagonal sums.
  int64_t sharedFloats() const {
    return groups() * groupFloats() + groups() * groupDiagonalsPadded();
  }
  /// Floats of a workspace row for queries of length `qLen`.
  mlir::Value rowLength(mlir::Value qLen);

  /// Zeroes the shared buffer, the padding that stays zero included (every
  /// thread of the block; a barrier must follow).
  void zeroShared(mlir::Value shared, mlir::Value threadId, int64_t threads);
  /// Zeroes the block's row at `row` (every thread of the block calls it;
  /// a barrier must follow before the row is added to).
  void zeroRow(mlir::Value workspace, mlir::Value row, mlir::Value length,
               mlir::Value threadId, int64_t threads);
  /// Puts the value of the element (`keyInTile`, `queryInTile`) of the
  /// tile pair into the shared tile.
  void store(mlir::Value shared, mlir::Value keyInTile, mlir::Value queryInTile,
             mlir::Value value);
  /// After a barrier past the stores: adds the tile's diagonals to the
  /// block's row at `row`, for the query tile that starts at query `qLo`
  /// (both phases and the barrier between them; every thread calls it).
  void addTile(mlir::Value shared, mlir::Value workspace, mlir::Value row,
               mlir::Value qLo, mlir::Value threadId, mlir::Value lane,
               mlir::Value warp);

  /// The workspace entry of diagonal `diagonal` in key tile `tile`'s row
  /// at `rowsStart` (rows of `length` floats, one per key tile), clamped
  /// into the row, and whether it lies in it.
  std::pair<mlir::Value, mlir::Value> entry(mlir::Value rowsStart,
                                            mlir::Value length,
                                            mlir::Value tile,
                                            mlir::Value diagonal);
  /// The first value in [lo, hi) at which the monotone predicate `holds`
  /// (false, then true) is true; hi when none.
  mlir::Value firstWhere(mlir::Value lo, mlir::Value hi,
                         llvm::function_ref<mlir::Value(mlir::Value)> holds);

private:
  /// Zeroes floats [start, start + count) of `memref`, the block's threads
  /// in turn.
  void zeroFloats(mlir::Value memref, mlir::Value start, mlir::Value count,
                  mlir::Value threadId, int64_t threads);

  static constexpr int64_t kGroupRows = 16;
  int64_t groups() const { return keyTile / kGroupRows; }
  /// The zeros before a group's rows and at the end of each: a diagonal
  /// runs at most kGroupRows - 1 columns past either edge.
  int64_t padding() const { return kGroupRows; }
  int64_t pitch() const { return queryTile + padding(); }
  int64_t groupFloats() const { return padding() + kGroupRows * pitch(); }
  /// Diagonals of one group's rows against the query tile.
  int64_t groupDiagonals() const { return kGroupRows + queryTile - 1; }
  int64_t groupDiagonalsPadded() const {
    return llvm::alignTo(groupDiagonals(), 16);
  }
  /// Diagonals of the whole tile pair: the block needs as many threads.
  int64_t diagonals() const { return keyTile + queryTile - 1; }

  int64_t keyTile, queryTile;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_DIAGONALSUMS_H
