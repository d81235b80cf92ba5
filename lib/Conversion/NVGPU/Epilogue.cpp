//===- Epilogue.cpp - storing a kernel's results --------------------------===//
#include "rbfc/Conversion/NVGPU/Epilogue.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace rbfc;

Value Epilogue::roundedPair(const Accumulator &acc, int64_t laneRow,
                            Value scale) {
  return atoms.packPair(fmul(acc[FragmentLayout::element(laneRow, 0)], scale),
                        fmul(acc[FragmentLayout::element(laneRow, 1)], scale));
}

LogicalResult Epilogue::storeRow(ArrayRef<Accumulator> fragment,
                                 int64_t laneRow, Value scale,
                                 const GlobalRows &tensor, Value row,
                                 Value length,
                                 function_ref<LogicalResult()> inRow) {
  return belowLength(row, length, [&]() -> LogicalResult {
    Value rowBase = add(tensor.base, mul(row, tensor.rowStride));
    for (auto [slice, acc] :
         llvm::enumerate(layout.rowAccumulators(fragment, laneRow))) {
      Value column = lane.column(slice);
      Value pair = roundedPair(acc, laneRow, scale);
      // The lane's two columns are adjacent: one 4-byte store.
      vector::StoreOp::create(b, pair, tensor.tensor,
                              ValueRange{add(rowBase, column)},
                              /*nontemporal=*/false, llvm::MaybeAlign(4));
    }
    return inRow ? inRow() : success();
  });
}

LogicalResult Epilogue::belowLength(Value row, Value length,
                                    function_ref<LogicalResult()> inRow) {
  Value inside = cmp(arith::CmpIPredicate::ult, row, length);
  auto guard = scf::IfOp::create(b, TypeRange{}, inside, false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(guard.thenBlock());
  return inRow();
}

void Epilogue::stageRow(ArrayRef<Accumulator> fragment, int64_t laneRow,
                        Value scale, Value shared, SwizzledTile &tile) {
  Value row = lane.rowInTile(laneRow);
  Value inChunk = mul(lane.getInGroup(), 2);
  for (auto [slice, acc] :
       llvm::enumerate(layout.rowAccumulators(fragment, laneRow))) {
    Value pair = roundedPair(acc, laneRow, scale);
    vector::StoreOp::create(
        b, pair, shared,
        ValueRange{add(tile.offset(row, index(slice)), inChunk)},
        /*nontemporal=*/false, llvm::MaybeAlign(4));
  }
}

void Epilogue::copyStagedRows(Value shared, SwizzledTile &tile, Value firstRow,
                              int64_t rows, int64_t columns, Value thread,
                              int64_t threads, const GlobalRows &tensor,
                              Value origin, Value length) {
  int64_t chunksPerRow = columns / kChunk;
  int64_t chunks = rows * chunksPerRow;
  assert(chunks % threads == 0 && "every thread copies as many chunks");
  auto chunkType = VectorType::get(
      {kChunk}, cast<MemRefType>(shared.getType()).getElementType());
  for (int64_t pass = 0; pass < chunks / threads; ++pass) {
    Value linear = add(thread, pass * threads);
    Value tileRow = add(firstRow, div(linear, chunksPerRow));
    Value chunk = rem(linear, chunksPerRow);
    Value row = add(origin, tileRow);
    (void)belowLength(row, length, [&] {
      Value values = vector::LoadOp::create(
          b, chunkType, shared, ValueRange{tile.offset(tileRow, chunk)});
      Value address =
          add(add(tensor.base, mul(row, tensor.rowStride)), mul(chunk, kChunk));
      vector::StoreOp::create(b, values, tensor.tensor, ValueRange{address},
                              /*nontemporal=*/false,
                              llvm::MaybeAlign(kChunk * kElementBytes));
      return success();
    });
  }
}

LogicalResult Epilogue::storeRowValue(Value memref,
                                      function_ref<FailureOr<Value>()> value,
                                      function_ref<Value()> offset) {
  Value writer = cmp(arith::CmpIPredicate::eq, lane.getInGroup(), index(0));
  auto guard = scf::IfOp::create(b, TypeRange{}, writer, false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(guard.thenBlock());
  FailureOr<Value> stored = value();
  if (failed(stored))
    return failure();
  memref::StoreOp::create(b, *stored, memref, ValueRange{offset()});
  return success();
}
