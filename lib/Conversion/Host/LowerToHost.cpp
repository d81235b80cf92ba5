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
#include "rbfc/Conversion/Host/VectorExp2.h"
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

#include <algorithm>
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
                    const HostBlocking &blocking)
      : HostEmitter(attention, kernel), blocking(blocking) {}

  LogicalResult emit();

private:
  /// Scores and online-softmax update of every row block of the work item
  /// against one key tile. `withMask` evaluates the mask per element.
  LogicalResult emitKeyTile(ElementContext &item, Value qLo, Value numRows,
                            Value kvLo, Value numKeys, bool withMask);
  /// Scores of one row against the tile, the row's running max/sum update
  /// and its weights into weightBlock; returns the accumulator rescale (null
  /// under `none`).
  FailureOr<Value> emitRowWeights(ElementContext &item, Value qLo,
                                  Value firstRow, int64_t rowInBlock,
                                  ArrayRef<Value> dots, Value kvLo,
                                  Value numKeys, bool withMask);
  /// acc += P * V for the row block: per key one value row, one FMA per row.
  void emitWeightedValues(ElementContext &item, Value firstRow,
                          ArrayRef<Value> rescales, Value kvLo, Value numKeys,
                          bool withMask);
  LogicalResult emitFinalize(ElementContext &item, Value qLo, Value numRows);

  HostBlocking blocking;
  Value query, value, output, lse;
  // Per-thread scratch (stack): the work item's query rows, its
  // accumulators, running max/sum, one key tile transposed and its key_bias
  // values, and one row block's weights (and, with a mask, scores) for the
  // current key tile.
  Value queryTile, accTile, rowMax, rowSum, keyTransposed, keyBiasTile,
      weightBlock, scoreBlock;
};

FailureOr<Value> HostKernelEmitter::emitRowWeights(
    ElementContext &item, Value qLo, Value firstRow, int64_t rowInBlock,
    ArrayRef<Value> dots, Value kvLo, Value numKeys, bool withMask) {
  const bool softmax = attention.isSoftmax();
  const double negInf = -std::numeric_limits<double>::infinity();
  const int64_t lanes = blocking.keyLanes;
  auto broadcast = [&](Value scalar) -> Value {
    return vector::BroadcastOp::create(builder, loc, keyVectorType(blocking),
                                       scalar);
  };
  Value row = arith::AddIOp::create(builder, loc, firstRow, index(rowInBlock));
  KeyVectorContext keys = rowOverKeys(item, qLo, row, queryTile, blocking);
  Value laneIndices = vector::StepOp::create(
      builder, loc, VectorType::get({lanes}, builder.getIndexType()));

  // Scores (log2 domain) of the row, keyLanes keys per vector; masked keys
  // and lanes past the tile's last key score -inf (weight 0).
  SmallVector<Value> scores;
  for (int64_t c = 0; c < blocking.keyVectors(); ++c) {
    FailureOr<Value> score =
        base2ScoresOverKeys(keys, c, kvLo, dots[c], keyBiasTile, blocking);
    if (failed(score))
      return failure();
    Value s = *score;
    if (withMask) {
      FailureOr<Value> kept = inlineRegionOverKeys(attention.getMask(), keys);
      if (failed(kept))
        return failure();
      s = arith::SelectOp::create(builder, loc, *kept, s,
                                  broadcast(f32(negInf)));
    }
    Value inTile = arith::CmpIOp::create(
        builder, loc, arith::CmpIPredicate::slt,
        arith::AddIOp::create(builder, loc, laneIndices,
                              vector::BroadcastOp::create(
                                  builder, loc, laneIndices.getType(),
                                  index(c * lanes))),
        vector::BroadcastOp::create(builder, loc, laneIndices.getType(),
                                    numKeys));
    scores.push_back(arith::SelectOp::create(builder, loc, inTile, s,
                                             broadcast(f32(negInf))));
  }

  // The weight of a score s is exp2(s - shift). Under `none` the shift is 0
  // (the weights are exp(score) as they are); under softmax it is the
  // running maximum, and the old sum and accumulator are rescaled.
  Value sum = memref::LoadOp::create(builder, loc, rowSum, row);
  Value shift = f32(0), rescale;
  if (softmax) {
    Value tileMax = scores.front();
    for (Value s : ArrayRef(scores).drop_front())
      tileMax = arith::MaximumFOp::create(builder, loc, tileMax, s);
    Value oldMax = memref::LoadOp::create(builder, loc, rowMax, row);
    Value newMax = arith::MaximumFOp::create(
        builder, loc, oldMax,
        vector::ReductionOp::create(builder, loc,
                                    vector::CombiningKind::MAXIMUMF, tileMax));
    memref::StoreOp::create(builder, loc, newMax, rowMax, row);
    // While every key so far is masked the maximum is -inf; shifting by 0
    // then keeps exp2(-inf - shift) = 0 instead of exp2(-inf + inf) = NaN.
    Value noneKept = arith::CmpFOp::create(
        builder, loc, arith::CmpFPredicate::OEQ, newMax, f32(negInf));
    shift = arith::SelectOp::create(builder, loc, noneKept, f32(0), newMax);
    rescale = math::Exp2Op::create(
        builder, loc, arith::SubFOp::create(builder, loc, oldMax, shift));
    sum = arith::MulFOp::create(builder, loc, sum, rescale);
  }
  Value weightSum;
  Value blockRow = index(rowInBlock);
  for (auto [c, s] : llvm::enumerate(scores)) {
    Value firstLane = index(c * lanes);
    Value weight = createExp2(
        builder, loc, arith::SubFOp::create(builder, loc, s, broadcast(shift)));
    weightSum = weightSum ? arith::AddFOp::create(builder, loc, weightSum,
                                                  weight)
                          : weight;
    vector::StoreOp::create(builder, loc, weight, weightBlock,
                            ValueRange{blockRow, firstLane});
    if (withMask)
      vector::StoreOp::create(builder, loc, s, scoreBlock,
                              ValueRange{blockRow, firstLane});
  }
  sum = arith::AddFOp::create(
      builder, loc, sum,
      vector::ReductionOp::create(builder, loc, vector::CombiningKind::ADD,
                                  weightSum, Value(),
                                  arith::FastMathFlags::reassoc));
  memref::StoreOp::create(builder, loc, sum, rowSum, row);
  return rescale;
}

