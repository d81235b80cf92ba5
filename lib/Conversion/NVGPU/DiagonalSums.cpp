//===- DiagonalSums.cpp - a relative-position table's gradient ------------===//
#include "rbfc/Conversion/NVGPU/DiagonalSums.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace rbfc;

Value DiagonalSums::rowLength(Value qLen) {
  Value tiles = arith::CeilDivUIOp::create(b, qLen, index(queryTile));
  return add(mul(tiles, queryTile), keyTile);
}

void DiagonalSums::zeroRow(Value workspace, Value row, Value length,
                           Value threadId, int64_t threads) {
  auto loop = scf::ForOp::create(b, threadId, length, index(threads));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(loop.getBody());
  memref::StoreOp::create(b, f32(0.0), workspace,
                          ValueRange{add(row, loop.getInductionVar())});
}

void DiagonalSums::store(Value shared, Value keyInTile, Value queryInTile,
                         Value value) {
  memref::StoreOp::create(
      b, value, shared, ValueRange{add(mul(keyInTile, pitch()), queryInTile)});
}

void DiagonalSums::addTile(Value shared, Value workspace, Value row, Value qLo,
                           Value threadId, int64_t threads) {
  // Diagonal t holds the elements (key r, query r + t - (keyTile - 1)).
  int64_t diagonals = keyTile + queryTile - 1;
  auto perThread =
      scf::ForOp::create(b, threadId, index(diagonals), index(threads));
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(perThread.getBody());
  Value t = perThread.getInductionVar();
  Value firstKey =
      arith::MaxSIOp::create(b, sub(index(keyTile - 1), t), index(0));
  Value endKey = arith::MinSIOp::create(
      b, sub(index(keyTile + queryTile - 1), t), index(keyTile));
  Value column = sub(t, index(keyTile - 1));
  // kChains independent sums of every kChains-th key, so that the loads
  // of one step do not wait for each other's additions.
  SmallVector<Value> zeros(kChains, f32(0.0));
  auto keys = scf::ForOp::create(b, firstKey, endKey, index(kChains), zeros);
  {
    OpBuilder::InsertionGuard inner(b);
    b.setInsertionPointToStart(keys.getBody());
    SmallVector<Value> sums;
    for (int64_t chain = 0; chain < kChains; ++chain) {
      Value r = add(keys.getInductionVar(), chain);
      Value inside = cmp(arith::CmpIPredicate::slt, r, endKey);
      Value offset = select(inside, add(mul(r, pitch() + 1), column), index(0));
      Value value = memref::LoadOp::create(b, shared, ValueRange{offset});
      sums.push_back(
          fadd(keys.getRegionIterArg(chain), select(inside, value, f32(0.0))));
    }
    scf::YieldOp::create(b, sums);
  }
  Value sum = keys.getResult(0);
  for (int64_t chain = 1; chain < kChains; ++chain)
    sum = fadd(sum, keys.getResult(chain));
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
