//===- SharedTile.cpp - tiles in shared memory ----------------------------===//
#include "rbfc/Conversion/NVGPU/SharedTile.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-shared-tile"

using namespace mlir;
using namespace rbfc;

Value SwizzledTile::offset(Value row, Value chunk) {
  Value rowSwizzle = swizzleStep() == 1 ? row : div(row, swizzleStep());
  Value swizzledChunk =
      arith::XOrIOp::create(b, chunk, rem(rowSwizzle, swizzleChunks()));
  return add(mul(row, rowElements), mul(swizzledChunk, kChunk));
}

SmallVector<Value> SwizzledTile::laneChunkOffsets(Value row, Value half) {
  SmallVector<Value> offsets;
  for (int64_t residue = 0; residue < swizzleChunks() / 2; ++residue)
    offsets.push_back(offset(row, add(half, 2 * residue)));
  return offsets;
}

Value SwizzledTile::laneChunkOffset(ArrayRef<Value> offsets, int64_t rowDelta,
                                    int64_t slice) {
  // Chunk 2 (P q + p) + half of row r, P = offsets.size(), lands at chunk
  // 2 P q + ((2 p + half) ^ x(r)), x(r) < 2 P: the high part passes the
  // XOR.
  int64_t period = offsets.size();
  assert(rowDelta % swizzlePeriod() == 0 && "row shift changes the swizzle");
  return add(offsets[slice % period],
             rowDelta * rowElements + kChunk * 2 * period * (slice / period));
}

SharedMemoryArena::SharedMemoryArena(ImplicitLocOpBuilder &b)
    : KernelEmitter(b) {
  base = gpu::DynamicSharedMemoryOp::create(
      b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                         MemRefLayoutAttrInterface(),
                         gpu::AddressSpaceAttr::get(
                             b.getContext(), gpu::AddressSpace::Workgroup)));
}

Value SharedMemoryArena::carve(int64_t elements, Type elementType) {
  auto workgroup =
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  auto type = MemRefType::get({elements}, elementType,
                              MemRefLayoutAttrInterface(), workgroup);
  Value view =
      memref::ViewOp::create(b, type, base, index(bytes), ValueRange{});
  LLVM_DEBUG(llvm::dbgs() << "shared memory [" << bytes << ", +" << elements
                          << " x " << elementType << ")\n");
  bytes +=
      llvm::alignTo(elements * elementType.getIntOrFloatBitWidth() / 8, 16);
  return view;
}
