//===- HostBackward.cpp - the backward schedule of the host backend -------===//
//
// FlashAttention-2's backward, on the CPU, in three functions beside the
// forward kernel NAME (docs/host-backend.md, "Backward"):
//
//   NAME_bwd_rows   per query row: delta_i = rowsum(dO_i * O_i) - dlse_i
//                   (softmax; dlse_i under `none`) and lse2_i, the saved
//                   log-sum-exp without the row terms, in base 2.
//   NAME_bwd_dkdv   per (batch, kv head, key tile): dK and dV of the tile's
//                   keys, accumulated over the group's query heads and every
//                   query tile the mask keeps; the per-key terms' gradients;
//                   the score's and key bias's gradients of parameters and
//                   captures.
//   NAME_bwd_dq     per (batch, head, query tile): dQ over every key tile
//                   the mask keeps; the q_scale's and row terms' gradients.
//
// Both passes recompute the weight of an element from the saved log-sum-exp
// (P = 2^(s - lse2)) and dP = dO . V, for a whole (query tile, key tile)
// at a time with the forward's blocked components (K and V transposed per
// key tile, rows x key-vector FMAs, the score region on vectors of keys,
// the arithmetic exp2), and evaluate score_grad with the
// score's adjoint (dS = P (dP - delta), in the score's units); each pass
// keeps the gradients it owns and drops the rest, so every gradient is
// added exactly once. Gradients of parameters and captures go to per-chunk
// partial sums that the runner adds up in chunk order: no float atomics,
// the same bits on every run and every thread count.
//
//===----------------------------------------------------------------------===//
#include "rbfc/Conversion/Host/HostBackward.h"

#include "rbfc/Conversion/Host/HostEmitter.h"
#include "rbfc/Conversion/Host/VectorExp2.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/Support/Debug.h"

#include <cmath>
#include <limits>

#define DEBUG_TYPE "attn-lower-to-host"

using namespace mlir;
using namespace rbfc;
using namespace rbfc::host;

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

/// Shared by the three backward functions: their common arguments and the
/// per-element softmax backward.
class HostBackwardEmitter : protected HostEmitter {
public:
  HostBackwardEmitter(attn::AttentionOp attention, func::FuncOp kernel,
                      const HostBlocking &blocking)
      : HostEmitter(attention, kernel), blocking(blocking),
        tileM(blocking.tileM), tileN(blocking.tileN) {}

protected:
  /// Keys of a tile rounded up to whole blocks of the blocked updates'
  /// accumulators (rowsPerStep of them).
  int64_t paddedKeyRows() const {
    return llvm::alignTo(tileN, blocking.rowsPerStep);
  }

  /// Allocates the per-tile scratch of computeElementBlocks and the dS
  /// block. Their columns cover the padded key rows, their rows the padded
  /// query rows, and they start zeroed: a blocked update reads the padding
  /// too (into accumulators that are never stored), which must be finite.
  void allocateElementBlocks() {
    const int64_t rows = blocking.paddedTileM(),
                  keys = std::max(blocking.paddedTileN(), paddedKeyRows());
    keyTransposed = scratch({headDim, blocking.paddedTileN()});
    valueTransposed = scratch({headDim, blocking.paddedTileN()});
    relativeBlock = zeroedScratch({rows, keys});
    outputGradDotBlock = scratch({rows, keys});
    if (!attention.isSoftmax())
      weightBlock = zeroedScratch({rows, keys});
    scoreGradBlock = zeroedScratch({rows, keys});
    if (scoreGradReadsDots())
      dotBlock = scratch({rows, keys});
    else
      stepDotBlock = scratch({blocking.rowsPerStep, blocking.paddedTileN()});
  }

  /// The weights of the tile's elements (P, or w under `none`), which
  /// dV += W^T dO reads.
  Value weights() {
    return attention.isSoftmax() ? relativeBlock : weightBlock;
  }

