//===- RegionApplication.cpp - attn regions evaluated in a kernel ---------===//
#include "rbfc/Conversion/NVGPU/RegionApplication.h"

#include "rbfc/Conversion/RegionInlining.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/Debug.h"

#include <cmath>

#define DEBUG_TYPE "attn-region-application"

using namespace mlir;
using namespace rbfc;

Value RegionApplication::sizeValue(attn::Size size) {
  switch (size) {
  case attn::Size::batch:
    return sizes.batch;
  case attn::Size::heads:
    return sizes.heads;
  case attn::Size::kv_heads:
    return sizes.kvHeads;
  case attn::Size::q_len:
    return sizes.qSeqLen;
  case attn::Size::kv_len:
    return sizes.kvSeqLen;
  case attn::Size::head_dim:
    return index(headDim);
  }
  llvm_unreachable("unknown size");
}

Value RegionApplication::loadCapture(unsigned capture, ValueRange indices) {
  const CaptureArgs &data = captures[capture];
  Value offset = index(0);
  for (auto [i, idx] : llvm::enumerate(indices)) {
    Value clamped = clampToDimension(b, b.getLoc(), idx, data.sizes[i]);
    offset = add(offset, mul(clamped, data.strides[i]));
  }
  return memref::LoadOp::create(b, data.data, ValueRange{offset});
}

/// The other bound of the same box in the same region (a document mask's
/// min beside its max), or null.
static attn::LoadBoundOp twinBound(attn::LoadBoundOp bound) {
  for (Operation &other : *bound->getBlock())
    if (auto twin = dyn_cast<attn::LoadBoundOp>(other))
      if (twin != bound && twin.getCapture() == bound.getCapture() &&
          twin.getBound() != bound.getBound() &&
          twin.getType() == bound.getType() &&
          llvm::equal(twin.getLows(), bound.getLows()) &&
          llvm::equal(twin.getHighs(), bound.getHighs()))
        return twin;
  return {};
}

FailureOr<Value> RegionApplication::loadBound(attn::LoadBoundOp bound,
                                              IRMapping &mapping) {
  if (Value scanned = scannedTwins.lookup(bound))
    return scanned;
  // Every warp scans the box itself, lane-strided, and combines with a
  // butterfly, so the bound is uniform without a barrier. The box's other
  // bound, where the region asks for it too, comes from the same loads
  // (each load waits for its round trip: one scan, not two).
  attn::LoadBoundOp twin = twinBound(bound);
  SmallVector<attn::LoadBoundOp, 2> bounds{bound};
  if (twin)
    bounds.push_back(twin);
  unsigned capture = captureIndex(op, bound.getCapture());
  const CaptureArgs &data = captures[capture];
  SmallVector<Value> lows, counts;
  Value total = index(1);
  for (auto [i, lowValue, highValue] :
       llvm::enumerate(bound.getLows(), bound.getHighs())) {
    Value lo = clampToDimension(b, b.getLoc(), mapping.lookup(lowValue),
                                data.sizes[i]);
    Value hi = clampToDimension(b, b.getLoc(), mapping.lookup(highValue),
                                data.sizes[i]);
    Value count = add(sub(arith::MaxSIOp::create(b, hi, lo), lo), 1);
    lows.push_back(lo);
    counts.push_back(count);
    total = mul(total, count);
  }
  Type elementType = bound.getType();
  auto identity = [&](attn::Bound kind) -> Value {
    bool isMax = kind == attn::Bound::max;
    if (auto floatType = dyn_cast<FloatType>(elementType))
      return arith::ConstantOp::create(
          b, b.getFloatAttr(floatType, isMax ? -INFINITY : INFINITY));
    unsigned width = elementType.getIntOrFloatBitWidth();
    APInt value = isMax ? APInt::getSignedMinValue(width)
                        : APInt::getSignedMaxValue(width);
    return arith::ConstantOp::create(b, b.getIntegerAttr(elementType, value));
  };
  SmallVector<Value, 2> identities;
  for (attn::LoadBoundOp each : bounds)
    identities.push_back(identity(each.getBound()));
  auto loop =
      scf::ForOp::create(b, lane, total, index(kThreadsPerWarp), identities);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(loop.getBody());
    Value linear = loop.getInductionVar();
    SmallVector<Value> indices(counts.size());
    for (int64_t i = counts.size() - 1; i >= 0; --i) {
      indices[i] = add(lows[i], arith::RemUIOp::create(b, linear, counts[i]));
      linear = arith::DivUIOp::create(b, linear, counts[i]);
    }
    Value element = loadCapture(capture, indices);
    SmallVector<Value, 2> combined;
    for (auto [each, partial] :
         llvm::zip_equal(bounds, loop.getRegionIterArgs()))
      combined.push_back(
          combineBound(b, b.getLoc(), each.getBound(), partial, element));
    scf::YieldOp::create(b, combined);
  }
  // gpu.shuffle moves 32-bit values: i64 ids are saturated to i32 first,
  // exact for ids that fit (the identities saturate to i32's own).
  bool wide = elementType.isInteger(64);
  SmallVector<Value, 2> results;
  for (auto [each, partial] : llvm::zip_equal(bounds, loop.getResults())) {
    Value word = partial;
    if (wide) {
      auto bound64 = [&](int64_t v) -> Value {
        return arith::ConstantOp::create(b, b.getI64IntegerAttr(v));
      };
      Value saturated = arith::MaxSIOp::create(
          b, arith::MinSIOp::create(b, partial, bound64(INT32_MAX)),
          bound64(INT32_MIN));
      word = arith::TruncIOp::create(b, b.getI32Type(), saturated);
    }
    attn::Bound kind = each.getBound();
    Value reduced = uniformFromFirstLane(
        laneReduce(word, kThreadsPerWarp, [&](Value x, Value y) {
          return combineBound(b, b.getLoc(), kind, x, y);
        }));
    results.push_back(
        wide ? arith::ExtSIOp::create(b, elementType, reduced).getResult()
             : reduced);
  }
  if (twin)
    scannedTwins[twin] = results[1];
  return results[0];
}

