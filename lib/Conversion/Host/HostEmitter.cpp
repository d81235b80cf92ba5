//===- HostEmitter.cpp - pieces of the host backend's schedules -----------===//
#include "rbfc/Conversion/Host/HostEmitter.h"

#include "rbfc/Conversion/RegionInlining.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace rbfc;
using namespace rbfc::host;

MemRefType rbfc::host::stridedMemRefFor(ShapedType type, bool unitMinorStride) {
  int64_t rank = type.getRank();
  SmallVector<int64_t> shape(rank, ShapedType::kDynamic);
  SmallVector<int64_t> strides(rank, ShapedType::kDynamic);
  if (unitMinorStride) {
    shape.back() = type.getShape().back();
    strides.back() = 1;
  }
  auto layout =
      StridedLayoutAttr::get(type.getContext(), ShapedType::kDynamic, strides);
  return MemRefType::get(shape, type.getElementType(), layout);
}

void rbfc::host::appendTrailingArgumentTypes(attn::AttentionOp attention,
                                             SmallVectorImpl<Type> &types) {
  for (Value param : attention.getParams())
    types.push_back(param.getType());
  for (Value capture : attention.getCaptures())
    types.push_back(
        stridedMemRefFor(cast<ShapedType>(capture.getType()), false));
  types.append(4, IndexType::get(attention.getContext()));
}

HostEmitter::HostEmitter(attn::AttentionOp attention, func::FuncOp kernel)
    : attention(attention), kernel(kernel),
      headDim(cast<RankedTensorType>(attention.getQuery().getType())
                  .getShape()
                  .back()),
      loc(attention.getLoc()), builder(kernel.getContext()) {}

Value HostEmitter::index(int64_t value) {
  return arith::ConstantIndexOp::create(builder, loc, value);
}

Value HostEmitter::f32(double value) {
  return arith::ConstantOp::create(builder, loc,
                                   builder.getF32FloatAttr(value));
}

Value HostEmitter::minIndex(Value a, Value b) {
  return arith::MinSIOp::create(builder, loc, a, b);
}

scf::ForOp HostEmitter::workItemLoop(Value workBegin, Value workEnd,
                                     Value numQTiles) {
  Value numItems = arith::MulIOp::create(
      builder, loc, arith::MulIOp::create(builder, loc, batch, heads),
      numQTiles);
  return scf::ForOp::create(
      builder, loc, arith::MaxSIOp::create(builder, loc, workBegin, index(0)),
      minIndex(workEnd, numItems), index(1));
}

ElementContext HostEmitter::locateWorkItem(Value work, Value numQTiles,
                                           Value &qTile) {
  // work = ((b * heads) + h) * numQTiles + qTile
  qTile = arith::RemSIOp::create(builder, loc, work, numQTiles);
  Value batchHead = arith::DivSIOp::create(builder, loc, work, numQTiles);
  ElementContext item;
  item.h = arith::RemSIOp::create(builder, loc, batchHead, heads);
  item.b = arith::DivSIOp::create(builder, loc, batchHead, heads);
  item.kvHead = arith::DivSIOp::create(builder, loc, item.h, group);
  return item;
}

std::pair<Value, Value> HostEmitter::tileSpan(Value tile, int64_t size,
                                              Value length) {
  Value lo = arith::MulIOp::create(builder, loc, tile, index(size));
  Value count =
      minIndex(index(size), arith::SubIOp::create(builder, loc, length, lo));
  return {lo, count};
}

Value HostEmitter::lastOf(Value lo, Value count) {
  return arith::SubIOp::create(
      builder, loc, arith::AddIOp::create(builder, loc, lo, count), index(1));
}

VectorType HostEmitter::rowType() {
  return VectorType::get({headDim}, builder.getF32Type());
}

Value HostEmitter::zeroRow() {
  return arith::ConstantOp::create(
      builder, loc, cast<TypedAttr>(builder.getZeroAttr(rowType())));
}

Value HostEmitter::loadRow(Value tensor, Value b, Value head, Value rowIdx) {
  auto type = cast<MemRefType>(tensor.getType());
  Value loaded = vector::LoadOp::create(
      builder, loc, VectorType::get({headDim}, type.getElementType()), tensor,
      ValueRange{b, head, rowIdx, index(0)});
  if (type.getElementType().isF32())
    return loaded;
  return arith::ExtFOp::create(builder, loc, rowType(), loaded);
}

