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

/// a > b ? a : b, which is one maxps on x86 where arith.maximumf and
/// arith.maxnumf each add a NaN test and a blend. It gives b where either is
/// NaN: a NaN score still makes its row NaN through its weight, exp2(NaN -
/// max), whatever the running maximum becomes.
Value maxOrSecond(OpBuilder &builder, Location loc, Value a, Value b) {
  Value greater =
      arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OGT, a, b);
  return arith::SelectOp::create(builder, loc, greater, a, b);
}

/// The largest lane of an f32 vector (maxOrSecond's NaN behaviour): lane i
/// takes the maximum of lanes i, i + s for s = 2^k, ..., 2, 1 (rotating),
/// which covers every lane once 2^(k+1) >= lanes, for any lane count.
Value maxAcrossLanes(OpBuilder &builder, Location loc, Value vector) {
  const int64_t lanes = cast<VectorType>(vector.getType()).getNumElements();
  for (int64_t stride = llvm::PowerOf2Ceil(lanes) / 2; stride >= 1;
       stride /= 2) {
    SmallVector<int64_t> rotated;
    for (int64_t lane = 0; lane < lanes; ++lane)
      rotated.push_back((lane + stride) % lanes);
    vector = maxOrSecond(
        builder, loc, vector,
        vector::ShuffleOp::create(builder, loc, vector, vector, rotated));
  }
  return vector::ExtractOp::create(builder, loc, vector, 0);
}

/// `values` combined pairwise in a balanced tree: log2(n) dependent steps
/// instead of n - 1, which is what the row's softmax waits on between its
/// score and weight phases.
Value combineBalanced(ArrayRef<Value> values,
                      function_ref<Value(Value, Value)> combine) {
  SmallVector<Value> level(values);
  while (level.size() > 1) {
    SmallVector<Value> next;
    for (size_t i = 0; i + 1 < level.size(); i += 2)
      next.push_back(combine(level[i], level[i + 1]));
    if (level.size() % 2)
      next.push_back(level.back());
    level = std::move(next);
  }
  return level.front();
}

/// The forward schedule.
class HostKernelEmitter : HostEmitter {
public:
  HostKernelEmitter(attn::AttentionOp attention, func::FuncOp kernel,
                    const HostBlocking &blocking)
      : HostEmitter(attention, kernel), blocking(blocking) {}

  LogicalResult emit();

private:
  /// Scores and online-softmax update of the row block at firstRow of the
  /// work item against one key tile. A `partial` block (one that is not all
  /// kept, or whose tile has fewer than tile_n keys) evaluates the mask per
  /// element and scores the lanes past the tile's last key -inf; a whole
  /// kept block needs neither (but the padding of its last key vector when
  /// tile_n is not a multiple of key_lanes).
  LogicalResult emitRowBlock(ElementContext &item, Value qLo, Value firstRow,
                             Value kvLo, Value numKeys, bool partial);
  /// Whether the mask drops keys inside [0, numKeys) of the tile: only on
  /// a partial tile, and only with a mask.
  bool masksKeys(bool partial) {
    return partial && !attention.getMask().empty();
  }
  /// Scores of one row against the tile, in place of its q . k in row
  /// rowInBlock of dotBlock, and (softmax) the row's running maximum: the
  /// new one, the shift its weights take (shiftBlock) and the rescale of its
  /// old sum and accumulator (rescaleBlock).
  LogicalResult emitRowScores(ElementContext &item, Value qLo, Value firstRow,
                              Value rowInBlock, Value kvLo, Value numKeys,
                              bool partial);
  /// The row's weights exp2(score - shift) into weightBlock and its running
  /// sum's update.
  void emitRowWeights(Value firstRow, Value rowInBlock);
  /// acc += P * V for the row block: per key one value row, one FMA per row.
  void emitWeightedValues(ElementContext &item, Value firstRow,
                          ArrayRef<Value> rescales, Value kvLo, Value numKeys,
                          bool partial);
  LogicalResult emitFinalize(ElementContext &item, Value qLo, Value numRows);

