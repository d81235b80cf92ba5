//===- TensorMapCopy.cpp - tiles brought by TMA ---------------------------===//
#include "rbfc/Conversion/NVGPU/TensorMapCopy.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

using namespace mlir;
using namespace rbfc;

void TensorMapCopy::copyTile(Value map, Value shared, Value sharedBase,
                             Value firstRow, Value head, Value batch,
                             Value barrier) {
  auto coordinate = [&](Value value) -> Value {
    return arith::IndexCastOp::create(b, b.getI32Type(), value);
  };
  Value row = coordinate(firstRow), headIndex = coordinate(head),
        batchIndex = coordinate(batch);
  // One box a column block: its 128-byte rows are the swizzle's lines, and
  // the block starts 1024-byte aligned (SharedMemoryArena), as the swizzle
  // pattern of the tensor map assumes.
  for (int64_t column = 0; column < rowElements;
       column += SwizzledTile::kBlockElements) {
    Value target =
        elementPointer(shared, add(sharedBase, tile.columnStart(column)));
    NVVM::CpAsyncBulkTensorGlobalToSharedClusterOp::create(
        b, clusterPointer(target), map,
        ValueRange{i32(column), row, headIndex, batchIndex}, barrier,
        ValueRange{}, Value(), Value(), NVVM::TMALoadMode::TILE,
        /*isCTAOnly=*/false, NVVM::CTAGroupKindAttr(), Value());
  }
}
