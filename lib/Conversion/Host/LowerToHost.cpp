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

#include "rbfc/Conversion/RegionInlining.h"
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

namespace {

/// A memref type for a tensor argument of the attention op: dynamic sizes
/// except a static minor dimension (head_dim), dynamic strides and offset so
/// that the caller can pass views of larger tensors. `unitMinorStride` keeps
/// the minor stride 1, which vector loads along head_dim need.
MemRefType stridedMemRefFor(ShapedType type, bool unitMinorStride) {
  int64_t rank = type.getRank();
  SmallVector<int64_t> shape(rank, ShapedType::kDynamic);
  SmallVector<int64_t> strides(rank, ShapedType::kDynamic);
  if (unitMinorStride) {
    shape.back() = type.getShape().back();
    strides.back() = 1;
  }
  auto layout = StridedLayoutAttr::get(type.getContext(),
                                       ShapedType::kDynamic, strides);
  return MemRefType::get(shape, type.getElementType(), layout);
}

/// Values an element region may read for one (query row, key) pair; the
/// materializer turns attn element ops into code on them.
struct ElementContext {
  Value b, h, qIdx, kvIdx, kvHead;
  /// The query row as vector<head_dim x f32>, null outside per-row code.
  Value queryRow;
  /// The query pre-scale (q_scale region), null when the op has none.
  Value qScale;
  /// The key_bias region's value for kvIdx, null where it is not known.
  Value keyBias;
  /// The key row, loaded on first use by one inlined region.
  Value keyRow;
};

class HostKernelEmitter {
public:
  HostKernelEmitter(attn::AttentionOp attention, func::FuncOp kernel,
                    int64_t tileM, int64_t tileN)
      : attention(attention), kernel(kernel), tileM(tileM), tileN(tileN),
        loc(attention.getLoc()), builder(kernel.getContext()) {}

  LogicalResult emit();

private:
  // Small builders; the schedule below reads like the algorithm.
  Value index(int64_t value) {
    return arith::ConstantIndexOp::create(builder, loc, value);
  }
  Value f32(double value) {
    return arith::ConstantOp::create(builder, loc,
                                     builder.getF32FloatAttr(value));
  }
  Value minIndex(Value a, Value b) {
    return arith::MinSIOp::create(builder, loc, a, b);
  }
  VectorType rowType() {
    return VectorType::get({headDim}, builder.getF32Type());
  }
  /// Loads row `rowIdx` of a [batch, heads, len, head_dim] memref as f32.
  Value loadRow(Value tensor, Value b, Value head, Value rowIdx);
  /// Sum of the products of two f32 rows, reassociated into a tree.
  Value dotRows(Value lhs, Value rhs);
  FailureOr<Value> materialize(OpBuilder &b, Operation *op,
                               IRMapping &mapping, ElementContext &element);
  Value loadCapture(attn::LoadOp load, IRMapping &mapping);
  Value loadCaptureBound(attn::LoadBoundOp bound, IRMapping &mapping);
  Value captureFor(Value regionArgument);
  /// Inlines an element region for `element` and returns its one result.
  FailureOr<Value> inlineElementRegion(Region &region,
                                       ElementContext &element);
  FailureOr<std::pair<Value, Value>> classifyTile(Value b, Value h, Value qLo,
                                                  Value qHi, Value kvLo,
                                                  Value kvHi);
  /// Scores and online-softmax update of every row of the work item against
  /// one key tile. `withMask` evaluates the mask per element.
  LogicalResult emitTileRows(ElementContext &tile, Value qLo, Value numRows,
                             Value kvLo, Value numKeys, bool withMask);
  LogicalResult emitFinalize(ElementContext &item, Value qLo, Value numRows);

  attn::AttentionOp attention;
  func::FuncOp kernel;
  int64_t tileM, tileN, headDim = 0;
  Location loc;
  OpBuilder builder;