  HostBlocking blocking;
  Value query, value, output, lse;
  // Per-thread scratch (stack): the work item's query rows, its
  // accumulators, running maxima and sums (a vector of partial sums a row),
  // one key tile transposed and its key_bias values, and one row block's
  // q . k (then its scores), weights, and (softmax) shifts and accumulator
  // rescales for the current key tile.
  Value queryTile, accTile, rowMax, rowSum, keyTransposed, keyBiasTile,
      dotBlock, weightBlock, shiftBlock, rescaleBlock;
};

LogicalResult HostKernelEmitter::emitRowScores(ElementContext &item, Value qLo,
                                               Value firstRow, Value rowInBlock,
                                               Value kvLo, Value numKeys,
                                               bool partial) {
  const double negInf = -std::numeric_limits<double>::infinity();
  const int64_t lanes = blocking.keyLanes;
  auto broadcast = [&](Value scalar) -> Value {
    return vector::BroadcastOp::create(builder, loc, keyVectorType(blocking),
                                       scalar);
  };
  Value row = arith::AddIOp::create(builder, loc, firstRow, rowInBlock);
  KeyVectorContext keys = rowOverKeys(item, qLo, row, queryTile, blocking);
  Value laneIndices = vector::StepOp::create(
      builder, loc, VectorType::get({lanes}, builder.getIndexType()));

  // Scores (log2 domain) of the row, keyLanes keys per vector. Masked keys
  // (in a partial tile) and lanes past the tile's last key (in a partial
  // tile, or the last vector when tile_n is not a multiple of keyLanes)
  // score -inf (weight 0), which is also how P*V tells the keys it skips.
  SmallVector<Value> scores;
  for (int64_t c = 0; c < blocking.keyVectors(); ++c) {
    SmallVector<Value, 2> position{rowInBlock, index(c * lanes)};
    Value dots = vector::LoadOp::create(builder, loc, keyVectorType(blocking),
                                        dotBlock, position);
    FailureOr<Value> score =
        base2ScoresOverKeys(keys, c, kvLo, dots, keyBiasTile, blocking);
    if (failed(score))
      return failure();
    Value s = *score;
    if (masksKeys(partial)) {
      FailureOr<Value> kept = inlineRegionOverKeys(attention.getMask(), keys);
      if (failed(kept))
        return failure();
      s = arith::SelectOp::create(builder, loc, *kept, s,
                                  broadcast(f32(negInf)));
    }
    if (partial || (c + 1) * lanes > blocking.tileN) {
      Value inTile = arith::CmpIOp::create(
          builder, loc, arith::CmpIPredicate::slt,
          arith::AddIOp::create(builder, loc, laneIndices,
                                vector::BroadcastOp::create(
                                    builder, loc, laneIndices.getType(),
                                    index(c * lanes))),
          vector::BroadcastOp::create(builder, loc, laneIndices.getType(),
                                      numKeys));
      s = arith::SelectOp::create(builder, loc, inTile, s,
                                  broadcast(f32(negInf)));
    }
    vector::StoreOp::create(builder, loc, s, dotBlock, position);
    scores.push_back(s);
  }
  if (!attention.isSoftmax())
    return success();

  // The weights are exp2(s - shift) with the running maximum as the shift;
  // the old sum and accumulator are rescaled to it.
  Value tileMax = combineBalanced(scores, [&](Value a, Value b) {
    return maxOrSecond(builder, loc, a, b);
  });
  Value oldMax = memref::LoadOp::create(builder, loc, rowMax, row);
  Value newMax =
      maxOrSecond(builder, loc, oldMax, maxAcrossLanes(builder, loc, tileMax));
  memref::StoreOp::create(builder, loc, newMax, rowMax, row);
  // While every key so far is masked the maximum is -inf; shifting by 0
  // then keeps exp2(-inf - shift) = 0 instead of exp2(-inf + inf) = NaN.
  Value noneKept = arith::CmpFOp::create(
      builder, loc, arith::CmpFPredicate::OEQ, newMax, f32(negInf));
  Value shift = arith::SelectOp::create(builder, loc, noneKept, f32(0), newMax);
  memref::StoreOp::create(builder, loc, shift, shiftBlock, rowInBlock);
  // The polynomial, not libm: a call per row and key tile would also
  // spill the row's score vectors around it. The new maximum is at least
  // the old (or the shift 0 while both are -inf).
  memref::StoreOp::create(
      builder, loc,
      createExp2(builder, loc,
                 arith::SubFOp::create(builder, loc, oldMax, shift),
                 Exp2Argument::NonPositive),
      rescaleBlock, rowInBlock);
  return success();
}

