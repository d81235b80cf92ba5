//===- Epilogue.h - storing a kernel's results ------------------*- C++ -*-===//
//
// The stores at a kernel's end: the rows of an f32 accumulator fragment
// rounded to the 16-bit element type (the forward's O; the backward's dQ,
// dK, dV), each lane its two adjacent columns of every slice in one 4-byte
// store, rows past the tensor's end skipped, or (stageRow, copyStagedRows)
// through a tile in shared memory in 16-byte chunks; and per-row f32 values
// (the forward's LSE, the backward's row terms) from one lane of the four that
// hold a row.
//
//===----------------------------------------------------------------------===//
#ifndef RBFC_CONVERSION_NVGPU_EPILOGUE_H
#define RBFC_CONVERSION_NVGPU_EPILOGUE_H

#include "rbfc/Conversion/NVGPU/CopyEngine.h"
#include "rbfc/Conversion/NVGPU/MatrixAtoms.h"
#include "rbfc/Conversion/NVGPU/SharedTile.h"

namespace rbfc {

class Epilogue : public KernelEmitter {
public:
  /// Stores of fragments laid out as `layout`, as the lane `lane` holds
  /// them; `atoms` rounds to the element type.
  Epilogue(mlir::ImplicitLocOpBuilder &b, FragmentLane &lane,
           const FragmentLayout &layout, MmaSyncAtom &atoms)
      : KernelEmitter(b), lane(lane), layout(layout), atoms(atoms) {}

  /// When `row` < `length`: stores lane row `laneRow` of `fragment` times
  /// `scale` to row `row` of `tensor`, then runs `inRow` (the row's other
  /// stores) under the same bound.
  mlir::LogicalResult
  storeRow(llvm::ArrayRef<Accumulator> fragment, int64_t laneRow,
           mlir::Value scale, const GlobalRows &tensor, mlir::Value row,
           mlir::Value length,
           llvm::function_ref<mlir::LogicalResult()> inRow = {});
  /// Writes lane row `laneRow` of `fragment` times `scale`, rounded, to
  /// the same row of the block tile `tile` in the shared view `shared`
  /// (the row's 8-column slices are the tile's 16-byte chunks).
  void stageRow(llvm::ArrayRef<Accumulator> fragment, int64_t laneRow,
                mlir::Value scale, mlir::Value shared, SwizzledTile &tile);
  /// Copies rows [`firstRow`, `firstRow` + `rows`) of the staged block tile
  /// (`columns` 16-bit elements a row) to rows `origin` + tile row of
  /// `tensor` below `length`, one 16-byte chunk a store, by the `threads`
  /// threads that `thread` counts (staged by stageRow and published to
  /// them by a barrier).
  void copyStagedRows(mlir::Value shared, SwizzledTile &tile,
                      mlir::Value firstRow, int64_t rows, int64_t columns,
                      mlir::Value thread, int64_t threads,
                      const GlobalRows &tensor, mlir::Value origin,
                      mlir::Value length);
  /// Emits `inRow` (a row's stores) under the bound `row` < `length`.
  mlir::LogicalResult
  belowLength(mlir::Value row, mlir::Value length,
              llvm::function_ref<mlir::LogicalResult()> inRow);
  /// From the first of the four lanes that hold a row: stores `value()` at
  /// element `offset()` of the f32 buffer `memref`.
  mlir::LogicalResult
  storeRowValue(mlir::Value memref,
                llvm::function_ref<mlir::FailureOr<mlir::Value>()> value,
                llvm::function_ref<mlir::Value()> offset);

private:
  /// Lane row `laneRow`'s two values of the slice `acc` times `scale`,
  /// rounded to one 16-bit pair.
  mlir::Value roundedPair(const Accumulator &acc, int64_t laneRow,
                          mlir::Value scale);

  FragmentLane &lane;
  const FragmentLayout &layout;
  MmaSyncAtom &atoms;
};

} // namespace rbfc

#endif // RBFC_CONVERSION_NVGPU_EPILOGUE_H