void HostKernelEmitter::emitWeightedValues(ElementContext &item,
                                           Value firstRow,
                                           ArrayRef<Value> rescales,
                                           Value kvLo, Value numKeys,
                                           bool withMask) {
  const double negInf = -std::numeric_limits<double>::infinity();
  auto weight = [&](Value j, int64_t r) -> Value {
    return memref::LoadOp::create(builder, loc, weightBlock,
                                  ValueRange{index(r), j});
  };
  auto valueRow = [&](Value j) {
    return loadRow(value, item.b, item.kvHead,
                   arith::AddIOp::create(builder, loc, kvLo, j));
  };
  // A masked key must not touch the accumulator at all: a masked value row
  // must not leak.
  auto kept = [&](Value j, int64_t r) -> Value {
    return arith::CmpFOp::create(
        builder, loc, arith::CmpFPredicate::UNE,
        memref::LoadOp::create(builder, loc, scoreBlock,
                               ValueRange{index(r), j}),
        f32(negInf));
  };
  function_ref<Value(Value, int64_t)> keep;
  if (withMask)
    keep = kept;
  accumulateWeightedRows(accTile, firstRow, rescales, numKeys, weight,
                         valueRow, keep);
}

LogicalResult HostKernelEmitter::emitKeyTile(ElementContext &item, Value qLo,
                                             Value numRows, Value kvLo,
                                             Value numKeys, bool withMask) {
  return forEachRowBlock(numRows, blocking, [&](Value firstRow) {
    SmallVector<Value> dots =
        rowBlockDots(queryTile, firstRow, keyTransposed, blocking);
    SmallVector<Value> rescales;
    const int64_t vectors = blocking.keyVectors();
    for (int64_t r = 0; r < blocking.rowsPerStep; ++r) {
      FailureOr<Value> rescale = emitRowWeights(
          item, qLo, firstRow, r, ArrayRef(dots).slice(r * vectors, vectors),
          kvLo, numKeys, withMask);
      if (failed(rescale))
        return failure();
      rescales.push_back(*rescale);
    }
    emitWeightedValues(item, firstRow, rescales, kvLo, numKeys, withMask);
    return success();
  });
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
                                               index(blocking.tileM));
  Value group = arith::DivSIOp::create(builder, loc, heads, kvHeads);

  Type f32Type = builder.getF32Type();
  auto scratch = [&](ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(builder, loc,
                                    MemRefType::get(shape, f32Type));
  };
  // Row blocks of the last query tile may reach past q_len, key vectors
  // past the tile: the scratch holds whole blocks and vectors.
  const int64_t paddedTileM = blocking.paddedTileM();
  const int64_t paddedTileN = blocking.paddedTileN();
  queryTile = scratch({paddedTileM, headDim});
  accTile = scratch({paddedTileM, headDim});
  rowMax = scratch({paddedTileM});
  rowSum = scratch({paddedTileM});
  keyTransposed = scratch({headDim, paddedTileN});
  keyBiasTile = scratch({paddedTileN});
  weightBlock = scratch({blocking.rowsPerStep, paddedTileN});
  if (!attention.getMask().empty())
    scoreBlock = scratch({blocking.rowsPerStep, paddedTileN});

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
  Value qLo, numRows;
  std::tie(qLo, numRows) = tileSpan(qTile, blocking.tileM, qLen);
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

  // Stage the work item's query rows as f32 and reset the running state,
  // for whole row blocks: rows past q_len repeat the last query row (finite
  // values whose results are never stored).
  {
    Value blockedRows = arith::MulIOp::create(
        builder, loc,
        arith::CeilDivSIOp::create(builder, loc, numRows,
                                   index(blocking.rowsPerStep)),
        index(blocking.rowsPerStep));
    auto init =
        scf::ForOp::create(builder, loc, index(0), blockedRows, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(init.getBody());
    Value row = init.getInductionVar();
    Value qIdx = minIndex(arith::AddIOp::create(builder, loc, qLo, row),
                          arith::SubIOp::create(builder, loc, qLen, index(1)));
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
  auto kvLoop = scf::ForOp::create(builder, loc, index(0), kvLen,
                                   index(blocking.tileN));
  {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(kvLoop.getBody());
    Value kvLo = kvLoop.getInductionVar();
    Value numKeys = minIndex(index(blocking.tileN),
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
    packTransposed(key, item.b, item.kvHead, kvLo, keyTransposed, blocking);

    if (attention.getMask().empty()) {
      status = emitKeyTile(item, qLo, numRows, kvLo, numKeys,
                           /*withMask=*/false);
    } else {
      // All-kept tiles skip the per-element mask; the rest evaluate it.
      auto ifKept = scf::IfOp::create(builder, loc, classes->first,
                                      /*withElseRegion=*/true);
      OpBuilder::InsertionGuard keptGuard(builder);
      builder.setInsertionPointToStart(&ifKept.getThenRegion().front());
      LogicalResult kept = emitKeyTile(item, qLo, numRows, kvLo, numKeys,
                                       /*withMask=*/false);
      builder.setInsertionPointToStart(&ifKept.getElseRegion().front());
      LogicalResult partial = emitKeyTile(item, qLo, numRows, kvLo, numKeys,
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

/// Rows per forward step when the option leaves it to the pass: as many as
/// keep a step's accumulators in vector registers, both the scores (rows x
/// key vectors, plus the key vectors loaded) and P*V (rows x head_dim f32,
/// plus the value row loaded); at most 4, beyond which the K^T and V tiles
/// are already reused enough. x86 has 32 vector registers with AVX-512 (16
/// lanes) and 16 with AVX2 and below.
static int64_t chooseRowsPerStep(int64_t headDim, int64_t tileN,
                                 int64_t keyLanes) {
  const int64_t registers = keyLanes >= 16 ? 32 : 16;
  const int64_t rowVectors = llvm::divideCeil(headDim, keyLanes);
  const int64_t scoreVectors = llvm::divideCeil(tileN, keyLanes);
  int64_t rows = std::min((registers - rowVectors) / rowVectors,
                          (registers - scoreVectors) / scoreVectors);
  return std::clamp<int64_t>(rows, 1, 4);
}

struct AttnLowerToHost
    : public rbfc::impl::AttnLowerToHostBase<AttnLowerToHost> {
  using AttnLowerToHostBase::AttnLowerToHostBase;

  void runOnOperation() override {
    if (tileM < 1 || tileN < 1 || rowsPerStep < 0 || keyLanes < 1) {
      getOperation().emitError("attn-lower-to-host: tile-m, tile-n and "
                               "key-lanes must be positive, rows-per-step "
                               "positive or 0 (chosen by the pass)");
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
    HostBlocking blocking{
        tileM, tileN,
        rowsPerStep ? rowsPerStep
                    : chooseRowsPerStep(headDim, tileN, keyLanes),
        keyLanes};
    kernel->setAttr("rbfc.rows_per_step",
                    b.getI64IntegerAttr(blocking.rowsPerStep));
    kernel->setAttr("rbfc.key_lanes", b.getI64IntegerAttr(keyLanes));
    HostKernelEmitter emitter(attention, kernel, blocking);
    if (failed(emitter.emit())) {
      kernel.erase();
      return failure();
    }
    if (attention.hasBackward() &&
        failed(buildHostBackward(attention, moduleBuilder, function.getName(),
                                 blocking))) {
      kernel.erase();
      return failure();
    }
    LLVM_DEBUG(llvm::dbgs() << "attn-lower-to-host: built @"
                            << kernel.getName() << " (tile_m " << tileM
                            << ", tile_n " << tileN << ", "
                            << blocking.rowsPerStep << " rows x " << keyLanes
                            << "-key vectors)\n");
    function.erase();
    return success();
  }
};

} // namespace