void HostKernelEmitter::emitRowWeights(Value firstRow, Value rowInBlock) {
  const int64_t lanes = blocking.keyLanes;
  VectorType vectorType = keyVectorType(blocking);
  Value row = arith::AddIOp::create(builder, loc, firstRow, rowInBlock);
  // Under `none` there is no shift: the weights are exp(score) as they are.
  Value shift;
  if (attention.isSoftmax())
    shift = vector::BroadcastOp::create(
        builder, loc, vectorType,
        memref::LoadOp::create(builder, loc, shiftBlock, rowInBlock));
  SmallVector<Value> weights;
  for (int64_t c = 0; c < blocking.keyVectors(); ++c) {
    SmallVector<Value, 2> position{rowInBlock, index(c * lanes)};
    Value s =
        vector::LoadOp::create(builder, loc, vectorType, dotBlock, position);
    // The shift is the running maximum, at least every score of the row.
    Value weight =
        shift ? createExp2(builder, loc,
                           arith::SubFOp::create(builder, loc, s, shift),
                           Exp2Argument::NonPositive)
              : createExp2(builder, loc, s);
    vector::StoreOp::create(builder, loc, weight, weightBlock, position);
    weights.push_back(weight);
  }
  // The row's sum stays a vector of partial sums, one per lane, until
  // finalize: no horizontal reduction per key tile.
  Value sum = vector::LoadOp::create(builder, loc, vectorType, rowSum,
                                     ValueRange{row, index(0)});
  if (attention.isSoftmax())
    sum = arith::MulFOp::create(
        builder, loc, sum,
        vector::BroadcastOp::create(
            builder, loc, vectorType,
            memref::LoadOp::create(builder, loc, rescaleBlock, rowInBlock)));
  sum = arith::AddFOp::create(
      builder, loc, sum, combineBalanced(weights, [&](Value a, Value b) {
        return arith::AddFOp::create(builder, loc, a, b);
      }));
  vector::StoreOp::create(builder, loc, sum, rowSum, ValueRange{row, index(0)});
}

void HostKernelEmitter::emitWeightedValues(ElementContext &item,
                                           Value firstRow,
                                           ArrayRef<Value> rescales,
                                           Value kvLo, Value numKeys,
                                           bool partial) {
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
        memref::LoadOp::create(builder, loc, dotBlock, ValueRange{index(r), j}),
        f32(negInf));
  };
  function_ref<Value(Value, int64_t)> keep;
  if (masksKeys(partial))
    keep = kept;
  accumulateWeightedRows(accTile, firstRow, rescales, numKeys, weight,
                         valueRow, blocking, keep);
}