FailureOr<Value> RegionApplication::materialize(Operation *attnOp,
                                                IRMapping &mapping,
                                                const ElementValues &element,
                                                ElementOpHook hook) {
  if (hook) {
    // A result-less op (attn.grad_*) is the hook's: it emits what the op
    // does, or nothing to drop a gradient its kernel does not own.
    FailureOr<Value> value = hook(attnOp, mapping, element);
    if (failed(value) || *value || attnOp->getNumResults() == 0)
      return value;
  }
  auto unavailable = [&](StringRef what) -> FailureOr<Value> {
    return attnOp->emitOpError()
           << "cannot be evaluated by the mma_sync kernel " << what;
  };
  return TypeSwitch<Operation *, FailureOr<Value>>(attnOp)
      .Case([&](attn::DotOp) -> FailureOr<Value> {
        if (!element.dot)
          return unavailable("outside the score region");
        return element.dot;
      })
      .Case([&](attn::ScaledDotOp) -> FailureOr<Value> {
        if (!element.dot)
          return unavailable("outside the score region");
        return fmul(element.dot, element.qScale);
      })
      .Case([&](attn::KeyBiasOp) -> FailureOr<Value> {
        if (!element.keyBias)
          return unavailable("outside the score region");
        return element.keyBias;
      })
      .Case([&](attn::Norm2Op norm) -> FailureOr<Value> {
        Value value = norm.getVector() == attn::Vector::q ? element.queryNorm
                                                          : element.keyNorm;
        if (!value)
          return unavailable("here (the norm is not computed for this region)");
        return value;
      })
      .Case([&](attn::SizeOp size) -> FailureOr<Value> {
        return sizeValue(size.getSize());
      })
      .Case([&](attn::LoadOp load) -> FailureOr<Value> {
        SmallVector<Value> indices;
        for (Value idx : load.getIndices())
          indices.push_back(mapping.lookup(idx));
        return loadCapture(captureIndex(op, load.getCapture()), indices);
      })
      .Case([&](attn::LoadBoundOp bound) { return loadBound(bound, mapping); })
      .Default([&](Operation *other) {
        // attn.grad_* ops have no result; a backward kernel's hook
        // evaluates them.
        return unavailable(other->getNumResults()
                               ? "(not in the canonical form; run "
                                 "attn-canonicalize)"
                               : "(a gradient op, which needs the hook of a "
                                 "backward kernel)");
      });
}

