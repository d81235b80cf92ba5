//===- FragmentLayout.h - which lane holds which element --------*- C++ -*-===//
//
// mma.sync m16n8k16 leaves its f32 result, the C/D fragment of a 16 x 8
// tile, spread over the 32 lanes of a warp, four registers each (PTX ISA,
// "Matrix Fragments for mma.m16n8k16"):
//
//   lane l, register e  holds  row l/4 + 8 (e / 2),  column 2 (l % 4) + e % 2
//
// A warp's tile of 16 x atoms rows and 8 x slices columns is atoms x slices
// such accumulators. FragmentLayout is that mapping as a value, the way
// Triton's #mma layout or a CuTe TiledMma is: the kernels ask it which row
// and column an element stands for instead of re-deriving l/4 and 2 (l % 4)
// where they need q_idx or kv_idx. It does not say what rows and columns
// index: the forward kernel's S has query rows and key columns and its O
// query rows and head_dim columns; the backward's S^T = K Q^T has key rows
// and query columns, and its dK, dV accumulators key rows and head_dim
// columns. The kernel binds the axes (docs/kernel.md, "Components").
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_FRAGMENTLAYOUT_H
#define RBFC_CONVERSION_NVGPU_FRAGMENTLAYOUT_H

#include "rbfc/Conversion/NVGPU/KernelEmitter.h"

#include <array>

namespace rbfc {

/// Rows of the mma.sync m16n8k16 tile (an "atom").
inline constexpr int64_t kAtomRows = 16;

/// The four f32 registers of one m16n8 accumulator tile: c0, c1 in the
/// lane's upper row, c2, c3 in its lower one, eight rows down.
using Accumulator = std::array<mlir::Value, 4>;

/// The accumulators of a warp's tile of 16 x rowAtoms rows and
/// 8 x columnSlices columns. Accumulator (atom, slice) is at index
/// atom * columnSlices + slice. A lane holds 2 x rowAtoms rows of the tile,
/// its "lane rows": lane row r is row l/4 + 8 (r % 2) of atom r / 2. In
/// every slice it holds two adjacent columns, 2 (l % 4) and 2 (l % 4) + 1.
class FragmentLayout {
public:
  FragmentLayout(int64_t rowAtoms, int64_t columnSlices)
      : rowAtoms(rowAtoms), columnSlices(columnSlices) {}

  int64_t getRowAtoms() const { return rowAtoms; }
  int64_t getColumnSlices() const { return columnSlices; }
  /// Accumulators per lane.
  int64_t size() const { return rowAtoms * columnSlices; }
  int64_t laneRows() const { return 2 * rowAtoms; }
  int64_t accumulator(int64_t atom, int64_t slice) const {
    return atom * columnSlices + slice;
  }

  /// Where element `element` of accumulator `accumulator` lies for every
  /// lane: in its lane row `laneRow` (FragmentLane::row) and its column
  /// `column` (0 or 1) of slice `slice` (FragmentLane::column + column).
  struct Position {
    int64_t laneRow, slice, column;
  };
  Position position(int64_t accumulator, int64_t element) const {
    return {2 * (accumulator / columnSlices) + element / 2,
            accumulator % columnSlices, element % 2};
  }
  /// The inverse of position: the element of accumulator
  /// accumulator(laneRow / 2, slice) in lane row `laneRow` and column
  /// `column` of the lane's two.
  static int64_t element(int64_t laneRow, int64_t column) {
    return 2 * (laneRow % 2) + column;
  }
  /// How many rows below the lane's first (l/4 of atom 0) lane row
  /// `laneRow` lies, and how many columns right of its first (2 (l % 4) of
  /// slice 0) column `column` of slice `slice` lies: the same in every
  /// lane, so elements whose column and row offsets differ alike lie on
  /// one diagonal of the tile.
  static int64_t laneRowOffset(int64_t laneRow) {
    return kAtomRows * (laneRow / 2) + 8 * (laneRow % 2);
  }
  static int64_t laneColumnOffset(int64_t slice, int64_t column) {
    return 8 * slice + column;
  }

  /// The accumulators of lane row `laneRow`'s atom, one per slice.
  llvm::ArrayRef<Accumulator>
  rowAccumulators(llvm::ArrayRef<Accumulator> accumulators,
                  int64_t laneRow) const {
    return accumulators.slice((laneRow / 2) * columnSlices, columnSlices);
  }
  /// The lane's elements in lane row `laneRow`, two per slice.
  llvm::SmallVector<mlir::Value *>
  rowElements(llvm::MutableArrayRef<Accumulator> accumulators,
              int64_t laneRow) const;

  /// The accumulators' values in order, as loops and branches carry them.
  static llvm::SmallVector<mlir::Value>
  flatten(llvm::ArrayRef<Accumulator> accumulators);
  /// Groups loop-carried or yielded values back into accumulators.
  static llvm::SmallVector<Accumulator> unflatten(mlir::ValueRange values);

private:
  int64_t rowAtoms, columnSlices;
};

llvm::raw_ostream &operator<<(llvm::raw_ostream &os,
                              const FragmentLayout &layout);

/// The lane's own coordinates in every FragmentLayout, as index values:
/// which rows (l/4 and l/4 + 8 of each atom, below the warp's first row)
/// and which columns (2 (l % 4) and 2 (l % 4) + 1 of each slice) it holds.
class FragmentLane : public KernelEmitter {
public:
  /// Warp `warp` owns rows [warp * rowsPerWarp, (warp + 1) * rowsPerWarp)
  /// of the block's tile.
  FragmentLane(mlir::ImplicitLocOpBuilder &b, mlir::Value lane,
               mlir::Value warp, int64_t rowsPerWarp);

  /// l % 4: the lane's column pair in each slice, and its place among the
  /// four lanes that share a row.
  mlir::Value getInGroup() const { return inGroup; }

  /// The block tile's row where atom `atom` of the warp starts.
  mlir::Value atomRow(int64_t atom);
  /// `origin` plus the block tile's row of lane row `laneRow`.
  mlir::Value row(mlir::Value origin, int64_t laneRow);
  /// The block tile's row of lane row `laneRow`.
  mlir::Value rowInTile(int64_t laneRow);
  /// The first of the lane's two columns of slice `slice`.
  mlir::Value column(int64_t slice);

  /// Visits the lane's elements of `layout` column by column: `onColumn`
  /// once per column the lane holds (its slice, which of the lane's two
  /// columns of it, its index in the fragment), then `onElement` for that
  /// column's element in every lane row. Values that depend on the column
  /// alone (kv_idx and a key's terms in the forward's S, q_idx in the
  /// backward's S^T) are so formed once for all the lane's rows.
  mlir::LogicalResult forEachElementByColumn(
      const FragmentLayout &layout,
      llvm::function_ref<void(int64_t slice, int64_t column, mlir::Value index)>
          onColumn,
      llvm::function_ref<mlir::LogicalResult(int64_t accumulator,
                                             int64_t element, int64_t laneRow)>
          onElement);

private:
  mlir::Value warp;
  int64_t rowsPerWarp;
  /// l / 4 and l % 4.
  mlir::Value group, inGroup;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_FRAGMENTLAYOUT_H
