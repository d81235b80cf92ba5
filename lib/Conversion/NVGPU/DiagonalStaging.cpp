//===- DiagonalStaging.cpp - diagonal-indexed captures through shared -----===//
#include "rbfc/Conversion/NVGPU/DiagonalStaging.h"

#include "rbfc/Conversion/RegionInlining.h"
#include "rbfc/Dialect/Attn/DiagonalIndex.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/Support/Debug.h"

#define DEBUG_TYPE "attn-diagonal-staging"

using namespace mlir;
using namespace rbfc;

SmallVector<attn::LoadOp> DiagonalStaging::stagedLoads(attn::AttentionOp op) {
  SmallVector<attn::LoadOp> loads;
  attn::DiagonalIndex diagonals;
  for (auto load : op.getScore().front().getOps<attn::LoadOp>()) {
    std::optional<int> direction = diagonals.direction(load.getIndices());
    if (direction && *direction != 0)
      loads.push_back(load);
  }
  LLVM_DEBUG(llvm::dbgs() << "diagonal staging: " << loads.size()
                          << " load(s) of the score region\n");
  return loads;
}

DiagonalStaging::DiagonalStaging(ImplicitLocOpBuilder &b,
                                 RegionApplication &regions,
                                 ArrayRef<attn::LoadOp> loads,
                                 ArrayRef<Value> windows,
                                 FragmentLane &fragment, Value lane, Value warp,
                                 Rows rows, int64_t rowsPerWarp,
                                 int64_t columns)
    : KernelEmitter(b), regions(regions), loads(loads), windows(windows),
      fragment(fragment), lane(lane), warp(warp), rows(rows),
      rowsPerWarp(rowsPerWarp), columns(columns) {
  Value laneRow = div(lane, 4), laneColumn = mul(rem(lane, 4), 2);
  windowBase = mul(warp, windowLength());
  laneSlotBase =
      add(windowBase, rows == Rows::Queries ? sub(laneRow, laneColumn)
                                            : sub(laneColumn, laneRow));
}

SmallVector<Value> DiagonalStaging::carveWindows(SharedMemoryArena &shared,
                                                 ArrayRef<attn::LoadOp> loads,
                                                 int64_t warps,
                                                 int64_t rowsPerWarp,
                                                 int64_t columns) {
  SmallVector<Value> windows;
  for (attn::LoadOp load : loads)
    windows.push_back(shared.carve(warps * windowLength(rowsPerWarp, columns),
                                   load.getType()));
  return windows;
}

Value DiagonalStaging::window(attn::LoadOp load) {
  return windows[llvm::find(loads, load) - loads.begin()];
}

Value DiagonalStaging::slot(int64_t laneRow, int64_t columnOffset) {
  int64_t rowOffset = FragmentLayout::laneRowOffset(laneRow);
  return add(laneSlotBase, rows == Rows::Queries
                               ? rowOffset - columnOffset + columns - 1
                               : columnOffset - rowOffset + rowsPerWarp - 1);
}

LogicalResult DiagonalStaging::stage(Value rowOrigin, Value columnOrigin) {
  auto op = loads.front()->getParentOfType<attn::AttentionOp>();
  // What the staged loads' indices are computed from; the score region's
  // other attn ops (the dot, the key terms, other captures' reads) stand
  // for zeros here and leave no code.
  SetVector<Operation *> indexSlice;
  for (attn::LoadOp load : loads)
    for (Value idx : load.getIndices())
      if (Operation *def = idx.getDefiningOp()) {
        (void)getBackwardSlice(def, &indexSlice);
        indexSlice.insert(def);
      }

  // The previous tile's reads of the windows are done in every lane.
  NVVM::SyncWarpOp::create(b, i32(-1));
  // Slot s's diagonal at one element: where rows are queries, the warp's
  // first row against the tile's last column less s; where rows are keys,
  // the tile's first column plus s against the warp's last row.
  Value warpFirstRow = add(rowOrigin, fragment.atomRow(0));
  Value lastColumn = add(columnOrigin, columns - 1);
  Value warpLastRow = add(warpFirstRow, rowsPerWarp - 1);
  int64_t length = windowLength();
  for (int64_t first = 0; first < length; first += kThreadsPerWarp) {
    Value slotIndex = add(lane, first);
    // Lanes past the window evaluate its last slot and store nothing, so
    // that the loads (a load_bound's shuffles among them) stay uniform.
    Value inside;
    if (first + kThreadsPerWarp > length) {
      inside = cmp(arith::CmpIPredicate::ult, slotIndex, index(length));
      slotIndex = arith::MinUIOp::create(b, slotIndex, index(length - 1));
    }
    ElementValues element;
    if (rows == Rows::Queries) {
      element.qIdx = warpFirstRow;
      element.kvIdx = sub(lastColumn, slotIndex);
    } else {
      element.qIdx = add(columnOrigin, slotIndex);
      element.kvIdx = warpLastRow;
    }
    auto stageLoad = [&](Operation *attnOp, IRMapping &mapping,
                         const ElementValues &) -> FailureOr<Value> {
      auto load = dyn_cast<attn::LoadOp>(attnOp);
      if (load && llvm::is_contained(loads, load)) {
        SmallVector<Value> indices;
        for (Value idx : load.getIndices())
          indices.push_back(mapping.lookup(idx));
        Value value =
            regions.loadCapture(captureIndex(op, load.getCapture()), indices);
        Value offset = add(windowBase, slotIndex);
        if (inside) {
          auto store = scf::IfOp::create(b, inside, /*withElseRegion=*/false);
          OpBuilder::InsertionGuard guard(b);
          b.setInsertionPointToStart(store.thenBlock());
          memref::StoreOp::create(b, value, window(load), ValueRange{offset});
        } else {
          memref::StoreOp::create(b, value, window(load), ValueRange{offset});
        }
        return value;
      }
      if (indexSlice.contains(attnOp))
        return Value();
      return Value(arith::ConstantOp::create(
          b, b.getZeroAttr(attnOp->getResult(0).getType())));
    };
    if (failed(
            regions.evaluateElementRegion(op.getScore(), element, stageLoad)))
      return failure();
  }
  NVVM::SyncWarpOp::create(b, i32(-1));
  return success();
}

FailureOr<Value> DiagonalStaging::read(Operation *attnOp,
                                       const ElementValues &element) {
  auto load = dyn_cast<attn::LoadOp>(attnOp);
  if (!load || !element.diagonalSlot || !llvm::is_contained(loads, load))
    return Value();
  return Value(memref::LoadOp::create(b, window(load),
                                      ValueRange{element.diagonalSlot}));
}
