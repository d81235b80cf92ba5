//===- Epilogue.cpp - storing a kernel's results --------------------------===//
#include "rbfc/Conversion/NVGPU/Epilogue.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

using namespace mlir;
using namespace rbfc;

LogicalResult Epilogue::storeRow(ArrayRef<Accumulator> fragment,
                                 int64_t laneRow, Value scale,
                                 const GlobalRows &tensor, Value row,
                                 Value length,
                                 function_ref<LogicalResult()> inRow) {
  Value inside = cmp(arith::CmpIPredicate::ult, row, length);
  auto guard = scf::IfOp::create(b, TypeRange{}, inside, false);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(guard.thenBlock());
  Value rowBase = add(tensor.base, mul(row, tensor.rowStride));
  for (auto [slice, acc] :
       llvm::enumerate(layout.rowAccumulators(fragment, laneRow))) {
    Value column = lane.column(slice);
    Value pair =
        atoms.packPair(fmul(acc[FragmentLayout::element(laneRow, 0)], scale),
                       fmul(acc[FragmentLayout::element(laneRow, 1)], scale));
    // The lane's two columns are adjacent: one 4-byte store.
    vector::StoreOp::create(b, pair, tensor.tensor,
                            ValueRange{add(rowBase, column)},
                            /*nontemporal=*/false, llvm::MaybeAlign(4));
  }
  return inRow ? inRow() : success();
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
