//===- LowerToHost.cpp - attn.attention to a tiled CPU schedule -----------===//
//
// Builds, for every canonical attn.attention, the streaming-softmax schedule
// the CPU runs: one work item is a (batch, head, query tile); it walks the
// key tiles once, keeping per query row a running maximum m, a running sum l
// and an f32 accumulator acc, and rescales (l, acc) by exp2(m_old - m_new)
// when the maximum grows. Scores live in the log2 domain (the canonical form
// already multiplied them by log2(e)), so every weight is a single exp2.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/Passes.h"

#include "rbfc/Conversion/Host/HostBackward.h"
#include "rbfc/Conversion/Host/HostEmitter.h"
#include "rbfc/Dialect/Attn/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#include <cmath>
#include <limits>

#define DEBUG_TYPE "attn-lower-to-host"

namespace rbfc {
#define GEN_PASS_DEF_ATTNLOWERTOHOST
#include "rbfc/Conversion/Passes.h.inc"
} // namespace rbfc

using namespace mlir;
using namespace rbfc;
using namespace rbfc::host;

namespace {

/// The forward schedule.
class HostKernelEmitter : HostEmitter {
public:
  HostKernelEmitter(attn::AttentionOp attention, func::FuncOp kernel,
                    int64_t tileM, int64_t tileN)
      : HostEmitter(attention, kernel), tileM(tileM), tileN(tileN) {}

  LogicalResult emit();

private:
  /// Scores and online-softmax update of every row of the work item against
  /// one key tile. `withMask` evaluates the mask per element.
  LogicalResult emitTileRows(ElementContext &tile, Value qLo, Value numRows,
                             Value kvLo, Value numKeys, bool withMask);
  LogicalResult emitFinalize(ElementContext &item, Value qLo, Value numRows);

