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
  if (!isBlocked())
    return add(mul(row, rowElements), mul(swizzledChunk, kChunk));
  // Chunk 8 g + p is chunk p ^ (r % 8) of the row in column block g.
  Value block = div(swizzledChunk, swizzleChunks());
  Value inBlock = rem(swizzledChunk, swizzleChunks());
  return add(add(mul(block, blockRows * kBlockElements),
                 mul(row, kBlockElements)),
             mul(inBlock, kChunk));
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
             rowShift(rowDelta) + chunkShift(2 * period * (slice / period)));
}

SharedMemoryArena::SharedMemoryArena(ImplicitLocOpBuilder &b,
                                     int64_t alignment)
    : KernelEmitter(b), alignment(alignment) {
  assert(alignment >= 16 && llvm::isPowerOf2_64(alignment) &&
         "arenas align to a power of two of at least 16 bytes");
  base = gpu::DynamicSharedMemoryOp::create(
      b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                         MemRefLayoutAttrInterface(),
                         gpu::AddressSpaceAttr::get(
                             b.getContext(), gpu::AddressSpace::Workgroup)));
  if (alignment == 16)
    return;
  Value address = memref::ExtractAlignedPointerAsIndexOp::create(b, base);
  start = rem(sub(index(alignment), rem(address, alignment)), alignment);
}

Value rbfc::sharedAddress(ImplicitLocOpBuilder &b, Value shared,
                          Value offset) {
  Value address = memref::ExtractAlignedPointerAsIndexOp::create(b, shared);
  int64_t elementBytes =
      cast<MemRefType>(shared.getType()).getElementTypeBitWidth() / 8;
  Value bytes = arith::MulIOp::create(
      b, offset, arith::ConstantIndexOp::create(b, elementBytes));
  return arith::AddIOp::create(b, address, bytes);
}

Value SharedMemoryArena::carve(int64_t elements, Type elementType) {
  auto workgroup =
      gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
  auto type = MemRefType::get({elements}, elementType,
                              MemRefLayoutAttrInterface(), workgroup);
  bytes = llvm::alignTo(bytes, alignment);
  Value view = memref::ViewOp::create(
      b, type, base, start ? add(start, bytes) : index(bytes), ValueRange{});
  LLVM_DEBUG(llvm::dbgs() << "shared memory [" << bytes << ", +" << elements
                          << " x " << elementType << ")\n");
  bytes += elements * elementType.getIntOrFloatBitWidth() / 8;
  bytes = llvm::alignTo(bytes, 16);
  return view;
}