void HostEmitter::storeRow(Value row, Value tensor, Value b, Value head,
                           Value rowIdx) {
  Type element = cast<MemRefType>(tensor.getType()).getElementType();
  if (!element.isF32())
    row = arith::TruncFOp::create(builder, loc,
                                  VectorType::get({headDim}, element), row);
  vector::StoreOp::create(builder, loc, row, tensor,
                          ValueRange{b, head, rowIdx, index(0)});
}

Value HostEmitter::dotRows(Value lhs, Value rhs) {
  Value products = arith::MulFOp::create(builder, loc, lhs, rhs);
  // Reassociation lets LLVM reduce in a tree of vector adds instead of a
  // sequential chain of head_dim scalar adds.
  return vector::ReductionOp::create(builder, loc, vector::CombiningKind::ADD,
                                     products, Value(),
                                     arith::FastMathFlags::reassoc);
}

void HostEmitter::bindSizes(Value queryTensor, Value keyTensor) {
  batch = memref::DimOp::create(builder, loc, queryTensor, 0);
  heads = memref::DimOp::create(builder, loc, queryTensor, 1);
  qLen = memref::DimOp::create(builder, loc, queryTensor, 2);
  kvHeads = memref::DimOp::create(builder, loc, keyTensor, 1);
  kvLen = memref::DimOp::create(builder, loc, keyTensor, 2);
  group = arith::DivSIOp::create(builder, loc, heads, kvHeads);
}

unsigned HostEmitter::bindTrailingArguments(Block *entry, unsigned first) {
  for (size_t i = 0; i < attention.getParams().size(); ++i)
    params.push_back(entry->getArgument(first++));
  for (size_t i = 0; i < attention.getCaptures().size(); ++i)
    captures.push_back(entry->getArgument(first++));
  qOffset = entry->getArgument(first++);
  kvOffset = entry->getArgument(first++);
  qSeqLen = entry->getArgument(first++);
  kvSeqLen = entry->getArgument(first++);
  return first;
}

SmallVector<Value> HostEmitter::clampedIndices(Value capture,
                                               ValueRange indices,
                                               IRMapping &mapping) {
  SmallVector<Value> clamped;
  for (auto [dim, idx] : llvm::enumerate(indices)) {
    Value size = memref::DimOp::create(builder, loc, capture, dim);
    clamped.push_back(
        clampToDimension(builder, loc, mapping.lookup(idx), size));
  }
  return clamped;
}

Value HostEmitter::loadCapture(attn::LoadOp load, IRMapping &mapping) {
  Value capture = captures[captureIndex(attention, load.getCapture())];
  return memref::LoadOp::create(
      builder, loc, capture,
      clampedIndices(capture, load.getIndices(), mapping));
}