  int64_t tileM, tileN;
  Value query, value, output, lse;
  // Per-thread scratch (stack): the work item's query rows, its
  // accumulators, running max/sum, one key tile's key_bias values and one
  // row's scores for the current key tile.
  Value queryTile, accTile, rowMax, rowSum, keyBiasTile, scoreRow;
};

LogicalResult HostKernelEmitter::emitTileRows(ElementContext &tile, Value qLo,
                                              Value numRows, Value kvLo,
                                              Value numKeys, bool withMask) {
  const bool softmax = attention.isSoftmax();
  const double negInf = -std::numeric_limits<double>::infinity();
  auto rowLoop = scf::ForOp::create(builder, loc, index(0), numRows, index(1));
  OpBuilder::InsertionGuard rowGuard(builder);
  builder.setInsertionPointToStart(rowLoop.getBody());
  Value row = rowLoop.getInductionVar();
  ElementContext element = tile;
  element.qIdx = arith::AddIOp::create(builder, loc, qLo, row);
  element.queryRow = vector::LoadOp::create(builder, loc, rowType(),
                                            queryTile, ValueRange{row, index(0)});

  // Scores of the row against the tile, into scoreRow; softmax also needs
  // their maximum. Masked elements score -inf (weight 0).
  SmallVector<Value> maxInit;
  if (softmax)
    maxInit.push_back(f32(negInf));
  auto scoreLoop =
      scf::ForOp::create(builder, loc, index(0), numKeys, index(1), maxInit);
  {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(scoreLoop.getBody());
    Value j = scoreLoop.getInductionVar();
    element.kvIdx = arith::AddIOp::create(builder, loc, kvLo, j);
    if (!attention.getKeyBias().empty())
      element.keyBias = memref::LoadOp::create(builder, loc, keyBiasTile, j);
    FailureOr<Value> score = inlineElementRegion(attention.getScore(), element);
    if (failed(score))
      return failure();
    Value s = *score;
    // Non-log2-domain scores are brought to base 2 so that one exp2 serves.
    if (!attention.getLog2Domain())
      s = arith::MulFOp::create(builder, loc, s, f32(M_LOG2E));
    if (withMask) {
      FailureOr<Value> kept = inlineElementRegion(attention.getMask(), element);
      if (failed(kept))
        return failure();
      s = arith::SelectOp::create(builder, loc, *kept, s, f32(negInf));
    }
    memref::StoreOp::create(builder, loc, s, scoreRow, j);
    // Without iteration arguments the loop already ends in a yield.
    if (softmax)
      scf::YieldOp::create(builder, loc,
                           ValueRange{arith::MaximumFOp::create(
                               builder, loc, scoreLoop.getRegionIterArgs()[0],
                               s)});
  }

  Value acc = vector::LoadOp::create(builder, loc, rowType(), accTile,
                                     ValueRange{row, index(0)});
  Value sum = memref::LoadOp::create(builder, loc, rowSum, row);
  // The weight of a score s is exp2(s - shift). Under `none` the shift is 0
  // (the weights are exp(score) as they are); under softmax it is the
  // running maximum, and the old sum and accumulator are rescaled.
  Value shift = f32(0);
  if (softmax) {
    Value oldMax = memref::LoadOp::create(builder, loc, rowMax, row);
    Value newMax = arith::MaximumFOp::create(builder, loc, oldMax,
                                             scoreLoop.getResult(0));
    memref::StoreOp::create(builder, loc, newMax, rowMax, row);
    // While every key so far is masked the maximum is -inf; shifting by 0
    // then keeps exp2(-inf - shift) = 0 instead of exp2(-inf + inf) = NaN.
    Value noneKept = arith::CmpFOp::create(builder, loc,
                                           arith::CmpFPredicate::OEQ, newMax,
                                           f32(negInf));
    shift = arith::SelectOp::create(builder, loc, noneKept, f32(0), newMax);
    Value delta = arith::SubFOp::create(builder, loc, oldMax, shift);
    Value rescale = math::Exp2Op::create(builder, loc, delta);
    sum = arith::MulFOp::create(builder, loc, sum, rescale);
    Value rescaleRow = vector::BroadcastOp::create(builder, loc, rowType(),
                                                   rescale);
    acc = arith::MulFOp::create(builder, loc, acc, rescaleRow);
  }

  auto pvLoop = scf::ForOp::create(builder, loc, index(0), numKeys, index(1),
                                   ValueRange{sum, acc});
  {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(pvLoop.getBody());
    Value j = pvLoop.getInductionVar();
    Value kvIdx = arith::AddIOp::create(builder, loc, kvLo, j);
    Value s = memref::LoadOp::create(builder, loc, scoreRow, j);
    auto accumulate = [&](OpBuilder &b, Location l) {
      Value weight = math::Exp2Op::create(
          b, l, arith::SubFOp::create(b, l, s, shift));
      Value newSum = arith::AddFOp::create(b, l, pvLoop.getRegionIterArgs()[0],
                                           weight);
      OpBuilder::InsertionGuard inner(builder);
      builder.setInsertionPoint(b.getInsertionBlock(), b.getInsertionPoint());
      Value valueRow = loadRow(value, tile.b, tile.kvHead, kvIdx);
      Value weightRow = vector::BroadcastOp::create(b, l, rowType(), weight);
      Value newAcc = vector::FMAOp::create(b, l, weightRow, valueRow,
                                           pvLoop.getRegionIterArgs()[1]);
      return SmallVector<Value>{newSum, newAcc};
    };
    if (withMask) {
      // A masked key must not touch the accumulator at all: 0 * v is NaN
      // when v is NaN or inf, and a masked value row must not leak.
      Value kept = arith::CmpFOp::create(builder, loc,
                                         arith::CmpFPredicate::UNE, s,
                                         f32(negInf));
      auto ifOp = scf::IfOp::create(
          builder, loc, kept,
          [&](OpBuilder &b, Location l) {
            scf::YieldOp::create(b, l, accumulate(b, l));
          },
          [&](OpBuilder &b, Location l) {
            scf::YieldOp::create(b, l, pvLoop.getRegionIterArgs());
          });
      scf::YieldOp::create(builder, loc, ifOp.getResults());
    } else {
      scf::YieldOp::create(builder, loc, accumulate(builder, loc));
    }
  }
  memref::StoreOp::create(builder, loc, pvLoop.getResult(0), rowSum, row);
  vector::StoreOp::create(builder, loc, pvLoop.getResult(1), accTile,
                          ValueRange{row, index(0)});
  return success();
}

LogicalResult HostKernelEmitter::emitFinalize(ElementContext &item, Value qLo,
                                              Value numRows) {
  const bool softmax = attention.isSoftmax();
  const double negInf = -std::numeric_limits<double>::infinity();
  auto rowLoop = scf::ForOp::create(builder, loc, index(0), numRows, index(1));
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToStart(rowLoop.getBody());
  Value row = rowLoop.getInductionVar();
  Value qIdx = arith::AddIOp::create(builder, loc, qLo, row);
  Value acc = vector::LoadOp::create(builder, loc, rowType(), accTile,
                                     ValueRange{row, index(0)});
  Value sum = memref::LoadOp::create(builder, loc, rowSum, row);
  Value zeroSum = arith::CmpFOp::create(builder, loc,
                                        arith::CmpFPredicate::OEQ, sum, f32(0));
  if (softmax) {
    // A fully masked row has sum 0 and gives zeros, not 0/0.
    Value inverse = arith::DivFOp::create(builder, loc, f32(1), sum);
    inverse = arith::SelectOp::create(builder, loc, zeroSum, f32(0), inverse);
    acc = arith::MulFOp::create(
        builder, loc, acc,
        vector::BroadcastOp::create(builder, loc, rowType(), inverse));
  }
  Type outputElement = cast<MemRefType>(output.getType()).getElementType();
  Value outRow = acc;
  if (!outputElement.isF32())
    outRow = arith::TruncFOp::create(
        builder, loc, VectorType::get({headDim}, outputElement), acc);
  vector::StoreOp::create(builder, loc, outRow, output,
                          ValueRange{item.b, item.h, qIdx, index(0)});
  if (!lse)
    return success();

  // lse = ln(sum_j e^(s_j)) = (shift + log2(l)) * ln 2 in the log2 domain;
  // the row_bias region adds what the canonical form moved out of the score.
  Value shift = f32(0);
  if (softmax) {
    Value max = memref::LoadOp::create(builder, loc, rowMax, row);
    Value noneKept = arith::CmpFOp::create(
        builder, loc, arith::CmpFPredicate::OEQ, max, f32(negInf));
    shift = arith::SelectOp::create(builder, loc, noneKept, f32(0), max);
  }
  Value log2Sum = math::Log2Op::create(builder, loc, sum);
  Value rowLse = arith::MulFOp::create(
      builder, loc, arith::AddFOp::create(builder, loc, shift, log2Sum),
      f32(M_LN2));
  if (!attention.getRowBias().empty()) {
    ElementContext element = item;
    element.qIdx = qIdx;
    element.kvIdx = index(0);
    element.queryRow = vector::LoadOp::create(
        builder, loc, rowType(), queryTile, ValueRange{row, index(0)});
    FailureOr<Value> bias =
        inlineElementRegion(attention.getRowBias(), element);
    if (failed(bias))
      return failure();
    rowLse = arith::AddFOp::create(builder, loc, rowLse, *bias);
  }
  rowLse = arith::SelectOp::create(builder, loc, zeroSum, f32(negInf), rowLse);
  memref::StoreOp::create(builder, loc, rowLse, lse,
                          ValueRange{item.b, item.h, qIdx});
  return success();
}

LogicalResult HostKernelEmitter::emit() {
  Block *entry = kernel.addEntryBlock();
  builder.setInsertionPointToStart(entry);
  unsigned next = 0;
  query = entry->getArgument(next++);
  key = entry->getArgument(next++);
  value = entry->getArgument(next++);
  output = entry->getArgument(next++);
  if (attention.getLse())
    lse = entry->getArgument(next++);
  next = bindTrailingArguments(entry, next);
  Value workBegin = entry->getArgument(next++);
  Value workEnd = entry->getArgument(next++);

  bindSizes(query, key);
  Value numQTiles = arith::CeilDivSIOp::create(builder, loc, qLen,
                                               index(tileM));
  Value group = arith::DivSIOp::create(builder, loc, heads, kvHeads);

  Type f32Type = builder.getF32Type();
  auto scratch = [&](ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(builder, loc,
                                    MemRefType::get(shape, f32Type));
  };
  queryTile = scratch({tileM, headDim});
  accTile = scratch({tileM, headDim});
  rowMax = scratch({tileM});
  rowSum = scratch({tileM});
  keyBiasTile = scratch({tileN});
  scoreRow = scratch({tileN});

  auto workLoop =
      scf::ForOp::create(builder, loc, workBegin, workEnd, index(1));
  builder.setInsertionPointToStart(workLoop.getBody());
  // work = ((b * heads) + h) * numQTiles + qTile
  Value work = workLoop.getInductionVar();
  Value qTile = arith::RemSIOp::create(builder, loc, work, numQTiles);
  Value batchHead = arith::DivSIOp::create(builder, loc, work, numQTiles);
  ElementContext item;
  item.h = arith::RemSIOp::create(builder, loc, batchHead, heads);
  item.b = arith::DivSIOp::create(builder, loc, batchHead, heads);
  item.kvHead = arith::DivSIOp::create(builder, loc, item.h, group);
  Value qLo = arith::MulIOp::create(builder, loc, qTile, index(tileM));
  Value numRows = minIndex(index(tileM),
                           arith::SubIOp::create(builder, loc, qLen, qLo));
  Value qHi = arith::SubIOp::create(
      builder, loc, arith::AddIOp::create(builder, loc, qLo, numRows),
      index(1));

  if (!attention.getQScale().empty()) {
    ElementContext element = item;
    element.qIdx = qLo;
    element.kvIdx = index(0);
    FailureOr<Value> qScale =
        inlineElementRegion(attention.getQScale(), element);
    if (failed(qScale))
      return failure();
    item.qScale = *qScale;
  }

  // Stage the work item's query rows as f32 and reset the running state.
  {
    auto init = scf::ForOp::create(builder, loc, index(0), numRows, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(init.getBody());
    Value row = init.getInductionVar();
    Value qIdx = arith::AddIOp::create(builder, loc, qLo, row);
    vector::StoreOp::create(builder, loc, loadRow(query, item.b, item.h, qIdx),
                            queryTile, ValueRange{row, index(0)});
    Value zeros = arith::ConstantOp::create(
        builder, loc, cast<TypedAttr>(builder.getZeroAttr(rowType())));
    vector::StoreOp::create(builder, loc, zeros, accTile,
                            ValueRange{row, index(0)});
    memref::StoreOp::create(builder, loc,
                            f32(-std::numeric_limits<double>::infinity()),
                            rowMax, row);
    memref::StoreOp::create(builder, loc, f32(0), rowSum, row);
  }

  LogicalResult status = success();
  auto kvLoop = scf::ForOp::create(builder, loc, index(0), kvLen, index(tileN));
  {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(kvLoop.getBody());
    Value kvLo = kvLoop.getInductionVar();
    Value numKeys = minIndex(index(tileN),
                             arith::SubIOp::create(builder, loc, kvLen, kvLo));
    Value kvHi = arith::SubIOp::create(
        builder, loc, arith::AddIOp::create(builder, loc, kvLo, numKeys),
        index(1));
    auto classes = classifyTile(item.b, item.h, qLo, qHi, kvLo, kvHi);
    if (failed(classes))
      return failure();
    Value live = arith::XOrIOp::create(
        builder, loc, classes->second,
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true)));
    auto ifLive = scf::IfOp::create(builder, loc, live);
    builder.setInsertionPointToStart(&ifLive.getThenRegion().front());

    // The key_bias of the tile's keys, once for all query rows.
    if (!attention.getKeyBias().empty()) {
      auto biasLoop =
          scf::ForOp::create(builder, loc, index(0), numKeys, index(1));
      OpBuilder::InsertionGuard biasGuard(builder);
      builder.setInsertionPointToStart(biasLoop.getBody());
      Value j = biasLoop.getInductionVar();
      ElementContext element = item;
      element.qIdx = qLo;
      element.kvIdx = arith::AddIOp::create(builder, loc, kvLo, j);
      FailureOr<Value> bias =
          inlineElementRegion(attention.getKeyBias(), element);
      if (failed(bias))
        return failure();
      memref::StoreOp::create(builder, loc, *bias, keyBiasTile, j);
    }

    if (attention.getMask().empty()) {
      status = emitTileRows(item, qLo, numRows, kvLo, numKeys,
                            /*withMask=*/false);
    } else {
      // All-kept tiles skip the per-element mask; the rest evaluate it.
      auto ifKept = scf::IfOp::create(builder, loc, classes->first,
                                      /*withElseRegion=*/true);
      OpBuilder::InsertionGuard keptGuard(builder);
      builder.setInsertionPointToStart(&ifKept.getThenRegion().front());
      LogicalResult kept = emitTileRows(item, qLo, numRows, kvLo, numKeys,
                                        /*withMask=*/false);
      builder.setInsertionPointToStart(&ifKept.getElseRegion().front());
      LogicalResult partial = emitTileRows(item, qLo, numRows, kvLo, numKeys,
                                           /*withMask=*/true);
      status = success(succeeded(kept) && succeeded(partial));
    }
  }
  if (failed(status))
    return failure();
  if (failed(emitFinalize(item, qLo, numRows)))
    return failure();
  builder.setInsertionPointAfter(workLoop);
  func::ReturnOp::create(builder, loc);
  return success();
}