FailureOr<SmallVector<Value>>
RegionApplication::inlineRegion(Region &region, const ElementValues &element,
                                ElementOpHook hook) {
  SmallVector<Value> arguments{
      batch, head, add(element.qIdx, sizes.qOffset),
      add(element.kvIdx ? element.kvIdx : index(0), sizes.kvOffset)};
  if (op.isGradRegion(region))
    arguments.push_back(element.adjoint);
  llvm::append_range(arguments, params);
  arguments.append(op.getCaptures().size(), Value());
  return inlineAttnRegion(b, region, arguments,
                          [&](OpBuilder &, Operation *attnOp, IRMapping &m) {
                            return materialize(attnOp, m, element, hook);
                          });
}

FailureOr<Value> RegionApplication::queryScale() {
  if (op.getQScale().empty())
    return f32(1.0);
  ElementValues element;
  element.qIdx = index(0);
  return evaluateElementRegion(op.getQScale(), element);
}

FailureOr<Value> RegionApplication::keyBias(Value kvIdx, Value keyNorm) {
  ElementValues element;
  element.qIdx = index(0);
  element.kvIdx = kvIdx;
  element.keyNorm = keyNorm;
  return evaluateElementRegion(op.getKeyBias(), element);
}

FailureOr<Value> RegionApplication::evaluateElementRegion(
    Region &region, const ElementValues &element, ElementOpHook hook) {
  auto values = inlineRegion(region, element, hook);
  if (failed(values))
    return failure();
  return (*values)[0];
}

LogicalResult RegionApplication::evaluateGradRegion(
    Region &region, const ElementValues &element, ElementOpHook hook) {
  return success(succeeded(inlineRegion(region, element, hook)));
}

FailureOr<std::pair<Value, Value>> RegionApplication::liveTiles(
    Value count, function_ref<FailureOr<TileClass>(Value)> classify) {
  Value first = index(0), last = sub(count, index(1));
  if (!op.getTileClass().empty()) {
    FailureOr<Value> firstLive =
        scanLiveTile(index(0), count, /*forward=*/true, classify);
    if (failed(firstLive))
      return failure();
    FailureOr<Value> lastLive = scanLiveTile(last, sub(*firstLive, index(1)),
                                             /*forward=*/false, classify);
    if (failed(lastLive))
      return failure();
    first = *firstLive;
    last = *lastLive;
  }
  return std::pair(first, add(last, 1));
}

FailureOr<Value> RegionApplication::scanLiveTile(
    Value from, Value bound, bool forward,
    function_ref<FailureOr<TileClass>(Value)> classify) {
  LogicalResult status = success();
  auto loop = scf::WhileOp::create(
      b, TypeRange{b.getIndexType()}, ValueRange{from},
      [&](OpBuilder &nested, Location, ValueRange state) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToEnd(nested.getInsertionBlock());
        Value tile = state[0];
        Value inRange = forward ? cmp(arith::CmpIPredicate::slt, tile, bound)
                                : cmp(arith::CmpIPredicate::sgt, tile, bound);
        // The tile is only classified when in range.
        auto masked = scf::IfOp::create(b, TypeRange{b.getI1Type()}, inRange,
                                        /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard inner(b);
          b.setInsertionPointToStart(masked.thenBlock());
          FailureOr<TileClass> tileClass = classify(tile);
          if (failed(tileClass))
            status = failure();
          scf::YieldOp::create(
              b, failed(tileClass)
                     ? Value(arith::ConstantOp::create(b, b.getBoolAttr(false)))
                     : tileClass->allMasked);
          b.setInsertionPointToStart(masked.elseBlock());
          scf::YieldOp::create(
              b, Value(arith::ConstantOp::create(b, b.getBoolAttr(false))));
        }
        scf::ConditionOp::create(b, masked.getResult(0), state);
      },
      [&](OpBuilder &nested, Location, ValueRange state) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToEnd(nested.getInsertionBlock());
        scf::YieldOp::create(b, add(state[0], forward ? 1 : -1));
      });
  if (failed(status))
    return failure();
  return loop.getResult(0);
}