  Value query, key, value, output, lse;
  SmallVector<Value> params, captures;
  Value batch, heads, kvHeads, qLen, kvLen;
  // Per-thread scratch (stack): the work item's query rows, its
  // accumulators, running max/sum, one key tile's key_bias values and one
  // row's scores for the current key tile.
  Value queryTile, accTile, rowMax, rowSum, keyBiasTile, scoreRow;
};

Value HostKernelEmitter::loadRow(Value tensor, Value b, Value head,
                                 Value rowIdx) {
  auto type = cast<MemRefType>(tensor.getType());
  Value loaded = vector::LoadOp::create(
      builder, loc, VectorType::get({headDim}, type.getElementType()), tensor,
      ValueRange{b, head, rowIdx, index(0)});
  if (type.getElementType().isF32())
    return loaded;
  return arith::ExtFOp::create(builder, loc, rowType(), loaded);
}

Value HostKernelEmitter::dotRows(Value lhs, Value rhs) {
  Value products = arith::MulFOp::create(builder, loc, lhs, rhs);
  // Reassociation lets LLVM reduce in a tree of vector adds instead of a
  // sequential chain of head_dim scalar adds.
  return vector::ReductionOp::create(builder, loc, vector::CombiningKind::ADD,
                                     products, Value(),
                                     arith::FastMathFlags::reassoc);
}

Value HostKernelEmitter::captureFor(Value regionArgument) {
  auto argument = cast<BlockArgument>(regionArgument);
  unsigned numLeading = argument.getOwner()->getNumArguments() -
                        params.size() - captures.size();
  return captures[getCaptureIndex(regionArgument, numLeading, params.size())];
}

Value HostKernelEmitter::loadCapture(attn::LoadOp load, IRMapping &mapping) {
  Value capture = captureFor(load.getCapture());
  SmallVector<Value> indices;
  for (auto [dim, idx] : llvm::enumerate(load.getIndices())) {
    Value size = memref::DimOp::create(builder, loc, capture, dim);
    indices.push_back(
        clampToDimension(builder, loc, mapping.lookup(idx), size));
  }
  return memref::LoadOp::create(builder, loc, capture, indices);
}

Value HostKernelEmitter::loadCaptureBound(attn::LoadBoundOp bound,
                                          IRMapping &mapping) {
  Value capture = captureFor(bound.getCapture());
  SmallVector<Value> lows, highs;
  for (auto [dim, pair] :
       llvm::enumerate(llvm::zip(bound.getLows(), bound.getHighs()))) {
    Value size = memref::DimOp::create(builder, loc, capture, dim);
    Value low =
        clampToDimension(builder, loc, mapping.lookup(std::get<0>(pair)), size);
    Value high = clampToDimension(builder, loc,
                                  mapping.lookup(std::get<1>(pair)), size);
    high = arith::MaxSIOp::create(builder, loc, low, high);
    lows.push_back(low);
    highs.push_back(arith::AddIOp::create(builder, loc, high, index(1)));
  }
  // Start from an element of the box, so no identity value is needed.
  Value initial = memref::LoadOp::create(builder, loc, capture, lows);
  auto combine = [&](OpBuilder &b, Value a, Value v) {
    return combineBound(b, loc, bound.getBound(), a, v);
  };
  // One loop per dimension over the clamped box; document masks scan the
  // ids of the query and key tile ranges (tile_m + tile_n loads per tile).
  SmallVector<Value> ivs;
  std::function<Value(unsigned, Value)> scan = [&](unsigned dim,
                                                   Value acc) -> Value {
    if (dim == lows.size()) {
      Value element = memref::LoadOp::create(builder, loc, capture, ivs);
      return combine(builder, acc, element);
    }
    auto loop =
        scf::ForOp::create(builder, loc, lows[dim], highs[dim], index(1), acc);
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(loop.getBody());
    ivs.push_back(loop.getInductionVar());
    Value inner = scan(dim + 1, loop.getRegionIterArgs()[0]);
    ivs.pop_back();
    scf::YieldOp::create(builder, loc, inner);
    return loop.getResult(0);
  };
  // `scan` builds nested loops through `builder`, whose insertion point the
  // loops move; restore it to after the outermost loop.
  return scan(0, initial);
}

FailureOr<Value> HostKernelEmitter::materialize(OpBuilder &b, Operation *op,
                                                IRMapping &mapping,
                                                ElementContext &element) {
  auto keyRow = [&]() {
    if (!element.keyRow)
      element.keyRow = loadRow(key, element.b, element.kvHead, element.kvIdx);
    return element.keyRow;
  };
  auto needQuery = [&]() -> LogicalResult {
    if (element.queryRow)
      return success();
    return op->emitOpError("is not available to the host backend in this "
                           "region (no query row)");
  };
  return TypeSwitch<Operation *, FailureOr<Value>>(op)
      .Case([&](attn::DotOp) -> FailureOr<Value> {
        if (failed(needQuery()))
          return failure();
        return dotRows(element.queryRow, keyRow());
      })
      .Case([&](attn::ScaledDotOp) -> FailureOr<Value> {
        if (failed(needQuery()))
          return failure();
        // The verifier guarantees a q_scale region beside scaled_dot.
        assert(element.qScale && "scaled_dot without q_scale");
        Value dot = dotRows(element.queryRow, keyRow());
        return arith::MulFOp::create(builder, loc, element.qScale, dot)
            .getResult();
      })
      .Case([&](attn::Norm2Op norm) -> FailureOr<Value> {
        if (norm.getVector() == attn::Vector::k)
          return dotRows(keyRow(), keyRow());
        if (failed(needQuery()))
          return failure();
        return dotRows(element.queryRow, element.queryRow);
      })
      .Case([&](attn::Dist2Op) -> FailureOr<Value> {
        if (failed(needQuery()))
          return failure();
        Value diff =
            arith::SubFOp::create(builder, loc, element.queryRow, keyRow());
        return dotRows(diff, diff);
      })
      .Case([&](attn::KeyBiasOp) -> FailureOr<Value> {
        if (!element.keyBias)
          return op->emitOpError("has no key_bias region to read");
        return element.keyBias;
      })
      .Case([&](attn::SizeOp size) -> FailureOr<Value> {
        switch (size.getSize()) {
        case attn::Size::batch: return batch;
        case attn::Size::heads: return heads;
        case attn::Size::kv_heads: return kvHeads;
        case attn::Size::q_len: return qLen;
        case attn::Size::kv_len: return kvLen;
        case attn::Size::head_dim: return index(headDim);
        }
        return failure();
      })
      .Case([&](attn::LoadOp load) -> FailureOr<Value> {
        return loadCapture(load, mapping);
      })
      .Case([&](attn::LoadBoundOp bound) -> FailureOr<Value> {
        return loadCaptureBound(bound, mapping);
      })
      .Default([&](Operation *other) -> FailureOr<Value> {
        return other->emitOpError("is not supported by the host backend");
      });
}

FailureOr<Value>
HostKernelEmitter::inlineElementRegion(Region &region,
                                       ElementContext &element) {
  SmallVector<Value> arguments{element.b, element.h, element.qIdx,
                               element.kvIdx};
  llvm::append_range(arguments, params);
  arguments.append(captures.size(), Value());
  element.keyRow = Value();
  auto yielded = inlineAttnRegion(
      builder, region, arguments,
      [&](OpBuilder &b, Operation *op, IRMapping &mapping) {
        return materialize(b, op, mapping, element);
      });
  if (failed(yielded))
    return failure();
  return (*yielded)[0];
}

FailureOr<std::pair<Value, Value>>
HostKernelEmitter::classifyTile(Value b, Value h, Value qLo, Value qHi,
                                Value kvLo, Value kvHi) {
  if (attention.getTileClass().empty()) {
    // Without a classifier a masked op must test every element.
    bool unmasked = attention.getMask().empty();
    Value allKept = arith::ConstantOp::create(builder, loc,
                                              builder.getBoolAttr(unmasked));
    Value allMasked = arith::ConstantOp::create(builder, loc,
                                                builder.getBoolAttr(false));
    return std::pair(allKept, allMasked);
  }
  SmallVector<Value> arguments{b, h, qLo, qHi, kvLo, kvHi};
  llvm::append_range(arguments, params);
  arguments.append(captures.size(), Value());
  ElementContext noElement;
  auto facts = inlineAttnRegion(
      builder, attention.getTileClass(), arguments,
      [&](OpBuilder &ob, Operation *op, IRMapping &mapping) {
        return materialize(ob, op, mapping, noElement);
      });
  if (failed(facts))
    return failure();
  return std::pair((*facts)[0], (*facts)[1]);
}

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
  auto queryType = cast<RankedTensorType>(attention.getQuery().getType());
  headDim = queryType.getShape().back();
  auto valueType = cast<RankedTensorType>(attention.getValue().getType());
  if (ShapedType::isDynamic(headDim) ||
      valueType.getShape().back() != headDim)
    return attention.emitOpError(
        "the host backend needs one static head dimension for q, k and v");