Value HostEmitter::loadCaptureBound(attn::LoadBoundOp bound,
                                    IRMapping &mapping) {
  Value capture = captures[captureIndex(attention, bound.getCapture())];
  SmallVector<Value> lows, highs;
  for (auto [dim, pair] :
       llvm::enumerate(llvm::zip(bound.getLows(), bound.getHighs()))) {
    Value size = memref::DimOp::create(builder, loc, capture, dim);
    Value low =
        clampToDimension(builder, loc, mapping.lookup(std::get<0>(pair)), size);
    Value high =
        clampToDimension(builder, loc, mapping.lookup(std::get<1>(pair)), size);
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

FailureOr<Value> HostEmitter::materialize(Operation *op, IRMapping &mapping,
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
  // A gradient op adds to what the schedule keeps; it has no result.
  auto sink = [&](const auto &callback, auto &&...arguments) {
    if (element.sinks && callback)
      callback(arguments...);
    return FailureOr<Value>(Value());
  };
  auto adjointOf = [&](Value adjoint) { return mapping.lookup(adjoint); };
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
        case attn::Size::batch:
          return batch;
        case attn::Size::heads:
          return heads;
        case attn::Size::kv_heads:
          return kvHeads;
        case attn::Size::q_len:
          return qSeqLen;
        case attn::Size::kv_len:
          return kvSeqLen;
        case attn::Size::head_dim:
          return index(headDim);
        }
        return failure();
      })
      .Case([&](attn::LoadOp load) -> FailureOr<Value> {
        return loadCapture(load, mapping);
      })
      .Case([&](attn::LoadBoundOp bound) -> FailureOr<Value> {
        return loadCaptureBound(bound, mapping);
      })
      .Case([&](attn::GradScaledDotOp grad) {
        return sink(element.sinks ? element.sinks->scaledDot : nullptr,
                    adjointOf(grad.getAdjoint()));
      })
      .Case([&](attn::GradKeyBiasOp grad) {
        return sink(element.sinks ? element.sinks->keyBias : nullptr,
                    adjointOf(grad.getAdjoint()));
      })
      .Case([&](attn::GradNorm2Op grad) {
        return sink(element.sinks ? element.sinks->norm2 : nullptr,
                    grad.getVector(), adjointOf(grad.getAdjoint()));
      })
      .Case([&](attn::GradParamOp grad) {
        unsigned param = cast<BlockArgument>(grad.getParam()).getArgNumber() -
                         attn::AttentionOp::kNumGradArgs;
        return sink(element.sinks ? element.sinks->param : nullptr, param,
                    adjointOf(grad.getAdjoint()));
      })
      .Case([&](attn::GradCaptureOp grad) -> FailureOr<Value> {
        if (!element.sinks || !element.sinks->capture)
          return Value();
        unsigned capture = captureIndex(attention, grad.getCapture());
        SmallVector<Value> indices =
            clampedIndices(captures[capture], grad.getIndices(), mapping);
        element.sinks->capture(capture, indices, adjointOf(grad.getAdjoint()));
        return Value();
      })
      .Default([&](Operation *other) -> FailureOr<Value> {
        return other->emitOpError("is not supported by the host backend");
      });
}

FailureOr<SmallVector<Value>>
HostEmitter::inlineRegion(Region &region, ElementContext &element) {
  auto plus = [&](Value index, Value offset) -> Value {
    return arith::AddIOp::create(builder, loc, index, offset);
  };
  SmallVector<Value> arguments{element.b, element.h,
                               plus(element.qIdx, qOffset),
                               plus(element.kvIdx, kvOffset)};
  if (attention.isGradRegion(region))
    arguments.push_back(element.adjoint);
  llvm::append_range(arguments, params);
  arguments.append(captures.size(), Value());
  // A key row the region loads itself is only valid inside it; one the
  // schedule gave stays.
  Value givenKeyRow = element.keyRow;
  auto yielded =
      inlineAttnRegion(builder, region, arguments,
                       [&](OpBuilder &, Operation *op, IRMapping &mapping) {
                         return materialize(op, mapping, element);
                       });
  element.keyRow = givenKeyRow;
  return yielded;
}

FailureOr<Value> HostEmitter::inlineElementRegion(Region &region,
                                                  ElementContext &element) {
  auto yielded = inlineRegion(region, element);
  if (failed(yielded))
    return failure();
  return (*yielded)[0];
}

VectorType HostEmitter::keyVectorType(const HostBlocking &blocking) {
  return VectorType::get({blocking.keyLanes}, builder.getF32Type());
}

/// The transpose of the square matrix whose rows are `rows` (a power-of-two
/// count of vectors as long as the count), in log2(n) rounds of two-source
/// shuffles: round s swaps bit s of the row index with bit s of the column
/// index, so n log2(n) shuffles replace the n^2 element moves.
static SmallVector<Value> transposeSquare(OpBuilder &builder, Location loc,
                                          SmallVector<Value> rows) {
  const int64_t n = rows.size();
  for (int64_t stride = 1; stride < n; stride *= 2) {
    SmallVector<int64_t> low, high;
    for (int64_t c = 0; c < n; ++c) {
      bool upper = c & stride;
      low.push_back(upper ? n + c - stride : c);
      high.push_back(upper ? n + c : c + stride);
    }
    for (int64_t i = 0; i < n; ++i) {
      if (i & stride)
        continue;
      Value a = rows[i], b = rows[i + stride];
      rows[i] = vector::ShuffleOp::create(builder, loc, a, b, low);
      rows[i + stride] = vector::ShuffleOp::create(builder, loc, a, b, high);
    }
  }
  return rows;
}