bool RegionApplication::isAffineInDot(Region &score) {
  auto dependsOnDot = [](Value value) {
    SetVector<Operation *> slice;
    if (Operation *def = value.getDefiningOp())
      (void)getBackwardSlice(def, &slice);
    slice.insert(value.getDefiningOp());
    return llvm::any_of(slice, [](Operation *op) {
      return isa_and_nonnull<attn::DotOp, attn::ScaledDotOp>(op);
    });
  };
  Value result = score.front().getTerminator()->getOperand(0);
  if (result.getDefiningOp<attn::ScaledDotOp>())
    return true;
  auto sum = result.getDefiningOp<arith::AddFOp>();
  if (!sum)
    return false;
  for (auto [dot, rest] : {std::pair(sum.getLhs(), sum.getRhs()),
                           std::pair(sum.getRhs(), sum.getLhs())})
    if (dot.getDefiningOp<attn::ScaledDotOp>() && !dependsOnDot(rest))
      return true;
  return false;
}

FailureOr<SmallVector<Accumulator>> RegionApplication::applyScoreRegion(
    FragmentLane &fragment, const FragmentLayout &layout,
    ArrayRef<Accumulator> dots, bool masked, ColumnBinder bindColumn,
    RowBinder bindRow, ArrayRef<Value> rowShifts, ElementOpHook scoreHook) {
  SmallVector<Accumulator> scores(dots.size());
  Value log2e = op.getLog2Domain() ? Value() : f32(M_LOG2E);
  Value negInf = f32(-std::numeric_limits<double>::infinity());
  ElementValues element;
  LogicalResult status = fragment.forEachElementByColumn(
      layout,
      [&](int64_t slice, int64_t column, Value index) {
        bindColumn(element, slice, column, index);
      },
      [&](int64_t accumulator, int64_t e, int64_t laneRow) -> LogicalResult {
        bindRow(element, laneRow);
        element.dot = dots[accumulator][e];
        FailureOr<Value> score =
            evaluateElementRegion(op.getScore(), element, scoreHook);
        if (failed(score))
          return failure();
        Value value = log2e ? fmul(*score, log2e) : *score;
        // ptxas fuses it with a last multiply (one FFMA).
        if (!rowShifts.empty())
          value = arith::SubFOp::create(b, value, rowShifts[laneRow]);
        if (masked) {
          Value keep =
              cmp(arith::CmpIPredicate::ult, element.kvIdx, sizes.kvLen);
          if (!op.getMask().empty()) {
            FailureOr<Value> kept =
                evaluateElementRegion(op.getMask(), element);
            if (failed(kept))
              return failure();
            keep = arith::AndIOp::create(b, keep, *kept);
          }
          value = select(keep, value, negInf);
        }
        scores[accumulator][e] = value;
        return success();
      });
  if (failed(status))
    return failure();
  return scores;
}

FailureOr<TileClass> RegionApplication::classifyTile(Value qLo, int64_t qRows,
                                                     Value kvLo,
                                                     int64_t kvRows) {
  if (op.getTileClass().empty()) {
    Value allKept =
        arith::ConstantOp::create(b, b.getBoolAttr(op.getMask().empty()));
    return TileClass{allKept,
                     arith::ConstantOp::create(b, b.getBoolAttr(false))};
  }
  // fixBounds' values hold for its tile of the fixed axis only.
  bool onFixedTile = fixedAxis == FixedAxis::Queries
                         ? qLo == fixedLo && qRows == fixedRows
                         : kvLo == fixedLo && kvRows == fixedRows;
  auto values = inlineTileClass(
      qLo, qRows, kvLo, kvRows,
      [&](OpBuilder &, Operation *attnOp, IRMapping &m) -> FailureOr<Value> {
        if (Value fixed = onFixedTile ? fixedBounds.lookup(attnOp) : Value())
          return fixed;
        return materialize(attnOp, m, ElementValues{});
      });
  if (failed(values))
    return failure();
  return TileClass{(*values)[0], (*values)[1]};
}