  /// Rows [0, numRows) of the query tile from qLo, rounded up to whole row
  /// blocks, into `queryRows` and `outputGradRows` ([paddedTileM,
  /// head_dim]) and their lse2 into `rowLse2s`; rows past q_len repeat the
  /// last row (finite values whose results are never read).
  void stageRowBlocks(ElementContext &item, Value qLo, Value numRows,
                      Value queryRows, Value outputGradRows, Value rowLse2s) {
    Value step = index(blocking.rowsPerStep);
    Value blockedRows = arith::MulIOp::create(
        builder, loc, arith::CeilDivSIOp::create(builder, loc, numRows, step),
        step);
    Value lastRow = arith::SubIOp::create(builder, loc, qLen, index(1));
    auto loop =
        scf::ForOp::create(builder, loc, index(0), blockedRows, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(loop.getBody());
    Value r = loop.getInductionVar();
    Value qIdx =
        minIndex(arith::AddIOp::create(builder, loc, qLo, r), lastRow);
    vector::StoreOp::create(builder, loc, loadRow(query, item.b, item.h, qIdx),
                            queryRows, ValueRange{r, index(0)});
    vector::StoreOp::create(builder, loc,
                            loadRow(outputGrad, item.b, item.h, qIdx),
                            outputGradRows, ValueRange{r, index(0)});
    memref::StoreOp::create(
        builder, loc,
        memref::LoadOp::create(builder, loc, lse2,
                               ValueRange{item.b, item.h, qIdx}),
        rowLse2s, r);
  }

  /// For every staged row against the key tile from kvLo (transposed into
  /// keyTransposed and valueTransposed): 2^(s2 - lse2) into relativeBlock,
  /// dP = dO . V into outputGradDotBlock and, under `none`, 2^s2 into
  /// weightBlock; s2 is the score in base 2.
  LogicalResult computeElementBlocks(ElementContext &item, Value qLo,
                                     Value numRows, Value kvLo,
                                     Value queryRows, Value outputGradRows,
                                     Value rowLse2s, Value keyBiasTile) {
    const int64_t lanes = blocking.keyLanes, vectors = blocking.keyVectors();
    return forEachRowBlock(numRows, blocking, [&](Value firstRow) {
      // q . k goes to dotBlock where score_grad reads it, else to the
      // step's own rows.
      Value scoreDots = dotBlock ? dotBlock : stepDotBlock;
      Value firstScoreDotRow = dotBlock ? firstRow : index(0);
      rowBlockDots(queryRows, firstRow, keyTransposed, scoreDots,
                   firstScoreDotRow, blocking);
      rowBlockDots(outputGradRows, firstRow, valueTransposed,
                   outputGradDotBlock, firstRow, blocking);
      VectorType keyVector = keyVectorType(blocking);
      for (int64_t r = 0; r < blocking.rowsPerStep; ++r) {
        Value row = arith::AddIOp::create(builder, loc, firstRow, index(r));
        Value scoreDotRow =
            arith::AddIOp::create(builder, loc, firstScoreDotRow, index(r));
        KeyVectorContext keys =
            rowOverKeys(item, qLo, row, queryRows, blocking);
        Value rowLse2 = vector::BroadcastOp::create(
            builder, loc, keyVectorType(blocking),
            memref::LoadOp::create(builder, loc, rowLse2s, row));
        for (int64_t c = 0; c < vectors; ++c) {
          Value dots = vector::LoadOp::create(
              builder, loc, keyVector, scoreDots,
              ValueRange{scoreDotRow, index(c * lanes)});
          FailureOr<Value> s2 = base2ScoresOverKeys(keys, c, kvLo, dots,
                                                    keyBiasTile, blocking);
          if (failed(s2))
            return failure();
          SmallVector<Value, 2> at{row, index(c * lanes)};
          vector::StoreOp::create(
              builder, loc,
              createExp2(builder, loc,
                         arith::SubFOp::create(builder, loc, *s2, rowLse2)),
              relativeBlock, at);
          if (!attention.isSoftmax())
            vector::StoreOp::create(builder, loc,
                                    createExp2(builder, loc, *s2), weightBlock,
                                    at);
        }
      }
      return success();
    });
  }

  /// Whether score_grad reads the dot product (it recomputes a score that
  /// is not linear in it, as softcap's tanh): computeElementBlocks then
  /// keeps the dots.
  bool scoreGradReadsDots() {
    bool reads = false;
    attention.getScoreGrad().walk([&](Operation *op) {
      reads |= isa<attn::DotOp, attn::ScaledDotOp>(op);
    });
    return reads;
  }

  /// Per staged row of the tile and vector of keyLanes keys, from the
  /// element blocks: the weights W (P, or w = 2^s2 under `none`) and the
  /// adjoints dS = ln2' P (dP - delta) (softmax) or ln2' (w dP + delta 2^(s2
  /// - lse2)) (`none`, whose delta is dlse), ln2' taking them to the score's
  /// units; both 0 where the mask drops the key (with `withMask`) and past
  /// the tile's keys. `body(r, c, keys, weights)` gets the keys' context
  /// with the adjoints and the kept lanes set, for score_grad over them.
  LogicalResult forEachKeyVector(
      ElementContext &item, Value qLo, Value numRows, Value kvLo, Value numKeys,
      Value queryRows, Value keyBiasTile, bool withMask,
      function_ref<LogicalResult(Value, int64_t, KeyVectorContext &, Value)>
          body) {
    const int64_t lanes = blocking.keyLanes;
    VectorType keyVector = keyVectorType(blocking);
    auto broadcast = [&](Value scalar) -> Value {
      return vector::BroadcastOp::create(builder, loc, keyVector, scalar);
    };
    auto rowLoop =
        scf::ForOp::create(builder, loc, index(0), numRows, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(rowLoop.getBody());
    Value r = rowLoop.getInductionVar();
    KeyVectorContext row = rowOverKeys(item, qLo, r, queryRows, blocking);
    Value rowDelta = broadcast(memref::LoadOp::create(
        builder, loc, delta, ValueRange{item.b, item.h, row.row.qIdx}));
    Value units = broadcast(f32(attention.getLog2Domain() ? M_LN2 : 1.0));
    Value zeros = broadcast(f32(0));
    Value laneIndices = vector::StepOp::create(
        builder, loc, VectorType::get({lanes}, builder.getIndexType()));
    bool readsDots = scoreGradReadsDots();
    for (int64_t c = 0; c < blocking.keyVectors(); ++c) {
      KeyVectorContext keys = row;
      keys.firstKey = arith::AddIOp::create(builder, loc, kvLo, index(c * lanes));
      SmallVector<Value, 2> at{r, index(c * lanes)};
      auto load = [&](Value block) -> Value {
        return vector::LoadOp::create(builder, loc, keyVector, block, at);
      };
      if (readsDots)
        keys.dots = load(dotBlock);
      if (!attention.getKeyBias().empty())
        keys.keyBias = vector::LoadOp::create(builder, loc, keyVector,
                                              keyBiasTile,
                                              ValueRange{index(c * lanes)});
      Value relative = load(relativeBlock), dP = load(outputGradDotBlock);
      Value weight, adjoint;
      if (attention.isSoftmax()) {
        weight = relative;
        adjoint = arith::MulFOp::create(
            builder, loc, units,
            arith::MulFOp::create(
                builder, loc, relative,
                arith::SubFOp::create(builder, loc, dP, rowDelta)));
      } else {
        weight = load(weightBlock);
        adjoint = arith::MulFOp::create(
            builder, loc, units,
            arith::AddFOp::create(
                builder, loc, arith::MulFOp::create(builder, loc, weight, dP),
                arith::MulFOp::create(builder, loc, rowDelta, relative)));
      }
      Value kept = arith::CmpIOp::create(
          builder, loc, arith::CmpIPredicate::slt,
          arith::AddIOp::create(
              builder, loc, laneIndices,
              vector::BroadcastOp::create(builder, loc, laneIndices.getType(),
                                          index(c * lanes))),
          vector::BroadcastOp::create(builder, loc, laneIndices.getType(),
                                      numKeys));
      if (withMask) {
        FailureOr<Value> unmasked =
            inlineRegionOverKeys(attention.getMask(), keys);
        if (failed(unmasked))
          return failure();
        kept = arith::AndIOp::create(builder, loc, kept, *unmasked);
      }
      keys.kept = kept;
      keys.adjoint = arith::SelectOp::create(builder, loc, kept, adjoint, zeros);
      if (failed(body(r, c, keys,
                      arith::SelectOp::create(builder, loc, kept, weight,
                                              zeros))))
        return failure();
    }
    return success();
  }

  /// The q rows [qLo, qLo + numRows) of item's head, from what a pass
  /// accumulated for them (`unscaledRow(r)`: dQ~, the sum of dS k;
  /// `rowNormGrad(r)`: dL/d||q||^2 from the score; `rowAdjointSum(r)`: the
  /// sum of the row's dS): dQ = q_scale dQ~ + 2 (dL/d||q||^2) q, with the
  /// row terms' gradient, to `queryGrad`; q_scale's gradient to the partial
  /// sums.
  LogicalResult finishQueryRows(ElementContext &item, Value qLo,
                                Value numRows, Value queryGrad,
                                function_ref<Value(Value)> unscaledRow,
                                function_ref<Value(Value)> rowNormGrad,
                                function_ref<Value(Value)> rowAdjointSum) {
    // dQ = q_scale dQ~ + 2 (dL/d||q||^2) q, plus the row terms' gradient
    // from the sum of the row's dS; dL/dq_scale = sum over rows of q . dQ~.
    auto rowLoop = scf::ForOp::create(builder, loc, index(0), numRows, index(1),
                                      ValueRange{f32(0)});
    {
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(rowLoop.getBody());
      Value r = rowLoop.getInductionVar();
      ElementContext row = item;
      row.qIdx = arith::AddIOp::create(builder, loc, qLo, r);
      row.kvIdx = index(0);
      row.queryRow = loadRow(query, item.b, item.h, row.qIdx);
      Value unscaled = unscaledRow(r);
      Value scaleGrad =
          arith::AddFOp::create(builder, loc, rowLoop.getRegionIterArgs()[0],
                                dotRows(row.queryRow, unscaled));
      Value normGrad = rowNormGrad(r);
      if (!attention.getRowBiasGrad().empty()) {
        // The row terms' adjoint is the sum of the row's dS as computed, in
        // natural units: dlse in exact arithmetic, but with D read from
        // the rounded output, the same rounding that the score's own
        // gradients carry, so that the gradients are those of the spec as
        // written (docs/backward.md, "Row terms").
        Value rowAdjoint = arith::MulFOp::create(
            builder, loc,
            rowAdjointSum(r),
            f32(attention.getLog2Domain() ? M_LOG2E : 1.0));
        Value nonzero = arith::CmpFOp::create(
            builder, loc, arith::CmpFPredicate::UNE, rowAdjoint, f32(0));
        auto ifGrad =
            scf::IfOp::create(builder, loc, TypeRange{builder.getF32Type()},
                              nonzero, /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard branch(builder);
          builder.setInsertionPointToStart(&ifGrad.getElseRegion().front());
          scf::YieldOp::create(builder, loc, normGrad);
          builder.setInsertionPointToStart(&ifGrad.getThenRegion().front());
          Value withRowTerms = normGrad;
          GradientSinks sinks;
          sinkParamsAndCaptures(sinks);
          sinks.norm2 = [&](attn::Vector side, Value x) {
            if (side == attn::Vector::q)
              withRowTerms =
                  arith::AddFOp::create(builder, loc, withRowTerms, x);
          };
          row.adjoint = rowAdjoint;
          row.sinks = &sinks;
          if (failed(inlineRegion(attention.getRowBiasGrad(), row)))
            return failure();
          scf::YieldOp::create(builder, loc, withRowTerms);
        }
        normGrad = ifGrad.getResult(0);
      }
      Value queryGradRow = vector::FMAOp::create(
          builder, loc,
          vector::BroadcastOp::create(
              builder, loc, rowType(),
              arith::MulFOp::create(builder, loc, f32(2.0), normGrad)),
          row.queryRow,
          arith::MulFOp::create(builder, loc, unscaled,
                                vector::BroadcastOp::create(
                                    builder, loc, rowType(), item.qScale)));
      storeRow(queryGradRow, queryGrad, item.b, item.h, row.qIdx);
      scf::YieldOp::create(builder, loc, scaleGrad);
    }
    if (!attention.getQScaleGrad().empty()) {
      ElementContext element = item;
      element.qIdx = index(0);
      element.kvIdx = index(0);
      element.adjoint = rowLoop.getResult(0);
      GradientSinks sinks;
      sinkParamsAndCaptures(sinks);
      element.sinks = &sinks;
      if (failed(inlineRegion(attention.getQScaleGrad(), element)))
        return failure();
    }
    return success();
  }

  /// `tile[offset ..]` += `values`, a vector of keyLanes.
  void addToVector(Value tile, Value offset, Value values) {
    Value old = vector::LoadOp::create(builder, loc, keyVectorType(blocking),
                                       tile, ValueRange{offset});
    vector::StoreOp::create(builder, loc,
                            arith::AddFOp::create(builder, loc, old, values),
                            tile, ValueRange{offset});
  }

  /// `scalars[at]` += the sum of the lanes of `values`.
  void addLaneSum(Value scalars, ValueRange at, Value values) {
    Value old = memref::LoadOp::create(builder, loc, scalars, at);
    Value sum = vector::ReductionOp::create(builder, loc,
                                            vector::CombiningKind::ADD, values);
    memref::StoreOp::create(builder, loc,
                            arith::AddFOp::create(builder, loc, old, sum),
                            scalars, at);
  }

  /// `partials[chunk, slot] += x` when `want` (the caller asked for the
  /// gradient the slot belongs to).
  void addToPartial(Value want, Value slot, Value x) {
    auto ifWanted = scf::IfOp::create(builder, loc, want);
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(&ifWanted.getThenRegion().front());
    Value old =
        memref::LoadOp::create(builder, loc, partials, ValueRange{chunk, slot});
    memref::StoreOp::create(builder, loc,
                            arith::AddFOp::create(builder, loc, old, x),
                            partials, ValueRange{chunk, slot});
  }

  /// Binds the arguments the dK/dV and dQ functions share — q, k, v, dO,
  /// delta, lse2, then their `numGradients` gradient outputs, the partial
  /// sums, the gradient mask, the params, captures and sequence block, the chunk and the
  /// chunk count — the problem sizes, the gradient slots and the tile
  /// counts; returns the gradient outputs.
  SmallVector<Value, 2> bindGradientFunction(Block *entry,
                                             unsigned numGradients) {
    query = entry->getArgument(0);
    key = entry->getArgument(1);
    value = entry->getArgument(2);
    outputGrad = entry->getArgument(3);
    delta = entry->getArgument(4);
    lse2 = entry->getArgument(5);
    unsigned next = 6;
    SmallVector<Value, 2> gradients;
    for (unsigned i = 0; i < numGradients; ++i)
      gradients.push_back(entry->getArgument(next++));
    partials = entry->getArgument(next++);
    Value gradMask = entry->getArgument(next++);
    next = bindTrailingArguments(entry, next);
    chunk = entry->getArgument(next);
    numChunks = entry->getArgument(next + 1);
    bindSizes(query, key);
    Value slots = bindGradientSlots(gradMask);
    // An object's caller passes these: a chunk outside the partials' rows,
    // a chunk count below 1 or partials narrower than the slots run no
    // item, so that nothing is written past them and no loop is endless.
    auto holds = [&](arith::CmpIPredicate predicate, Value a, Value b) {
      return arith::CmpIOp::create(builder, loc, predicate, a, b);
    };
    using arith::CmpIPredicate;
    Value rows = memref::DimOp::create(builder, loc, partials, 0);
    Value columns = memref::DimOp::create(builder, loc, partials, 1);
    chunksValid = arith::AndIOp::create(
        builder, loc,
        arith::AndIOp::create(builder, loc,
                              holds(CmpIPredicate::sge, chunk, index(0)),
                              holds(CmpIPredicate::slt, chunk, rows)),
        arith::AndIOp::create(builder, loc,
                              holds(CmpIPredicate::sge, numChunks, index(1)),
                              holds(CmpIPredicate::sge, columns, slots)));
    numKeyTiles = arith::CeilDivSIOp::create(builder, loc, kvLen, index(tileN));
    numQTiles = arith::CeilDivSIOp::create(builder, loc, qLen, index(tileM));
    return gradients;
  }

  /// The loop over this chunk's work items below `numWork`: chunk, chunk +
  /// numChunks, ... (none when the chunk arguments are not valid).
  scf::ForOp chunkLoop(Value numWork) {
    return scf::ForOp::create(
        builder, loc, chunk,
        arith::SelectOp::create(builder, loc, chunksValid, numWork, chunk),
        arith::SelectOp::create(builder, loc, chunksValid, numChunks,
                                index(1)));
  }

  /// Reads the gradient mask and lays out the partial-sum slots: one per
  /// parameter, then the elements of every f32 capture, row-major. Returns
  /// the number of slots.
  Value bindGradientSlots(Value gradMask) {
    auto bit = [&](unsigned position) {
      Value shifted = arith::ShRUIOp::create(
          builder, loc, gradMask,
          arith::ConstantOp::create(builder, loc,
                                    builder.getI64IntegerAttr(position)));
      Value low = arith::AndIOp::create(
          builder, loc, shifted,
          arith::ConstantOp::create(builder, loc,
                                    builder.getI64IntegerAttr(1)));
      return arith::CmpIOp::create(
          builder, loc, arith::CmpIPredicate::ne, low,
          arith::ConstantOp::create(builder, loc,
                                    builder.getI64IntegerAttr(0)));
    };
    for (size_t p = 0; p < params.size(); ++p)
      wantParam.push_back(bit(p));
    Value next = index(params.size());
    for (auto [c, capture] : llvm::enumerate(captures)) {
      wantCapture.push_back(bit(params.size() + c));
      captureSlot.push_back(next);
      auto type = cast<MemRefType>(capture.getType());
      if (!type.getElementType().isF32())
        continue;
      Value numel = index(1);
      for (int64_t d = 0; d < type.getRank(); ++d)
        numel = arith::MulIOp::create(
            builder, loc, numel,
            memref::DimOp::create(builder, loc, capture, d));
      next = arith::AddIOp::create(builder, loc, next, numel);
    }
    return next;
  }

  /// Sinks for the parameters' and captures' gradients.
  void sinkParamsAndCaptures(GradientSinks &sinks) {
    sinks.param = [this](unsigned p, Value x) {
      addToPartial(wantParam[p], index(p), x);
    };
    sinks.capture = [this](unsigned c, ValueRange indices, Value x) {
      Value flat = index(0);
      for (auto [d, idx] : llvm::enumerate(indices)) {
        Value size = memref::DimOp::create(builder, loc, captures[c], d);
        flat = arith::AddIOp::create(
            builder, loc, arith::MulIOp::create(builder, loc, flat, size), idx);
      }
      addToPartial(wantCapture[c],
                   arith::AddIOp::create(builder, loc, captureSlot[c], flat),
                   x);
    };
  }

  /// The q_scale region's value for (b, h), 1 without one.
  FailureOr<Value> queryScale(ElementContext &item) {
    if (attention.getQScale().empty())
      return f32(1.0);
    ElementContext element = item;
    element.qIdx = index(0);
    element.kvIdx = index(0);
    return inlineElementRegion(attention.getQScale(), element);
  }

  /// The key_bias of keys [kvLo, kvLo + numKeys) into `tile`.
  LogicalResult computeKeyBiases(ElementContext &item, Value kvLo,
                                 Value numKeys, Value tile) {
    if (attention.getKeyBias().empty())
      return success();
    auto loop = scf::ForOp::create(builder, loc, index(0), numKeys, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(loop.getBody());
    Value j = loop.getInductionVar();
    ElementContext element = item;
    element.qIdx = index(0);
    element.kvIdx = arith::AddIOp::create(builder, loc, kvLo, j);
    FailureOr<Value> bias =
        inlineElementRegion(attention.getKeyBias(), element);
    if (failed(bias))
      return failure();
    memref::StoreOp::create(builder, loc, *bias, tile, j);
    return success();
  }

  /// An scf.for over [0, count) running `body` on each index.
  void fill(Value count, function_ref<void(Value)> body) {
    fill(index(0), count, body);
  }
  /// ... over [from, to).
  void fill(Value from, Value to, function_ref<void(Value)> body) {
    auto loop = scf::ForOp::create(builder, loc, from, to, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(loop.getBody());
    body(loop.getInductionVar());
  }

  /// A loop over the `count` tiles of `size` indices of [0, length): each
  /// tile's first index and extent, classified by `classify` (tile_class's
  /// facts) and run by forLiveTile as `body(first, extent, withMask)`.
  LogicalResult forEachLiveTile(
      Value count, int64_t size, Value length,
      function_ref<FailureOr<std::pair<Value, Value>>(Value, Value)> classify,
      function_ref<LogicalResult(Value, Value, bool)> body) {
    auto loop = scf::ForOp::create(builder, loc, index(0), count, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(loop.getBody());
    Value first, extent;
    std::tie(first, extent) = tileSpan(loop.getInductionVar(), size, length);
    FailureOr<std::pair<Value, Value>> tileClass = classify(first, extent);
    if (failed(tileClass))
      return failure();
    return forLiveTile(*tileClass, [&](bool withMask) {
      return body(first, extent, withMask);
    });
  }

  /// Runs `body(withMask)` for a live tile: without the per-element mask
  /// when the tile is all kept, with it otherwise; nothing when all masked.
  LogicalResult forLiveTile(std::pair<Value, Value> tileClass,
                            function_ref<LogicalResult(bool)> body) {
    Value live = arith::XOrIOp::create(
        builder, loc, tileClass.second,
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true)));
    auto ifLive = scf::IfOp::create(builder, loc, live);
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(&ifLive.getThenRegion().front());
    if (attention.getMask().empty())
      return body(false);
    auto ifKept = scf::IfOp::create(builder, loc, tileClass.first,
                                    /*withElseRegion=*/true);
    builder.setInsertionPointToStart(&ifKept.getThenRegion().front());
    if (failed(body(false)))
      return failure();
    builder.setInsertionPointToStart(&ifKept.getElseRegion().front());
    return body(true);
  }

  Value scratch(ArrayRef<int64_t> shape) {
    return memref::AllocaOp::create(
        builder, loc, MemRefType::get(shape, builder.getF32Type()));
  }

  /// Rows [0, numAccs) of `accTile` (rounded up to whole blocks of
  /// rowsPerStep) += sum over i < count of weight(i, acc) row(i), the
  /// weight read from `block` at [i, acc] (`byColumn`) or [acc, i]. In a
  /// tile with masked elements a zero weight leaves the accumulator as it
  /// is: a masked element's row must not reach it even when it is inf.
  LogicalResult blockedUpdate(Value accTile, Value numAccs, Value count,
                              Value block, bool byColumn,
                              function_ref<Value(Value)> row, bool withMask) {
    return forEachRowBlock(numAccs, blocking, [&](Value firstAcc) {
      SmallVector<Value> noRescale(blocking.rowsPerStep, Value());
      auto weight = [&](Value i, int64_t a) -> Value {
        Value acc = arith::AddIOp::create(builder, loc, firstAcc, index(a));
        return memref::LoadOp::create(
            builder, loc, block,
            byColumn ? ValueRange{i, acc} : ValueRange{acc, i});
      };
      auto nonzero = [&](Value i, int64_t a) -> Value {
        return arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::UNE,
                                     weight(i, a), f32(0));
      };
      function_ref<Value(Value, int64_t)> keep;
      if (withMask)
        keep = nonzero;
      accumulateWeightedRows(accTile, firstAcc, noRescale, count, weight, row,
                             blocking, keep);
      return success();
    });
  }

  /// A [rows, columns] scratch filled with zeros.
  Value zeroedScratch(ArrayRef<int64_t> shape) {
    Value block = scratch(shape);
    auto rows = scf::ForOp::create(builder, loc, index(0), index(shape[0]),
                                   index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(rows.getBody());
    auto columns = scf::ForOp::create(builder, loc, index(0), index(shape[1]),
                                      index(1));
    builder.setInsertionPointToStart(columns.getBody());
    memref::StoreOp::create(
        builder, loc, f32(0), block,
        ValueRange{rows.getInductionVar(), columns.getInductionVar()});
    return block;
  }

  HostBlocking blocking;
  int64_t tileM, tileN;
  Value query, value, outputGrad, delta, lse2, partials, chunk, numChunks,
      chunksValid;
  // The key tile transposed and, per element of the (query tile, key tile),
  // what computeElementBlocks leaves for the element loops.
  Value keyTransposed, valueTransposed, relativeBlock, outputGradDotBlock,
      weightBlock;
  /// dS of every element of the tile (times q_scale in the dK/dV pass), 0
  /// where masked: the weights of dK += dS^T q and dQ~ += dS k.
  Value scoreGradBlock;
  /// q . k of every element, where score_grad reads it; otherwise of one
  /// row block's elements.
  Value dotBlock, stepDotBlock;
  Value numKeyTiles, numQTiles;
  SmallVector<Value> wantParam, wantCapture, captureSlot;
};

/// NAME_bwd_rows(q, k, o, dO, lse, dlse, delta, lse2, params..., captures...,
/// q_offset, kv_offset, q_seq_len, kv_seq_len, work_begin, work_end): work
/// items as the forward's.
class RowsEmitter : HostBackwardEmitter {
public:
  using HostBackwardEmitter::HostBackwardEmitter;

  LogicalResult emit() {
    Block *entry = kernel.addEntryBlock();
    builder.setInsertionPointToStart(entry);
    query = entry->getArgument(0);
    key = entry->getArgument(1);
    Value output = entry->getArgument(2);
    outputGrad = entry->getArgument(3);
    Value lse = entry->getArgument(4), lseGrad = entry->getArgument(5);
    delta = entry->getArgument(6);
    lse2 = entry->getArgument(7);
    unsigned next = bindTrailingArguments(entry, 8);
    Value workBegin = entry->getArgument(next),
          workEnd = entry->getArgument(next + 1);
    bindSizes(query, key);

    numQTiles =
        arith::CeilDivSIOp::create(builder, loc, qLen, index(tileM));
    auto workLoop = workItemLoop(workBegin, workEnd, numQTiles);
    builder.setInsertionPointToStart(workLoop.getBody());
    Value qTile;
    ElementContext item =
        locateWorkItem(workLoop.getInductionVar(), numQTiles, qTile);
    Value qLo, numRows;
    std::tie(qLo, numRows) = tileSpan(qTile, tileM, qLen);
    auto rowLoop =
        scf::ForOp::create(builder, loc, index(0), numRows, index(1));
    builder.setInsertionPointToStart(rowLoop.getBody());
    Value qIdx =
        arith::AddIOp::create(builder, loc, qLo, rowLoop.getInductionVar());
    SmallVector<Value, 3> at{item.b, item.h, qIdx};
    Value rowLseGrad = memref::LoadOp::create(builder, loc, lseGrad, at);
    Value rowDelta = rowLseGrad;
    if (attention.isSoftmax()) {
      // dS = P (dP - delta) cancels where the output row is one value row
      // (a single kept key); dP comes from rowBlockDots, so delta sums in
      // its order, one FMA per head_dim element from 0, for the same bits.
      Value outputGradRow = loadRow(outputGrad, item.b, item.h, qIdx);
      Value outputRow = loadRow(output, item.b, item.h, qIdx);
      Value dot = f32(0);
      for (int64_t d = 0; d < headDim; ++d)
        dot = math::FmaOp::create(
            builder, loc,
            vector::ExtractOp::create(builder, loc, outputGradRow, d),
            vector::ExtractOp::create(builder, loc, outputRow, d), dot);
      rowDelta = arith::SubFOp::create(builder, loc, dot, rowLseGrad);
    }
    memref::StoreOp::create(builder, loc, rowDelta, delta, at);

    Value rowLse = memref::LoadOp::create(builder, loc, lse, at);
    if (!attention.getRowBias().empty()) {
      ElementContext element = item;
      element.qIdx = qIdx;
      element.kvIdx = index(0);
      element.queryRow = loadRow(query, item.b, item.h, qIdx);
      FailureOr<Value> bias =
          inlineElementRegion(attention.getRowBias(), element);
      if (failed(bias))
        return failure();
      rowLse = arith::SubFOp::create(builder, loc, rowLse, *bias);
    }
    Value base2 = arith::MulFOp::create(builder, loc, rowLse, f32(M_LOG2E));
    // A row without weight (lse = -inf) gets +inf: its weights 2^(s - lse2)
    // are then 0 instead of NaN.
    Value empty = arith::CmpFOp::create(builder, loc, arith::CmpFPredicate::OEQ,
                                        rowLse, f32(-kInfinity));
    memref::StoreOp::create(
        builder, loc,
        arith::SelectOp::create(builder, loc, empty, f32(kInfinity), base2),
        lse2, at);
    builder.setInsertionPointAfter(workLoop);
    func::ReturnOp::create(builder, loc);
    return success();
  }
};

/// NAME_bwd_dkdv(q, k, v, dO, delta, lse2, dK, dV, partials, grad_mask,
/// params..., captures..., q_offset, kv_offset, q_seq_len, kv_seq_len,
/// chunk, num_chunks): work item (b, kv head, key tile), items chunk,
/// chunk + num_chunks, ...
///
/// NAME_bwd_fused(q, k, v, dO, delta, lse2, dK, dV, dQ, dQ_sums, q_norm_sums,
/// row_adjoint_sums, partials, grad_mask, ..., chunk, num_chunks): the same
/// pass over every key tile of a work item (b, kv head), which also adds
/// dS k into the f32 dQ_sums ([batch, heads, q_len, head_dim]) and the
/// rows' ||q||^2 gradients and dS sums into theirs ([batch, heads, q_len]),
/// then finishes the group's dQ rows as the dQ pass does: FlashAttention-2's
/// single pass, 5 tile products instead of the two passes' 7. The item owns
/// its heads' dQ rows, so no other item adds to them; dQ gets the two-pass
/// schedule's bits (the same sums in the same order).
class KeyValueGradEmitter : HostBackwardEmitter {
public:
  KeyValueGradEmitter(attn::AttentionOp attention, func::FuncOp kernel,
                      const HostBlocking &blocking, bool fused)
      : HostBackwardEmitter(attention, kernel, blocking), fused(fused) {}

  LogicalResult emit() {
    Block *entry = kernel.addEntryBlock();
    builder.setInsertionPointToStart(entry);
    SmallVector<Value, 2> gradients =
        bindGradientFunction(entry, fused ? 6 : 2);
    keyGrad = gradients[0];
    valueGrad = gradients[1];
    if (fused) {
      queryGrad = gradients[2];
      queryGradSums = gradients[3];
      queryNormSums = gradients[4];
      rowAdjointSums = gradients[5];
    }
    Value numItems = arith::MulIOp::create(builder, loc, batch, kvHeads);
    Value numWork =
        fused ? numItems
              : arith::MulIOp::create(builder, loc, numItems, numKeyTiles);

    keyGradTile = scratch({paddedKeyRows(), headDim});
    valueGradTile = scratch({paddedKeyRows(), headDim});
    keyNormGrad = scratch({blocking.paddedTileN()});
    keyBiasTile = scratch({blocking.paddedTileN()});
    keyBiasGrad = scratch({blocking.paddedTileN()});
    queryTile = scratch({blocking.paddedTileM(), headDim});
    outputGradTile = scratch({blocking.paddedTileM(), headDim});
    rowLse2 = scratch({blocking.paddedTileM()});
    allocateElementBlocks();
    if (fused) {
      queryGradBlock = zeroedScratch(
          {blocking.paddedTileM(),
           std::max(blocking.paddedTileN(), paddedKeyRows())});
      queryGradTile = scratch({blocking.paddedTileM(), headDim});
    }

    auto workLoop = chunkLoop(numWork);
    builder.setInsertionPointToStart(workLoop.getBody());
    Value work = workLoop.getInductionVar();
    Value batchHead =
        fused ? work : arith::DivSIOp::create(builder, loc, work, numKeyTiles);
    ElementContext item;
    item.kvHead = arith::RemSIOp::create(builder, loc, batchHead, kvHeads);
    item.b = arith::DivSIOp::create(builder, loc, batchHead, kvHeads);
    if (!fused) {
      if (failed(emitKeyTile(
              item, arith::RemSIOp::create(builder, loc, work, numKeyTiles))))
        return failure();
    } else if (failed(emitItem(item))) {
      return failure();
    }
    builder.setInsertionPointAfter(workLoop);
    func::ReturnOp::create(builder, loc);
    return success();
  }

private:
  /// The heads of the item's group, `body(item)` with item.h set.
  LogicalResult forEachHeadOfGroup(ElementContext &item,
                                   function_ref<LogicalResult()> body) {
    auto headLoop = scf::ForOp::create(builder, loc, index(0), group, index(1));
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(headLoop.getBody());
    item.h = arith::AddIOp::create(
        builder, loc, arith::MulIOp::create(builder, loc, item.kvHead, group),
        headLoop.getInductionVar());
    return body();
  }

  /// Fused: zeroes the item's dQ sums, runs every key tile, then finishes
  /// the dQ rows of each head of the group, a query tile at a time.
  LogicalResult emitItem(ElementContext &item) {
    if (failed(forEachHeadOfGroup(item, [&]() -> LogicalResult {
          fill(qLen, [&](Value qIdx) {
            storeRow(zeroRow(), queryGradSums, item.b, item.h, qIdx);
            memref::StoreOp::create(builder, loc, f32(0), queryNormSums,
                                    ValueRange{item.b, item.h, qIdx});
            memref::StoreOp::create(builder, loc, f32(0), rowAdjointSums,
                                    ValueRange{item.b, item.h, qIdx});
          });
          return success();
        })))
      return failure();
    {
      auto keyTileLoop =
          scf::ForOp::create(builder, loc, index(0), numKeyTiles, index(1));
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(keyTileLoop.getBody());
      if (failed(emitKeyTile(item, keyTileLoop.getInductionVar())))
        return failure();
    }
    return forEachHeadOfGroup(item, [&]() -> LogicalResult {
      FailureOr<Value> qScale = queryScale(item);
      if (failed(qScale))
        return failure();
      item.qScale = *qScale;
      auto qTileLoop =
          scf::ForOp::create(builder, loc, index(0), numQTiles, index(1));
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(qTileLoop.getBody());
      Value qLo, numRows;
      std::tie(qLo, numRows) =
          tileSpan(qTileLoop.getInductionVar(), tileM, qLen);
      auto at = [&](Value r) {
        return SmallVector<Value, 3>{
            item.b, item.h, arith::AddIOp::create(builder, loc, qLo, r)};
      };
      return finishQueryRows(
          item, qLo, numRows, queryGrad,
          [&](Value r) -> Value {
            return loadRow(queryGradSums, item.b, item.h,
                           arith::AddIOp::create(builder, loc, qLo, r));
          },
          [&](Value r) -> Value {
            return memref::LoadOp::create(builder, loc, queryNormSums, at(r));
          },
          [&](Value r) -> Value {
            return memref::LoadOp::create(builder, loc, rowAdjointSums, at(r));
          });
    });
  }

  /// One query head of the group against the key tile (kvLo, numKeys, its
  /// last key kvHi): every query tile the mask keeps, then the key bias's
  /// gradient per key.
  LogicalResult emitKeyTileForHead(ElementContext &item, Value kvHi) {
    FailureOr<Value> qScale = queryScale(item);
    if (failed(qScale))
      return failure();
    item.qScale = *qScale;
    if (failed(computeKeyBiases(item, kvLo, numKeys, keyBiasTile)))
      return failure();
    fill(index(blocking.paddedTileN()), [&](Value j) {
      memref::StoreOp::create(builder, loc, f32(0), keyBiasGrad, j);
    });

    if (failed(forEachLiveTile(
            numQTiles, tileM, qLen,
            [&](Value qLo, Value numRows) {
              return classifyTile(item.b, item.h, qLo, lastOf(qLo, numRows),
                                  kvLo, kvHi);
            },
            [&](Value qLo, Value numRows, bool withMask) {
              stageRowBlocks(item, qLo, numRows, queryTile, outputGradTile,
                             rowLse2);
              if (failed(computeElementBlocks(item, qLo, numRows, kvLo,
                                              queryTile, outputGradTile,
                                              rowLse2, keyBiasTile)))
                return failure();
              return emitTile(item, qLo, numRows, withMask);
            })))
      return failure();

    // The key bias's gradient, per key, with the sum over rows of what
    // score_grad sent to it.
    if (!attention.getKeyBiasGrad().empty()) {
      auto keyLoop =
          scf::ForOp::create(builder, loc, index(0), numKeys, index(1));
      OpBuilder::InsertionGuard keyGuard(builder);
      builder.setInsertionPointToStart(keyLoop.getBody());
      Value j = keyLoop.getInductionVar();
      ElementContext element = item;
      element.qIdx = index(0);
      element.kvIdx = arith::AddIOp::create(builder, loc, kvLo, j);
      element.adjoint = memref::LoadOp::create(builder, loc, keyBiasGrad, j);
      GradientSinks sinks;
      sinkParamsAndCaptures(sinks);
      sinks.norm2 = [&](attn::Vector side, Value x) {
        if (side != attn::Vector::k)
          return;
        Value old = memref::LoadOp::create(builder, loc, keyNormGrad, j);
        memref::StoreOp::create(builder, loc,
                                arith::AddFOp::create(builder, loc, old, x),
                                keyNormGrad, j);
      };
      element.sinks = &sinks;
      if (failed(inlineRegion(attention.getKeyBiasGrad(), element)))
        return failure();
    }
    return success();
  }

  /// One key tile of item's kv head against every query head of the group
  /// and every query tile the mask keeps; dK and dV of its keys stored.
  LogicalResult emitKeyTile(ElementContext &item, Value keyTile) {
    std::tie(kvLo, numKeys) = tileSpan(keyTile, tileN, kvLen);
    Value kvHi = lastOf(kvLo, numKeys);
    // The key tile is the same for every query head and tile of the item.
    packTransposed(key, item.b, item.kvHead, kvLo, keyTransposed, blocking);
    packTransposed(value, item.b, item.kvHead, kvLo, valueTransposed, blocking);
    fill(index(paddedKeyRows()), [&](Value j) {
      vector::StoreOp::create(builder, loc, zeroRow(), keyGradTile,
                              ValueRange{j, index(0)});
      vector::StoreOp::create(builder, loc, zeroRow(), valueGradTile,
                              ValueRange{j, index(0)});
    });
    fill(index(blocking.paddedTileN()), [&](Value j) {
      memref::StoreOp::create(builder, loc, f32(0), keyNormGrad, j);
    });

    // The query heads of the group read this key/value head.
    if (failed(forEachHeadOfGroup(
            item, [&]() { return emitKeyTileForHead(item, kvHi); })))
      return failure();

    // dK = dK~ + 2 (dL/d||k||^2) k, then both gradients to memory.
    fill(numKeys, [&](Value j) {
      Value kvIdx = arith::AddIOp::create(builder, loc, kvLo, j);
      Value keyRow = loadRow(key, item.b, item.kvHead, kvIdx);
      Value normGrad = arith::MulFOp::create(
          builder, loc, f32(2.0),
          memref::LoadOp::create(builder, loc, keyNormGrad, j));
      Value keyGradRow = vector::FMAOp::create(
          builder, loc,
          vector::BroadcastOp::create(builder, loc, rowType(), normGrad),
          keyRow,
          vector::LoadOp::create(builder, loc, rowType(), keyGradTile,
                                 ValueRange{j, index(0)}));
      storeRow(keyGradRow, keyGrad, item.b, item.kvHead, kvIdx);
      storeRow(vector::LoadOp::create(builder, loc, rowType(), valueGradTile,
                                      ValueRange{j, index(0)}),
               valueGrad, item.b, item.kvHead, kvIdx);
    });
    return success();
  }

  /// One (query tile, key tile): per row and vector of keys, the weights
  /// (0 where masked) into the weights block, dS times q_scale into the dS
  /// block, score_grad's key-side adjoints added per key and its
  /// parameters' and captures' to the partial sums; then dV += W^T dO and
  /// dK~ += dS^T q as blocked updates over the tile's rows.
  LogicalResult emitTile(ElementContext &item, Value qLo, Value numRows,
                         bool withMask) {
    const int64_t lanes = blocking.keyLanes;
    LogicalResult elements = forEachKeyVector(
        item, qLo, numRows, kvLo, numKeys, queryTile, keyBiasTile, withMask,
        [&](Value r, int64_t c, KeyVectorContext &keys,
            Value weights) -> LogicalResult {
          SmallVector<Value, 2> at{r, index(c * lanes)};
          vector::StoreOp::create(builder, loc, weights, this->weights(), at);
          Value scoreGrads = vector::BroadcastOp::create(
              builder, loc, keyVectorType(blocking), f32(0));
          VectorGradientSinks keySinks;
          keySinks.scaledDot = [&](Value x) {
            scoreGrads = arith::AddFOp::create(builder, loc, scoreGrads, x);
          };
          keySinks.keyBias = [&](Value x) {
            addToVector(keyBiasGrad, index(c * lanes), x);
          };
          // ||q||^2's is the dQ pass's, or the fused pass's sums'.
          SmallVector<Value, 3> rowAt{item.b, item.h, keys.row.qIdx};
          keySinks.norm2 = [&](attn::Vector side, Value x) {
            if (side == attn::Vector::k)
              addToVector(keyNormGrad, index(c * lanes), x);
            else if (fused)
              addLaneSum(queryNormSums, rowAt, x);
          };
          GradientSinks rowSinks;
          sinkParamsAndCaptures(rowSinks);
          keys.vectorSinks = &keySinks;
          keys.row.sinks = &rowSinks;
          if (failed(inlineGradRegionOverKeys(attention.getScoreGrad(), keys)))
            return failure();
          vector::StoreOp::create(
              builder, loc,
              arith::MulFOp::create(
                  builder, loc, scoreGrads,
                  vector::BroadcastOp::create(
                      builder, loc, keyVectorType(blocking), item.qScale)),
              scoreGradBlock, at);
          if (fused) {
            vector::StoreOp::create(builder, loc, scoreGrads, queryGradBlock,
                                    at);
            if (!attention.getRowBiasGrad().empty())
              addLaneSum(rowAdjointSums, rowAt, keys.adjoint);
          }
          return success();
        });
    if (failed(elements))
      return failure();
    auto stagedRow = [&](Value tile) {
      return [this, tile](Value r) -> Value {
        return vector::LoadOp::create(builder, loc, rowType(), tile,
                                      ValueRange{r, index(0)});
      };
    };
    if (failed(blockedUpdate(valueGradTile, numKeys, numRows, weights(),
                             /*byColumn=*/true, stagedRow(outputGradTile),
                             withMask)))
      return failure();
    if (failed(blockedUpdate(keyGradTile, numKeys, numRows, scoreGradBlock,
                             /*byColumn=*/true, stagedRow(queryTile),
                             withMask)))
      return failure();
    if (!fused)
      return success();
    // dQ~ += dS k into the rows' sums, through a staged tile whose padding
    // rows are zero (the blocked update reads whole row blocks).
    auto qIdx = [&](Value r) {
      return arith::AddIOp::create(builder, loc, qLo, r);
    };
    fill(numRows, [&](Value r) {
      vector::StoreOp::create(builder, loc,
                              loadRow(queryGradSums, item.b, item.h, qIdx(r)),
                              queryGradTile, ValueRange{r, index(0)});
    });
    fill(numRows, index(blocking.paddedTileM()), [&](Value r) {
      vector::StoreOp::create(builder, loc, zeroRow(), queryGradTile,
                              ValueRange{r, index(0)});
    });
    if (failed(blockedUpdate(
            queryGradTile, numRows, numKeys, queryGradBlock,
            /*byColumn=*/false,
            [&](Value j) {
              return loadRow(key, item.b, item.kvHead,
                             arith::AddIOp::create(builder, loc, kvLo, j));
            },
            withMask)))
      return failure();
    fill(numRows, [&](Value r) {
      storeRow(stagedRow(queryGradTile)(r), queryGradSums, item.b, item.h,
               qIdx(r));
    });
    return success();
  }

  /// Whether this is the fused pass (NAME_bwd_fused).
  bool fused;
  Value kvLo, numKeys;
  Value keyGrad, valueGrad;
  Value keyGradTile, valueGradTile, keyNormGrad, keyBiasTile, keyBiasGrad;
  Value queryTile, outputGradTile, rowLse2;
  /// Fused: dQ, the f32 sums of dQ~, of the rows' ||q||^2 gradients and
  /// of their dS, the unscaled dS of the tile and the staged dQ~ rows.
  Value queryGrad, queryGradSums, queryNormSums, rowAdjointSums;
  Value queryGradBlock, queryGradTile;
};

/// NAME_bwd_dq(q, k, v, dO, delta, lse2, dQ, partials, grad_mask,
/// params..., captures..., q_offset, kv_offset, q_seq_len, kv_seq_len,
/// chunk, num_chunks): work item (b, head, query tile).
class QueryGradEmitter : HostBackwardEmitter {
public:
  using HostBackwardEmitter::HostBackwardEmitter;

  LogicalResult emit() {
    Block *entry = kernel.addEntryBlock();
    builder.setInsertionPointToStart(entry);
    Value queryGrad = bindGradientFunction(entry, 1)[0];
    Value numWork = arith::MulIOp::create(
        builder, loc, arith::MulIOp::create(builder, loc, batch, heads),
        numQTiles);
    Value queryGradTile = scratch({blocking.paddedTileM(), headDim});
    Value queryNormGrad = scratch({tileM});
    Value rowAdjointSum = scratch({tileM});
    Value keyBiasTile = scratch({blocking.paddedTileN()});
    Value queryRows = scratch({blocking.paddedTileM(), headDim});
    Value outputGradRows = scratch({blocking.paddedTileM(), headDim});
    Value rowLse2s = scratch({blocking.paddedTileM()});
    allocateElementBlocks();

    auto workLoop = chunkLoop(numWork);
    builder.setInsertionPointToStart(workLoop.getBody());
    Value qTile;
    ElementContext item =
        locateWorkItem(workLoop.getInductionVar(), numQTiles, qTile);
    Value qLo, numRows;
    std::tie(qLo, numRows) = tileSpan(qTile, tileM, qLen);
    Value qHi = lastOf(qLo, numRows);
    FailureOr<Value> qScale = queryScale(item);
    if (failed(qScale))
      return failure();
    item.qScale = *qScale;
    stageRowBlocks(item, qLo, numRows, queryRows, outputGradRows, rowLse2s);
    {
      // The blocked update reads whole row blocks: the accumulators of
      // the padding rows too.
      fill(index(blocking.paddedTileM()), [&](Value r) {
        vector::StoreOp::create(builder, loc, zeroRow(), queryGradTile,
                                ValueRange{r, index(0)});
      });
      fill(numRows, [&](Value r) {
        memref::StoreOp::create(builder, loc, f32(0), queryNormGrad, r);
        memref::StoreOp::create(builder, loc, f32(0), rowAdjointSum, r);
      });
    }

    LogicalResult status = forEachLiveTile(
        numKeyTiles, tileN, kvLen,
        [&](Value kvLo, Value numKeys) {
          return classifyTile(item.b, item.h, qLo, qHi, kvLo,
                              lastOf(kvLo, numKeys));
        },
        [&](Value kvLo, Value numKeys, bool withMask) -> LogicalResult {
          if (failed(computeKeyBiases(item, kvLo, numKeys, keyBiasTile)))
            return failure();
          packTransposed(key, item.b, item.kvHead, kvLo, keyTransposed,
                         blocking);
          packTransposed(value, item.b, item.kvHead, kvLo, valueTransposed,
                         blocking);
          if (failed(computeElementBlocks(item, qLo, numRows, kvLo, queryRows,
                                          outputGradRows, rowLse2s,
                                          keyBiasTile)))
            return failure();
          // Per row and vector of keys, dS into the dS block (0 where
          // masked); per row, dL/d||q||^2 and the sum of the row's dS.
          const int64_t lanes = blocking.keyLanes;
          LogicalResult elements = forEachKeyVector(
              item, qLo, numRows, kvLo, numKeys, queryRows, keyBiasTile,
              withMask,
              [&](Value r, int64_t c, KeyVectorContext &keys,
                  Value) -> LogicalResult {
                Value scoreGrads = vector::BroadcastOp::create(
                    builder, loc, keyVectorType(blocking), f32(0));
                // score_grad's other gradients are the dK/dV pass's.
                VectorGradientSinks keySinks;
                keySinks.scaledDot = [&](Value x) {
                  scoreGrads =
                      arith::AddFOp::create(builder, loc, scoreGrads, x);
                };
                keySinks.norm2 = [&](attn::Vector side, Value x) {
                  if (side == attn::Vector::q)
                    addLaneSum(queryNormGrad, ValueRange{r}, x);
                };
                keys.vectorSinks = &keySinks;
                keys.row.sinks = nullptr;
                if (failed(inlineGradRegionOverKeys(attention.getScoreGrad(),
                                                    keys)))
                  return failure();
                vector::StoreOp::create(builder, loc, scoreGrads,
                                        scoreGradBlock,
                                        ValueRange{r, index(c * lanes)});
                addLaneSum(rowAdjointSum, ValueRange{r}, keys.adjoint);
                return success();
              });
          if (failed(elements))
            return failure();
          // dQ~ += dS k, a block of rows at a time, each key row loaded once.
          return blockedUpdate(
              queryGradTile, numRows, numKeys, scoreGradBlock,
              /*byColumn=*/false,
              [&](Value j) {
                return loadRow(key, item.b, item.kvHead,
                               arith::AddIOp::create(builder, loc, kvLo, j));
              },
              withMask);
        });
    if (failed(status))
      return failure();

    if (failed(finishQueryRows(
            item, qLo, numRows, queryGrad,
            [&](Value r) -> Value {
              return vector::LoadOp::create(builder, loc, rowType(),
                                            queryGradTile,
                                            ValueRange{r, index(0)});
            },
            [&](Value r) -> Value {
              return memref::LoadOp::create(builder, loc, queryNormGrad, r);
            },
            [&](Value r) -> Value {
              return memref::LoadOp::create(builder, loc, rowAdjointSum, r);
            })))
      return failure();
    builder.setInsertionPointAfter(workLoop);
    func::ReturnOp::create(builder, loc);
    return success();
  }
};

} // namespace

LogicalResult rbfc::host::buildHostBackward(attn::AttentionOp attention,
                                            OpBuilder &moduleBuilder,
                                            StringRef name,
                                            const HostBlocking &blocking) {
  MLIRContext *context = attention.getContext();
  Builder b(context);
  auto tensor = [&](Value v) {
    return stridedMemRefFor(cast<ShapedType>(v.getType()), true);
  };
  // lse, dlse, delta and lse2: [batch, heads, q_len] f32.
  Type rowValues = stridedMemRefFor(
      RankedTensorType::get(
          {ShapedType::kDynamic, ShapedType::kDynamic, ShapedType::kDynamic},
          b.getF32Type()),
      false);
  Type partials = MemRefType::get({ShapedType::kDynamic, ShapedType::kDynamic},
                                  b.getF32Type());
  SmallVector<Type> trailing;
  appendTrailingArgumentTypes(attention, trailing);
  trailing.append(2, b.getIndexType());

  Type q = tensor(attention.getQuery()), k = tensor(attention.getKey()),
       v = tensor(attention.getValue()), o = tensor(attention.getOutput());
  auto declare = [&](StringRef suffix, SmallVector<Type> arguments) {
    llvm::append_range(arguments, trailing);
    auto function = func::FuncOp::create(moduleBuilder, attention.getLoc(),
                                         (name + suffix).str(),
                                         b.getFunctionType(arguments, {}));
    function->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    function->setAttr("rbfc.tile_m", b.getI64IntegerAttr(blocking.tileM));
    function->setAttr("rbfc.tile_n", b.getI64IntegerAttr(blocking.tileN));
    return function;
  };
  Type mask = b.getI64Type();
  auto rows = declare("_bwd_rows",
                      {q, k, o, o, rowValues, rowValues, rowValues, rowValues});
  auto keyValue = declare(
      "_bwd_dkdv", {q, k, v, o, rowValues, rowValues, k, v, partials, mask});
  auto queryGrad = declare(
      "_bwd_dq", {q, k, v, o, rowValues, rowValues, q, partials, mask});
  auto queryType = cast<ShapedType>(attention.getQuery().getType());
  Type sums = stridedMemRefFor(
      RankedTensorType::get(queryType.getShape(), b.getF32Type()), true);
  auto fused = declare("_bwd_fused", {q, k, v, o, rowValues, rowValues, k, v, q,
                                      sums, rowValues, rowValues, partials,
                                      mask});
  if (failed(RowsEmitter(attention, rows, blocking).emit()) ||
      failed(KeyValueGradEmitter(attention, keyValue, blocking, false).emit()) ||
      failed(QueryGradEmitter(attention, queryGrad, blocking).emit()) ||
      failed(KeyValueGradEmitter(attention, fused, blocking, true).emit())) {
    rows.erase();
    keyValue.erase();
    queryGrad.erase();
    fused.erase();
    return failure();
  }
  LLVM_DEBUG(llvm::dbgs() << "attn-lower-to-host: built the backward of @"
                          << name << "\n");
  return success();
}