LogicalResult HostKernelEmitter::emitRowBlock(ElementContext &item, Value qLo,
                                              Value firstRow, Value kvLo,
                                              Value numKeys, bool partial) {
  rowBlockDots(queryTile, firstRow, keyTransposed, dotBlock, index(0),
               blocking);
  // The rows' softmax in two passes over the block, each row at a time
  // (unrolled, a row's code interleaves with the next and spills: AVX2's
  // 16 registers hold one row's 8 score vectors). The maximum's reduction
  // then no longer sits between a row's scores and its weights: the
  // second pass starts with every row's shift known.
  auto rowLoop = [&](function_ref<LogicalResult(Value)> body) {
    auto loop = scf::ForOp::create(builder, loc, index(0),
                                   index(blocking.rowsPerStep), index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(loop.getBody());
    return body(loop.getInductionVar());
  };
  auto scores = [&](Value r) {
    return emitRowScores(item, qLo, firstRow, r, kvLo, numKeys, partial);
  };
  auto weights = [&](Value r) {
    emitRowWeights(firstRow, r);
    return success();
  };
  if (failed(rowLoop(scores)) || failed(rowLoop(weights)))
    return failure();
  SmallVector<Value> rescales;
  for (int64_t r = 0; r < blocking.rowsPerStep; ++r)
    rescales.push_back(rescaleBlock ? memref::LoadOp::create(
                                          builder, loc, rescaleBlock, index(r))
                                    : Value());
  emitWeightedValues(item, firstRow, rescales, kvLo, numKeys, partial);
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
  Value sum = vector::ReductionOp::create(
      builder, loc, vector::CombiningKind::ADD,
      vector::LoadOp::create(builder, loc, keyVectorType(blocking), rowSum,
                             ValueRange{row, index(0)}),
      Value(), arith::FastMathFlags::reassoc);
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
  Value numQTiles =
      arith::CeilDivSIOp::create(builder, loc, qLen, index(blocking.tileM));

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
  rowSum = scratch({paddedTileM, blocking.keyLanes});
  keyTransposed = scratch({headDim, paddedTileN});
  keyBiasTile = scratch({paddedTileN});
  dotBlock = scratch({blocking.rowsPerStep, paddedTileN});
  weightBlock = scratch({blocking.rowsPerStep, paddedTileN});
  if (attention.isSoftmax()) {
    shiftBlock = scratch({blocking.rowsPerStep});
    rescaleBlock = scratch({blocking.rowsPerStep});
  }

  auto workLoop = workItemLoop(workBegin, workEnd, numQTiles);
  builder.setInsertionPointToStart(workLoop.getBody());
  Value qTile;
  ElementContext item =
      locateWorkItem(workLoop.getInductionVar(), numQTiles, qTile);
  Value qLo, numRows;
  std::tie(qLo, numRows) = tileSpan(qTile, blocking.tileM, qLen);
  Value qHi = lastOf(qLo, numRows);

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
    vector::StoreOp::create(
        builder, loc,
        arith::ConstantOp::create(
            builder, loc,
            cast<TypedAttr>(builder.getZeroAttr(keyVectorType(blocking)))),
        rowSum, ValueRange{row, index(0)});
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

    // Whole kept tiles, nearly all of a long sequence's, skip the
    // per-element mask and the padding lanes. In the others (a mask's
    // boundary, the last keys) each row block is classified on its own, so
    // that a tall query tile pays the per-element path only on the blocks
    // the boundary crosses, and skips the blocks it masks.
    Value fullTile = arith::CmpIOp::create(
        builder, loc, arith::CmpIPredicate::eq, numKeys, index(blocking.tileN));
    Value wholeTile =
        arith::AndIOp::create(builder, loc, classes->first, fullTile);
    status = forEachRowBlock(numRows, blocking, [&](Value firstRow) {
      auto blockClass = scf::IfOp::create(
          builder, loc, TypeRange{builder.getI1Type(), builder.getI1Type()},
          wholeTile, /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard guard(builder);
        builder.setInsertionPointToStart(&blockClass.getThenRegion().front());
        Value yes =
            arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true));
        Value no =
            arith::ConstantOp::create(builder, loc, builder.getBoolAttr(false));
        scf::YieldOp::create(builder, loc, ValueRange{yes, no});
        builder.setInsertionPointToStart(&blockClass.getElseRegion().front());
        Value blockLo = arith::AddIOp::create(builder, loc, qLo, firstRow);
        Value blockHi =
            minIndex(arith::AddIOp::create(builder, loc, blockLo,
                                           index(blocking.rowsPerStep - 1)),
                     qHi);
        auto blockClasses =
            classifyTile(item.b, item.h, blockLo, blockHi, kvLo, kvHi);
        if (failed(blockClasses))
          return failure();
        scf::YieldOp::create(
            builder, loc,
            ValueRange{arith::AndIOp::create(builder, loc, blockClasses->first,
                                             fullTile),
                       blockClasses->second});
      }
      Value blockLive = arith::XOrIOp::create(
          builder, loc, blockClass.getResult(1),
          arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true)));
      auto ifLive = scf::IfOp::create(builder, loc, blockLive);
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(&ifLive.getThenRegion().front());
      auto ifWhole = scf::IfOp::create(builder, loc, blockClass.getResult(0),
                                       /*withElseRegion=*/true);
      builder.setInsertionPointToStart(&ifWhole.getThenRegion().front());
      if (failed(emitRowBlock(item, qLo, firstRow, kvLo, numKeys,
                              /*partial=*/false)))
        return failure();
      builder.setInsertionPointToStart(&ifWhole.getElseRegion().front());
      return emitRowBlock(item, qLo, firstRow, kvLo, numKeys,
                          /*partial=*/true);
    });
  }
  if (failed(status))
    return failure();
  if (failed(emitFinalize(item, qLo, numRows)))
    return failure();
  builder.setInsertionPointAfter(workLoop);
  func::ReturnOp::create(builder, loc);
  return success();
}