void HostEmitter::packTransposed(Value tensor, Value b, Value head,
                                 Value kvLo, Value transposed,
                                 const HostBlocking &blocking) {
  const int64_t lanes = blocking.keyLanes;
  Value lastKey = arith::SubIOp::create(builder, loc, kvLen, index(1));
  auto blockLoop = scf::ForOp::create(builder, loc, index(0),
                                      index(blocking.paddedTileN()),
                                      index(lanes));
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToStart(blockLoop.getBody());
  Value firstKey = blockLoop.getInductionVar();
  SmallVector<Value> tileRows;
  for (int64_t j = 0; j < lanes; ++j) {
    Value kvIdx = minIndex(
        arith::AddIOp::create(builder, loc, kvLo,
                              arith::AddIOp::create(builder, loc, firstKey,
                                                    index(j))),
        lastKey);
    tileRows.push_back(loadRow(tensor, b, head, kvIdx));
  }
  // Square blocks of keyLanes keys x keyLanes head_dim elements go through
  // registers; head_dim elements past the last whole block (head_dim not a
  // multiple of keyLanes) one by one.
  const int64_t wholeDims = llvm::isPowerOf2_64(lanes)
                                ? headDim / lanes * lanes
                                : 0;
  for (int64_t d0 = 0; d0 < wholeDims; d0 += lanes) {
    SmallVector<Value> block;
    for (Value row : tileRows)
      block.push_back(vector::ExtractStridedSliceOp::create(
          builder, loc, row, ArrayRef<int64_t>{d0}, ArrayRef<int64_t>{lanes},
          ArrayRef<int64_t>{1}));
    for (auto [t, column] : llvm::enumerate(transposeSquare(builder, loc,
                                                            block)))
      vector::StoreOp::create(builder, loc, column, transposed,
                              ValueRange{index(d0 + t), firstKey});
  }
  for (int64_t d = wholeDims; d < headDim; ++d)
    for (auto [j, row] : llvm::enumerate(tileRows))
      memref::StoreOp::create(
          builder, loc, vector::ExtractOp::create(builder, loc, row, d),
          transposed,
          ValueRange{index(d), arith::AddIOp::create(builder, loc, firstKey,
                                                     index(j))});
}

void HostEmitter::rowBlockDots(Value rows, Value firstRow, Value transposed,
                               Value dots, Value firstDotRow,
                               const HostBlocking &blocking) {
  const int64_t numRows = blocking.rowsPerStep, lanes = blocking.keyLanes;
  VectorType vectorType = keyVectorType(blocking);
  Value zeros = arith::ConstantOp::create(
      builder, loc, cast<TypedAttr>(builder.getZeroAttr(vectorType)));
  for (int64_t firstVector = 0; firstVector < blocking.keyVectors();
       firstVector += blocking.keyVectorsPerStep) {
    const int64_t vectors = std::min(blocking.keyVectorsPerStep,
                                     blocking.keyVectors() - firstVector);
    SmallVector<Value> init(numRows * vectors, zeros);
    auto dimLoop = scf::ForOp::create(builder, loc, index(0), index(headDim),
                                      index(1), init);
    {
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(dimLoop.getBody());
      Value d = dimLoop.getInductionVar();
      SmallVector<Value> keyVectors;
      for (int64_t c = 0; c < vectors; ++c)
        keyVectors.push_back(vector::LoadOp::create(
            builder, loc, vectorType, transposed,
            ValueRange{d, index((firstVector + c) * lanes)}));
      SmallVector<Value> updated;
      for (int64_t r = 0; r < numRows; ++r) {
        Value row = arith::AddIOp::create(builder, loc, firstRow, index(r));
        Value rowElement =
            memref::LoadOp::create(builder, loc, rows, ValueRange{row, d});
        Value broadcastRow =
            vector::BroadcastOp::create(builder, loc, vectorType, rowElement);
        for (int64_t c = 0; c < vectors; ++c)
          updated.push_back(vector::FMAOp::create(
              builder, loc, broadcastRow, keyVectors[c],
              dimLoop.getRegionIterArgs()[r * vectors + c]));
      }
      scf::YieldOp::create(builder, loc, updated);
    }
    for (int64_t r = 0; r < numRows; ++r) {
      Value dotRow = arith::AddIOp::create(builder, loc, firstDotRow, index(r));
      for (int64_t c = 0; c < vectors; ++c)
        vector::StoreOp::create(
            builder, loc, dimLoop.getResult(r * vectors + c), dots,
            ValueRange{dotRow, index((firstVector + c) * lanes)});
    }
  }
}