struct AttnLowerToHost
    : public rbfc::impl::AttnLowerToHostBase<AttnLowerToHost> {
  using AttnLowerToHostBase::AttnLowerToHostBase;

  void runOnOperation() override {
    if (tileM < 1 || tileN < 1) {
      getOperation().emitError("attn-lower-to-host: tile-m and tile-n must be "
                               "positive");
      return signalPassFailure();
    }
    auto functions = llvm::to_vector(getOperation().getOps<func::FuncOp>());
    for (func::FuncOp function : functions) {
      auto attentions =
          llvm::to_vector(function.getBody().getOps<attn::AttentionOp>());
      if (attentions.empty())
        continue;
      if (attentions.size() != 1) {
        function.emitOpError("holds ") << attentions.size()
                                       << " attention ops; the host backend "
                                          "builds one kernel per function";
        return signalPassFailure();
      }
      if (failed(lower(function, attentions.front())))
        return signalPassFailure();
    }
  }

  LogicalResult lower(func::FuncOp function, attn::AttentionOp attention) {
    auto queryType = cast<RankedTensorType>(attention.getQuery().getType());
    int64_t headDim = queryType.getShape().back();
    auto valueType = cast<RankedTensorType>(attention.getValue().getType());
    if (ShapedType::isDynamic(headDim) ||
        valueType.getShape().back() != headDim)
      return attention.emitOpError(
          "the host backend needs one static head dimension for q, k and v");
    if (attention.hasBackward() && !attention.getLse())
      return attention.emitOpError(
          "has gradient regions but no lse result: the backward reads the "
          "forward's log-sum-exp");
    MLIRContext *context = &getContext();
    Builder b(context);
    SmallVector<Type> arguments;
    for (Value tensor : {attention.getQuery(), attention.getKey(),
                         attention.getValue(), attention.getOutput()})
      arguments.push_back(
          stridedMemRefFor(cast<ShapedType>(tensor.getType()), true));
    if (Value lse = attention.getLse())
      arguments.push_back(
          stridedMemRefFor(cast<ShapedType>(lse.getType()), false));
    appendTrailingArgumentTypes(attention, arguments);
    arguments.append(2, b.getIndexType()); // work_begin, work_end

    OpBuilder moduleBuilder(function);
    auto kernel = func::FuncOp::create(
        moduleBuilder, function.getLoc(), function.getName(),
        b.getFunctionType(arguments, {}));
    kernel->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    kernel->setAttr("rbfc.tile_m", b.getI64IntegerAttr(tileM));
    kernel->setAttr("rbfc.tile_n", b.getI64IntegerAttr(tileN));
    HostKernelEmitter emitter(attention, kernel, tileM, tileN);
    if (failed(emitter.emit())) {
      kernel.erase();
      return failure();
    }
    if (attention.hasBackward() &&
        failed(buildHostBackward(attention, moduleBuilder, function.getName(),
                                 tileM, tileN))) {
      kernel.erase();
      return failure();
    }
    LLVM_DEBUG(llvm::dbgs() << "attn-lower-to-host: built @"
                            << kernel.getName() << " (tile_m " << tileM
                            << ", tile_n " << tileN << ")\n");
    function.erase();
    return success();
  }
};

} // namespace