FailureOr<SmallVector<Value>> RegionApplication::inlineTileClass(
    Value qLo, int64_t qRows, Value kvLo, int64_t kvRows,
    function_ref<FailureOr<Value>(OpBuilder &, Operation *, IRMapping &)>
        materializeOp) {
  Value kvEnd = arith::MinSIOp::create(b, add(kvLo, kvRows), sizes.kvLen);
  Value kvHi = sub(kvEnd, index(1));
  Value qEnd = arith::MinSIOp::create(b, add(qLo, qRows), sizes.qLen);
  Value qHi = sub(qEnd, index(1));
  SmallVector<Value> arguments{batch,
                               head,
                               add(qLo, sizes.qOffset),
                               add(qHi, sizes.qOffset),
                               add(kvLo, sizes.kvOffset),
                               add(kvHi, sizes.kvOffset)};
  llvm::append_range(arguments, params);
  arguments.append(op.getCaptures().size(), Value());
  // A twin scanned here is this inlining's value only.
  scannedTwins.clear();
  auto values =
      inlineAttnRegion(b, op.getTileClass(), arguments, materializeOp);
  scannedTwins.clear();
  return values;
}

LogicalResult RegionApplication::fixBounds(FixedAxis fixed, Value lo,
                                           int64_t rows) {
  if (op.getTileClass().empty())
    return success();
  // The region's arguments: batch, head, q_lo, q_hi, kv_lo, kv_hi, ...
  Block &region = op.getTileClass().front();
  unsigned firstWalked = fixed == FixedAxis::Queries ? 4 : 2;
  auto followsWalkedAxis = [&](attn::LoadBoundOp bound) {
    SetVector<Value> inputs;
    for (Value value : llvm::concat<Value>(bound.getLows(), bound.getHighs())) {
      inputs.insert(value);
      if (Operation *def = value.getDefiningOp()) {
        SetVector<Operation *> slice;
        (void)getBackwardSlice(def, &slice);
        slice.insert(def);
        for (Operation *sliced : slice)
          inputs.insert(sliced->getOperands().begin(),
                        sliced->getOperands().end());
      }
    }
    return llvm::any_of(inputs, [&](Value input) {
      auto argument = dyn_cast<BlockArgument>(input);
      return argument && argument.getOwner() == &region &&
             (argument.getArgNumber() == firstWalked ||
              argument.getArgNumber() == firstWalked + 1);
    });
  };
  // The walked axis' bounds stand at the fixed tile's own; the boxes that
  // follow them are not scanned here (a placeholder in their place is
  // dead once the region's results are dropped).
  Value zero = index(0);
  Value qLo = fixed == FixedAxis::Queries ? lo : zero;
  Value kvLo = fixed == FixedAxis::Keys ? lo : zero;
  DenseMap<Operation *, Value> found;
  auto values = inlineTileClass(
      qLo, rows, kvLo, rows,
      [&](OpBuilder &, Operation *attnOp, IRMapping &m) -> FailureOr<Value> {
        auto bound = dyn_cast<attn::LoadBoundOp>(attnOp);
        if (!bound)
          return materialize(attnOp, m, ElementValues{});
        if (followsWalkedAxis(bound))
          return Value(
              arith::ConstantOp::create(b, b.getZeroAttr(bound.getType())));
        FailureOr<Value> value = loadBound(bound, m);
        if (succeeded(value))
          found[attnOp] = *value;
        return value;
      });
  if (failed(values))
    return failure();
  LLVM_DEBUG(llvm::dbgs() << "tile bounds fixed for the walk: " << found.size()
                          << "\n");
  fixedBounds = std::move(found);
  fixedAxis = fixed;
  fixedLo = lo;
  fixedRows = rows;
  return success();
}

bool RegionApplication::usesNorm(Region &region, attn::Vector side) {
  if (region.empty())
    return false;
  return region
      .walk([&](attn::Norm2Op norm) {
        return norm.getVector() == side ? WalkResult::interrupt()
                                        : WalkResult::advance();
      })
      .wasInterrupted();
}