void HostEmitter::accumulateWeightedRows(
    Value accTile, Value firstAcc, ArrayRef<Value> rescales, Value count,
    function_ref<Value(Value, int64_t)> weight, function_ref<Value(Value)> row,
    const HostBlocking &blocking, function_ref<Value(Value, int64_t)> kept) {
  const int64_t lanes = blocking.keyLanes,
                headDimVectors = llvm::divideCeil(headDim, lanes);
  SmallVector<Value> accRows;
  for (int64_t a = 0, e = rescales.size(); a < e; ++a)
    accRows.push_back(arith::AddIOp::create(builder, loc, firstAcc, index(a)));
  for (int64_t firstVector = 0; firstVector < headDimVectors;
       firstVector += blocking.headDimVectorsPerStep) {
    // Vectors of keyLanes elements of head_dim, the last one narrower when
    // head_dim is not a multiple of keyLanes.
    SmallVector<std::pair<int64_t, VectorType>> chunk;
    for (int64_t v = firstVector;
         v < std::min(firstVector + blocking.headDimVectorsPerStep,
                      headDimVectors);
         ++v)
      chunk.emplace_back(v * lanes,
                         VectorType::get({std::min(lanes, headDim - v * lanes)},
                                         builder.getF32Type()));
    SmallVector<Value> accs;
    for (auto [accRow, rescale] : llvm::zip(accRows, rescales))
      for (auto [firstDim, vectorType] : chunk) {
        Value acc = vector::LoadOp::create(
            builder, loc, vectorType, accTile,
            ValueRange{accRow, index(firstDim)});
        if (rescale)
          acc = arith::MulFOp::create(
              builder, loc, acc,
              vector::BroadcastOp::create(builder, loc, vectorType, rescale));
        accs.push_back(acc);
      }
    auto loop =
        scf::ForOp::create(builder, loc, index(0), count, index(1), accs);
    {
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(loop.getBody());
      Value i = loop.getInductionVar();
      Value shared = row(i);
      SmallVector<Value> sharedVectors;
      for (auto [firstDim, vectorType] : chunk)
        sharedVectors.push_back(vector::ExtractStridedSliceOp::create(
            builder, loc, shared, ArrayRef<int64_t>{firstDim},
            ArrayRef<int64_t>{vectorType.getNumElements()},
            ArrayRef<int64_t>{1}));
      SmallVector<Value> updated;
      ValueRange iterAccs = loop.getRegionIterArgs();
      for (int64_t a = 0, e = accRows.size(); a < e; ++a) {
        Value rowWeight = weight(i, a);
        Value rowKept = kept ? kept(i, a) : Value();
        for (auto [v, chunkVector] : llvm::enumerate(chunk)) {
          Value acc = iterAccs[a * chunk.size() + v];
          Value next = vector::FMAOp::create(
              builder, loc,
              vector::BroadcastOp::create(builder, loc, chunkVector.second,
                                          rowWeight),
              sharedVectors[v], acc);
          if (rowKept)
            next = arith::SelectOp::create(builder, loc, rowKept, next, acc);
          updated.push_back(next);
        }
      }
      scf::YieldOp::create(builder, loc, updated);
    }
    for (auto [a, accRow] : llvm::enumerate(accRows))
      for (auto [v, chunkVector] : llvm::enumerate(chunk))
        vector::StoreOp::create(builder, loc,
                                loop.getResult(a * chunk.size() + v), accTile,
                                ValueRange{accRow, index(chunkVector.first)});
  }
}