  Block *entry = kernel.addEntryBlock();
  builder.setInsertionPointToStart(entry);
  unsigned next = 0;
  query = entry->getArgument(next++);
  key = entry->getArgument(next++);
  value = entry->getArgument(next++);
  output = entry->getArgument(next++);
  if (attention.getLse())
    lse = entry->getArgument(next++);
  for (size_t i = 0; i < attention.getParams().size(); ++i)
    params.push_back(entry->getArgument(next++));
  for (size_t i = 0; i < attention.getCaptures().size(); ++i)
    captures.push_back(entry->getArgument(next++));
  Value workBegin = entry->getArgument(next++);
  Value workEnd = entry->getArgument(next++);

  batch = memref::DimOp::create(builder, loc, query, 0);
  heads = memref::DimOp::create(builder, loc, query, 1);
  qLen = memref::DimOp::create(builder, loc, query, 2);
  kvHeads = memref::DimOp::create(builder, loc, key, 1);
  kvLen = memref::DimOp::create(builder, loc, key, 2);
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
    for (Value param : attention.getParams())
      arguments.push_back(param.getType());
    for (Value capture : attention.getCaptures())
      arguments.push_back(
          stridedMemRefFor(cast<ShapedType>(capture.getType()), false));
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
    LLVM_DEBUG(llvm::dbgs() << "attn-lower-to-host: built @"
                            << kernel.getName() << " (tile_m " << tileM
                            << ", tile_n " << tileN << ")\n");
    function.erase();
    return success();
  }
};

} // namespace