/// x86's vector registers: 32 with AVX-512 (16 f32 lanes), 16 below.
static int64_t vectorRegisters(int64_t keyLanes) {
  return keyLanes >= 16 ? 32 : 16;
}

/// How many of `vectors` (key vectors, or head_dim vectors) a step of
/// `rows` rows keeps per pass: rows x that many accumulators, plus the
/// vectors loaded and one broadcast, fit the vector registers (so nothing
/// spills); among those, the largest that divides `vectors`, so that every
/// pass has the same width.
static int64_t chooseVectorsPerStep(int64_t vectors, int64_t rows,
                                    int64_t keyLanes) {
  int64_t perStep = std::clamp<int64_t>(
      (vectorRegisters(keyLanes) - 1) / (rows + 1), 1, vectors);
  while (vectors % perStep != 0)
    --perStep;
  return perStep;
}

/// Independent accumulators an FMA pass keeps: x86's FMAs take 4 cycles on
/// two pipes, so 8 in flight keep both busy; 12 leave room for the loads
/// and broadcasts between them. (AVX2 at head_dim 64, one N = 1024 item
/// thread: 6 rows x 2 vectors ran the forward 12% faster than 4 x 2.)
constexpr int64_t kAccumulatorsPerPass = 12;

/// The forward's blocking the options ask for, their zeros chosen: the
/// fewest rows per step from 4 (each loaded vector feeds that many FMAs)
/// for which both FMA passes keep kAccumulatorsPerPass accumulators (4 when
/// none up to 8 does), and as many key and head_dim vectors per step as fit
/// the registers; tile_m 16 row blocks. AVX2 at head_dim 64, tile_n 64: 6
/// rows x 2 key vectors of 8, 6 rows x 2 head_dim vectors, tile_m 96;
/// AVX-512: 4 x 4 and 4 x 4 (a whole key tile and a whole row of head_dim
/// 64), tile_m 64.
static HostBlocking chooseForwardBlocking(int64_t headDim, int64_t tileM,
                                          int64_t tileN, int64_t rowsPerStep,
                                          int64_t keyLanes,
                                          int64_t keyVectorsPerStep,
                                          int64_t headDimVectorsPerStep) {
  HostBlocking blocking{tileM,
                        tileN,
                        rowsPerStep,
                        keyLanes,
                        keyVectorsPerStep,
                        headDimVectorsPerStep};
  const int64_t headDimVectors = llvm::divideCeil(headDim, keyLanes);
  auto fill = [&](HostBlocking &candidate) {
    if (!keyVectorsPerStep)
      candidate.keyVectorsPerStep = chooseVectorsPerStep(
          candidate.keyVectors(), candidate.rowsPerStep, keyLanes);
    if (!headDimVectorsPerStep)
      candidate.headDimVectorsPerStep =
          chooseVectorsPerStep(headDimVectors, candidate.rowsPerStep, keyLanes);
  };
  if (!rowsPerStep) {
    blocking.rowsPerStep = 4;
    for (int64_t rows = 4; rows <= 8; ++rows) {
      HostBlocking candidate = blocking;
      candidate.rowsPerStep = rows;
      fill(candidate);
      if (rows * candidate.keyVectorsPerStep >= kAccumulatorsPerPass &&
          rows * candidate.headDimVectorsPerStep >= kAccumulatorsPerPass) {
        blocking.rowsPerStep = rows;
        break;
      }
    }
  }
  fill(blocking);
  if (!tileM)
    blocking.tileM = 16 * blocking.rowsPerStep;
  return blocking;
}