LogicalResult
HostEmitter::forEachRowBlock(Value numRows, const HostBlocking &blocking,
                             function_ref<LogicalResult(Value)> body) {
  auto blockLoop = scf::ForOp::create(builder, loc, index(0), numRows,
                                      index(blocking.rowsPerStep));
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToStart(blockLoop.getBody());
  return body(blockLoop.getInductionVar());
}

KeyVectorContext HostEmitter::rowOverKeys(const ElementContext &item,
                                          Value qLo, Value row,
                                          Value queryRows,
                                          const HostBlocking &blocking) {
  KeyVectorContext keys;
  keys.row = item;
  keys.row.qIdx = arith::AddIOp::create(builder, loc, qLo, row);
  keys.row.queryRow = vector::LoadOp::create(
      builder, loc, rowType(), queryRows, ValueRange{row, index(0)});
  keys.lanes = blocking.keyLanes;
  return keys;
}

FailureOr<Value>
HostEmitter::base2ScoresOverKeys(KeyVectorContext &keys, int64_t keyVector,
                                 Value kvLo, Value dots, Value keyBiasTile,
                                 const HostBlocking &blocking) {
  Value firstLane = index(keyVector * blocking.keyLanes);
  keys.firstKey = arith::AddIOp::create(builder, loc, kvLo, firstLane);
  keys.dots = dots;
  if (!attention.getKeyBias().empty())
    keys.keyBias = vector::LoadOp::create(builder, loc, keyVectorType(blocking),
                                          keyBiasTile, firstLane);
  FailureOr<Value> score = inlineRegionOverKeys(attention.getScore(), keys);
  if (failed(score) || attention.getLog2Domain())
    return score;
  // Scores outside the log2 domain are brought to base 2 so that one exp2
  // serves.
  return arith::MulFOp::create(
             builder, loc, *score,
             vector::BroadcastOp::create(builder, loc, keyVectorType(blocking),
                                         f32(M_LOG2E)))
      .getResult();
}

FailureOr<std::pair<Value, Value>>
HostEmitter::classifyTile(Value b, Value h, Value qLo, Value qHi, Value kvLo,
                          Value kvHi) {
  if (attention.getTileClass().empty()) {
    // Without a classifier a masked op must test every element.
    bool unmasked = attention.getMask().empty();
    Value allKept =
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(unmasked));
    Value allMasked =
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(false));
    return std::pair(allKept, allMasked);
  }
  auto plus = [&](Value index, Value offset) -> Value {
    return arith::AddIOp::create(builder, loc, index, offset);
  };
  SmallVector<Value> arguments{b,
                               h,
                               plus(qLo, qOffset),
                               plus(qHi, qOffset),
                               plus(kvLo, kvOffset),
                               plus(kvHi, kvOffset)};
  llvm::append_range(arguments, params);
  arguments.append(captures.size(), Value());
  ElementContext noElement;
  auto facts =
      inlineAttnRegion(builder, attention.getTileClass(), arguments,
                       [&](OpBuilder &, Operation *op, IRMapping &mapping) {
                         return materialize(op, mapping, noElement);
                       });
  if (failed(facts))
    return failure();
  return std::pair((*facts)[0], (*facts)[1]);
}

FailureOr<Value> HostEmitter::inlineRegionOverKeys(Region &region,
                                                   KeyVectorContext &keys) {
  FailureOr<SmallVector<Value>> yielded = inlineOverKeys(region, keys);
  if (failed(yielded))
    return failure();
  Value value = (*yielded)[0];
  if (isa<VectorType>(value.getType()))
    return value;
  return vector::BroadcastOp::create(
             builder, loc, VectorType::get({keys.lanes}, value.getType()),
             value)
      .getResult();
}

LogicalResult HostEmitter::inlineGradRegionOverKeys(Region &region,
                                                    KeyVectorContext &keys) {
  assert(attention.isGradRegion(region) && keys.adjoint &&
         "a gradient region needs its adjoints");
  return success(succeeded(inlineOverKeys(region, keys)));
}

