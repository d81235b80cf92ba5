//===- BlockOrder.cpp - which tile of which head a block computes ---------===//
#include "rbfc/Conversion/NVGPU/BlockOrder.h"

#include "mlir/Dialect/Math/IR/Math.h"

using namespace mlir;
using namespace rbfc;

/// The bytes of the heads whose blocks run together: about half the 50 MB
/// of L2 of the H100 and H200, the rest left to the other operands and the
/// next group's first blocks.
static constexpr int64_t kL2BytesPerGroup = 24 << 20;

BlockOrder::Place BlockOrder::longestFirst(Value heads, Value batch,
                                           Value rows, int64_t rowBytes,
                                           bool longestLast) {
  Value tiles = gpu::GridDimOp::create(b, gpu::Dimension::x);
  Value lastTile = sub(tiles, index(1));
  Value linear = add(
      gpu::BlockIdOp::create(b, gpu::Dimension::x),
      mul(tiles,
          add(gpu::BlockIdOp::create(b, gpu::Dimension::y),
              mul(heads, gpu::BlockIdOp::create(b, gpu::Dimension::z)))));
  Value headsTimesBatch = mul(heads, batch);
  Value headBytes = mul(rows, rowBytes);
  // As many heads as fit in kL2BytesPerGroup, down to a power of two (which
  // divides the usual head counts: a last group of a few heads leaves
  // multiprocessors idle at the end).
  Value fitting = arith::MaxUIOp::create(
      b,
      arith::DivUIOp::create(b, index(kL2BytesPerGroup),
                             arith::MaxUIOp::create(b, headBytes, index(1))),
      index(1));
  Type i64 = b.getI64Type();
  Value leadingZeros = math::CountLeadingZerosOp::create(
      b, arith::IndexCastUIOp::create(b, i64, fitting));
  Value powerOfTwo = arith::ShLIOp::create(
      b, arith::ConstantIntOp::create(b, i64, 1),
      arith::SubIOp::create(b, arith::ConstantIntOp::create(b, i64, 63),
                            leadingZeros));
  Value groupHeads = arith::MinUIOp::create(
      b, arith::IndexCastUIOp::create(b, b.getIndexType(), powerOfTwo),
      headsTimesBatch);
  Value groupBlocks = mul(groupHeads, tiles);
  Value firstHead =
      mul(arith::DivUIOp::create(b, linear, groupBlocks), groupHeads);
  Value inGroup = arith::RemUIOp::create(b, linear, groupBlocks);
  // The last group may hold fewer heads.
  Value headsHere =
      arith::MinUIOp::create(b, groupHeads, sub(headsTimesBatch, firstHead));
  Value headAndBatch =
      add(firstHead, arith::RemUIOp::create(b, inGroup, headsHere));
  Value rank = arith::DivUIOp::create(b, inGroup, headsHere);
  Place place;
  place.tile = longestLast ? sub(lastTile, rank) : rank;
  place.batch = arith::DivUIOp::create(b, headAndBatch, heads);
  place.head = arith::RemUIOp::create(b, headAndBatch, heads);
  return place;
}
