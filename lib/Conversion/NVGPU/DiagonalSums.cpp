//===- DiagonalSums.cpp - a relative-position table's gradient ------------===//
#include "rbfc/Conversion/NVGPU/DiagonalSums.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace rbfc;

Value DiagonalSums::rowLength(Value qLen) {
  Value tiles = arith::CeilDivUIOp::create(b, qLen, index(queryTile));
  return add(mul(tiles, queryTile), keyTile);
}

void DiagonalSums::zeroFloats(Value memref, Value start, Value count,
                              Value threadId, int64_t threads) {
  auto loop = scf::ForOp::create(b, threadId, count, index(threads));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  memref::StoreOp::create(b, f32(0.0), memref,
                          ValueRange{add(start, loop.getInductionVar())});
}

void DiagonalSums::zeroRow(Value workspace, Value row, Value length,
                           Value threadId, int64_t threads) {
  zeroFloats(workspace, row, length, threadId, threads);
}

void DiagonalSums::zeroShared(Value shared, Value threadId, int64_t threads) {
  zeroFloats(shared, index(0), index(sharedFloats()), threadId, threads);
}

void DiagonalSums::store(Value shared, Value keyInTile, Value queryInTile,
                         Value value) {
  Value group = div(keyInTile, kGroupRows);
  Value row = rem(keyInTile, kGroupRows);
  Value offset = add(add(mul(group, groupFloats()), padding()),
                     add(mul(row, pitch()), queryInTile));
  memref::StoreOp::create(b, value, shared, ValueRange{offset});
}

void DiagonalSums::addTile(Value shared, Value workspace, Value row, Value qLo,
                           Value threadId, Value lane, Value warp) {
  gpu::BarrierOp::create(b);
  // Phase 1: warp g sums group g's diagonals; diagonal d of a group holds
  // its elements (row r, query r + d - (kGroupRows - 1)), at fixed offsets
  // r (pitch + 1) from its first.
  Value groupSums = index(groups() * groupFloats());
  int64_t perLane = llvm::divideCeil(groupDiagonals(), kThreadsPerWarp);
  for (int64_t k = 0; k < perLane; ++k) {
    // Lanes past the last diagonal repeat it: the same sum, stored twice.
    Value d = arith::MinUIOp::create(b, add(lane, k * kThreadsPerWarp),
                                     index(groupDiagonals() - 1));
    Value first =
        add(add(mul(warp, groupFloats()), padding() - (kGroupRows - 1)), d);
    Value sum = f32(0.0);
    for (int64_t r = 0; r < kGroupRows; ++r)
      sum =
          fadd(sum, memref::LoadOp::create(
                        b, shared, ValueRange{add(first, r * (pitch() + 1))}));
    memref::StoreOp::create(
        b, sum, shared,
        ValueRange{add(groupSums, add(mul(warp, groupDiagonalsPadded()), d))});
  }
  gpu::BarrierOp::create(b);
  // Phase 2: diagonal t of the tile is diagonal t - 16 (groups - 1 - g) of
  // group g, for the groups where that exists.
  auto mine = scf::IfOp::create(
      b, TypeRange{},
      cmp(arith::CmpIPredicate::ult, threadId, index(diagonals())), false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(mine.thenBlock());
  Value t = threadId;
  Value sum = f32(0.0);
  for (int64_t g = 0; g < groups(); ++g) {
    Value d = sub(t, index(kGroupRows * (groups() - 1 - g)));
    Value inside = arith::AndIOp::create(
        b, cmp(arith::CmpIPredicate::sge, d, index(0)),
        cmp(arith::CmpIPredicate::slt, d, index(groupDiagonals())));
    Value offset = add(groupSums, add(index(g * groupDiagonalsPadded()),
                                      select(inside, d, index(0))));
    Value value = memref::LoadOp::create(b, shared, ValueRange{offset});
    sum = fadd(sum, select(inside, value, f32(0.0)));
  }
  Value at = add(row, add(qLo, t));
  Value before = memref::LoadOp::create(b, workspace, ValueRange{at});
  memref::StoreOp::create(b, fadd(before, sum), workspace, ValueRange{at});
}

std::pair<Value, Value> DiagonalSums::entry(Value rowsStart, Value length,
                                            Value tile, Value diagonal) {
  Value offset = add(diagonal, add(mul(tile, keyTile), keyTile - 1));
  Value inside =
      arith::AndIOp::create(b, cmp(arith::CmpIPredicate::sge, offset, index(0)),
                            cmp(arith::CmpIPredicate::slt, offset, length));
  Value clamped = select(inside, offset, index(0));
  return {add(rowsStart, add(mul(tile, length), clamped)), inside};
}

Value DiagonalSums::firstWhere(Value lo, Value hi,
                               function_ref<Value(Value)> holds) {
  Type indexType = b.getIndexType();
  auto search = scf::WhileOp::create(b, TypeRange{indexType, indexType},
                                     ValueRange{lo, hi});
  {
    OpBuilder::InsertionGuard guard(b);
    Block *before =
        b.createBlock(&search.getBefore(), {}, {indexType, indexType},
                      {b.getLoc(), b.getLoc()});
    Value low = before->getArgument(0), high = before->getArgument(1);
    scf::ConditionOp::create(b, cmp(arith::CmpIPredicate::slt, low, high),
                             ValueRange{low, high});
    Block *after = b.createBlock(&search.getAfter(), {}, {indexType, indexType},
                                 {b.getLoc(), b.getLoc()});
    low = after->getArgument(0);
    high = after->getArgument(1);
    Value middle =
        add(low, arith::DivSIOp::create(b, sub(high, low), index(2)));
    Value found = holds(middle);
    scf::YieldOp::create(b, ValueRange{select(found, low, add(middle, 1)),
                                       select(found, middle, high)});
  }
  return search.getResult(0);
}