FailureOr<SmallVector<Value>>
HostEmitter::inlineOverKeys(Region &region, KeyVectorContext &keys) {
  Block &block = region.front();
  const int64_t lanes = keys.lanes;
  auto vectorOf = [&](Type scalar) { return VectorType::get({lanes}, scalar); };
  // A value that varies over the keys is a vector; one that does not stays
  // the scalar it is in the region.
  auto varies = [](Value value) { return isa<VectorType>(value.getType()); };
  auto broadcast = [&](Value value) -> Value {
    if (varies(value))
      return value;
    return vector::BroadcastOp::create(builder, loc,
                                       vectorOf(value.getType()), value);
  };

  IRMapping mapping;
  // The region sees the indices in the whole sequence (the sequence
  // block's offsets added); the keys' rows are read at the call's own.
  Value firstKeys =
      broadcast(arith::AddIOp::create(builder, loc, keys.firstKey, kvOffset));
  Value keyIndices = arith::AddIOp::create(
      builder, loc, firstKeys,
      vector::StepOp::create(builder, loc, vectorOf(builder.getIndexType())));
  SmallVector<Value> arguments{
      keys.row.b, keys.row.h,
      arith::AddIOp::create(builder, loc, keys.row.qIdx, qOffset), keyIndices};
  if (attention.isGradRegion(region))
    arguments.push_back(keys.adjoint);
  llvm::append_range(arguments, params);
  for (auto [argument, replacement] :
       llvm::zip(block.getArguments(), arguments))
    mapping.map(argument, replacement);

  Value lastKey = arith::SubIOp::create(builder, loc, kvLen, index(1));
  // One op evaluated for each key on its own, the lanes gathered back into
  // vectors.
  auto evaluatePerLane = [&](Operation &op) -> LogicalResult {
    SmallVector<SmallVector<Value>> laneResults(op.getNumResults());
    for (int64_t lane = 0; lane < lanes; ++lane) {
      IRMapping laneMapping;
      for (Value operand : op.getOperands()) {
        Value mapped = mapping.lookupOrNull(operand);
        if (mapped && varies(mapped))
          mapped = vector::ExtractOp::create(builder, loc, mapped, lane);
        if (mapped)
          laneMapping.map(operand, mapped);
      }
      if (isa<attn::AttnDialect>(op.getDialect())) {
        ElementContext element = keys.row;
        element.kvIdx = minIndex(
            arith::AddIOp::create(builder, loc, keys.firstKey, index(lane)),
            lastKey);
        if (keys.keyBias)
          element.keyBias =
              vector::ExtractOp::create(builder, loc, keys.keyBias, lane);
        FailureOr<Value> value = materialize(&op, laneMapping, element);
        if (failed(value))
          return failure();
        laneResults[0].push_back(*value);
        continue;
      }
      Operation *laneOp = builder.clone(op, laneMapping);
      for (auto [result, laneResult] :
           llvm::zip(laneResults, laneOp->getResults()))
        result.push_back(laneResult);
    }
    for (auto [result, values] : llvm::zip(op.getResults(), laneResults))
      mapping.map(result, vector::FromElementsOp::create(
                              builder, loc, vectorOf(result.getType()), values)
                              .getResult());
    return success();
  };

  // A gradient op's adjoints, 0 on the lanes that do not count.
  auto countedAdjoints = [&](Value adjoint) -> Value {
    Value adjoints = broadcast(mapping.lookup(adjoint));
    if (!keys.kept)
      return adjoints;
    return arith::SelectOp::create(builder, loc, keys.kept, adjoints,
                                   broadcast(f32(0)));
  };
  auto toVectorSink = [&](const auto &callback, auto &&...arguments) {
    if (keys.vectorSinks && callback)
      callback(arguments...);
  };
  const GradientSinks *rowSinks = keys.row.sinks;
  for (Operation &op : block.without_terminator()) {
    if (auto grad = dyn_cast<attn::GradScaledDotOp>(op)) {
      toVectorSink(keys.vectorSinks ? keys.vectorSinks->scaledDot : nullptr,
                   countedAdjoints(grad.getAdjoint()));
      continue;
    }
    if (auto grad = dyn_cast<attn::GradKeyBiasOp>(op)) {
      toVectorSink(keys.vectorSinks ? keys.vectorSinks->keyBias : nullptr,
                   countedAdjoints(grad.getAdjoint()));
      continue;
    }
    if (auto grad = dyn_cast<attn::GradNorm2Op>(op)) {
      toVectorSink(keys.vectorSinks ? keys.vectorSinks->norm2 : nullptr,
                   grad.getVector(), countedAdjoints(grad.getAdjoint()));
      continue;
    }
    if (auto grad = dyn_cast<attn::GradParamOp>(op)) {
      if (rowSinks && rowSinks->param) {
        unsigned param = cast<BlockArgument>(grad.getParam()).getArgNumber() -
                         attn::AttentionOp::kNumGradArgs;
        rowSinks->param(param, vector::ReductionOp::create(
                                   builder, loc, vector::CombiningKind::ADD,
                                   countedAdjoints(grad.getAdjoint())));
      }
      continue;
    }
    if (auto grad = dyn_cast<attn::GradCaptureOp>(op)) {
      if (!rowSinks || !rowSinks->capture)
        continue;
      // Each key may add to another element: lane by lane.
      Value adjoints = countedAdjoints(grad.getAdjoint());
      unsigned capture = captureIndex(attention, grad.getCapture());
      for (int64_t lane = 0; lane < lanes; ++lane) {
        IRMapping laneMapping;
        for (Value index : grad.getIndices()) {
          Value mapped = mapping.lookup(index);
          laneMapping.map(index, varies(mapped) ? vector::ExtractOp::create(
                                                      builder, loc, mapped,
                                                      lane)
                                                      .getResult()
                                                : mapped);
        }
        rowSinks->capture(
            capture,
            clampedIndices(captures[capture], grad.getIndices(), laneMapping),
            vector::ExtractOp::create(builder, loc, adjoints, lane));
      }
      continue;
    }
    bool anyVarying = llvm::any_of(op.getOperands(), [&](Value operand) {
      Value mapped = mapping.lookupOrNull(operand);
      return mapped && varies(mapped);
    });
    // The ops that read the keys themselves.
    if (isa<attn::ScaledDotOp>(op)) {
      assert(keys.row.qScale && "scaled_dot without q_scale");
      mapping.map(op.getResult(0),
                  arith::MulFOp::create(builder, loc,
                                        broadcast(keys.row.qScale), keys.dots)
                      .getResult());
      continue;
    }
    if (isa<attn::DotOp>(op)) {
      mapping.map(op.getResult(0), keys.dots);
      continue;
    }
    if (isa<attn::KeyBiasOp>(op)) {
      if (!keys.keyBias)
        return op.emitOpError("has no key_bias region to read");
      mapping.map(op.getResult(0), keys.keyBias);
      continue;
    }
    bool readsKeys = isa<attn::Dist2Op>(op) ||
                     (isa<attn::Norm2Op>(op) &&
                      cast<attn::Norm2Op>(op).getVector() == attn::Vector::k);
    if (readsKeys || (anyVarying && (op.getNumRegions() ||
                                     !OpTrait::hasElementwiseMappableTraits(
                                         &op)))) {
      if (failed(evaluatePerLane(op)))
        return failure();
      continue;
    }
    if (!anyVarying) {
      // The same for every key of the row: evaluated once.
      if (isa<attn::AttnDialect>(op.getDialect())) {
        ElementContext element = keys.row;
        element.kvIdx = keys.firstKey;
        FailureOr<Value> value = materialize(&op, mapping, element);
        if (failed(value))
          return failure();
        mapping.map(op.getResult(0), *value);
      } else {
        builder.clone(op, mapping);
      }
      continue;
    }
    // Elementwise arith/math: the same op on vectors, its scalar operands
    // broadcast.
    OperationState state(op.getLoc(), op.getName());
    state.addAttributes(op.getAttrs());
    for (Value operand : op.getOperands())
      state.addOperands(broadcast(mapping.lookup(operand)));
    for (Type type : op.getResultTypes())
      state.addTypes(vectorOf(type));
    Operation *vectorOp = builder.create(state);
    mapping.map(op.getResults(), vectorOp->getResults());
  }
  SmallVector<Value> yielded;
  for (Value value : block.getTerminator()->getOperands())
    yielded.push_back(mapping.lookup(value));
  return yielded;
}