/// The backward's: 4 rows per step and tile_m 64 unless given (AVX2, N =
/// 1024, paired: 6 rows ran its passes no faster, and 96 x 6 made causal
/// forward+backward 7-9% slower), vectors per step as for the forward.
static HostBlocking chooseBackwardBlocking(int64_t headDim, int64_t tileM,
                                           int64_t tileN, int64_t rowsPerStep,
                                           int64_t keyLanes,
                                           int64_t keyVectorsPerStep,
                                           int64_t headDimVectorsPerStep) {
  return chooseForwardBlocking(headDim, tileM ? tileM : 64, tileN,
                               rowsPerStep ? rowsPerStep : 4, keyLanes,
                               keyVectorsPerStep, headDimVectorsPerStep);
}

struct AttnLowerToHost
    : public rbfc::impl::AttnLowerToHostBase<AttnLowerToHost> {
  using AttnLowerToHostBase::AttnLowerToHostBase;

  void runOnOperation() override {
    if (tileM < 0 || tileN < 1 || keyLanes < 1 || rowsPerStep < 0 ||
        keyVectorsPerStep < 0 || headDimVectorsPerStep < 0) {
      getOperation().emitError(
          "attn-lower-to-host: tile-n and key-lanes must be positive; "
          "tile-m, rows-per-step, key-vectors-per-step and "
          "head-dim-vectors-per-step positive or 0 (chosen by the pass)");
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
    HostBlocking blocking =
        chooseForwardBlocking(headDim, tileM, tileN, rowsPerStep, keyLanes,
                              keyVectorsPerStep, headDimVectorsPerStep);
    kernel->setAttr("rbfc.tile_m", b.getI64IntegerAttr(blocking.tileM));
    kernel->setAttr("rbfc.tile_n", b.getI64IntegerAttr(tileN));
    kernel->setAttr("rbfc.rows_per_step",
                    b.getI64IntegerAttr(blocking.rowsPerStep));
    kernel->setAttr("rbfc.key_lanes", b.getI64IntegerAttr(keyLanes));
    kernel->setAttr("rbfc.key_vectors_per_step",
                    b.getI64IntegerAttr(blocking.keyVectorsPerStep));
    kernel->setAttr("rbfc.head_dim_vectors_per_step",
                    b.getI64IntegerAttr(blocking.headDimVectorsPerStep));
    HostKernelEmitter emitter(attention, kernel, blocking);
    if (failed(emitter.emit())) {
      kernel.erase();
      return failure();
    }
    if (attention.hasBackward() &&
        failed(buildHostBackward(
            attention, moduleBuilder, function.getName(),
            chooseBackwardBlocking(headDim, tileM, tileN, rowsPerStep, keyLanes,
                                   keyVectorsPerStep,
                                   headDimVectorsPerStep)))) {
      kernel.erase();
      return failure();
    }
    // An object (--emit=obj) carries no attributes, and its caller counts
    // the work items by tile_m, which depends on the CPU it was built for:
    // the object exports it as `const int64_t NAME_tile_m`.
    Type i64 = b.getI64Type();
    memref::GlobalOp::create(
        moduleBuilder, function.getLoc(),
        (function.getName() + "_tile_m").str(), b.getStringAttr("public"),
        MemRefType::get({}, i64),
        DenseElementsAttr::get(RankedTensorType::get({}, i64),
                               b.getI64IntegerAttr(blocking.tileM)),
        /*constant=*/true, /*alignment=*/IntegerAttr());
    LLVM_DEBUG(llvm::dbgs()
               << "attn-lower-to-host: built @" << kernel.getName()
               << " (tile_m " << blocking.tileM << ", tile_n " << tileN << ", "
               << blocking.rowsPerStep << " rows x "
               << blocking.keyVectorsPerStep << " vectors of " << keyLanes
               << " keys, x " << blocking.headDimVectorsPerStep
               << " vectors of head_dim)\n");
    function.erase();
    return success();
  }
};

} // namespace
